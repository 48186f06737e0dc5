#!/usr/bin/env bash
# `sudo make run`: initialise this host as a gearshift node (idempotent), create a demo app,
# show what the host offers and what a gear looks like from inside.
set -euo pipefail
GS=${1:-/usr/local/bin/gearshift}
CONFIG=${2:-/etc/gearshift/gearshift.toml}
gs() { "$GS" --config "$CONFIG" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "gearshift init (config $CONFIG)"
gs init
say "gearshift doctor"
gs doctor || echo "(doctor reported something missing: see the fix column)"
if ! gs app show demo >/dev/null 2>&1; then
  say "gearshift app create demo --cartridge python"
  gs app create demo --cartridge python
fi
say "inside the gear: gearshift run demo -- sh -c 'id; hostname; ps -ef; ...'"
gs run demo -- sh -c 'id; echo "hostname: $(hostname)"; ps -ef; grep -E "^(CapEff|NoNewPrivs|Seccomp):" /proc/self/status; echo; echo "mounts:"; grep -E " / | /home| /tmp " /proc/self/mountinfo | cut -d" " -f5,6'
say "a web server in the gear, reached from the host through the gear's own address"
ip=$(gs app show demo --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["gears"][0]["ip"])')
if ! curl -fsS -o /dev/null "http://$ip:8080/" 2>/dev/null; then
  gs run demo -- sh -c 'cd ~/app-root/repo && echo "<h1>hello from gear $(hostname)</h1>" > index.html && nohup python3 -m http.server 8080 >/dev/null 2>&1 &'
fi
for _ in $(seq 50); do curl -fsS "http://$ip:8080/" 2>/dev/null && break; sleep 0.1; done
say "app show demo"
gs app show demo
cat <<EOT

gearshift is running on this host. Try:
  sudo gearshift app list
  sudo gearshift run demo -- bash            # a shell inside the gear
  sudo gearshift app create shop --cartridge python --profile medium
  sudo gearshift user add alice --key ~/.ssh/id_ed25519.pub
  curl http://$ip:8080/                      # the demo gear's web server
  sudo gearshift app destroy demo --confirm demo
EOT
