#!/usr/bin/env bash
# The gearshift test VM: Debian trixie with SELinux enforcing (refpolicy "default", MCS, plus
# selinux/gearshift.cil), cgroup v2 with every controller, /var/lib/gears on ext4 with user and
# project quota and /srv/xfs on xfs with quota. Adapted from the project's reference recipe
# (../shared/vm/build-and-boot.sh, see its NOTES.md for why each step is there).
#
#   scripts/vm/vm.sh build          build the image unless the cached one matches the recipe
#   scripts/vm/vm.sh start [DIR]    boot it (DIR: host dir shared read-only at the same path)
#   scripts/vm/vm.sh ssh CMD...     run a command in the running guest (as root)
#   scripts/vm/vm.sh stop           power the guest off (by the pid qemu wrote, nothing else)
#   scripts/vm/vm.sh path           print the image directory for the current recipe
#
# Cache: $GEARSHIFT_VM_CACHE (default /var/cache/gearshift-vm), outside the git tree:
#   rootfs-<hash>/  the debootstrap tree, keyed by suite + packages.txt (the slow, network part)
#   img-<hash>/     disk images, kernel, ssh key, keyed by everything in the recipe (this script,
#                   packages.txt, the policy module): a policy change rebuilds in ~1 min, not 3.
# Knobs: SSH_PORT=10022 MEM=3072 CPUS=2 ACCEL=auto|kvm|tcg BOOT_TIMEOUT=240 MIRROR=...
# Needs root (debootstrap, chroot, loop mount) and scripts/vm/host-deps.sh's packages.
set -euo pipefail

HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${GEARSHIFT_VM_CACHE:-/var/cache/gearshift-vm}
SUITE=trixie
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SSH_PORT=${SSH_PORT:-10022}
MEM=${MEM:-3072}
CPUS=${CPUS:-2}
ACCEL=${ACCEL:-auto}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-240}
POLICY=$REPO/selinux/gearshift.cil

pkgs() { grep -v '^#' "$HERE/packages.txt" | grep . | paste -sd, ; }
PKG_HASH=$( { echo "$SUITE"; pkgs; } | sha256sum | cut -c1-16)
RECIPE_HASH=$(cat "$HERE/vm.sh" "$HERE/packages.txt" "$POLICY" | sha256sum | cut -c1-16)
ROOTFS=$CACHE/rootfs-$PKG_HASH
IMG=$CACHE/img-$RECIPE_HASH
RUN=$CACHE/run-$SSH_PORT

KCMDLINE="console=ttyS0 root=/dev/vda rw rootfstype=ext4 quiet \
lsm=landlock,lockdown,yama,integrity,selinux,bpf selinux=1 enforcing=1 \
systemd.unified_cgroup_hierarchy=1 systemd.show_status=0 audit_backlog_limit=8192"

ssh_opts() {
  # the key of the image the running VM booted from (it may predate a recipe change)
  local img=$IMG; [ -s "$RUN/img" ] && img=$(cat "$RUN/img")
  echo -i "$img/id_ed25519" -p "$SSH_PORT" -o BatchMode=yes -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=5 -o ServerAliveInterval=15
}
log() { echo "[vm $(date +%T)] $*" >&2; }
die() { log "ERROR: $*"; exit 201; }
# security.selinux written from the host (host SELinux is off, so the kernel stores it verbatim)
setlabel() { python3 -c 'import os,sys; os.setxattr(sys.argv[1],"security.selinux",sys.argv[2].encode()+b"\0")' "$1" "$2"; }

build_rootfs() {
  [ -d "$ROOTFS" ] && return 0
  local t0=$SECONDS tmp=$ROOTFS.tmp
  rm -rf "$tmp"; mkdir -p "$CACHE"
  log "debootstrap $SUITE into $tmp (minbase + kernel + selinux + test tools) ..."
  debootstrap --variant=minbase --arch=amd64 --include="$(pkgs)" "$SUITE" "$tmp" "$MIRROR" \
    > "$CACHE/debootstrap.log" 2>&1 || { tail -30 "$CACHE/debootstrap.log" >&2; die "debootstrap failed"; }
  rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/* "$tmp"/usr/share/doc/* \
    "$tmp"/usr/share/man/* "$tmp"/usr/share/locale/*
  mv "$tmp" "$ROOTFS"
  # older trees are no longer wanted
  for d in "$CACHE"/rootfs-*; do [ "$d" = "$ROOTFS" ] || rm -rf "$d"; done
  log "debootstrap done in $((SECONDS - t0))s"
}

build_image() {
  [ -s "$IMG/root.img" ] && return 0
  [ "$(id -u)" = 0 ] || die "the image build needs root"
  local t0=$SECONDS
  build_rootfs
  # Built under img-<hash>.tmp and renamed only after the warm-up boot, so an interrupted build
  # is never mistaken for a finished one. The warm-up uses its own port and run directory.
  local B=$CACHE/build-$RECIPE_HASH R final=$IMG
  IMG=$IMG.tmp SSH_PORT=$((SSH_PORT + 1000)) RUN=$CACHE/run-build
  rm -rf "$B" "$IMG"; mkdir -p "$B" "$IMG"
  R=$B/rootfs
  cp -a "$ROOTFS" "$R"

  echo gearvm > "$R/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 gearvm\n' > "$R/etc/hosts"
  cat > "$R/etc/fstab" <<'FSTAB'
/dev/vda   /               ext4  defaults                                   0 1
/dev/vdb   /var/lib/gears  ext4  defaults,usrquota,grpquota,prjquota,nofail 0 2
/dev/vdc   /srv/xfs        xfs   defaults,uquota,pquota,nofail              0 2
FSTAB
  mkdir -p "$R/var/lib/gears" "$R/srv/xfs"
  cat > "$R/etc/systemd/network/10-qemu.network" <<'NET'
[Match]
Name=en* eth*
[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
LinkLocalAddressing=no
IPv6AcceptRA=no
NET
  ssh-keygen -q -t ed25519 -N '' -C gearshift-vm -f "$IMG/id_ed25519"
  install -d -m 700 "$R/root/.ssh"
  install -m 600 "$IMG/id_ed25519.pub" "$R/root/.ssh/authorized_keys"
  chroot "$R" passwd -d root >/dev/null
  printf 'PermitRootLogin prohibit-password\nUseDNS no\nPasswordAuthentication no\nMaxSessions 50\nMaxStartups 50\n' \
    > "$R/etc/ssh/sshd_config.d/vmtest.conf"
  sed -i 's/^SELINUX=.*/SELINUX=enforcing/; s/^SELINUXTYPE=.*/SELINUXTYPE=default/' "$R/etc/selinux/config"
  # keep every AVC: the tests read the audit log
  sed -i 's/^num_logs.*/num_logs = 2/; s/^max_log_file .*/max_log_file = 64/' "$R/etc/audit/auditd.conf" || true
  chroot "$R" systemctl enable systemd-networkd ssh auditd >/dev/null 2>&1
  # the add-on packages' own services stay off: each add-on runs its server in its gear
  for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
           fstrim.timer man-db.timer dpkg-db-backup.timer systemd-networkd-wait-online.service \
           systemd-timesyncd.service modprobe@drm.service systemd-binfmt.service xfs_scrub_all.timer \
           systemd-network-generator.service quotaon@var-lib-gears.service nftables.service \
           postgresql.service mariadb.service redis-server.service; do
    chroot "$R" systemctl mask "$u" >/dev/null 2>&1 || true
  done
  chroot "$R" systemd-machine-id-setup >/dev/null 2>&1 || true
  printf '9p\n9pnet_virtio\nquota_v2\nloop\nbtrfs\n' > "$R/etc/modules-load.d/vmtest.conf"
  cp "$R"/boot/vmlinuz-* "$IMG/vmlinuz"
  cp "$R"/boot/initrd.img-* "$IMG/initrd.img"
  rm -f "$R"/boot/initrd.img-*
  : > "$R/etc/resolv.conf"

  # The project's policy module, installed in the chroot (seconds here, ~40 s in the TCG guest):
  # `gearshift init` then finds it installed and identical and does not reinstall it.
  log "semodule -i gearshift.cil (in the chroot) ..."
  cp "$POLICY" "$R/tmp/gearshift.cil"
  chroot "$R" semodule -i /tmp/gearshift.cil 2>&1 | grep -v 'sddm not in password' >&2 || true
  chroot "$R" semodule -l | grep -qx gearshift || die "the gearshift policy module did not install"
  # the copy `gearshift init` compares with (src/gear/isolation/selinux.rs: INSTALLED_COPY)
  install -D -m 644 "$POLICY" "$R/var/lib/gearshift-selinux/gearshift.cil"
  rm -f "$R/tmp/gearshift.cil"

  log "labelling the rootfs offline ..."
  mount -t proc proc "$R/proc"
  chroot "$R" setfiles -F -e /proc /etc/selinux/default/contexts/files/file_contexts / > "$B/setfiles.log" 2>&1 \
    || { umount "$R/proc"; tail "$B/setfiles.log" >&2; die setfiles; }
  umount "$R/proc"
  setlabel "$R/proc" system_u:object_r:proc_t:s0

  log "creating disk images ..."
  truncate -s 3G "$IMG/root.img"
  mkfs.ext4 -q -F -L root -I 256 -d "$R" "$IMG/root.img"
  local D=$B/gears-root; mkdir -p "$D"; setlabel "$D" system_u:object_r:var_lib_t:s0
  truncate -s 1G "$IMG/data-ext4.img"
  mkfs.ext4 -q -F -L gears -O quota,project -E quotatype=usrquota:grpquota:prjquota -I 256 -d "$D" "$IMG/data-ext4.img"
  truncate -s 1G "$IMG/data-xfs.img"
  mkfs.xfs -q -f -L xfsdata "$IMG/data-xfs.img"
  local M=$B/xfsmnt; mkdir -p "$M"
  if mount -o loop "$IMG/data-xfs.img" "$M" 2>/dev/null; then
    setlabel "$M" system_u:object_r:var_t:s0; umount "$M"
  fi
  rm -rf "$B"
  # warm-up boot, written back: first-mount quota work happens once, not on every boot
  log "warm-up boot ..."
  PERSIST=1 start_vm ""
  vssh 'systemctl is-system-running --wait >/dev/null; getenforce' >&2 || true
  PERSIST=1 stop_vm
  rm -rf "$final"; mv "$IMG" "$final"
  IMG=$final SSH_PORT=$((SSH_PORT - 1000)) RUN=$CACHE/run-$((SSH_PORT - 1000))
  # drop older images, except one a running VM still uses
  for d in "$CACHE"/img-*; do
    [ "$d" = "$IMG" ] || grep -qxF "$d" "$CACHE"/run-*/img 2>/dev/null || rm -rf "$d"
  done
  log "image built in $((SECONDS - t0))s ($(du -sh "$IMG" | cut -f1) on disk)"
}

qemu_pid() { [ -s "$RUN/qemu.pid" ] && cat "$RUN/qemu.pid"; }
qemu_alive() { local p; p=$(qemu_pid) && kill -0 "$p" 2>/dev/null; }
vssh() { # shellcheck disable=SC2046
  ssh $(ssh_opts) root@127.0.0.1 "$@"; }

start_vm() {
  local share=${1:-} snap=on accel=$ACCEL cpu=host t0=$SECONDS
  [ "${PERSIST:-0}" = 1 ] && snap=off
  mkdir -p "$RUN"
  qemu_alive && die "a VM is already running on port $SSH_PORT (pid $(qemu_pid)): scripts/vm/vm.sh stop"
  rm -f "$RUN/qemu.pid" "$RUN/serial.log"
  echo "$IMG" > "$RUN/img"
  local extra=()
  [ -n "$share" ] && extra=(-virtfs "local,path=$share,mount_tag=hostshare,security_model=none,readonly=on")
  if [ "$accel" = auto ]; then
    # /dev/kvm on the Firecracker CI machines is kvm_pvm, which cannot run a stock Debian kernel
    if [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ]; then accel=kvm; else accel=tcg; fi
  fi
  [ "$accel" = tcg ] && { cpu=max; accel=tcg,thread=multi,tb-size=512; }
  qemu-system-x86_64 -name gearvm -accel "$accel" -machine q35 -cpu "$cpu" -smp "$CPUS" -m "$MEM" \
    -nodefaults -no-user-config -display none \
    -kernel "$IMG/vmlinuz" -initrd "$IMG/initrd.img" -append "$KCMDLINE" \
    -drive "file=$IMG/root.img,if=virtio,format=raw,snapshot=$snap,cache=unsafe" \
    -drive "file=$IMG/data-ext4.img,if=virtio,format=raw,snapshot=$snap,cache=unsafe" \
    -drive "file=$IMG/data-xfs.img,if=virtio,format=raw,snapshot=$snap,cache=unsafe" \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$SSH_PORT-:22" -device virtio-net-pci,netdev=n0 \
    -device virtio-rng-pci "${extra[@]}" \
    -serial "file:$RUN/serial.log" -pidfile "$RUN/qemu.pid" -daemonize
  log "qemu pid $(qemu_pid) ($accel); serial log $RUN/serial.log"
  while ! vssh true 2>/dev/null; do
    qemu_alive || { tail -40 "$RUN/serial.log" >&2; die "qemu exited during boot"; }
    (( SECONDS - t0 < BOOT_TIMEOUT )) || { tail -40 "$RUN/serial.log" >&2; stop_vm; die "no ssh after ${BOOT_TIMEOUT}s"; }
    sleep 0.5
  done
  log "guest up after $((SECONDS - t0))s"
  if [ -n "$share" ]; then
    # same absolute path as on the host: test binaries carry compile-time paths (CARGO_BIN_EXE_*,
    # CARGO_MANIFEST_DIR). 9p has no refpolicy labelling: everything on it is usr_t.
    vssh "mkdir -p '$share' && mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose,context=system_u:object_r:usr_t:s0 hostshare '$share'" \
      || die "cannot mount the 9p share at $share"
  fi
}

stop_vm() {
  local p; p=$(qemu_pid) || return 0
  kill -0 "$p" 2>/dev/null || { rm -f "$RUN/qemu.pid"; return 0; }
  if [ "${PERSIST:-0}" = 1 ]; then vssh 'sync; systemctl poweroff --no-block' >/dev/null 2>&1 || true
  else vssh 'poweroff -ff' >/dev/null 2>&1 || true; fi
  for _ in $(seq 1 120); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
  if kill -0 "$p" 2>/dev/null; then log "poweroff timed out: SIGTERM $p"; kill "$p"; sleep 2; fi
  if kill -0 "$p" 2>/dev/null; then log "SIGKILL $p"; kill -9 "$p"; fi
  rm -f "$RUN/qemu.pid" "$RUN/img"
}

case "${1:-}" in
  build) build_image ;;
  start) build_image; start_vm "${2:-}" ;;
  ssh) shift; vssh "$@" ;;
  stop) stop_vm ;;
  path) echo "$IMG" ;;
  *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
