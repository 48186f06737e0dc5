#!/bin/bash
# Runs a cartridge's hooks on the host, outside any gear, the way a deploy would (for cartridge
# development; no isolation at all):
#   cartridges/run-local.sh CARTRIDGE APP_DIR [PORT]
# APP_DIR's files are copied into a new deployment under a fake home (GEARSHIFT_LOCAL_HOME,
# default /tmp/gearshift-local/APP); pre_build, build, deploy run (each followed by the app's
# action hook of the same name), then the app's Procfile web: line or the cartridge's start runs
# in the foreground, and post_deploy once the port answers. Ctrl-C stops it (bin/stop first).
# NO_START=1 stops after deploy. The previous deployment is passed as in a gear.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,10p' "$0"; exit 2; }
here="$(cd "$(dirname "$0")" && pwd)"
cart="$here/$1"
src="$(cd "$2" && pwd)"
port="${3:-8080}"
[ -f "$cart/manifest.toml" ] || { echo "no cartridge $cart" >&2; exit 2; }
app="$(basename "$src" | tr -c 'a-z0-9\n' '-')"
home="${GEARSHIFT_LOCAL_HOME:-/tmp/gearshift-local/$app}"
CART="$(echo "$1" | tr 'a-z-' 'A-Z_')"
mkdir -p "$home/app-deployments" "$home/app-root/data" "$home/app-root/logs"
prev=""
[ -L "$home/app-root/current" ] && prev="$(readlink -f "$home/app-root/current")/"
dep="$home/app-deployments/$(date +%Y%m%d-%H%M%S-%N)"
mkdir "$dep"
cp -a "$src/." "$dep/"
rm -rf "$dep/.git"

# The static cartridge runs gearshift's binary: the newest one built in this checkout.
bin="${GEARSHIFT_BIN:-$(ls -t "$here"/../target/{*/,}{debug,release}/gearshift 2>/dev/null | head -1 || true)}"

# The gear's environment (see cartridges/README.md).
genv=(HOME="$home" USER="$app" LANG=C.UTF-8 PATH=/usr/local/bin:/usr/bin:/bin
    OPENSHIFT_APP_NAME="$app" OPENSHIFT_APP_DNS="$app.localhost" OPENSHIFT_GEAR_UUID=local
    OPENSHIFT_HOMEDIR="$home/" OPENSHIFT_DATA_DIR="$home/app-root/data/"
    OPENSHIFT_REPO_DIR="$dep/" OPENSHIFT_TMP_DIR=/tmp/ OPENSHIFT_LOG_DIR="$home/app-root/logs/"
    OPENSHIFT_DEPLOYMENTS_DIR="$home/app-deployments/" OPENSHIFT_CARTRIDGE_DIR="$cart"
    "OPENSHIFT_${CART}_DIR=$cart" "OPENSHIFT_${CART}_IP=127.0.0.1" "OPENSHIFT_${CART}_PORT=$port"
    PORT="$port" GEARSHIFT_PREVIOUS_DEPLOYMENT="$prev" GEARSHIFT_BIN="$bin")
run() { (cd "$dep" && exec env -i "${genv[@]}" "$@"); }
hook() { # STEP: the cartridge's hook, then the app's action hook
    local t0=${EPOCHREALTIME/./}
    [ -x "$cart/bin/$1" ] && run "$cart/bin/$1"
    [ -x "$dep/.openshift/action_hooks/$1" ] && run "$dep/.openshift/action_hooks/$1"
    echo "       ($1: $(( (${EPOCHREALTIME/./} - t0) / 1000 )) ms)"
}
for step in pre_build build deploy; do hook "$step"; done
ln -sfn "$dep" "$home/app-root/current"
[ -n "${NO_START:-}" ] && exit 0

web="$(sed -n 's/^web:[[:space:]]*//p' "$dep/Procfile" 2>/dev/null | head -1 || true)"
if [ -n "$web" ]; then set -- /bin/sh -c "exec $web"; else set -- "$cart/bin/start"; fi
(cd "$dep" && exec env -i "${genv[@]}" "$@") &
pid=$!
trap '[ -x "$cart/bin/stop" ] && run "$cart/bin/stop"; kill -TERM $pid 2>/dev/null; wait $pid' INT TERM
for _ in $(seq 100); do
    curl -so /dev/null "http://127.0.0.1:$port/" && break
    kill -0 $pid 2>/dev/null || { wait $pid; exit; }
    sleep 0.1
done
hook post_deploy
wait $pid
