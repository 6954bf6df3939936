# Shared by the benchmark scripts: a work directory, processes cleaned up on exit, free ports.
# Sourced after `cd` to the repository; defines WORK, PIDS, track, free_port, wait_port.

WORK=$(mktemp -d /tmp/windlass-bench.XXXXXX)
PIDS=()
NGINX_PIDFILES=()

cleanup() {
  # nginx's workers are its master's children: stop them and the master, and give the master a
  # moment to exit, or the workers outlive it.
  for pidfile in "${NGINX_PIDFILES[@]}"; do
    [ -f "$pidfile" ] || continue
    local master; master=$(cat "$pidfile")
    pkill -KILL -P "$master" 2>/dev/null || true
    kill -QUIT "$master" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (up to a minute) until something listens on the port.
wait_port() {
  for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "port $1 never opened" >&2
  exit 1
}

need() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install wrk nginx-light valgrind apache2-utils curl)" >&2; exit 1; }
  done
}

# The release binaries the benchmarks run (honours CARGO_TARGET_DIR); sets BIN.
build_release() {
  cargo build --release --locked -q -p windlass -p windlass-bench
  BIN=${CARGO_TARGET_DIR:-target}/release
}

# `bench-upstream` on CPU 1; sets UP_PORT and UP_PID.
start_upstream() {
  UP_PORT=$(free_port)
  PORT=$UP_PORT taskset -c 1 "$BIN/bench-upstream" >/dev/null & PIDS+=($!); UP_PID=$!
  wait_port "$UP_PORT"
}

# `windlass edge` (one worker, CPU 1) in front of the upstream, from bench/windlass.toml; sets
# EDGE_PORT and EDGE_PID.
start_edge() {
  EDGE_PORT=$(free_port)
  sed "s/UPSTREAM/127.0.0.1:$UP_PORT/" bench/windlass.toml > "$WORK/windlass.toml"
  WINDLASS_EDGE_TOKEN=bench-token-0123456789 taskset -c 1 "$BIN/windlass" edge --config "$WORK/windlass.toml" --env bench \
    --listen "127.0.0.1:$EDGE_PORT" --admin-listen "127.0.0.1:$(free_port)" --workers 1 --state "$WORK/edge.json" \
    >/dev/null 2>&1 & PIDS+=($!); EDGE_PID=$!
  wait_port "$EDGE_PORT"
}
