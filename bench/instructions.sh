#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind: deterministic where
# throughput on this VM moves ±20% between runs. Each proxy runs under callgrind twice, serving
# N and then 2N keep-alive requests (ab -k, one connection); the difference divided by N is the
# cost of one request, start-up excluded. Compares the Windlass edge with nginx and with
# `bench-bare-proxy` (the floor: the edge's design with nothing on top, EDGE-PERF.md), then the
# edge with each hot-path feature switched off in turn.
#
#   bash bench/instructions.sh     # needs valgrind, ab (apache2-utils), nginx
#   FEATURES=no bash bench/instructions.sh          # skip the per-feature rows
#   KEEP=/tmp/profiles bash bench/instructions.sh   # keep the callgrind outputs (callgrind_annotate)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${N:-4000}
need valgrind ab nginx python3
cargo build --release --locked -q -p windlass -p windlass-bench
BIN=${CARGO_TARGET_DIR:-target}/release

UP_PORT=$(free_port)
PORT=$UP_PORT "$BIN/bench-upstream" >/dev/null & PIDS+=($!)
wait_port "$UP_PORT"
sed "s/UPSTREAM/127.0.0.1:$UP_PORT/" bench/windlass.toml > "$WORK/windlass.toml"

# disabled-features requests -> instructions of the whole run. The callgrind output is named
# after what is switched off (edge.4000.out: every feature on; edge-without-metrics.4000.out),
# so that KEEP keeps each run's.
run_edge() {
  local port; port=$(free_port)
  local name=edge${1:+-without-${1//,/-}}
  WINDLASS_EDGE_DISABLE=$1 WINDLASS_EDGE_TOKEN=bench-token-0123456789 valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.$2.out" \
    "$BIN/windlass" edge --config "$WORK/windlass.toml" --env bench --listen "127.0.0.1:$port" \
    --admin-listen "127.0.0.1:$(free_port)" --workers 1 --state "$WORK/$name-$2.json" >/dev/null 2>"$WORK/$name.$2.log" &
  local pid=$!
  wait_port "$port"
  ab -q -k -n "$2" -c 1 "http://127.0.0.1:$port/" >/dev/null
  kill -INT "$pid"; wait "$pid" || true
  grep -o 'Collected : [0-9]*' "$WORK/$name.$2.log" | awk '{print $3}'
}
run_bare() {
  local port; port=$(free_port)
  PORT=$port UPSTREAM=127.0.0.1:$UP_PORT valgrind --tool=callgrind --callgrind-out-file="$WORK/bare.$2.out" \
    "$BIN/bench-bare-proxy" >/dev/null 2>"$WORK/bare.$2.log" &
  local pid=$!
  wait_port "$port"
  ab -q -k -n "$2" -c 1 "http://127.0.0.1:$port/" >/dev/null
  kill -INT "$pid"; wait "$pid" || true
  grep -o 'Collected : [0-9]*' "$WORK/bare.$2.log" | awk '{print $3}'
}
run_nginx() {
  local port; port=$(free_port)
  sed "s/UPSTREAM/127.0.0.1:$UP_PORT/; s/NGINX_PORT/$port/; s#PIDFILE#$WORK/nginx-$2.pid#" bench/nginx.conf \
    | sed 's/worker_processes 1;/worker_processes 1;\nmaster_process off;/' > "$WORK/nginx-$2.conf"
  valgrind --tool=callgrind --callgrind-out-file="$WORK/nginx.$2.out" nginx -c "$WORK/nginx-$2.conf" -p "$WORK" \
    >/dev/null 2>"$WORK/nginx.$2.log" &
  local pid=$!
  wait_port "$port"
  ab -q -k -n "$2" -c 1 "http://127.0.0.1:$port/" >/dev/null
  kill -QUIT "$pid"; wait "$pid" || true
  grep -o 'Collected : [0-9]*' "$WORK/nginx.$2.log" | awk '{print $3}'
}

nginx_n=$(run_nginx nginx "$N"); nginx_2n=$(run_nginx nginx $((2 * N)))
bare_n=$(run_bare bare "$N"); bare_2n=$(run_bare bare $((2 * N)))
rows=()
features=("" metrics request-id forwarded-headers)
[ "${FEATURES:-yes}" = no ] && features=("")
for disabled in "${features[@]}"; do
  e1=$(run_edge "$disabled" "$N"); e2=$(run_edge "$disabled" $((2 * N)))
  rows+=("${disabled:-none}:$e1:$e2")
done
if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$WORK"/*.out "$KEEP"/; fi
python3 - "$N" "$nginx_n" "$nginx_2n" "$bare_n" "$bare_2n" "${rows[@]}" <<'PY'
import sys
n, g1, g2, b1, b2 = (int(a) for a in sys.argv[1:6])
nginx = (g2 - g1) / n
bare = (b2 - b1) / n
print("| proxy | instructions per request (user space) | vs nginx | cost of the feature switched off |")
print("|---|---|---|---|")
full = None
for row in sys.argv[6:]:
    off, e1, e2 = row.split(":")
    edge = (int(e2) - int(e1)) / n
    if off == "none":
        full = edge
        print(f"| windlass edge, every feature on | {edge:,.0f} | {edge / nginx:.2f} | |")
    else:
        print(f"| windlass edge without {off} | {edge:,.0f} | {edge / nginx:.2f} | {full - edge:,.0f} |")
print(f"| bare hyper proxy (bench-bare-proxy, the floor) | {bare:,.0f} | {bare / nginx:.2f} | |")
print(f"| nginx | {nginx:,.0f} | 1.00 | |")
PY
