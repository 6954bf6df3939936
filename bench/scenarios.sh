#!/usr/bin/env bash
# Open-loop latency and failures under fixed load (bench-load: latency from the scheduled time
# when the server held a request back, exact percentiles; every non-2xx, reset, connect error or
# timeout counted).
#  1. nginx's maximum throughput (wrk), then p50/p99 through the Windlass edge and through nginx at
#     10%, 50% and 80% of it.
#  2. At 50% of it through the edge, with 32 keep-alive connections, the failed requests during:
#     100 blue/green switches, a canary weight walk 0->100, a maintenance toggle (its 503 answers
#     are reported apart: they are the point of maintenance), and kill -9 of one of the two
#     instances of the live pool.
# Load generator on CPU 0; proxies and upstreams on CPU 1.
#
#   bash bench/scenarios.sh      # needs wrk, nginx, curl; REPEATS=3 latency runs of each (medians)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SECONDS_EACH=${SECONDS_EACH:-10}
need wrk nginx curl taskset python3
cargo build --release --locked -q -p windlass -p windlass-bench
BIN=${CARGO_TARGET_DIR:-target}/release
# Starts an upstream in this shell (so cleanup knows it); sets PORT_OUT and PID_OUT.
upstream() { PORT_OUT=$(free_port); PORT=$PORT_OUT taskset -c 1 "$BIN/bench-upstream" >/dev/null & PID_OUT=$!; PIDS+=("$PID_OUT"); wait_port "$PORT_OUT"; }

upstream; BLUE1=$PORT_OUT
upstream; BLUE2=$PORT_OUT; BLUE2_PID=$PID_OUT
upstream; GREEN1=$PORT_OUT

EDGE=$(free_port); ADMIN=$(free_port); TOKEN=bench-token-0123456789
sed "s/\"UPSTREAM\"/\"127.0.0.1:$BLUE1\", \"127.0.0.1:$BLUE2\"/" bench/windlass.toml > "$WORK/windlass.toml"
WINDLASS_EDGE_TOKEN=$TOKEN taskset -c 1 "$BIN/windlass" edge --config "$WORK/windlass.toml" --env bench \
  --listen "127.0.0.1:$EDGE" --admin-listen "127.0.0.1:$ADMIN" --workers 1 --state "$WORK/edge.json" >/dev/null 2>&1 & PIDS+=($!)
wait_port "$EDGE"
admin() { curl -sf -X PUT -H "authorization: Bearer $TOKEN" -d "$2" "http://127.0.0.1:$ADMIN$1" >/dev/null; }
admin /edge/services/upstream/pools/green "{\"instances\": [\"127.0.0.1:$GREEN1\"]}"

NGINX=$(free_port)
sed "s/UPSTREAM/127.0.0.1:$BLUE1/; s/NGINX_PORT/$NGINX/; s#PIDFILE#$WORK/nginx.pid#" bench/nginx.conf > "$WORK/nginx.conf"
NGINX_PIDFILES+=("$WORK/nginx.pid")
taskset -c 1 nginx -c "$WORK/nginx.conf" -p "$WORK" & PIDS+=($!)
wait_port "$NGINX"

NGINX_MAX=$(taskset -c 0 wrk -t1 -c50 -d6s "http://127.0.0.1:$NGINX/" | awk '/Requests\/sec/ {printf "%d", $2}')
echo "nginx maximum: $NGINX_MAX requests/s" >&2
load() { taskset -c 0 "$BIN/bench-load" --target "127.0.0.1:$1" --rate "$2" --connections 32 --seconds "$SECONDS_EACH"; }

{
  echo "nginx_max $NGINX_MAX"
  for _ in $(seq "${REPEATS:-3}"); do
    for pct in 10 50 80; do
      rate=$((NGINX_MAX * pct / 100))
      echo "latency windlass $pct $(load "$EDGE" "$rate")"
      echo "latency nginx $pct $(load "$NGINX" "$rate")"
    done
  done
  HALF=$((NGINX_MAX / 2))

  load "$EDGE" "$HALF" > "$WORK/switches.json" &
  for i in $(seq 100); do
    if [ $((i % 2)) = 1 ]; then admin /edge/services/upstream/weights '{"green": 100}'; else admin /edge/services/upstream/weights '{"blue": 100}'; fi
    sleep "$(python3 -c "print($SECONDS_EACH * 0.8 / 100)")"
  done
  wait %%
  echo "scenario switches $(cat "$WORK/switches.json")"

  load "$EDGE" "$HALF" > "$WORK/walk.json" &
  for green in 0 10 20 30 40 50 60 70 80 90 100; do
    admin /edge/services/upstream/weights "{\"blue\": $((100 - green)), \"green\": $green}"
    sleep "$(python3 -c "print($SECONDS_EACH * 0.8 / 11)")"
  done
  wait %%
  echo "scenario weight_walk $(cat "$WORK/walk.json")"
  admin /edge/services/upstream/weights '{"blue": 100}'

  load "$EDGE" "$HALF" > "$WORK/maintenance.json" &
  sleep "$(python3 -c "print($SECONDS_EACH * 0.4)")"
  admin /edge/services/upstream/maintenance '{"enabled": true}'
  sleep 1
  admin /edge/services/upstream/maintenance '{"enabled": false}'
  wait %%
  echo "scenario maintenance $(cat "$WORK/maintenance.json")"

  load "$EDGE" "$HALF" > "$WORK/kill.json" &
  sleep "$(python3 -c "print($SECONDS_EACH * 0.4)")"
  kill -9 "$BLUE2_PID"
  wait %%
  echo "scenario kill_instance $(cat "$WORK/kill.json")"
} > "$WORK/raw"

STAMP=$(date -u +%Y%m%d-%H%M%S)
cp "$WORK/raw" "bench/results/scenarios-$STAMP.raw"
python3 - "$WORK/raw" > "bench/results/scenarios-$STAMP.md" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
nginx_max = int(lines[0].split()[1])
print(f"nginx maximum (wrk -c50): {nginx_max:,} requests/s\n")
import statistics
runs = {}
for line in lines:
    words = line.split(" ", 3)
    if words[0] == "latency":
        runs.setdefault((int(words[2]), words[1]), []).append(json.loads(words[3]))
repeats = max(len(v) for v in runs.values())
print(f"Medians of {repeats} runs of each (interleaved); percentiles exact, to the microsecond.\n")
print("| load | proxy | achieved rate | p50 | p99 | p99.9 | failed |")
print("|---|---|---|---|---|---|---|")
for (pct, proxy), rs in sorted(runs.items(), key=lambda kv: (kv[0][0], kv[0][1] != "windlass")):
    med = lambda key: statistics.median(r[key] for r in rs)
    behind = " (target rate not reached: over this path's capacity)" if med("achieved_rate") < 0.95 * rs[0]["target_rate"] else ""
    p99s = "/".join(str(r["p99_us"]) for r in rs)
    print(f"| {pct}% | {proxy} | {med('achieved_rate'):,.0f}/s of {rs[0]['target_rate']:,}{behind} | {med('p50_us'):.0f} µs | "
          f"{med('p99_us'):.0f} µs ({p99s}) | {med('p999_us'):.0f} µs | {sum(r['failed'] for r in rs)} |")
print("\n| scenario (at 50% of nginx max, 32 connections) | requests | failed | failures by kind |")
print("|---|---|---|---|")
for line in lines:
    words = line.split(" ", 2)
    if words[0] == "scenario":
        r = json.loads(words[2])
        print(f"| {words[1].replace('_', ' ')} | {r['requests']:,} | {r['failed']} | {r['failures']} |")
PY
cat "bench/results/scenarios-$STAMP.md"
