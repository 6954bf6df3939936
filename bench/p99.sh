#!/usr/bin/env bash
# p99 latency at 50% of nginx's capacity, side by side in one run. nginx's maximum is measured
# first (wrk -c50, closed loop, MAX_RUNS times, the median), then `bench-load` (open loop: fixed
# rate over 32 keep-alive connections, latency from the scheduled time when the server held a
# request back, exact percentiles) drives the Windlass edge and nginx at half of it, RUNS times
# each (default 5), interleaved. Load generators on CPU 0; proxies and the upstream on CPU 1.
#
#   bash bench/p99.sh       # needs wrk, nginx
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${RUNS:-5}
MAX_RUNS=${MAX_RUNS:-3}
SECONDS_EACH=${SECONDS_EACH:-10}
need wrk nginx taskset python3
build_release

start_upstream

start_edge

NGINX_PORT=$(free_port)
sed "s/UPSTREAM/127.0.0.1:$UP_PORT/; s/NGINX_PORT/$NGINX_PORT/; s#PIDFILE#$WORK/nginx.pid#" bench/nginx.conf > "$WORK/nginx.conf"
NGINX_PIDFILES+=("$WORK/nginx.pid")
taskset -c 1 nginx -c "$WORK/nginx.conf" -p "$WORK" & PIDS+=($!)
wait_port "$NGINX_PORT"

{
  for _ in $(seq "$MAX_RUNS"); do
    echo "nginx_max $(taskset -c 0 wrk -t1 -c50 -d6s "http://127.0.0.1:$NGINX_PORT/" | awk '/Requests\/sec/ {printf "%d", $2}')"
  done
} > "$WORK/max"
NGINX_MAX=$(awk '{print $2}' "$WORK/max" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}')
HALF=$((NGINX_MAX / 2))
echo "nginx maximum: $NGINX_MAX requests/s (median of $MAX_RUNS); driving both at $HALF/s" >&2

load() { taskset -c 0 "$BIN/bench-load" --target "127.0.0.1:$1" --rate "$HALF" --connections 32 --seconds "$SECONDS_EACH"; }
{
  cat "$WORK/max"
  for run in $(seq "$RUNS"); do
    echo "run $run/$RUNS" >&2
    echo "latency windlass $(load "$EDGE_PORT")"
    echo "latency nginx $(load "$NGINX_PORT")"
  done
} > "$WORK/raw"

STAMP=$(date -u +%Y%m%d-%H%M%S)
cp "$WORK/raw" "bench/results/p99-$STAMP.raw"
python3 - "$WORK/raw" > "bench/results/p99-$STAMP.md" <<'PY'
import json, statistics, sys
maxes, runs = [], {}
for line in open(sys.argv[1]):
    w = line.split(" ", 2)
    if w[0] == "nginx_max":
        maxes.append(int(w[1]))
    else:
        runs.setdefault(w[1], []).append(json.loads(w[2]))
rate = runs["nginx"][0]["target_rate"]
print(f"nginx maximum (wrk -c50): {' / '.join(f'{m:,}' for m in maxes)} requests/s; both driven at {rate:,}/s "
      f"(bench-load, 32 connections), {len(runs['nginx'])} interleaved runs.\n")
print("| proxy | achieved rate | p50 | p99 (median) | vs nginx | every run's p99 | p99.9 | failed |")
print("|---|---|---|---|---|---|---|---|")
med = lambda rs, k: statistics.median(r[k] for r in rs)
for name in ["windlass", "nginx"]:
    rs = runs[name]
    behind = " (rate not reached)" if med(rs, "achieved_rate") < 0.95 * rate else ""
    every = " / ".join(str(r["p99_us"]) for r in rs)
    print(f"| {name} | {med(rs, 'achieved_rate'):,.0f}/s{behind} | {med(rs, 'p50_us'):.0f} µs | {med(rs, 'p99_us'):.0f} µs | "
          f"{med(rs, 'p99_us') / med(runs['nginx'], 'p99_us'):.2f} | {every} | {med(rs, 'p999_us'):.0f} µs | {sum(r['failed'] for r in rs)} |")
ratios = " / ".join(f"{w['p99_us'] / n['p99_us']:.2f}" for w, n in zip(runs["windlass"], runs["nginx"]))
print(f"\np99 Windlass/nginx run by run: {ratios}.")
PY
cat "bench/results/p99-$STAMP.md"
