#!/usr/bin/env bash
# make bench: measured figures, not timed tests. Spawn latency of a fully isolated gear process
# (`gearshift run APP -- /bin/true`) against `unshare` and a plain fork+exec, in the same run.
set -euo pipefail
BIN=${1:-target/x86_64-unknown-linux-gnu/release/gearshift}
BIN=$(readlink -f "$BIN")
N=${N:-300}
work=$(mktemp -d /tmp/gearshift-bench.XXXXXX)
cfg="$work/node.toml"
name=gsbench
cleanup() {
  "$BIN" --config "$cfg" node destroy --confirm "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
"$BIN" --config "$cfg" init --root "$work/root" --bridge "$name" --subnet 10.213.250.0/24 \
  --uids 490000-490099 --cartridges "$(pwd)/cartridges" --disk-image-size 1G >/dev/null
"$BIN" --config "$cfg" app create bench --cartridge static >/dev/null

python3 - "$BIN" "$cfg" "$N" "$work" <<'PY'
import os, statistics, subprocess, sys, time
binary, cfg, n, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

def bench(label, argv, before=None, n=n):
    times = []
    for _ in range(n):
        if before:
            before()
        t = time.perf_counter()
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    p = lambda q: times[min(len(times) - 1, int(q * len(times)))]
    print(f"{label:58s} median {statistics.median(times):6.2f} ms   p90 {p(0.9):6.2f} ms   (n={n})")
    return statistics.median(times)

def kill_init():
    root = os.path.join(work, "root", "run", "gears")
    for g in os.listdir(root):
        try:
            pid = int(open(os.path.join(root, g, "init.pid")).read().split()[0])
            os.kill(pid, 9)
            while True:
                try:
                    st = open(f"/proc/{pid}/stat").read()
                    if st.rsplit(") ", 1)[1].startswith("Z"):
                        break
                except FileNotFoundError:
                    break
        except (FileNotFoundError, ProcessLookupError):
            pass

print("spawn latency of /bin/true (wall time from the caller, incl. its fork+exec):")
plain = bench("plain fork+exec /bin/true", ["/bin/true"])
bench("unshare --mount --pid --net --uts --ipc --fork /bin/true",
      ["unshare", "--mount", "--pid", "--net", "--uts", "--ipc", "--fork", "/bin/true"])
warm = bench("gearshift run (running gear: cgroup+6 ns+confine)", [binary, "--config", cfg, "run", "bench", "--", "/bin/true"])
cold = bench("gearshift run (cold: new init, mounts, pivot_root)", [binary, "--config", cfg, "run", "bench", "--", "/bin/true"],
             before=kill_init, n=max(20, n // 10))
print(f"gear spawn overhead over plain fork+exec: warm {warm - plain:.2f} ms, cold {cold - plain:.2f} ms")
PY
