#!/usr/bin/env bash
# Installs every host package gearshift and its tests need (Debian/Ubuntu or Fedora/RHEL).
# Idempotent: does nothing when everything is present.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have git || need+=(git)
have ip || need+=(iproute2)
have tc || need+=(iproute2)
have nft || need+=(nftables)
have mkfs.btrfs || need+=(btrfs-progs)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
have ssh || need+=(openssh-client)
have rsync || need+=(rsync)          # rsync over SSH into gears (and its tests)
have useradd || need+=(passwd)      # the SSH login account
have curl || need+=(curl)
[ -x /usr/bin/python3 ] || need+=(python3)   # gears see /usr, not a pyenv
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
[ -x /usr/bin/node ] || need+=(nodejs npm)
have ps || need+=(procps)
have readelf || need+=(binutils)
have script || need+=(bsdutils)
have losetup || need+=(util-linux)
have setpriv || need+=(util-linux)
# add-ons: postgresql (each add-on runs its own postgres in its gear, on the gear's address)
ls /usr/lib/postgresql/*/bin/initdb /usr/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# mariadb and redis add-ons likewise (the packages' own services are kept stopped: below)
ls /usr/sbin/mariadbd /usr/libexec/mariadbd >/dev/null 2>&1 || need+=(mariadb-server)
[ -x /usr/bin/redis-server ] || need+=(redis-server)
have secilc || need+=(secilc)   # make selinux-check: compiles selinux/gearshift.cil
have promtool || need+=(prometheus)   # tests/observe.rs: promtool check metrics on /metrics
have chromium || need+=(chromium)     # tests/observe.rs: the dashboard in headless Chromium
have pebble || need+=(pebble)         # tests/acme.rs: Let's Encrypt's ACME test server
have openssl || need+=(openssl)       # tests/acme.rs: pebble's own test CA
have c++ || need+=(g++)         # make fuzz: libFuzzer is C++
if [ "${#need[@]}" -eq 0 ]; then exit 0; fi
# The services some of these packages bring (postgresql, prometheus, ...) are not gearshift's:
# each add-on runs its own server in its gear, and promtool is only a checker. Debian starts a
# package's service on install: a policy-rc.d (when the host has none) keeps them stopped, and
# the ones this run installed are disabled, so the host gains no listening port and no daemon.
services=(postgresql prometheus mariadb redis-server)
if have apt-get; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && policy=1
  fi
  rc=0
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || rc=$?
  [ -z "$policy" ] || rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || exit "$rc"
elif have dnf; then
  fix=()
  for p in "${need[@]}"; do
    case "$p" in iproute2) fix+=(iproute iproute-tc);; prometheus) fix+=(golang-github-prometheus);; postgresql) fix+=(postgresql-server);; redis-server) fix+=(redis);; openssh-client) fix+=(openssh-clients);; g++) fix+=(gcc-c++);; *) fix+=("$p");; esac
  done
  dnf install -y -q "${fix[@]}"   # Fedora enables no service on install
else
  echo "gearshift: cannot install ${need[*]}: no apt-get or dnf on this host" >&2
  exit 1
fi
# Disable (never start at boot) the services of the packages this run installed.
if have systemctl; then
  for s in "${services[@]}"; do
    for p in "${need[@]}"; do
      case "$p" in "$s"*) systemctl disable --now "$s" >/dev/null 2>&1 || true;; esac
    done
  done
fi
