#!/usr/bin/env bash
# Installs what `make vm-test` needs on the host: qemu-system-x86, debootstrap, e2fsprogs,
# xfsprogs, openssh-client, python3. Idempotent. Exit 0 when everything is present, 1 when it
# cannot be installed (the caller then skips with the reason printed here).
set -euo pipefail
have() { command -v "$1" >/dev/null 2>&1; }
if have qemu-system-x86_64 && have debootstrap && have mkfs.xfs && have mkfs.ext4 && have ssh && have python3; then
  exit 0
fi
if ! have apt-get; then
  echo "vm-test: cannot install qemu/debootstrap: no apt-get on this host" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
extra=()
# A qemu-utils from <codename>-backports Breaks the stable qemu-system-common (seen on the
# bookworm CI machines: qemu-utils 10.0 bpo), so qemu-system-x86 must come from backports too.
if dpkg-query -W -f '${Version}' qemu-utils 2>/dev/null | grep -q bpo; then
  echo "deb http://deb.debian.org/debian ${codename}-backports main" > /etc/apt/sources.list.d/gearshift-vm-bpo.list
  extra=(-t "${codename}-backports")
fi
apt-get update -qq || { echo "vm-test: apt-get update failed" >&2; exit 1; }
apt-get install -y -qq --no-install-recommends "${extra[@]}" qemu-system-x86 >/dev/null \
  || { echo "vm-test: cannot install qemu-system-x86" >&2; exit 1; }
# Only qemu (and what it depends on) comes from backports: the rest from the host's own release,
# so a vm-test never upgrades the host's OpenSSH (bookworm-backports carries 10.0) as a side effect.
apt-get install -y -qq --no-install-recommends debootstrap e2fsprogs xfsprogs openssh-client python3 >/dev/null \
  || { echo "vm-test: cannot install debootstrap/e2fsprogs/xfsprogs" >&2; exit 1; }
