#!/usr/bin/env bash
# testssl.sh (Debian package `testssl.sh`) against berth's TLS listener: a certificate from
# berth's development CA (trusted for the run with --add-ca), default settings otherwise.
# Prints testssl's report, then every line that says VULNERABLE or NOT ok, and fails if there
# is any. The development CA's certificates name its CRL, which berth serves itself, so the
# revocation line passes like a public CA's certificate would. The last line is
# `testssl: N vulnerable, M not ok`.
#
#   bench/testssl.sh
#
# Findings are recorded in bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

TLS_PORT=${TLS_PORT:-18911}
HTTP_PORT=${HTTP_PORT:-18910}
ADMIN_PORT=${ADMIN_PORT:-18912}
BACKEND_PORT=${BACKEND_PORT:-18913}
HOST=berth.test

need testssl testssl.sh

cargo build -q -p berth -p berth-demo
BIN=${CARGO_TARGET_DIR:-target}/debug
start_work

"$BIN/berth-demo" --listen "127.0.0.1:$BACKEND_PORT" --threads 1 >"$WORK/demo.log" 2>&1 &
PIDS+=($!)
wait_port "$BACKEND_PORT"

berth_config "$WORK" "$HTTP_PORT" "$ADMIN_PORT" "$BACKEND_PORT"
sed -i "s/^listen = .*/&\ntls_listen = [\"127.0.0.1:$TLS_PORT\"]/" "$WORK/berth.toml"
cat >>"$WORK/berth.toml" <<TOML

[[certificate]]
hosts = ["$HOST"]
source = "dev"
TOML
"$BIN/berth" serve --config "$WORK/berth.toml" >"$WORK/berth.log" 2>&1 &
PIDS+=($!)
wait_port "$TLS_PORT"

# --ip: connect to loopback but send the host name as SNI and check the certificate for it.
testssl --quiet --color 0 --warnings off --add-ca "$WORK/data/tls/dev-ca/ca.pem" \
  --ip 127.0.0.1 "https://$HOST:$TLS_PORT/" | tee "$WORK/report.txt" || true

echo
echo "--- findings ---"
grep -E "VULNERABLE|NOT ok" "$WORK/report.txt" || echo "(none)"
vuln=$(grep -c "VULNERABLE" "$WORK/report.txt" || true)
notok=$(grep -c "NOT ok" "$WORK/report.txt" || true)
# testssl must have run its checks at all: a report without them proves nothing.
grep -q "Heartbleed" "$WORK/report.txt" || { echo "bench/testssl.sh: testssl did not run its checks" >&2; exit 1; }
echo "testssl: $vuln vulnerable, $notok not ok"
[ "$vuln" -eq 0 ] && [ "$notok" -eq 0 ]
