#!/usr/bin/env bash
# `sudo make run`: initialise this host as a gearshift node (idempotent), start the daemon (and
# so the node's own sshd), deploy a demo app with a real `git push` over SSH, and show what a
# gear looks like from inside.
set -euo pipefail
GS=${1:-/usr/local/bin/gearshift}
CONFIG=${2:-/etc/gearshift/gearshift.toml}
REPO=$(cd "$(dirname "$0")/.." && pwd)
gs() { "$GS" --config "$CONFIG" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "gearshift init (config $CONFIG)"
gs init
root=$(sed -n 's/^data_root = "\(.*\)"/\1/p' "$CONFIG")
port=$(sed -n 's/^ssh_port = \([0-9]*\)/\1/p' "$CONFIG")
user=$(sed -n 's/^ssh_user = "\(.*\)"/\1/p' "$CONFIG")
say "gearshift daemon (the node's own sshd on port $port)"
if [ -f "$root/run/daemon.pid" ] && kill -0 "$(cat "$root/run/daemon.pid")" 2>/dev/null; then
  echo "already running (pid $(cat "$root/run/daemon.pid"))"
elif command -v systemctl >/dev/null && [ -d /run/systemd/system ] && [ -f /etc/systemd/system/gearshift.service ]; then
  systemctl start gearshift
else
  mkdir -p "$root/logs"
  nohup "$GS" --config "$CONFIG" daemon >>"$root/logs/daemon.log" 2>&1 &
  echo $! >"$root/run/daemon.pid"
  echo "started (pid $!, log $root/logs/daemon.log)"
fi
# Ready once sshd completes a key exchange (a bare TCP connect would count as a client that
# never logged in, which OpenSSH >= 9.8 may penalise).
for _ in $(seq 100); do ssh-keyscan -T 5 -t ed25519 -p "$port" 127.0.0.1 2>/dev/null | grep -q ssh-ed25519 && break; sleep 0.1; done

# After the daemon: doctor also checks the running node (daemon, its ports, sshd).
say "gearshift doctor"
gs doctor || echo "(doctor reported something missing: see the fix column)"

# A demo user with its own key (kept in the data root; yours: `gearshift user add NAME --key FILE`).
key="$root/demo-key"
[ -f "$key" ] || ssh-keygen -q -t ed25519 -N '' -C gearshift-demo -f "$key"
gs user show demo >/dev/null 2>&1 || gs user add demo --key "$key.pub"
export GIT_SSH_COMMAND="ssh -i $key -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
remote="ssh://$user@127.0.0.1:$port/demo.git"

if ! gs app show demo >/dev/null 2>&1; then
  say "ssh -p $port $user@127.0.0.1 app create demo --cartridge python"
  $GIT_SSH_COMMAND -p "$port" "$user@127.0.0.1" app create demo --cartridge python
fi
say "git push $remote main   (examples/python-flaskless)"
src=$(mktemp -d)
cp -a "$REPO/examples/python-flaskless/." "$src/"
git -C "$src" init -q -b main
git -C "$src" add -A
git -C "$src" -c user.name=demo -c user.email=demo@localhost commit -qm "demo $(date -u +%FT%TZ)"
git -C "$src" push --force "$remote" main
rm -rf "$src"

say "inside the gear: gearshift run demo -- sh -c 'id; hostname; ps -ef; ...'"
gs run demo -- sh -c 'id; echo "hostname: $(hostname)"; ps -ef; grep -E "^(CapEff|NoNewPrivs|Seccomp):" /proc/self/status'
ip=$(gs app show demo --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["gears"][0]["ip"])')
http=$(sed -n 's/^http_port = \([0-9]*\)/\1/p' "$CONFIG")
domain=$(sed -n 's/^domain = "\(.*\)"/\1/p' "$CONFIG")
url="http://demo.$domain:$http/"
[ "$http" = 80 ] && url="http://demo.$domain/"
say "the app through the router: curl $url"
for _ in $(seq 50); do curl -fsS --resolve "demo.$domain:$http:127.0.0.1" "$url" 2>/dev/null && break; sleep 0.2; done
say "gearshift app show demo"
gs app show demo
cat <<EOT

gearshift is running on this host. The demo app answers at $url
Its git remote:  $remote   (key: $key)
Try:
  export GIT_SSH_COMMAND="ssh -i $key"
  git clone $remote && cd demo && (edit app.py) && git commit -am change && git push
  ssh -i $key -p $port $user@127.0.0.1 logs demo -n 20
  ssh -i $key -t -p $port $user@127.0.0.1 shell demo
  sudo gearshift deploy list demo ; sudo gearshift rollback demo
  sudo gearshift user add alice --key ~/.ssh/id_ed25519.pub
EOT
