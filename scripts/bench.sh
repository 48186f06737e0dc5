#!/usr/bin/env bash
# make bench: measured figures, not timed tests. Spawn latency of a fully isolated gear process
# (`gearshift run APP -- /bin/true`) against `unshare` and a plain fork+exec, in the same run.
set -euo pipefail
BIN=${1:-target/x86_64-unknown-linux-gnu/release/gearshift}
BIN=$(readlink -f "$BIN")
N=${N:-300}
work=$(mktemp -d /tmp/gearshift-bench.XXXXXX)
chmod 755 "$work"   # the SSH login user reads the node config through auth-keys
cfg="$work/node.toml"
name=gsbench
daemon_pid=
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  "$BIN" --config "$cfg" node destroy --confirm "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
"$BIN" --config "$cfg" init --root "$work/root" --bridge "$name" --subnet 10.213.250.0/24 \
  --uids 490000-490099 --http-port 18080 --ssh-port 18022 --cartridges "$(pwd)/cartridges" --disk-image-size 64G >/dev/null
"$BIN" --config "$cfg" app create bench --cartridge static >/dev/null

# ONLY=redeploy, ONLY=addons or ONLY=snapshot: just that section's figures (below).
if [ -z "${ONLY:-}" ]; then
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
fi

# What Landlock and the seccomp filters add to a start (issue 14), in one alternating run.
if [ -z "${ONLY:-}" ]; then
  N="$N" cargo test -q --release --bin gearshift confine_cost -- --ignored --nocapture 2>/dev/null | grep '^fork+exec'
fi

# Deploys over SSH: a dependency-free python app (examples/python-flaskless), from `git push`
# start until the new page is served, cold (app create + first push) and redeploy (one line).
ssh-keygen -q -t ed25519 -N '' -f "$work/key"
"$BIN" --config "$cfg" user add bench --key "$work/key.pub" >/dev/null
"$BIN" --config "$cfg" daemon >"$work/daemon.log" 2>&1 &
daemon_pid=$!
port=$(grep -E '^ssh_port' "$cfg" | tr -dc 0-9)
user=$(grep -E '^ssh_user' "$cfg" | cut -d'"' -f2)
# Ready once sshd completes a key exchange (a bare TCP connect would count as a client that
# never logged in, which OpenSSH >= 9.8 may penalise).
for _ in $(seq 100); do ssh-keyscan -T 5 -t ed25519 -p "$port" 127.0.0.1 2>/dev/null | grep -q ssh-ed25519 && break; sleep 0.1; done
if [ -z "${ONLY:-}" ]; then
python3 - "$BIN" "$cfg" "$work" "$port" "$user" "$(pwd)/examples/python-flaskless" <<'PY'
import json, os, shutil, statistics, subprocess, sys, time, urllib.request
binary, cfg, work, port, user, example = sys.argv[1:]
ssh = f"ssh -i {work}/key -p {port} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o LogLevel=ERROR"
env = dict(os.environ, GIT_SSH_COMMAND=ssh, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b")
def run(*a, cwd=None):
    subprocess.run(a, check=True, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def ip_of(app):
    out = subprocess.run([binary, "--config", cfg, "app", "show", app, "--json"], check=True, capture_output=True).stdout
    return json.loads(out)["gears"][0]["ip"]
def wait_page(ip, text, t0, limit=30):
    # Straight from the gear: the live web process is on 8080 or 8081 (zero-downtime switches).
    while time.perf_counter() - t0 < limit:
        for port in (8080, 8081):
            try:
                if text in urllib.request.urlopen(f"http://{ip}:{port}/", timeout=1).read().decode():
                    return time.perf_counter() - t0
            except Exception:
                pass
        time.sleep(0.005)
    raise SystemExit(f"page with {text!r} never appeared")
def repo(name, marker):
    d = os.path.join(work, "src", name)
    shutil.copytree(example, d)
    with open(os.path.join(d, "app.py"), "a") as f:
        f.write(f"\n# {marker}\n")
    run("git", "init", "-q", "-b", "main", cwd=d); run("git", "add", "-A", cwd=d); run("git", "commit", "-qm", "1", cwd=d)
    return d
remote = lambda app: f"ssh://{user}@127.0.0.1:{port}/{app}.git"
colds, stages = [], []
for i in range(5):
    app = f"cold{i}"
    d = repo(app, "cold")
    t0 = time.perf_counter()
    subprocess.run(ssh.split() + [f"{user}@127.0.0.1", f"app create {app} --cartridge python"], check=True, stdout=subprocess.DEVNULL)
    t_create = time.perf_counter() - t0
    run("git", "push", "-q", remote(app), "main", cwd=d)
    t_push = time.perf_counter() - t0
    colds.append(wait_page(ip_of(app), "gearshift", t0))
    stages.append((t_create, t_push - t_create))
app, d = "cold0", os.path.join(work, "src", "cold0")
ip = ip_of(app)
redeploys = []
for i in range(10):
    with open(os.path.join(d, "app.py")) as f:
        src = f.read()
    src = src.replace("Hello from gearshift", f"Hello from gearshift v{i}", 1) if i == 0 else src.replace(f"v{i-1}", f"v{i}", 1)
    with open(os.path.join(d, "app.py"), "w") as f:
        f.write(src)
    run("git", "commit", "-qam", f"v{i}", cwd=d)
    t0 = time.perf_counter()
    run("git", "push", "-q", remote(app), "main", cwd=d)
    redeploys.append(wait_page(ip, f"v{i}", t0))
bare = []
for i in range(10):
    run("git", "commit", "-q", "--allow-empty", "-m", f"b{i}", cwd=d)
    t0 = time.perf_counter()
    run("git", "push", "-q", remote(app), f"HEAD:refs/heads/bare{i}", cwd=d)
    bare.append(time.perf_counter() - t0)
med = statistics.median
print("\ndeploys over SSH (dependency-free python app, push start -> new page served):")
print(f"  cold (ssh app create + first git push), median of 5: {med(colds):.3f} s  (create {med([s[0] for s in stages]):.3f} s, push+build+start {med([s[1] for s in stages]):.3f} s)")
print(f"  redeploy of a one-line change, median of 10:          {med(redeploys):.3f} s  (min {min(redeploys):.3f}, max {max(redeploys):.3f})")
print(f"  bare git push over SSH (non-deploy branch), median:   {med(bare):.3f} s")
PY
fi

# Redeploy of a Heroku-style Flask+gunicorn app, with and without a worker (needs PyPI once).
if [ -z "${ONLY:-}" ] || [ "$ONLY" = redeploy ]; then
python3 scripts/bench_redeploy.py "$BIN" "$cfg" "$work" "$port" "$user" \
  "$(grep -E '^http_port' "$cfg" | tr -dc 0-9)" "$(pwd)/examples/heroku-flask" ||
  echo "flask redeploy figures left out: the section failed (PyPI unreachable?)"
fi
[ "${ONLY:-}" = redeploy ] && exit 0

# Idle and wake: an idle python app's first request through the router (held until it answers),
# against the app's own start time (bin/start exec -> listening, timed inside the awake gear on a
# spare port, polled every 0.5 ms); and the daemon's memory per idle app (RSS and PSS with N idle
# apps minus with none of them).
if [ -z "${ONLY:-}" ]; then
python3 - "$BIN" "$cfg" "$daemon_pid" "$(grep -E '^http_port' "$cfg" | tr -dc 0-9)" <<'PY'
import http.client, statistics, subprocess, sys, time
binary, cfg, daemon, http_port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
gs = lambda *a: subprocess.run([binary, "--config", cfg, *a], check=True, capture_output=True, text=True).stdout
def get(host):
    c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=60)
    c.request("GET", "/", headers={"Host": host})
    r = c.getresponse(); body = r.read(); c.close()
    return r.status, body
assert get("cold0.localhost")[0] == 200
START = r"""
import os, socket, subprocess, sys, time
env = dict(os.environ, PORT="9099", OPENSHIFT_PYTHON_PORT="9099")
t = time.perf_counter()
p = subprocess.Popen(["/opt/gearshift/cartridge/bin/start"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while True:
    try:
        socket.create_connection(("127.0.0.1", 9099), timeout=1).close(); break
    except OSError:
        time.sleep(0.0005)
print((time.perf_counter() - t) * 1000)
p.kill(); p.wait()
"""
wakes, starts = [], []
for i in range(10):
    gs("app", "idle", "cold0")
    t = time.perf_counter()
    status, body = get("cold0.localhost")
    wakes.append((time.perf_counter() - t) * 1000)
    assert status == 200 and b"gearshift" in body, (status, body[:200])
    starts.append(float(gs("run", "cold0", "--", "python3", "-c", START).strip().splitlines()[-1]))
med = statistics.median
print("\nidle and wake (dependency-free python app):")
print(f"  first request to an idle app, through the router:  median {med(wakes):7.1f} ms  (min {min(wakes):.1f}, max {max(wakes):.1f})")
print(f"  the app's own start time (exec -> listening):       median {med(starts):7.1f} ms  (min {min(starts):.1f}, max {max(starts):.1f})")
over = sorted(w - s for w, s in zip(wakes, starts))
print(f"  wake overhead (wake minus the same round's start):  median {med(over):7.1f} ms  (goal <= 50 ms)")

def mem():
    f = {}
    for line in open(f"/proc/{daemon}/status"):
        k, _, v = line.partition(":")
        f[k] = v.strip()
    pss = sum(int(l.split()[1]) for l in open(f"/proc/{daemon}/smaps_rollup") if l.startswith("Pss:"))
    return int(f["VmRSS"].split()[0]), pss, int(f["Threads"])
N = 30
time.sleep(1)
before = mem()
for i in range(N):
    gs("app", "create", f"idle{i}", "--cartridge", "static")
    gs("app", "idle", f"idle{i}")
for i in range(N):   # every idle app is routed (wakes on its first request) before we read memory
    status, _ = get(f"idle{i}.localhost")
    gs("app", "idle", f"idle{i}")
time.sleep(2)
after = mem()
print(f"  daemon memory per idle app ({N} idle apps, each woken once and idled again):")
print(f"    RSS {before[0]} -> {after[0]} KiB: {(after[0] - before[0]) / N:.1f} KiB/app;  PSS {before[1]} -> {after[1]} KiB: "
      f"{(after[1] - before[1]) / N:.1f} KiB/app;  threads {before[2]} -> {after[2]}  (goal <= 1024 KiB/app)")
PY
fi

# Add-ons, for each kind the host offers (postgresql, mariadb, redis): `addon create` to the
# first accepted connection (the command returns once the service accepts on the gear's address
# with the add-on's user made; for postgresql also the first query with the add-on's password,
# through psql), and the memory of an idle add-on gear (RSS and PSS summed over every process of
# the gear's uid). Guarded: a host without a kind skips it; a failure here leaves the figures
# above intact.
addon_bench() {
python3 - "$BIN" "$cfg" <<'PY'
import json, os, shutil, statistics, subprocess, sys, time
binary, cfg = sys.argv[1], sys.argv[2]
gs = lambda *a: subprocess.run([binary, "--config", cfg, *a], check=True, capture_output=True, text=True).stdout
psql = shutil.which("psql")
med = statistics.median
offered = {"postgresql": ["/usr/lib/postgresql", "/usr/bin/initdb"], "mariadb": ["/usr/sbin/mariadbd", "/usr/libexec/mariadbd"],
           "redis": ["/usr/bin/redis-server"]}
K = 4   # the first create of a kind on a node also makes the node's template (initdb, mariadb-install-db: once)
for kind, paths in offered.items():
    if not any(os.path.exists(p) for p in paths):
        print(f"\nadd-ons ({kind}): not offered on this host (make deps)")
        continue
    creates, queries = [], []
    for i in range(K):
        name = f"{kind[:5]}bench{i}"
        t = time.perf_counter()
        gs("addon", "create", kind, name)
        creates.append(time.perf_counter() - t)
        a = json.loads(gs("addon", "show", name, "--json"))
        if psql and kind == "postgresql":
            env = dict(os.environ, PGPASSWORD=a["password"], PGCONNECT_TIMEOUT="2")
            while subprocess.run([psql, "-h", a["gears"][0]["ip"], "-U", a["username"], "-d", a["database"], "-Atc", "select 1"],
                                 env=env, capture_output=True).returncode != 0:
                time.sleep(0.01)
            queries.append(time.perf_counter() - t)
    time.sleep(5)
    uid = a["gears"][0]["uid"]
    rss = pss = procs = 0
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            st = dict(l.split(":", 1) for l in open(f"/proc/{p}/status"))
            if int(st["Uid"].split()[1]) != uid:
                continue
            rss += int(st["VmRSS"].split()[0])
            pss += sum(int(l.split()[1]) for l in open(f"/proc/{p}/smaps_rollup") if l.startswith("Pss:"))
            procs += 1
        except (FileNotFoundError, KeyError, ProcessLookupError):
            pass
    print(f"\nadd-ons ({kind}):")
    first, rest = creates[0], creates[1:]
    print(f"  addon create -> first accepted connection:  median {med(rest):.2f} s  (min {min(rest):.2f}, max {max(rest):.2f}; goal <= 3 s)")
    print(f"    the node's first add-on of the kind (also makes its template, if any): {first:.2f} s")
    if queries:
        print(f"  addon create -> first query (psql, scram):  median {med(queries[1:]):.2f} s")
    print(f"  idle add-on gear memory: RSS {rss} KiB, PSS {pss} KiB over {procs} processes")
    for i in range(K):
        name = f"{kind[:5]}bench{i}"
        gs("addon", "destroy", name, "--confirm", name)
PY
}
if [ -z "${ONLY:-}" ] || [ "$ONLY" = addons ]; then
  addon_bench || echo "add-on figures left out: the section failed (see its error above)"
fi

# Snapshots: `snapshot save` and `snapshot restore --as` of an app with 100 MB of data (random,
# so gzip cannot shrink it: the worst case) against `tar` of the same files in the same gear
# (`run APP -- tar -c` to a file, and `tar -x` of that tar into a fresh directory there); every
# side writes its output to a file and syncs it (ONLY=snapshot: just this section).
snapshot_bench() {
python3 - "$BIN" "$cfg" "$work" <<'PY'
import os, statistics, subprocess, sys, time
binary, cfg, work = sys.argv[1], sys.argv[2], sys.argv[3]
gs = lambda *a, **kw: subprocess.run([binary, "--config", cfg, *a], check=True, **kw)
gs("run", "bench", "--", "sh", "-c", "head -c 100M /dev/urandom > ~/app-root/data/blob && sync", stdin=subprocess.DEVNULL)
def timed(f):
    t = time.perf_counter(); f(); return time.perf_counter() - t
snap = os.path.join(work, "bench.tar.gz")
def save():
    with open(snap, "wb") as out:
        gs("snapshot", "save", "bench", stdout=out, stdin=subprocess.DEVNULL)
        os.fsync(out.fileno())
def restore():
    with open(snap, "rb") as inp:
        gs("snapshot", "restore", "bench", "--as", "benchcopy", stdin=inp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
# Both sides write a file and sync it; 3 rounds, alternated.
R = 3
saves, restores, tar_cs, tar_xs = [], [], [], []
for r in range(R):
    tar_cs.append(timed(lambda: gs("run", "bench", "--", "sh", "-c", "tar -cf ~/app-root/bench.tar -C ~/app-root/data . && sync",
                                   stdin=subprocess.DEVNULL)))
    saves.append(timed(save))
    tar_xs.append(timed(lambda: gs("run", "bench", "--", "sh", "-c", "rm -rf ~/x && mkdir -p ~/x && tar -xf ~/app-root/bench.tar -C ~/x && sync",
                                   stdin=subprocess.DEVNULL)))
    restores.append(timed(restore))
    gs("app", "destroy", "benchcopy", "--confirm", "benchcopy", stdout=subprocess.DEVNULL)
med = statistics.median
fmt = lambda xs: " ".join(f"{x:.2f}" for x in xs)
size = os.path.getsize(snap) >> 20
save, restore, tar_c, tar_x = med(saves), med(restores), med(tar_cs), med(tar_xs)
print(f"\nsnapshots (100 MB of random data in app-root/data, {size} MiB snapshot; median of {R} rounds, each written to a file and synced):")
print(f"  snapshot save:    {save:.2f} s   vs tar -c of the same files {tar_c:.2f} s  ({save / tar_c:.1f}x; goal <= 2x)  [save {fmt(saves)}; tar {fmt(tar_cs)}]")
print(f"  snapshot restore: {restore:.2f} s   vs tar -x {tar_x:.2f} s  ({restore / tar_x:.1f}x; goal <= 2x)  [restore {fmt(restores)}; tar {fmt(tar_xs)}]")
gs("run", "bench", "--", "sh", "-c", "rm -rf ~/x ~/app-root/bench.tar ~/app-root/data/blob", stdin=subprocess.DEVNULL)
PY
}
if [ -z "${ONLY:-}" ] || [ "$ONLY" = snapshot ]; then
  snapshot_bench || echo "snapshot figures left out: the section failed (see its error above)"
fi
