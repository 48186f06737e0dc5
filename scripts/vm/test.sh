#!/usr/bin/env bash
# `make vm-test`: runs the foundation (isolation, limits, destroy, quota, SELinux), CLI, SSH,
# deploy and router test suites inside the test VM
# (SELinux enforcing, cgroup v2, ext4/xfs quota; see vm.sh), brings back the results and the
# guest's audit log (target/vm-test/), measures the spawn cost of SELinux labelling, and prints
# a summary. Skips (exit 0, reason printed) when qemu cannot be installed or we are not root.
#
# The repository is shared read-only over 9p at the same absolute path inside the guest, so the
# compile-time paths in the test binaries (CARGO_BIN_EXE_gearshift, CARGO_MANIFEST_DIR) resolve.
# VM_TESTS="isolation limits ..." picks the test binaries; VM_TEST_ARGS passes filter/flags.
set -euo pipefail
HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=$REPO/target/vm-test
VM=$HERE/vm.sh
TESTS=${VM_TESTS:-selinux isolation limits destroy quota_fs cli ssh deploy router}
CARGO=${CARGO:-cargo}

skip() { echo "vm-test: SKIPPED: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, chroot, loop devices)"
"$HERE/host-deps.sh" || skip "qemu-system-x86/debootstrap cannot be installed here"
[ -e /dev/loop-control ] || skip "no loop devices"

rm -rf "$OUT"; mkdir -p "$OUT"
T0=$SECONDS
cd "$REPO"
$CARGO build --release --quiet
$CARGO test --no-run --message-format=json --quiet 2>/dev/null > "$OUT/cargo-test.json"
declare -A BIN
for t in $TESTS; do
  BIN[$t]=$(python3 - "$OUT/cargo-test.json" "$t" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[2] \
            and m["target"]["kind"] == ["test"] and m.get("executable"):
        print(m["executable"])
PY
)
  [ -n "${BIN[$t]}" ] || { echo "vm-test: no test binary named $t" >&2; exit 1; }
done
T_BUILD=$((SECONDS - T0))

T1=$SECONDS
"$VM" build 2>&1 | tee "$OUT/image-build.log" >&2
T_IMAGE=$((SECONDS - T1))
T2=$SECONDS
vm() { "$VM" ssh "$@"; }
if [ "${VM_KEEP:-0}" = 1 ] && vm "mountpoint -q '$REPO'" 2>/dev/null; then
  echo "vm-test: reusing the running VM (VM_KEEP=1)"
  # the 9p share is mounted cache=loose: forget what the guest cached of rebuilt binaries
  vm 'echo 3 > /proc/sys/vm/drop_caches'

else
  "$VM" start "$REPO" 2>&1 | tee "$OUT/boot.log" >&2
fi
T_BOOT=$((SECONDS - T2))
# VM_KEEP=1 leaves the guest running for the next run (stop it with scripts/vm/vm.sh stop)
[ "${VM_KEEP:-0}" = 1 ] || trap '"$VM" stop' EXIT
# trixie mounts /run noexec: left so, the daemons' sshd run gearshift's copy from
# /var/lib/gearshift-ssh (src/ssh/sshd.rs, bin_dir), and the ssh/deploy/router suites prove it.
vm 'findmnt -no OPTIONS /run | grep -qw noexec && echo "/run: noexec (sshd runs gearshift from /var/lib/gearshift-ssh)"' || true
# The tests start `gearshift daemon` from root's shell (unconfined_t), so its sshd stays in
# unconfined_t (under systemd it would enter sshd_t) and asks for a login context from there,
# which Debian's contexts/users/unconfined_u does not list: sshd refuses every session in
# enforcing mode. The line an admin would add:
vm 'f=/etc/selinux/default/contexts/users/unconfined_u; grep -q "^unconfined_r:unconfined_t" $f || echo "unconfined_r:unconfined_t unconfined_r:unconfined_t" >> $f'
vm 'getenforce; id -Z; cat /sys/fs/cgroup/cgroup.controllers; findmnt -no TARGET,FSTYPE,OPTIONS /var/lib/gears; findmnt -no TARGET,FSTYPE,OPTIONS /srv/xfs' \
  > "$OUT/guest-facts.txt" || true
cat "$OUT/guest-facts.txt"
# The tests run in their own delegated scope (Delegate=yes: gearshift may enable controllers
# and move its processes into a leaf) at root's ssh login range s0-s0:c0.c1023, whose pipes a
# gear may not use: gearshift relays them (selinux/README.md, "The starter's level").
IN_SCOPE="sh $HERE/in-scope.sh"

T3=$SECONDS
FAILED=()
for t in $TESTS; do
  s=$SECONDS
  set +e
  # GEARSHIFT_TEST_OFFLINE: the guest has no route out (restricted user network), so tests
  # that install from PyPI skip that step with a reason.
  vm "cd '$REPO' && RUST_BACKTRACE=1 GEARSHIFT_TEST_OFFLINE=1 timeout 1200 $IN_SCOPE ${BIN[$t]} --test-threads=2 ${VM_TEST_ARGS:-}" \
    > "$OUT/$t.log" 2>&1
  rc=$?
  set -e
  echo "vm-test: $t: exit $rc in $((SECONDS - s))s: $(grep -E '^test result:' "$OUT/$t.log" | tail -1)"
  grep -E '^test .* (FAILED|ok)$|skipped:' "$OUT/$t.log" | sed 's/^/    /' || true
  [ $rc = 0 ] || FAILED+=("$t")
done
T_SUITE=$((SECONDS - T3))

# Spawn cost of SELinux labelling: `gearshift run APP -- /bin/true`, median of N runs.
set +e
vm "$IN_SCOPE sh '$HERE/bench-spawn.sh' '${BIN_RELEASE:-$REPO/target/x86_64-unknown-linux-gnu/release/gearshift}' '$REPO/cartridges' ${BENCH_RUNS:-60}" \
  > "$OUT/bench-spawn.txt" 2>&1
set -e
cat "$OUT/bench-spawn.txt"

vm 'cat /var/log/audit/audit.log' > "$OUT/audit.log" 2>/dev/null || true
vm 'ausearch -m avc -i 2>/dev/null' > "$OUT/avc.txt" 2>/dev/null || true
echo "vm-test: AVC denials in the guest's audit log: $(grep -c 'avc:  denied' "$OUT/audit.log" || true) (target/vm-test/audit.log)"
[ "${VM_KEEP:-0}" = 1 ] || { "$VM" stop; trap - EXIT; }

echo "vm-test: timings: host build ${T_BUILD}s, image ${T_IMAGE}s (cached when 0-2s), boot ${T_BOOT}s, suite ${T_SUITE}s, total $((SECONDS - T0))s"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "vm-test: FAILED: ${FAILED[*]} (logs in target/vm-test/)"
  exit 1
fi
echo "vm-test: all passed"
