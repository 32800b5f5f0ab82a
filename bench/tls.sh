#!/usr/bin/env bash
# TLS benchmark: berth vs nginx terminating TLS with the same certificate (ECDSA P-256, TLS 1.3),
# one worker each, in front of the same berth-demo backend, loaded alternately with wrk:
#   - handshakes: every request on a new connection (`Connection: close`), so each request is a
#     full TLS handshake (wrk does not resume sessions);
#   - keep-alive: 64 connections kept open, requests/s.
# Both proxies do the same job as in bench/edge.sh, plus HSTS.
#
#   bench/tls.sh                  # 3 rounds of 10 s per proxy and mode
#   ROUNDS=5 DURATION=10 bench/tls.sh
#
# The proxy runs on CPU 0; the backend and wrk share CPU 1. wrk's own TLS work can be the limit
# (the proxy's CPU is then not saturated), so each run also reports the proxy's CPU use and
# requests per proxy CPU-second, which does not depend on the client keeping up. Prints one row
# per run, the medians, and the line `berth/nginx TLS handshake ratio H, keep-alive ratio K`
# (ratios of requests/s).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
BACKEND_PORT=${BACKEND_PORT:-18920}
BERTH_PORT=${BERTH_PORT:-18921}
BERTH_TLS_PORT=${BERTH_TLS_PORT:-18922}
NGINX_PORT=${NGINX_PORT:-18923}
ADMIN_PORT=${ADMIN_PORT:-18924}

need wrk wrk
need nginx nginx-light
need openssl openssl
need taskset util-linux

cargo build --release -q -p berth -p berth-demo
BIN=${CARGO_TARGET_DIR:-target}/release
start_work

CPUS=$(nproc)
PROXY_CPU=0
LOAD_CPU=$(( CPUS > 1 ? 1 : 0 ))

# One certificate for both: ECDSA P-256, not a CA (rustls refuses a CA as a server certificate).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -subj /CN=bench.test \
  -addext subjectAltName=DNS:bench.test -addext basicConstraints=critical,CA:FALSE 2>/dev/null

taskset -c "$LOAD_CPU" "$BIN/berth-demo" --listen "127.0.0.1:$BACKEND_PORT" --threads 1 >"$WORK/demo.log" 2>&1 &
PIDS+=($!)
wait_port "$BACKEND_PORT"

berth_config "$WORK" "$BERTH_PORT" "$ADMIN_PORT" "$BACKEND_PORT"
sed -i "s/^listen = .*/&\ntls_listen = [\"127.0.0.1:$BERTH_TLS_PORT\"]/" "$WORK/berth.toml"
# wrk connects to an IP address and so sends no SNI: the certificate is the default.
cat >>"$WORK/berth.toml" <<TOML

[[certificate]]
hosts = ["bench.test"]
source = "files"
cert = "cert.pem"
key = "key.pem"
default = true
TOML
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
    listen 127.0.0.1:$NGINX_PORT ssl;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
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
      add_header Strict-Transport-Security "max-age=31536000" always;
    }
  }
}
CONF
taskset -c "$PROXY_CPU" nginx -c "$WORK/nginx.conf" -g 'daemon off;' >"$WORK/nginx.out" 2>&1 &
PIDS+=($!)
NGINX_MASTER=$!

for p in "$BERTH_TLS_PORT" "$NGINX_PORT"; do wait_port "$p"; done
NGINX_WORKER=$(pgrep -P "$NGINX_MASTER" | head -1)

# CPU time of a process (all threads), in clock ticks.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

run() { # name port mode pid -> "req/s cpu% req/cpu-s"
  local out extra=() t0 t1 rps
  [ "$3" = handshake ] && extra=(-H "Connection: close")
  t0=$(ticks "$4")
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" "${extra[@]}" "https://127.0.0.1:$2/")
  t1=$(ticks "$4")
  if grep -qE "Non-2xx|Socket errors" <<<"$out"; then echo "bench/tls.sh: $1 ($3) had errors:" >&2; echo "$out" >&2; exit 1; fi
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  awk -v r="$rps" -v t=$(( t1 - t0 )) -v hz="$HZ" -v d="$DURATION" \
    'BEGIN { cpu = t / hz; printf "%s %.0f %.0f\n", r, 100 * cpu / d, (cpu > 0 ? r * d / cpu : 0) }'
}

for p in "$BERTH_TLS_PORT" "$NGINX_PORT"; do
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s "https://127.0.0.1:$p/" >/dev/null
done

printf "%-6s %-6s %-10s %12s %6s %14s\n" round proxy mode req/s cpu% req/cpu-s
declare -A R E
for r in $(seq 1 "$ROUNDS"); do
  for mode in handshake keepalive; do
    for name in berth nginx; do
      case $name in berth) port=$BERTH_TLS_PORT pid=$BERTH_PID;; nginx) port=$NGINX_PORT pid=$NGINX_WORKER;; esac
      read -r v cpu eff < <(run "$name" "$port" "$mode" "$pid")
      printf "%-6s %-6s %-10s %12s %6s %14s\n" "$r" "$name" "$mode" "$v" "$cpu" "$eff"
      R[$name.$mode]+="$v "; E[$name.$mode]+="$eff "
    done
  done
done

echo
printf "%-6s %14s %14s %18s %18s   (medians over %s rounds of %ss, %s connections, cpu: %s)\n" proxy handshakes/s keepalive_rps handshakes/cpu-s keepalive/cpu-s "$ROUNDS" "$DURATION" "$CONNS" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
for name in berth nginx; do
  printf "%-6s %14s %14s %18s %18s\n" "$name" "$(median <<<"${R[$name.handshake]}")" "$(median <<<"${R[$name.keepalive]}")" \
    "$(median <<<"${E[$name.handshake]}")" "$(median <<<"${E[$name.keepalive]}")"
done
h=$(ratios "${R[berth.handshake]}" "${R[nginx.handshake]}" | median)
k=$(ratios "${R[berth.keepalive]}" "${R[nginx.keepalive]}" | median)
he=$(ratios "${E[berth.handshake]}" "${E[nginx.handshake]}" | median)
ke=$(ratios "${E[berth.keepalive]}" "${E[nginx.keepalive]}" | median)
printf "per proxy CPU-second: berth/nginx handshake ratio %.2f, keep-alive ratio %.2f\n" "$he" "$ke"
printf "berth/nginx TLS handshake ratio %.2f, keep-alive ratio %.2f\n" "$h" "$k"
