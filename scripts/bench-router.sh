#!/usr/bin/env bash
# Router throughput beside nginx, measured not asserted: wrk -t2 -c64 (keep-alive) against (a) gearshift's
# router and (b) nginx as a reverse proxy with upstream keep-alive, both in front of the same backend (nginx
# serving a static "ok"), in alternating rounds. Per run: req/s, p50/p99, the proxy's CPU time per request
# (utime+stime of its process / its workers) and the load average; then the ratios. Also the router's memory
# per idle keep-alive client connection.
# Usage: scripts/bench-router.sh   (env: DURATION=10 ROUNDS=3 IDLE_CONNS=1000)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
IDLE_CONNS=${IDLE_CONNS:-1000}
BACKEND_PORT=18181 NGINX_PORT=18182 ROUTER_PORT=18183

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

work=$(mktemp -d /tmp/gearshift-bench-router.XXXXXX)
router_pid=""
cleanup() {
  for conf in backend proxy; do
    [ -f "$work/$conf.conf" ] && "$NGINX" -p "$work" -c "$work/$conf.conf" -s stop 2>/dev/null || true
  done
  # cargo runs the test binary as a child: stop both.
  [ -f "$work/router.pid" ] && kill "$(cat "$work/router.pid")" 2>/dev/null || true
  [ -n "$router_pid" ] && kill "$router_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/logs"

# Backend: one nginx worker answering "ok" on keep-alive connections, the same for both proxies.
cat >"$work/backend.conf" <<CONF
worker_processes 1;
pid $work/backend.pid;
error_log $work/logs/backend-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$BACKEND_PORT; location / { return 200 "ok\n"; } }
}
CONF
# nginx as the reverse proxy to compare with: its usual tuned setup, upstream keep-alive.
cat >"$work/proxy.conf" <<CONF
worker_processes auto;
pid $work/proxy.pid;
error_log $work/logs/proxy-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream app { server 127.0.0.1:$BACKEND_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
CONF
"$NGINX" -p "$work" -c "$work/backend.conf"
"$NGINX" -p "$work" -c "$work/proxy.conf"

echo "building the router (release test binary)..."
cargo test --release --bins --no-run 2>&1 | tail -1
total=$(( (DURATION + 3) * ROUNDS * 2 + 60 ))
ROUTER_BENCH_LISTEN=127.0.0.1:$ROUTER_PORT ROUTER_BENCH_BACKEND=127.0.0.1:$BACKEND_PORT \
  ROUTER_BENCH_SECONDS=$total ROUTER_BENCH_PIDFILE=$work/router.pid \
  cargo test --release --bins router::tests::bench_serve -- --ignored --exact >"$work/router.log" 2>&1 &
router_pid=$!
for _ in $(seq 1 600); do
  curl -fsS -o /dev/null -H 'Host: bench.localhost' "http://127.0.0.1:$ROUTER_PORT/" 2>/dev/null && break
  sleep 0.5
done
curl -fsS -H 'Host: bench.localhost' "http://127.0.0.1:$ROUTER_PORT/" >/dev/null
curl -fsS "http://127.0.0.1:$NGINX_PORT/" >/dev/null

cpu_ticks() { # pids...: utime+stime in clock ticks, summed
  local t=0 p
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}
router_proc=$(cat "$work/router.pid")
nginx_procs=$(pgrep -P "$(cat "$work/proxy.pid")" | tr '\n' ' ')
hz=$(getconf CLK_TCK)
run() { # label port pids extra-wrk-args...
  local label=$1 port=$2 pids=$3 out t0 t1
  shift 3
  t0=$(cpu_ticks $pids)
  out=$(wrk -t2 -c64 -d"${DURATION}s" --latency -H 'Host: bench.localhost' "$@" "http://127.0.0.1:$port/")
  t1=$(cpu_ticks $pids)
  local rps p50 p99 errs reqs cpu
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  cpu=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$reqs" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
  load=$(cut -d' ' -f1 /proc/loadavg)
  printf '%-28s %9s req/s  p50 %8s  p99 %8s  proxy CPU %6s us/req  load %5s  %s\n' \
    "$label" "$rps" "$p50" "$p99" "$cpu" "$load" "$errs"
  echo "${label%% *} $rps $(ms "$p99") $cpu" >>"$work/results"
}
ms() { # wrk duration (123us, 4.5ms, 1.2s) -> milliseconds
  awk -v d="$1" 'BEGIN { v = d + 0; if (d ~ /us$/) v /= 1000; else if (d ~ /[0-9]s$/ && d !~ /ms$/) v *= 1000; print v }'
}
summary() { # the rounds in $work/results: per round and mean ratios
  awk '$1=="gearshift" {r[++nr]=$2; rp[nr]=$3; rc[nr]=$4}
       $1=="nginx" {n[++nn]=$2; np[nn]=$3; nc[nn]=$4}
       END {
         for (i = 1; i <= nr && i <= nn; i++) {
           printf "  round %d: router/nginx req/s %.2fx, p99 %.1f ms vs %.1f ms, CPU/req %.2fx\n", i, r[i]/n[i], rp[i], np[i], rc[i]/nc[i]
           sr += r[i]; sn += n[i]; src += rc[i]; snc += nc[i]; if (rp[i] <= np[i]) pw++
         }
         k = (nr < nn ? nr : nn)
         printf "router / nginx (mean of %d rounds): req/s %.2fx, CPU per request %.2fx, p99 no worse in %d of %d rounds\n", k, sr/sn, src/snc, pw, k
       }' "$work/results"
}
echo "wrk -t2 -c64 -d${DURATION}s, keep-alive, same backend (nginx 'ok', 1 worker), $(nproc) cores shared by all:"
for r in $(seq 1 "$ROUNDS"); do
  run "gearshift router (#$r)" "$ROUTER_PORT" "$router_proc"
  run "nginx proxy (#$r)" "$NGINX_PORT" "$nginx_procs"
done
summary
echo "a new client connection per request (Connection: close), upstream still pooled:"
: >"$work/results"
run "gearshift router (close)" "$ROUTER_PORT" "$router_proc" -H 'Connection: close'
run "nginx proxy (close)" "$NGINX_PORT" "$nginx_procs" -H 'Connection: close'
summary

# Memory per idle keep-alive connection: RSS and threads of the router process before and after
# IDLE_CONNS clients that made one request each and then sit idle.
pid=$router_proc
sleep 11 # connection threads left over from wrk linger 10 s
python3 - "$pid" "$ROUTER_PORT" "$IDLE_CONNS" <<'PY'
import socket, sys, time
pid, port, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def status():
    d = {}
    for line in open(f"/proc/{pid}/status"):
        k, _, v = line.partition(":")
        d[k] = v.split()[0] if v.split() else ""
    return int(d["VmRSS"]), int(d["Threads"])
rss0, th0 = status()
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench.localhost\r\n\r\n")
    socks.append(s)
for s in socks:
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
for wait, label in ((1, "just idle"), (2, "idle > 2 s, buffers trimmed")):
    time.sleep(wait)
    rss1, th1 = status()
    print(f"{n} idle keep-alive connections ({label}): router RSS {rss0} -> {rss1} KiB, threads {th0} -> {th1}: "
          f"{(rss1 - rss0) / n:.1f} KiB per connection")
for s in socks:
    s.close()
PY
