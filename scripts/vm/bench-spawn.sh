#!/bin/sh
# In the guest: median wall time of `gearshift run APP -- /bin/true` with SELinux labelling on
# and off (GEARSHIFT_BENCH_NO_SELINUX=1, a benchmark-only switch). Usage: bench-spawn.sh BIN CARTRIDGES N
set -eu
BIN=$1 CART=$2 N=${3:-100}
R=/tmp/gs-bench
cleanup() { "$BIN" --config $R.toml node destroy --confirm gsbench >/dev/null 2>&1 || true; rm -rf $R $R.toml; }
cleanup
"$BIN" --config $R.toml init --root $R --bridge gsbench --subnet 10.214.0.0/24 --uids 470000-470099 \
  --http-port 21000 --ssh-port 21001 --cartridges "$CART" --disk-image-size 3G >/dev/null
trap cleanup EXIT
"$BIN" --config $R.toml app create on --cartridge python >/dev/null
GEARSHIFT_BENCH_NO_SELINUX=1 "$BIN" --config $R.toml app create off --cartridge python >/dev/null
# cgroup v2 evidence: the controllers enabled down to the node's parent, and the gear's limits
P=$(sed -n 's/^cgroup_parents = \["\(.*\)"\]/\1/p' $R/node.toml)
echo "cgroup node parent: $P"
d=$P; while [ "$d" != /sys/fs ] && [ -n "$d" ]; do
  [ -f "$d/cgroup.subtree_control" ] && echo "  $d: subtree_control=[$(cat "$d/cgroup.subtree_control")] procs=$(wc -l < "$d/cgroup.procs")"
  d=$(dirname "$d")
done
for f in memory.max memory.swap.max pids.max cpu.max cpu.weight io.weight; do
  echo "  gear on-0 $f = $(tr '\n' ' ' < "$P/on-0/$f")"
done
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.2f ms (min %.2f, max %.2f, n=%d)", m, a[1], a[NR], NR}'; }
measure() { # app, env, relay: 1 = stdout a pipe made here (root's login range: relayed)
  i=0
  while [ $i -lt "$N" ]; do
    if [ "$3" = 1 ]; then
      s=$(date +%s%N); env $2 "$BIN" --config $R.toml run "$1" -- /bin/true </dev/null 2>/dev/null | cat; e=$(date +%s%N)
    else
      s=$(date +%s%N); env $2 "$BIN" --config $R.toml run "$1" -- /bin/true </dev/null >/dev/null 2>&1; e=$(date +%s%N)
    fi
    echo "$(( (e - s) / 1000 ))" | awk '{print $1/1000}'
    i=$((i + 1))
  done | median
}
echo "spawn labels on : $("$BIN" --config $R.toml run on -- cat /proc/self/attr/current | tr -d '\0')"
echo "spawn labels off: $(GEARSHIFT_BENCH_NO_SELINUX=1 "$BIN" --config $R.toml run off -- cat /proc/self/attr/current | tr -d '\0')"
echo "caller: $(tr -d '\0' < /proc/self/attr/current)"
echo "spawn median, labels on : $(measure on GEARSHIFT_X=1 0)"
echo "spawn median, labels off: $(measure off GEARSHIFT_BENCH_NO_SELINUX=1 0)"
echo "spawn median, labels on, stdout relayed (| cat): $(measure on GEARSHIFT_X=1 1)"
echo "spawn median, labels off, stdout | cat          : $(measure off GEARSHIFT_BENCH_NO_SELINUX=1 1)"
