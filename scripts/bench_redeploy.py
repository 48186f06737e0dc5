"""make bench: the redeploy of a Heroku-style Flask app on gunicorn (examples/heroku-flask,
requirements.txt unchanged: the virtualenv is reused), `git push` start -> the new page served
through the router; then the same with a worker process type added (app.json formation
worker=1), which must not slow the web redeploy. PROFILE=1 prints, for the median run, when each
`remote: ----->` step line reached the pusher (where the time goes)."""
import os, shutil, statistics, subprocess, sys, time, urllib.request

binary, cfg, work, port, user, http_port, example = sys.argv[1:]
RUNS = int(os.environ.get("REDEPLOYS", "7"))
ssh = (f"ssh -i {work}/key -p {port} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
       "-o BatchMode=yes -o IdentitiesOnly=yes -o LogLevel=ERROR")
env = dict(os.environ, GIT_SSH_COMMAND=ssh, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b",
           GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b")
app = "flaskbench"
remote = f"ssh://{user}@127.0.0.1:{port}/{app}.git"
d = os.path.join(work, "src", app)


def run(*a):
    subprocess.run(a, check=True, cwd=d, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def page():
    req = urllib.request.Request(f"http://127.0.0.1:{http_port}/", headers={"Host": f"{app}.localhost"})
    try:
        return urllib.request.urlopen(req, timeout=2).read().decode()
    except Exception:
        return ""


def push():
    """`git push`, the time each remote step line arrived (s after the start), the total."""
    t0 = time.perf_counter()
    p = subprocess.Popen(["git", "push", remote, "main"], cwd=d, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    steps = [(time.perf_counter() - t0, line.rstrip()) for line in p.stderr if line.startswith("remote: ")]
    if p.wait() != 0:
        raise SystemExit("push failed:\n" + "\n".join(s for _, s in steps))
    return t0, steps


def redeploy(i, marker):
    with open(os.path.join(d, "app.py")) as f:
        src = f.read().replace("Hello from gearshift", f"Hello from gearshift {marker}{i}", 1)
    with open(os.path.join(d, "app.py"), "w") as f:
        f.write(src)
    run("git", "commit", "-qam", f"{marker}{i}")
    t0, steps = push()
    while f"{marker}{i}" not in page():
        if time.perf_counter() - t0 > 60:
            raise SystemExit(f"{marker}{i} never served")
        time.sleep(0.002)
    total = time.perf_counter() - t0
    with open(os.path.join(d, "app.py")) as f:
        src = f.read().replace(f" {marker}{i}", "", 1)
    with open(os.path.join(d, "app.py"), "w") as f:
        f.write(src)
    return total, steps


def series(marker):
    runs = sorted((redeploy(i, marker) for i in range(RUNS)), key=lambda r: r[0])
    times = [r[0] for r in runs]
    return statistics.median(times), min(times), max(times), runs[len(runs) // 2][1]


shutil.copytree(example, d)
run("git", "init", "-q", "-b", "main")
run("git", "add", "-A")
run("git", "commit", "-qm", "1")
subprocess.run(ssh.split() + [f"{user}@127.0.0.1", f"app create {app} --cartridge python"], check=True,
               stdout=subprocess.DEVNULL)
push()   # the first push installs Flask and gunicorn (pip cache kept)
web = series("w")
with open(os.path.join(d, "Procfile"), "a") as f:
    f.write("worker: python -c \"import time\\nwhile True: time.sleep(60)\"\n")
with open(os.path.join(d, "app.json"), "w") as f:
    f.write('{"formation": {"worker": {"quantity": 1}}}\n')
run("git", "add", "-A")
run("git", "commit", "-qm", "a worker")
push()
worker = series("k")
load = open("/proc/loadavg").read().split()[:3]
print(f"\nredeploy of a Flask+gunicorn app (examples/heroku-flask, requirements.txt unchanged), push start -> new page"
      f" through the router, median of {RUNS}:")
print(f"  web only:          {web[0]:.3f} s  (min {web[1]:.3f}, max {web[2]:.3f}; goal <= 1.5 s)")
print(f"  web + worker=1:    {worker[0]:.3f} s  (min {worker[1]:.3f}, max {worker[2]:.3f})")
print(f"  load average while measured: {' '.join(load)} on {os.cpu_count()} CPU(s)")
if os.environ.get("PROFILE") == "1":
    for label, (_, _, _, steps) in (("web only", web), ("web + worker", worker)):
        print(f"  the median run's steps ({label}), s after push start:")
        for t, line in steps:
            print(f"    {t:6.3f}  {line[8:]}")
