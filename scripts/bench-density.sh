#!/usr/bin/env bash
# make bench-density: how the node's figures grow with the number of apps. On one throw-away node,
# apps of mixed cartridges (python stdlib, static, node without dependencies) are created and
# deployed with real `git push`es over SSH, up to each N in turn (N="50 100 250 500"; a 5-app
# step comes first as the baseline), and at each N the figures are measured (scripts/bench_density.py).
# Measured, not asserted. Env: N (the list, default "50 100 250 500"), PAR (parallel pushes, 4),
# IDLE (idle_after_secs for the bench, 20), MIX_SECS (the request mix's length per N, 60).
# Usage: scripts/bench-density.sh [BIN]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(readlink -f "${1:-target/x86_64-unknown-linux-gnu/release/gearshift}")
N_LIST=${N:-50 100 250 500}
max=0
for n in $N_LIST; do [ "$n" -gt "$max" ] && max=$n; done
[ "$max" -le 1000 ] || { echo "bench-density: N at most 1000 (one /22 subnet, 1000 uids)"; exit 1; }
if ! command -v wrk >/dev/null; then   # the router's throughput (as scripts/bench-router.sh)
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi

# A slot the tests' nodes also take (tests/common: /tmp/gearshift-test-slots/SLOT.lock, held for
# the run), so the ports (20000 + 10 * SLOT ...) clash with no test node. The subnet and uids
# lie outside the tests' (10.213.SLOT.0/24, 460000 + 200 * SLOT): 10.215.(4 * SLOT).0/22 and
# 450000 + 1000 * (SLOT % 10); `init` refuses any other clash. The node is sized for the largest
# N (--gears), so its `node up` raises no kernel limit a node of that size does not need.
mkdir -p /tmp/gearshift-test-slots
slot=
for s in $(seq 0 63); do
  exec 9>>"/tmp/gearshift-test-slots/$s.lock"
  if flock -n 9; then slot=$s; break; fi
  exec 9>&-
done
[ -n "$slot" ] || { echo "bench-density: no free node slot in /tmp/gearshift-test-slots"; exit 1; }
name="gsd$slot"
work=$(mktemp -d /tmp/gearshift-bench-density.XXXXXX)
chmod 755 "$work"   # the SSH login user reads the node config through auth-keys
cfg="$work/node.toml"
uid0=$((450000 + 1000 * (slot % 10)))
cleanup() {
  set +e   # every step runs, whatever failed before it (the daemon may be gone already)
  [ -f "$work/daemon.pid" ] && kill "$(cat "$work/daemon.pid")" 2>/dev/null
  "$BIN" --config "$cfg" node destroy --confirm "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
"$BIN" --config "$cfg" init --root "$work/root" --bridge "$name" --subnet "10.215.$((4 * slot)).0/22" \
  --uids "$uid0-$((uid0 + 999))" --http-port $((20000 + 10 * slot)) --ssh-port $((20001 + 10 * slot)) \
  --cartridges "$(pwd)/cartridges" --disk-image-size 40G --gears $((max + 10)) >/dev/null
# Automatic idling after a short time, so the bench sees idle apps without waiting long.
sed -i "s/^idle_after_secs = .*/idle_after_secs = ${IDLE:-20}/" "$cfg"
grep -q "^idle_after_secs = ${IDLE:-20}$" "$cfg" || { echo "bench-density: cannot set idle_after_secs in $cfg"; exit 1; }
# The gears' quotas (1 GiB each for the default profile) overcommit the sparse image: the
# bench's apps use ~150 KiB each, and disk admission would refuse the 41st app of a 40G image.
sed -i "s/^overcommit = false$/overcommit = true/" "$cfg"
grep -q "^overcommit = true$" "$cfg" || { echo "bench-density: cannot set disk.overcommit in $cfg"; exit 1; }
echo "node $name: slot $slot, $(grep -E '^(subnet|uid_min|uid_max|http_port|ssh_port) ' "$cfg" | tr '\n' ' ')"
python3 scripts/bench_density.py "$BIN" "$cfg" "$work" "$name" "$N_LIST"
