#!/usr/bin/env bash
# Side-by-side proxy benchmark: the same berth-demo backend behind berth, nginx and haproxy,
# each with one worker, loaded alternately with wrk (keep-alive, 64 connections). All three do
# the same job: upstream keep-alive, X-Forwarded-For/-Proto/-Host, a request id sent upstream
# and echoed, and the three security headers berth adds by default.
#
#   bench/edge.sh                 # 5 rounds of 10 s per proxy
#   ROUNDS=3 DURATION=5 bench/edge.sh
#
# The proxy runs on CPU 0; the backend and wrk share CPU 1, the same for every proxy, so the
# ratios compare the proxies and not the scheduler. Prints one table row per run, then the
# medians and the line `berth/nginx req/s ratio R, p99 ratio P`. Each row also has the proxy's
# own CPU time per request and how busy the load CPU (wrk + backend) was: when that is near
# 100 %, the load side sets the pace and req/s no longer compares the proxies.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
PATH_UNDER_TEST=${PATH_UNDER_TEST:-/}
BACKEND_PORT=${BACKEND_PORT:-18900}
BERTH_PORT=${BERTH_PORT:-18901}
NGINX_PORT=${NGINX_PORT:-18902}
HAPROXY_PORT=${HAPROXY_PORT:-18903}
ADMIN_PORT=${ADMIN_PORT:-18904}

need wrk wrk
need nginx nginx-light
need haproxy haproxy
need taskset util-linux

cargo build --release -q -p berth -p berth-demo
BIN=target/release
start_work

CPUS=$(nproc)
PROXY_CPU=0
LOAD_CPU=$(( CPUS > 1 ? 1 : 0 ))

taskset -c "$LOAD_CPU" "$BIN/berth-demo" --listen "127.0.0.1:$BACKEND_PORT" --threads 1 >"$WORK/demo.log" 2>&1 &
PIDS+=($!)
wait_port "$BACKEND_PORT"

berth_config "$WORK" "$BERTH_PORT" "$ADMIN_PORT" "$BACKEND_PORT"
taskset -c "$PROXY_CPU" "$BIN/berth" serve --config "$WORK/berth.toml" >"$WORK/berth.log" 2>&1 &
PIDS+=($!)
BERTH_PID=$!

mkdir -p "$WORK/nginx"
cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx;
  proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx;
  uwsgi_temp_path $WORK/nginx;
  scgi_temp_path $WORK/nginx;
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
      proxy_set_header X-Request-Id \$request_id;
      add_header X-Request-Id \$request_id always;
      add_header X-Content-Type-Options nosniff always;
      add_header X-Frame-Options SAMEORIGIN always;
      add_header Referrer-Policy strict-origin-when-cross-origin always;
    }
  }
}
CONF
taskset -c "$PROXY_CPU" nginx -c "$WORK/nginx.conf" -g 'daemon off;' >"$WORK/nginx.out" 2>&1 &
PIDS+=($!)
NGINX_PID=$!

cat >"$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
defaults
  mode http
  timeout connect 3s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:$HAPROXY_PORT
  option forwardfor
  unique-id-format %{+X}o%ci%cp%fi%fp%Ts%rt%pid
  unique-id-header X-Request-Id
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-response set-header X-Request-Id %[unique-id]
  http-response set-header X-Content-Type-Options nosniff
  http-response set-header X-Frame-Options SAMEORIGIN
  http-response set-header Referrer-Policy strict-origin-when-cross-origin
  default_backend be
backend be
  server s1 127.0.0.1:$BACKEND_PORT
CONF
taskset -c "$PROXY_CPU" haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.out" 2>&1 &
PIDS+=($!)
HAPROXY_PID=$!

for p in "$BERTH_PORT" "$NGINX_PORT" "$HAPROXY_PORT"; do wait_port "$p"; done

# wrk's latency figures are in us/ms/s; normalise to milliseconds.
to_ms() { awk -v v="$1" 'BEGIN { n=v; sub(/[a-z]+$/,"",n); u=v; sub(/^[0-9.]+/,"",u);
  f = (u=="us") ? 0.001 : (u=="s") ? 1000 : 1; printf "%.3f", n*f }'; }

# tree_ticks PID: CPU ticks (user + system) used so far by PID and all its descendants.
tree_ticks() {
  python3 - "$1" <<'PY'
import os, sys
stats = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        rest = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    stats[int(pid)] = (int(rest[1]), int(rest[11]) + int(rest[12]))
tree, total = {int(sys.argv[1])}, 0
for _ in range(4):
    tree |= {p for p, (ppid, _) in stats.items() if ppid in tree}
print(sum(stats[p][1] for p in tree if p in stats))
PY
}
# cpu_jiffies CPU: "busy total" jiffies of one CPU so far, from /proc/stat.
cpu_jiffies() {
  awk -v c="cpu$1" '$1==c { t=0; for (i=2; i<=NF; i++) t+=$i; print t-$5-$6, t }' /proc/stat
}
HZ=$(getconf CLK_TCK)
run() { # name port pid -> "rps p50 p99 cpu_us_per_request load_cpu_busy_percent"
  local out t0 t1 b0 a0 b1 a1
  t0=$(tree_ticks "$3")
  read -r b0 a0 < <(cpu_jiffies "$LOAD_CPU")
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$2$PATH_UNDER_TEST")
  t1=$(tree_ticks "$3")
  read -r b1 a1 < <(cpu_jiffies "$LOAD_CPU")
  if grep -q "Non-2xx" <<<"$out"; then echo "bench/edge.sh: $1 answered non-2xx:" >&2; echo "$out" >&2; exit 1; fi
  local rps p50 p99 requests
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  p50=$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
  p99=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
  # The proxy's own CPU time per request: what it costs, whatever limits the rate. The load
  # CPU's busy share tells whether wrk and the backend, not the proxy, set the pace.
  awk -v r="$rps" -v a="$p50" -v b="$p99" -v dt=$((t1 - t0)) -v n="$requests" -v hz="$HZ" \
    -v busy=$((b1 - b0)) -v all=$((a1 - a0)) \
    'BEGIN { printf "%s %s %s %.2f %.0f\n", r, a, b, dt / hz * 1e6 / n, 100 * busy / all }'
}
# Warm up every proxy (connection pools, caches) before measuring.
for p in "$BERTH_PORT" "$NGINX_PORT" "$HAPROXY_PORT"; do
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$p$PATH_UNDER_TEST" >/dev/null
done

printf "%-6s %-8s %12s %10s %10s %12s %9s\n" round proxy req/s p50_ms p99_ms cpu_us/req load_cpu%
declare -A RPS P99 P50 CPU BUSY
for r in $(seq 1 "$ROUNDS"); do
  for name in berth nginx haproxy; do
    case $name in
      berth) port=$BERTH_PORT pid=$BERTH_PID;;
      nginx) port=$NGINX_PORT pid=$NGINX_PID;;
      haproxy) port=$HAPROXY_PORT pid=$HAPROXY_PID;;
    esac
    read -r rps p50 p99 cpu busy < <(run "$name" "$port" "$pid")
    printf "%-6s %-8s %12s %10s %10s %12s %9s\n" "$r" "$name" "$rps" "$p50" "$p99" "$cpu" "$busy"
    RPS[$name]+="$rps "; P50[$name]+="$p50 "; P99[$name]+="$p99 "; CPU[$name]+="$cpu "; BUSY[$name]+="$busy "
  done
done

echo
printf "%-8s %12s %10s %10s %12s %9s   (medians over %s rounds of %ss, %s connections, cpu: %s)\n" proxy req/s p50_ms p99_ms cpu_us/req load_cpu% "$ROUNDS" "$DURATION" "$CONNS" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
for name in berth nginx haproxy; do
  printf "%-8s %12s %10s %10s %12s %9s\n" "$name" "$(median <<<"${RPS[$name]}")" "$(median <<<"${P50[$name]}")" "$(median <<<"${P99[$name]}")" "$(median <<<"${CPU[$name]}")" "$(median <<<"${BUSY[$name]}")"
done
for other in haproxy nginx; do
  r=$(ratios "${RPS[berth]}" "${RPS[$other]}" | median)
  p=$(ratios "${P99[berth]}" "${P99[$other]}" | median)
  printf "berth/%s req/s ratio %.2f, p99 ratio %.2f\n" "$other" "$r" "$p"
done
# Below 1 means berth spends less CPU per request than nginx (a per-round ratio, then the
# median, like the others).
printf "berth/nginx CPU per request ratio %.2f\n" "$(ratios "${CPU[berth]}" "${CPU[nginx]}" | median)"
