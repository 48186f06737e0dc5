#!/usr/bin/env bash
# Compiles selinux/gearshift.cil with secilc against selinux/stub-base.cil (a stand-in for the
# refpolicy names it uses). Fails on any syntax error or unknown name. Run by `make test`.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v secilc >/dev/null; then
  if command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends secilc >/dev/null
  elif command -v dnf >/dev/null; then
    dnf install -y -q secilc
  fi
fi
command -v secilc >/dev/null || { echo "selinux-check: secilc is not installed (apt-get install secilc)" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
secilc --mls=true -o "$out/policy" -f "$out/fc" stub-base.cil gearshift.cil
echo "selinux-check: gearshift.cil compiles ($(grep -c '^(allow' gearshift.cil) allow rules)"
