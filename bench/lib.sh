# Shared by the bench scripts: source it, don't run it.

# need COMMAND PACKAGE: exits naming the Debian package to install when COMMAND is missing.
need() {
  command -v "$1" >/dev/null || { echo "$0: '$1' is missing: apt-get install $2" >&2; exit 1; }
}

# start_work: a fresh directory in $WORK and an empty PIDS array; on exit every process in PIDS
# is killed and $WORK removed.
start_work() {
  WORK=$(mktemp -d)
  PIDS=()
  trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
}

# median < numbers (space- or newline-separated): their median.
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END { if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2 }'; }

# ratios A B: the per-round ratios of two space-separated lists (A[i]/B[i]). Taken per round
# (the runs of one round are seconds apart and share the machine's state), then the median
# over rounds: robust to load that drifts between rounds.
ratios() {
  paste -d' ' <(tr ' ' '\n' <<<"$1" | grep -v '^$') <(tr ' ' '\n' <<<"$2" | grep -v '^$') |
    awk '{ printf "%.4f ", $1/$2 }'
}

# wait_port PORT [TRIES]: until something accepts on 127.0.0.1:PORT (TRIES × 0.1 s, default
# 100), else exit.
wait_port() {
  for _ in $(seq 1 "${2:-100}"); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$0: nothing listens on port $1" >&2
  exit 1
}

# berth_config DIR LISTEN_PORT ADMIN_PORT BACKEND_PORT: writes DIR/berth.toml for one worker,
# no access log, one route to the backend, state kept in DIR/data.
berth_config() {
  cat >"$1/berth.toml" <<TOML
[server]
listen = ["127.0.0.1:$2"]
admin_listen = "127.0.0.1:$3"
data_dir = "data"
workers = 1
access_log = "off"

[[route]]
name = "bench"
hosts = ["*"]
group = "bench"

[group.bench]
upstreams = ["127.0.0.1:$4"]
TOML
}
