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
# add-ons: postgresql (its host cluster, if the package starts one, stays on 127.0.0.1:5432;
# each add-on runs its own postgres in its gear, on the gear's address)
ls /usr/lib/postgresql/*/bin/initdb /usr/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# mariadb and redis add-ons likewise (a host service the package starts stays on 127.0.0.1)
ls /usr/sbin/mariadbd /usr/libexec/mariadbd >/dev/null 2>&1 || need+=(mariadb-server)
[ -x /usr/bin/redis-server ] || need+=(redis-server)
have secilc || need+=(secilc)   # make selinux-check: compiles selinux/gearshift.cil
if [ "${#need[@]}" -eq 0 ]; then exit 0; fi
if have apt-get; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
elif have dnf; then
  fix=()
  for p in "${need[@]}"; do
    case "$p" in iproute2) fix+=(iproute iproute-tc);; postgresql) fix+=(postgresql-server);; redis-server) fix+=(redis);; openssh-client) fix+=(openssh-clients);; *) fix+=("$p");; esac
  done
  dnf install -y -q "${fix[@]}"
else
  echo "gearshift: cannot install ${need[*]}: no apt-get or dnf on this host" >&2
  exit 1
fi
