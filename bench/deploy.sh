#!/usr/bin/env bash
# Deploys under load: berth serving the demo app (two instances) under wrk's steady load
# (64 keep-alive connections), then, under the same load:
#
#   1. ROLLING rolling deploys back to back (default 20),
#   2. BLUE_GREEN blue-green deploys, each previewed and promoted (default 5),
#   3. the same deploys again, in HALF_ROUNDS rounds (default 3), under h2load at half the
#      steady rate (open loop, 64 connections), p99 between rounds against p99 during them,
#   4. a bad canary at 10% (every fifth request a 500) until analysis rolls it back.
#
# It reports failed requests during 1 and 2 (target: none), their p99 against steady state
# (target: within 1.5x), the same for 3, and for 4 the time from the canary taking traffic to all traffic back
# on the stable release, and the failed requests against the least an analysis window allows.
# (Failed requests at half rate are answers other than 200: h2load logs no transport errors.)
# Ends with `deploys under load: failed requests F of N, bad canary reverted in S s`.
#
#   bench/deploy.sh
#   ROLLING=5 BLUE_GREEN=2 bench/deploy.sh
#   BERTH_BIN_DIR=/tmp/old bench/deploy.sh   # another build's berth and berth-demo, to compare
#   PACE=1 bench/deploy.sh                   # a deploy a second, not back to back: one deploy's
#                                            # disruption without 25 deploys' CPU piled up
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

ROLLING=${ROLLING:-20}
BLUE_GREEN=${BLUE_GREEN:-5}
CONNS=${CONNS:-64}
STEADY=${STEADY:-10}
INTERVAL=${INTERVAL:-5}
# Seconds between one deploy's end and the next one's start (issue 5 asks for back to back).
PACE=${PACE:-0}
LISTEN_PORT=${LISTEN_PORT:-18911}
ADMIN_PORT=${ADMIN_PORT:-18912}

need wrk wrk
need h2load nghttp2-client
need python3 python3

if [ -n "${BERTH_BIN_DIR:-}" ]; then
  BIN=$BERTH_BIN_DIR
else
  cargo build --release -q -p berth -p berth-demo
  BIN=$(pwd)/target/release
fi
start_work

cat >"$WORK/berth.toml" <<TOML
[server]
listen = ["127.0.0.1:$LISTEN_PORT"]
admin_listen = "127.0.0.1:$ADMIN_PORT"
data_dir = "data"
workers = 1
access_log = "off"
TOML
"$BIN/berth" serve --config "$WORK/berth.toml" >"$WORK/berth.log" 2>&1 &
PIDS+=($!)
wait_port "$ADMIN_PORT"
for _ in $(seq 1 100); do [ -s "$WORK/data/admin.token" ] && break; sleep 0.1; done
export BERTH_REMOTE="http://127.0.0.1:$ADMIN_PORT"
BERTH_TOKEN=$(cat "$WORK/data/admin.token")
export BERTH_TOKEN
export BERTH_CREDENTIALS="$WORK/no-credentials.json"
berth() { "$BIN/berth" "$@"; }

# app VERSION STRATEGY [FAIL_EVERY]: writes the demo app's source for this version.
app() {
  local dir="$WORK/app-$1"
  mkdir -p "$dir"
  cat >"$dir/berth.toml" <<TOML
name = "demo"
hosts = ["demo.bench"]

[deploy]
strategy = "$2"
timeout = "30s"
drain_timeout = "10s"
steps = [{ weight = 10, pause = "10m" }]

[deploy.analysis]
interval = "${INTERVAL}s"
min_requests = 50
max_error_rate = 0.01

[env]
DEMO_VERSION = "$1"
DEMO_FAIL_EVERY = "${3:-0}"

[processes.web]
command = "exec $BIN/berth-demo --threads 1"
instances = 2
stop_timeout = "10s"

[processes.web.health]
interval = "200ms"
timeout = "200ms"
TOML
  echo "$dir"
}

# wrk_start NAME: wrk in the background until wrk_stop; its report goes to $WORK/NAME.wrk.
wrk_start() {
  wrk -t2 -c"$CONNS" -d1h --latency -H "Host: demo.bench" "http://127.0.0.1:$LISTEN_PORT/" >"$WORK/$1.wrk" 2>&1 &
  WRK_PID=$!
  sleep 1
}
wrk_stop() { kill -INT "$WRK_PID"; wait "$WRK_PID" || true; }

# wrk_field FILE FIELD: requests | failed | p99_ms from a wrk report.
wrk_field() {
  python3 - "$1" "$2" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]
field = sys.argv[2]
if field == "requests":
    print(re.search(r"(\d+) requests in", text).group(1))
elif field == "failed":
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    print((int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, errors.groups())) if errors else 0))
elif field == "p99_ms":
    m = re.search(r"99%\s+([\d.]+)(us|ms|s|m)\b", text)
    print(f"{ms(m.group(1), m.group(2)):.2f}")
PY
}

# prepare_rounds N: writes the sources of the next N rounds' releases (after $version) ahead,
# so measured windows hold berth's work and the CLI's, not this script's.
prepare_rounds() {
  local v=$version
  for _ in $(seq 1 "$1"); do
    for _ in $(seq 1 "$ROLLING"); do v=$((v + 1)); app "$v" rolling >/dev/null; done
    for _ in $(seq 1 "$BLUE_GREEN"); do v=$((v + 1)); app "$v" blue-green >/dev/null; done
  done
}

# deploy_round: ROLLING rolling deploys, then BLUE_GREEN blue-green deploys each promoted as
# soon as the rollout accepts it, back to back; each a new release (version counts up), from
# the sources prepare_rounds wrote.
deploy_round() {
  for _ in $(seq 1 "$ROLLING"); do
    version=$((version + 1))
    berth deploy "$WORK/app-$version" >"$WORK/deploy-$version.out"
    sleep "$PACE"
  done
  for _ in $(seq 1 "$BLUE_GREEN"); do
    version=$((version + 1))
    berth deploy "$WORK/app-$version" >"$WORK/deploy-$version.out" &
    deploy_pid=$!
    # Promote once the new release is up beside the old one.
    until berth promote demo >/dev/null 2>&1; do sleep 0.2; done
    wait "$deploy_pid"
    sleep "$PACE"
  done
}

berth deploy "$(app 1 rolling)" >/dev/null

echo "steady state: ${STEADY}s of wrk, $CONNS connections"
wrk -t2 -c"$CONNS" -d"${STEADY}s" --latency -H "Host: demo.bench" "http://127.0.0.1:$LISTEN_PORT/" >"$WORK/steady.wrk"
STEADY_P99=$(wrk_field "$WORK/steady.wrk" p99_ms)
STEADY_N=$(wrk_field "$WORK/steady.wrk" requests)

echo "$ROLLING rolling deploys and $BLUE_GREEN blue-green deploys under the same load ($PACE s between deploys)"
version=1
prepare_rounds 1
wrk_start deploys
started=$(date +%s.%N)
deploy_round
took=$(python3 -c "import time; print(f'{time.time() - $started:.1f}')")
wrk_stop
DEPLOY_N=$(wrk_field "$WORK/deploys.wrk" requests)
DEPLOY_FAILED=$(wrk_field "$WORK/deploys.wrk" failed)
DEPLOY_P99=$(wrk_field "$WORK/deploys.wrk" p99_ms)

# The same deploys under an open-loop load at half the steady rate: wrk above saturates the
# two CPUs, so any work a deploy does queues requests; at half load what shows is the
# disruption itself. h2load paces each connection and logs every request's start and
# duration, so one run is split into windows: HALF_ROUNDS rounds of deploys, each after
# HALF_GAP seconds without, pooled (one round's p99 rests on a few hundred requests, and runs
# differed by +-0.3 in the ratio).
HALF_ROUNDS=${HALF_ROUNDS:-3}
HALF_GAP=${HALF_GAP:-5}
HALF_RPS=$(python3 -c "print(max(1, round($STEADY_N / $STEADY / 2 / $CONNS)))")
echo "$HALF_ROUNDS rounds of the same deploys at half the steady rate ($HALF_RPS req/s on each of $CONNS connections)"
prepare_rounds "$HALF_ROUNDS"
# h2load takes the Host header from `:authority`; a `host:` header is sent as well, after
# the one from the URL, and the edge answers for the first (a 404 for 127.0.0.1).
h2load --h1 -t2 -c"$CONNS" --rps "$HALF_RPS" -D 1h -H ":authority: demo.bench" \
  --log-file "$WORK/half.log" "http://127.0.0.1:$LISTEN_PORT/" >"$WORK/half.h2load" 2>&1 &
H2_PID=$!
: >"$WORK/half.windows"
for _ in $(seq 1 "$HALF_ROUNDS"); do
  sleep "$HALF_GAP"
  round_started=$(date +%s%6N)
  deploy_round
  echo "$round_started $(date +%s%6N)" >>"$WORK/half.windows"
done
sleep "$HALF_GAP"
# TERM, not INT: a background job of a script starts with SIGINT ignored, and h2load keeps
# that. Rows still in its buffer are lost; they were logged after the last window.
kill -TERM "$H2_PID"
wait "$H2_PID" || true
read -r HALF_STEADY_N HALF_STEADY_P99 HALF_N HALF_FAILED HALF_P99 <<<"$(python3 - "$WORK/half.log" "$WORK/half.windows" <<'PY'
import sys
windows = [tuple(map(int, line.split())) for line in open(sys.argv[2])]
rows = []
for line in open(sys.argv[1]):
    cols = line.split("\t")
    if len(cols) < 3:
        continue  # a row cut short when h2load was stopped
    try:
        rows.append((int(cols[0]), int(cols[1]), int(cols[2])))
    except ValueError:
        continue
# The first second is connection set-up, and the second after a round its old instances'
# last moments: neither is steady state nor a deploy.
first = min((t for t, _, _ in rows), default=0)
steady, during, failed = [], [], 0
for t, status, us in rows:
    if any(start <= t <= end for start, end in windows):
        during.append(us)
        failed += status != 200
    elif t >= first + 1_000_000 and not any(end < t <= end + 1_000_000 for _, end in windows):
        steady.append(us)
def p99(v):
    v = sorted(v)
    return f"{v[min(len(v) - 1, int(len(v) * 0.99))] / 1000:.2f}" if v else "nan"
print(len(steady), p99(steady), len(during), failed, p99(during))
PY
)"

echo "a bad canary at 10% (every fifth request a 500), analysis every ${INTERVAL}s"
wrk_start canary
version=$((version + 1))
if berth deploy "$(app "$version" canary 5)" >"$WORK/canary.out" 2>&1; then
  echo "bench/deploy.sh: the bad canary was not rolled back" >&2
  cat "$WORK/canary.out" >&2
  exit 1
fi
wrk_stop
CANARY_N=$(wrk_field "$WORK/canary.wrk" requests)
CANARY_FAILED=$(wrk_field "$WORK/canary.wrk" failed)
berth deploys demo --json >"$WORK/deploys.json"
read -r REVERT_S WINDOW_MIN <<<"$(python3 - "$WORK/deploys.json" "$WORK/canary.wrk" "$INTERVAL" <<'PY'
import json, re, sys
d = json.load(open(sys.argv[1]))["deployments"][0]
steps = {s["step"]: s for s in d["steps"]}
# The canary takes traffic at its first step's record, and all traffic is back on the stable
# release when the rollback step is recorded (the route is switched before it).
start, end = steps["canary"]["time"], steps["rollback"]["time"]
text = open(sys.argv[2]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
# The least a detector judging whole windows lets through: one window of the canary's share.
window_min = rps * 0.10 * 0.20 * float(sys.argv[3])
print(f"{(end - start) / 1000:.1f} {window_min:.0f}")
PY
)"

printf '\n%-26s %10s %8s %10s\n' "phase" "requests" "failed" "p99_ms"
printf '%-26s %10s %8s %10s\n' "steady" "$STEADY_N" 0 "$STEADY_P99"
printf '%-26s %10s %8s %10s\n' "rolling+blue-green (${took}s)" "$DEPLOY_N" "$DEPLOY_FAILED" "$DEPLOY_P99"
printf '%-26s %10s %8s %10s\n' "half rate: steady" "$HALF_STEADY_N" 0 "$HALF_STEADY_P99"
printf '%-26s %10s %8s %10s\n' "half rate: deploys" "$HALF_N" "$HALF_FAILED" "$HALF_P99"
printf '%-26s %10s %8s %10s\n' "bad canary" "$CANARY_N" "$CANARY_FAILED" "-"
python3 - "$STEADY_P99" "$DEPLOY_P99" "$HALF_STEADY_P99" "$HALF_P99" <<'PY'
import sys
steady, during, half_steady, half_during = map(float, sys.argv[1:5])
print(f"p99 during deploys / steady: {during / steady:.2f} at saturation, "
      f"{half_during / half_steady:.2f} at half the steady rate (target at most 1.5)")
PY
echo "bad canary: reverted ${REVERT_S}s after it took traffic; $CANARY_FAILED failed requests, least one ${INTERVAL}s window allows: ~$WINDOW_MIN"
echo "deploys under load: failed requests $DEPLOY_FAILED of $DEPLOY_N, bad canary reverted in $REVERT_S s"
