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
# medians and the line `berth/nginx req/s ratio R, p99 ratio P`.
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

for p in "$BERTH_PORT" "$NGINX_PORT" "$HAPROXY_PORT"; do wait_port "$p"; done

# wrk's latency figures are in us/ms/s; normalise to milliseconds.
to_ms() { awk -v v="$1" 'BEGIN { n=v; sub(/[a-z]+$/,"",n); u=v; sub(/^[0-9.]+/,"",u);
  f = (u=="us") ? 0.001 : (u=="s") ? 1000 : 1; printf "%.3f", n*f }'; }

run() { # name port -> "rps p50 p99"
  local out
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$2$PATH_UNDER_TEST")
  if grep -q "Non-2xx" <<<"$out"; then echo "bench/edge.sh: $1 answered non-2xx:" >&2; echo "$out" >&2; exit 1; fi
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
  p99=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
  echo "$rps $p50 $p99"
}

# Warm up every proxy (connection pools, caches) before measuring.
for p in "$BERTH_PORT" "$NGINX_PORT" "$HAPROXY_PORT"; do
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$p$PATH_UNDER_TEST" >/dev/null
done

printf "%-6s %-8s %12s %10s %10s\n" round proxy req/s p50_ms p99_ms
declare -A RPS P99 P50
for r in $(seq 1 "$ROUNDS"); do
  for name in berth nginx haproxy; do
    case $name in berth) port=$BERTH_PORT;; nginx) port=$NGINX_PORT;; haproxy) port=$HAPROXY_PORT;; esac
    read -r rps p50 p99 < <(run "$name" "$port")
    printf "%-6s %-8s %12s %10s %10s\n" "$r" "$name" "$rps" "$p50" "$p99"
    RPS[$name]+="$rps "; P50[$name]+="$p50 "; P99[$name]+="$p99 "
  done
done

echo
printf "%-8s %12s %10s %10s   (medians over %s rounds of %ss, %s connections, cpu: %s)\n" proxy req/s p50_ms p99_ms "$ROUNDS" "$DURATION" "$CONNS" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
for name in berth nginx haproxy; do
  printf "%-8s %12s %10s %10s\n" "$name" "$(median <<<"${RPS[$name]}")" "$(median <<<"${P50[$name]}")" "$(median <<<"${P99[$name]}")"
done
for other in haproxy nginx; do
  r=$(ratios "${RPS[berth]}" "${RPS[$other]}" | median)
  p=$(ratios "${P99[berth]}" "${P99[$other]}" | median)
  printf "berth/%s req/s ratio %.2f, p99 ratio %.2f\n" "$other" "$r" "$p"
done
