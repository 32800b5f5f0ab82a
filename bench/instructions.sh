#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: repeatable on a busy or noisy
# machine, so it shows whether a change made the request path cheaper even where req/s
# figures are too noisy to tell.
#
#   bench/instructions.sh            # 10 s of wrk -c8 through berth under callgrind
#
# Counters are zeroed once berth listens, so start-up is not counted. Prints
# `requests N instructions I per_request P` and leaves the profile in
# target/callgrind.out for `callgrind_annotate --inclusive=yes target/callgrind.out`, or
# `bench/by_crate.py target/callgrind.out N` for the split by crate.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
need valgrind valgrind
need wrk wrk
cargo build --release -q -p berth -p berth-demo

BACKEND_PORT=${BACKEND_PORT:-18910}
BERTH_PORT=${BERTH_PORT:-18911}
ADMIN_PORT=${ADMIN_PORT:-18912}
start_work
OUT=target/callgrind.out

target/release/berth-demo --listen "127.0.0.1:$BACKEND_PORT" --threads 1 >/dev/null 2>&1 &
PIDS+=($!)
berth_config "$WORK" "$BERTH_PORT" "$ADMIN_PORT" "$BACKEND_PORT"
rm -f "$OUT"
valgrind --tool=callgrind --callgrind-out-file="$OUT" target/release/berth serve --config "$WORK/berth.toml" >/dev/null 2>"$WORK/valgrind.log" &
VG=$!
wait_port "$BERTH_PORT" 300  # valgrind starts slowly
# Count the request path only: start-up (store, migrations, bootstrap) is not per request.
callgrind_control --zero "$VG" >/dev/null
N=$(wrk -t1 -c8 -d10s "http://127.0.0.1:$BERTH_PORT/" | awk '/requests in/ {print $1}')
kill -TERM "$VG"
wait "$VG" || true
TOTAL=$(callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
echo "requests $N instructions $TOTAL per_request $((TOTAL / N))"
