#!/usr/bin/env bash
# The edge benchmark, side by side in one run: direct to the upstream, through the Windlass edge,
# through nginx (one worker, upstream keep-alive), and through `bench-bare-proxy` (the floor:
# hyper on both sides with nothing on top, EDGE-PERF.md's design). The load generator (wrk) is pinned to CPU 0,
# the proxy and the upstream to CPU 1. Each configuration runs RUNS times (default 5), interleaved;
# the table reports medians and ratios. Results go to bench/results/.
#
#   bash bench/run.sh            # needs: wrk, nginx (apt-get install wrk nginx-light)
#   BARE_EDGE=1 bash bench/run.sh   # also an edge with every hot-path feature off
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${RUNS:-5}
DURATION=${DURATION:-6}
CONNECTIONS=${CONNECTIONS:-50}

need wrk nginx taskset python3
cargo build --release --locked -q -p windlass -p windlass-bench
BIN=${CARGO_TARGET_DIR:-target}/release


UP_PORT=$(free_port)
PORT=$UP_PORT taskset -c 1 "$BIN/bench-upstream" >/dev/null & PIDS+=($!); UP_PID=$!
wait_port "$UP_PORT"

EDGE_PORT=$(free_port); ADMIN_PORT=$(free_port)
sed "s/UPSTREAM/127.0.0.1:$UP_PORT/" bench/windlass.toml > "$WORK/windlass.toml"
WINDLASS_EDGE_TOKEN=bench-token-0123456789 taskset -c 1 "$BIN/windlass" edge --config "$WORK/windlass.toml" --env bench \
  --listen "127.0.0.1:$EDGE_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" --workers 1 --state "$WORK/edge.json" \
  >/dev/null 2>&1 & PIDS+=($!); EDGE_PID=$!
wait_port "$EDGE_PORT"

BARE_PORT=$(free_port)
PORT=$BARE_PORT UPSTREAM=127.0.0.1:$UP_PORT taskset -c 1 "$BIN/bench-bare-proxy" >/dev/null & PIDS+=($!); BARE_PID=$!
wait_port "$BARE_PORT"

if [ -n "${BARE_EDGE:-}" ]; then
  OFF_PORT=$(free_port)
  WINDLASS_EDGE_DISABLE=metrics,request-id,forwarded-headers WINDLASS_EDGE_TOKEN=bench-token-0123456789 taskset -c 1 \
    "$BIN/windlass" edge --config "$WORK/windlass.toml" --env bench --listen "127.0.0.1:$OFF_PORT" \
    --admin-listen "127.0.0.1:$(free_port)" --workers 1 --state "$WORK/edge-off.json" >/dev/null 2>&1 & PIDS+=($!); OFF_PID=$!
  wait_port "$OFF_PORT"
fi

NGINX_PORT=$(free_port)
sed "s/UPSTREAM/127.0.0.1:$UP_PORT/; s/NGINX_PORT/$NGINX_PORT/; s#PIDFILE#$WORK/nginx.pid#" bench/nginx.conf > "$WORK/nginx.conf"
NGINX_PIDFILES+=("$WORK/nginx.pid")
taskset -c 1 nginx -c "$WORK/nginx.conf" -p "$WORK" & PIDS+=($!)
wait_port "$NGINX_PORT"
sleep 0.3
NGINX_WORKER=$(pgrep -P "$(cat "$WORK/nginx.pid")" | head -1)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# name port pid-to-measure
measure() {
  local name=$1 port=$2 pid=$3 out
  local before; before=$(cpu_ticks "$pid")
  out=$(taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$port/")
  local after; after=$(cpu_ticks "$pid")
  local requests; requests=$(echo "$out" | awk '/requests in/ {print $1}')
  local rps; rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  local errors; errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
  local p99; p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  echo "$name throughput $rps requests $requests cpu_ticks $((after - before)) p99 $p99 errors [$errors]" >> "$WORK/raw"
  out=$(taskset -c 0 wrk -t1 -c1 -d3s --latency "http://127.0.0.1:$port/")
  echo "$name single_p50 $(echo "$out" | awk '$1=="50%" {print $2}')" >> "$WORK/raw"
}

for run in $(seq "$RUNS"); do
  echo "run $run/$RUNS" >&2
  measure direct "$UP_PORT" "$UP_PID"
  measure windlass "$EDGE_PORT" "$EDGE_PID"
  measure nginx "$NGINX_PORT" "$NGINX_WORKER"
  measure bare "$BARE_PORT" "$BARE_PID"
  [ -z "${BARE_EDGE:-}" ] || measure windlass-features-off "$OFF_PORT" "$OFF_PID"
done

STAMP=$(date -u +%Y%m%d-%H%M%S)
cp "$WORK/raw" "bench/results/edge-$STAMP.raw"
python3 - "$WORK/raw" "$(getconf CLK_TCK)" > "bench/results/edge-$STAMP.md" <<'PY'
import re, statistics, sys
raw, clk = sys.argv[1], int(sys.argv[2])
def us(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
data = {}
for line in open(raw):
    words = line.split()
    name, kind = words[0], words[1]
    d = data.setdefault(name, {"rps": [], "cpu": [], "p99": [], "p50": [], "errors": []})
    if kind == "throughput":
        d["rps"].append(float(words[2]))
        d["cpu"].append(int(words[6]) / clk / int(words[4]) * 1e6)
        d["p99"].append(us(words[8]))
        d["errors"].append(line.split("errors [")[1].strip(" ]\n"))
    else:
        d["p50"].append(us(words[2]))
med = {n: {k: statistics.median(v) for k, v in d.items() if k != "errors"} for n, d in data.items()}
print("| path | requests/s | vs nginx | vs direct | p99 at max load | single-connection p50 | proxy CPU µs/request |")
print("|---|---|---|---|---|---|---|")
labels = {"bare": "bare hyper proxy (floor)", "windlass-features-off": "windlass, hot-path features off"}
for name in [n for n in ["direct", "windlass", "nginx", "bare", "windlass-features-off"] if n in med]:
    m = med[name]
    cpu = "—" if name == "direct" else f"{m['cpu']:.1f}"
    print(f"| {labels.get(name, name)} | {m['rps']:,.0f} | {m['rps']/med['nginx']['rps']:.2f} | {m['rps']/med['direct']['rps']:.2f} | {m['p99']:.0f} µs | {m['p50']:.0f} µs | {cpu} |")
errors = {n: [e for e in d["errors"] if e] for n, d in data.items()}
print()
added = ", ".join(f"{labels.get(n, n)} {med[n]['p50'] - med['direct']['p50']:+.0f} µs" for n in med if n != "direct")
print(f"Medians of {len(data['direct']['rps'])} runs. Added single-connection latency at p50 over direct: {added}.")
print(f"Errors reported by wrk: {errors}")
PY
cat "bench/results/edge-$STAMP.md"
