# Shared by the bench scripts: source it, don't run it.

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
