#!/usr/bin/env python3
"""The driver of `make bench-density` (scripts/bench-density.sh makes the node): for each N in
turn, apps up to N are created and deployed over SSH, then the node is measured; the table is
printed at the end (and after each N, so a cut-short run still shows what it measured).
Arguments: BIN CONFIG WORKDIR NODE_NAME "N1 N2 ..."."""

import concurrent.futures as cf
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import tomllib

BIN, CFG, WORK, NODE, NS = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
PAR = int(os.environ.get("PAR", "4"))
MIX_SECS = float(os.environ.get("MIX_SECS", "60"))
REBOOT_LIMIT = float(os.environ.get("REBOOT_LIMIT", "300"))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
conf = tomllib.load(open(CFG, "rb"))
ROOT, HTTP, SSH_PORT, USER = conf["data_root"], conf["http_port"], conf["ssh_port"], conf["ssh_user"]
IDLE = conf["idle_after_secs"]
CARTS = [("python", "python-flaskless"), ("static", "static"), ("nodejs", "nodejs")]
KEY = os.path.join(WORK, "key")
SSH = (f"ssh -i {KEY} -p {SSH_PORT} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
       "-o BatchMode=yes -o IdentitiesOnly=yes -o LogLevel=ERROR")
GIT_ENV = dict(os.environ, GIT_SSH_COMMAND=SSH, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b",
               GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b")
daemon = None


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def gs(*args, check=True):
    return subprocess.run([BIN, "--config", CFG, *args], check=check, capture_output=True, text=True).stdout


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def timed(f, *a):
    t = time.perf_counter()
    r = f(*a)
    return time.perf_counter() - t, r


def get(host, timeout=60):
    c = http.client.HTTPConnection("127.0.0.1", HTTP, timeout=timeout)
    try:
        c.request("GET", "/", headers={"Host": f"{host}.localhost"})
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


def start_daemon():
    global daemon
    path = os.path.join(WORK, "daemon.log")
    out = open(path, "a")
    start = os.path.getsize(path)
    daemon = subprocess.Popen([BIN, "--config", CFG, "daemon"], stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    open(os.path.join(WORK, "daemon.pid"), "w").write(str(daemon.pid))
    t = time.perf_counter()
    while time.perf_counter() - t < 600:
        if daemon.poll() is not None:
            raise SystemExit(f"daemon exited: see {WORK}/daemon.log")
        with open(path) as f:
            f.seek(start)
            ready = "' ready: sshd on port" in f.read()
        if ready:
            return time.perf_counter() - t
        time.sleep(0.05)
    raise SystemExit("daemon not ready within 600 s")


def stop_daemon():
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(60)


def app_repo(name, i):
    cart, example = CARTS[i % len(CARTS)]
    d = os.path.join(WORK, "src", name)
    shutil.copytree(os.path.join(REPO, "examples", example), d)
    if cart == "static":
        with open(os.path.join(d, "index.html"), "a") as f:
            f.write(f"<!-- app {name} -->\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "1"]):
        subprocess.run(["git", *args], cwd=d, env=GIT_ENV, check=True, capture_output=True)
    return cart, d


def deploy(i):
    """ssh app create + git push (returns once the push is live); seconds."""
    name = f"a{i}"
    cart, d = app_repo(name, i)
    t = time.perf_counter()
    c = subprocess.run(SSH.split() + [f"{USER}@127.0.0.1", f"app create {name} --cartridge {cart}"],
                       capture_output=True, text=True)
    if c.returncode != 0:
        raise RuntimeError(f"app create {name} failed: {c.stderr[-2000:]}")
    p = subprocess.run(["git", "push", "-q", f"ssh://{USER}@127.0.0.1:{SSH_PORT}/{name}.git", "main"],
                       cwd=d, env=GIT_ENV, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"push of {name} failed: {p.stderr[-2000:]}")
    return time.perf_counter() - t


def apps_json():
    return json.loads(gs("app", "list", "--json"))


def wait_all_idle(n, limit):
    """Until automatic idling has idled every app (bounded); seconds, or None."""
    t = time.perf_counter()
    while time.perf_counter() - t < limit:
        if sum(1 for a in apps_json() if a.get("idle")) >= n:
            return time.perf_counter() - t
        time.sleep(1)
    return None


def proc_status(pid):
    f = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status"))
    return int(f["VmRSS"].split()[0]), int(f["Threads"])


def cgroup_parents():
    return tomllib.load(open(os.path.join(ROOT, "node.toml"), "rb"))["cgroup_parents"]


def gears_memory_kib():
    """Memory charged to the node's gears (cgroup v2 memory.current or v1 usage_in_bytes)."""
    for p in cgroup_parents():
        for f in ("memory.current", "memory.usage_in_bytes"):
            if os.path.exists(os.path.join(p, f)):
                return int(open(os.path.join(p, f)).read()) // 1024
    return -1


def slab_kib():
    m = dict(l.split(":", 1) for l in open("/proc/meminfo"))
    return int(m["Slab"].split()[0])


def kill_gears():
    """Every process in the node's cgroups, SIGKILLed (a reboot, for the gears)."""
    pids = set()
    for p in cgroup_parents():
        for d, _, files in os.walk(p):
            if "cgroup.procs" in files:
                pids.update(int(x) for x in open(os.path.join(d, "cgroup.procs")).read().split())
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


def wakes(names):
    """All `names` (idle) requested at once; latencies in ms."""
    with cf.ThreadPoolExecutor(len(names)) as ex:
        res = list(ex.map(lambda n: timed(get, n), names))
    bad = [(n, r[1][0]) for n, r in zip(names, res) if r[1][0] != 200]
    if bad:
        log(f"wake: not 200: {bad[:5]}")
    return [r[0] * 1000 for r in res]


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_starts(k):
    """The app start a wake is held to: k copies of the bench's python app (examples/python-flaskless)
    started at once on the host, outside any gear and without gearshift, each timed from its exec
    to its first answered GET, polled as a client would (every 5 ms). On 2 cores, 10 pythons
    starting at once share the CPU, so this is the floor of a 10-at-once wake. Latencies in ms."""
    app = os.path.join(REPO, "examples", "python-flaskless", "app.py")

    def one(port):
        t = time.perf_counter()
        p = subprocess.Popen(["python3", "-u", app], env=dict(os.environ, PORT=str(port)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while time.perf_counter() - t < 60:
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    c.request("GET", "/")
                    if c.getresponse().status == 200:
                        return (time.perf_counter() - t) * 1000
                except OSError:
                    time.sleep(0.005)
            return float("nan")
        finally:
            p.kill()
            p.wait()

    ports = [free_port() for _ in range(k)]
    with cf.ThreadPoolExecutor(k) as ex:
        return list(ex.map(one, ports))


def daemon_wake_ms(names):
    """The daemon's own time for each of `names`' last wake (its `app.wake` event: the `app start`
    it ran), against which a client's latency shows the time spent before and after it."""
    want, ms = set(names), {}
    for line in gs("events", "--json", "-n", str(20 * len(names) + 100), check=False).splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("kind", e.get("type")) == "app.wake" and e.get("app") in want:
            d = e.get("detail") or {}
            if "ms" in d:
                ms[e["app"]] = d["ms"]
    return list(ms.values())


def wrk(host, secs=5):
    o = subprocess.run(["wrk", "-t2", "-c32", f"-d{secs}s", "--latency", "-H", f"Host: {host}.localhost",
                        f"http://127.0.0.1:{HTTP}/"], capture_output=True, text=True).stdout
    rps = float(next(l.split()[1] for l in o.splitlines() if l.startswith("Requests/sec")))
    p99 = next(l.split()[1] for l in o.splitlines() if l.strip().startswith("99%"))
    return rps, p99


def cmd_ms(*args, n=3):
    return statistics.median(timed(gs, *args)[0] * 1000 for _ in range(n))


def request_mix(n, secs):
    """10 % of the apps active at a time, the set rotating every secs/5: each active app gets a
    request every 0.5 s (a woken app answers the first one late). Returns (requests, errors, p50, p99)."""
    active = max(1, n // 10)
    lat, errors, t0, window = [], 0, time.perf_counter(), 0
    with cf.ThreadPoolExecutor(min(active, 64)) as ex:
        while time.perf_counter() - t0 < secs:
            start = (window * active) % n
            names = [f"a{(start + k) % n}" for k in range(active)]
            w0 = time.perf_counter()
            while time.perf_counter() - w0 < secs / 5 and time.perf_counter() - t0 < secs:
                r0 = time.perf_counter()
                for dt, (st, _) in ex.map(lambda a: timed(get, a), names):
                    lat.append(dt * 1000)
                    errors += st != 200
                time.sleep(max(0, 0.5 - (time.perf_counter() - r0)))
            window += 1
    return len(lat), errors, pct(lat, 0.5), pct(lat, 0.99)


def simulated_reboot(n):
    """Daemon stopped, every gear killed, network torn down (`node down`); then the daemon again
    (its `node up`) until every app answers its own page. Returns (node up s, all answer s)."""
    stop_daemon()
    kill_gears()
    subprocess.run([BIN, "--config", CFG, "node", "down"], capture_output=True)
    t = time.perf_counter()
    start_daemon()
    up = time.perf_counter() - t

    def answer(i):
        while time.perf_counter() - t < REBOOT_LIMIT:
            try:
                st, body = get(f"a{i}", timeout=30)
                if st == 200 and f"a{i}" in body:
                    return True
            except OSError:
                pass
            time.sleep(0.2)
        return False

    with cf.ThreadPoolExecutor(16) as ex:
        answered = list(ex.map(answer, range(n)))
    ok = sum(answered)
    if ok != n:
        log(f"reboot: only {ok} of {n} apps answered; not: {[f'a{i}' for i, a in enumerate(answered) if not a][:20]}")
    return up, time.perf_counter() - t, ok


def disk_per_app_kib(n):
    o = subprocess.run(["du", "-sk", os.path.join(ROOT, "gears"), os.path.join(ROOT, "apps")], capture_output=True, text=True).stdout
    return sum(int(l.split()[0]) for l in o.splitlines()) / n


def main():
    ns = sorted({int(x) for x in NS.split()} | {5})
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", KEY], check=True)
    gs("user", "add", "bench", "--key", KEY + ".pub")
    start_daemon()
    time.sleep(2)
    base_rss, base_threads = proc_status(daemon.pid)
    base_slab, base_gears = slab_kib(), gears_memory_kib()
    rows, done = [], 0
    for n in ns:
        log(f"N={n}: deploying a{done}..a{n - 1} ({PAR} at a time)")
        with cf.ThreadPoolExecutor(PAR) as ex:
            deploys = list(ex.map(deploy, range(done, n)))
        done = n
        r = {"N": n, "deploy_med": statistics.median(deploys), "deploy_p95": pct(deploys, 0.95)}
        log(f"N={n}: deployed (median {r['deploy_med']:.2f} s); waiting for automatic idling ({IDLE} s)")
        r["idled_in"] = wait_all_idle(n, IDLE * 3 + 60 + n * 0.5)
        time.sleep(3)
        rss, threads = proc_status(daemon.pid)
        r.update(rss=rss, threads=threads, per_idle=(rss - base_rss) / n, gears_idle=gears_memory_kib(),
                 slab=slab_kib() - base_slab)
        r["list_ms"] = cmd_ms("app", "list")
        r["status_ms"] = cmd_ms("status")
        r["top_ms"] = cmd_ms("top", "--once", n=1)
        log(f"N={n}: idle daemon RSS {rss} KiB, {threads} threads; wakes")
        r["wake"], r["start"] = {}, {}
        for k in (1, 10, 50):
            if k > n:
                continue
            names = [f"a{i}" for i in range(0, n, 3)][:k]   # python apps: the slowest to start
            if len(names) < k:
                names = [f"a{i}" for i in range(k)]
            base = app_starts(k)
            r["start"][k] = (pct(base, 0.5), pct(base, 0.99))
            lat = wakes(names)
            r["wake"][k] = (pct(lat, 0.5), pct(lat, 0.99))
            inner = daemon_wake_ms(names)
            if inner:
                log(f"N={n}: {k} at once: the daemon's own wake (its `app start`) p50/p99 "
                    f"{pct(inner, 0.5):.0f}/{pct(inner, 0.99):.0f} ms ({len(inner)} wake events)")
            log(f"N={n}: {k} at once: app start alone p50/p99 {r['start'][k][0]:.0f}/{r['start'][k][1]:.0f} ms, "
                f"wake {r['wake'][k][0]:.0f}/{r['wake'][k][1]:.0f} ms")
            for a in names:
                gs("app", "idle", a, check=False)
        log(f"N={n}: router throughput")
        get("a1")   # awake (a static app), so wrk measures the router, not a wake
        rps, p99 = wrk("a1")
        r["rps"], r["rps_p99"] = rps, p99
        log(f"N={n}: request mix ({MIX_SECS:.0f} s)")
        r["mix"] = request_mix(n, MIX_SECS)
        active = max(1, n // 10)
        r["gears_active"] = gears_memory_kib()
        r["per_active"] = (r["gears_active"] - r["gears_idle"]) / active
        r["rss_active"] = proc_status(daemon.pid)[0]
        log(f"N={n}: simulated reboot")
        r["up"], r["restore"], r["answered"] = simulated_reboot(n)
        r["disk"] = disk_per_app_kib(n)
        r["load"] = open("/proc/loadavg").read().split()[0]
        if rows:
            r["per_idle_step"] = (rss - rows[-1]["rss"]) / (n - rows[-1]["N"])
        rows.append(r)
        table(rows)
    stop_daemon()


def table(rows):
    f = lambda v, fmt: "-" if v is None else format(v, fmt)
    starts = lambda r, k: "/".join(f"{x:.0f}" for x in r["start"].get(k, ())) or "-"
    over = lambda r: " / ".join(f"{r['wake'][k][1] - r['start'][k][1]:+.0f}" if k in r["wake"] else "-"
                                for k in (1, 10, 50))
    lines = [
        ("apps (N)", lambda r: str(r["N"])),
        ("deploy per app, median / p95 (s)", lambda r: f"{r['deploy_med']:.2f} / {r['deploy_p95']:.2f}"),
        ("all idled by automatic idling after (s)", lambda r: f(r["idled_in"], ".0f")),
        ("daemon RSS, all idle (KiB)", lambda r: str(r["rss"])),
        ("daemon threads, all idle", lambda r: str(r["threads"])),
        ("daemon memory per idle app (KiB)", lambda r: f"{r['per_idle']:.1f}"),
        ("  the same, since the previous N (KiB)", lambda r: f(r.get("per_idle_step"), ".1f")),
        ("gears' memory, all idle (MiB)", lambda r: f"{r['gears_idle'] / 1024:.0f}"),
        ("kernel slab growth (MiB)", lambda r: f"{r['slab'] / 1024:.0f}"),
        ("memory per active app (MiB)", lambda r: f"{r['per_active'] / 1024:.1f}"),
        ("daemon RSS, 10 % active (KiB)", lambda r: str(r["rss_active"])),
        ("python app start alone, p50 / p99, 1 at once (ms)", lambda r: starts(r, 1)),
        ("python app start alone, p50 / p99, 10 at once (ms)", lambda r: starts(r, 10)),
        ("python app start alone, p50 / p99, 50 at once (ms)", lambda r: starts(r, 50)),
        ("wake p99 minus app start p99, 1 / 10 / 50 at once (ms)", over),
        ("wake p50 / p99, 1 at once (ms)", lambda r: "/".join(f"{x:.0f}" for x in r["wake"].get(1, ())) or "-"),
        ("wake p50 / p99, 10 at once (ms)", lambda r: "/".join(f"{x:.0f}" for x in r["wake"].get(10, ())) or "-"),
        ("wake p50 / p99, 50 at once (ms)", lambda r: "/".join(f"{x:.0f}" for x in r["wake"].get(50, ())) or "-"),
        ("router req/s, one app (wrk -c32)", lambda r: f"{r['rps']:.0f}"),
        ("router p99 (wrk)", lambda r: r["rps_p99"]),
        ("mix: requests / errors", lambda r: f"{r['mix'][0]} / {r['mix'][1]}"),
        ("mix: p50 / p99 (ms)", lambda r: f"{r['mix'][2]:.0f} / {r['mix'][3]:.0f}"),
        ("`app list` (ms)", lambda r: f"{r['list_ms']:.0f}"),
        ("`gearshift status` (ms)", lambda r: f"{r['status_ms']:.0f}"),
        ("`top --once` (ms, samples 1 s)", lambda r: f"{r['top_ms']:.0f}"),
        ("reboot: daemon ready (node up) (s)", lambda r: f"{r['up']:.1f}"),
        ("reboot: all apps answer (s)", lambda r: f"{r['restore']:.1f} ({r['answered']})"),
        ("disk per app (KiB)", lambda r: f"{r['disk']:.0f}"),
        ("load average (1 min) at the end", lambda r: r["load"]),
    ]
    w = max(len(l) for l, _ in lines)
    print()
    for label, cell in lines:
        print(f"| {label:<{w}} | " + " | ".join(f"{cell(r):>13}" for r in rows) + " |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
