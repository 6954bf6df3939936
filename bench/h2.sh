#!/usr/bin/env bash
# HTTP/2 throughput, side by side in one run: h2load (nghttp2-client) with 10 clients of 10
# concurrent streams each, over h2c with prior knowledge, against the Windlass edge (one worker;
# it serves h2c on its plain listener) and against nginx (one worker, `listen ... http2` without
# TLS, which nginx 1.22 serves as h2c with prior knowledge; `keepalive_requests` raised, else it
# closes each connection after 1,000 requests). Both proxy to the same bench-upstream over
# HTTP/1.1 keep-alive. h2load on CPU 0, the proxies and the upstream on CPU 1; RUNS interleaved
# runs (default 5) of DURATION seconds; the table gives medians, each run and the ratio.
#
#   bash bench/h2.sh        # needs h2load (apt-get install nghttp2-client), nginx
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${RUNS:-5}
DURATION=${DURATION:-6}
need h2load nginx taskset python3
build_release

start_upstream

start_edge

NGINX_PORT=$(free_port)
sed "s/UPSTREAM/127.0.0.1:$UP_PORT/; s/NGINX_PORT reuseport/$NGINX_PORT reuseport http2/; s#PIDFILE#$WORK/nginx.pid#" bench/nginx.conf \
  | sed 's/access_log off;/access_log off;\n    keepalive_requests 10000000;/' > "$WORK/nginx.conf"
grep -q "http2;" "$WORK/nginx.conf" && grep -q keepalive_requests "$WORK/nginx.conf" || { echo "nginx.conf: http2 not set" >&2; exit 1; }
NGINX_PIDFILES+=("$WORK/nginx.pid")
taskset -c 1 nginx -c "$WORK/nginx.conf" -p "$WORK" & PIDS+=($!)
wait_port "$NGINX_PORT"

# Both must really speak h2c with prior knowledge and answer 200, or the numbers mean nothing.
for port in "$EDGE_PORT" "$NGINX_PORT"; do
  check=$(h2load -n 10 -c 1 "http://127.0.0.1:$port/" 2>&1)
  echo "$check" | grep -q "Application protocol: h2c" || { echo "port $port does not speak h2c:" >&2; echo "$check" >&2; exit 1; }
  echo "$check" | grep -q "status codes: 10 2xx" || { echo "port $port did not answer 200:" >&2; echo "$check" >&2; exit 1; }
done

# name port
measure() {
  local out
  out=$(taskset -c 0 h2load -c 10 -m 10 -D "$DURATION" --warm-up-time 1 "http://127.0.0.1:$2/" 2>&1)
  local rps; rps=$(echo "$out" | awk '/^finished in/ {gsub(",", "", $4); print $4}')
  local status; status=$(echo "$out" | awk '/^status codes:/ {print $3, $5, $7, $9}')
  local failed; failed=$(echo "$out" | awk '/^requests:/ {print $10, $12}')
  echo "$1 rps $rps status_2xx_3xx_4xx_5xx $status failed_errored $failed" >> "$WORK/raw"
}

for run in $(seq "$RUNS"); do
  echo "run $run/$RUNS" >&2
  measure windlass "$EDGE_PORT"
  measure nginx "$NGINX_PORT"
done

STAMP=$(date -u +%Y%m%d-%H%M%S)
cp "$WORK/raw" "bench/results/h2-$STAMP.raw"
python3 - "$WORK/raw" > "bench/results/h2-$STAMP.md" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    w = line.split()
    runs.setdefault(w[0], []).append((float(w[2]), w[4:8], w[9:11]))
med = {n: statistics.median(r[0] for r in rs) for n, rs in runs.items()}
print("| proxy | requests/s (median) | vs nginx | every run | non-2xx | failed, errored |")
print("|---|---|---|---|---|---|")
for name in ["windlass", "nginx"]:
    rs = runs[name]
    every = " / ".join(f"{r[0]:,.0f}" for r in rs)
    non2xx = sum(int(x) for r in rs for x in r[1][1:])
    failed = ", ".join(f"{a}/{b}" for _, _, (a, b) in rs)
    print(f"| {name} | {med[name]:,.0f} | {med[name] / med['nginx']:.2f} | {every} | {non2xx} | {failed} |")
ratios = " / ".join(f"{w[0] / n[0]:.2f}" for w, n in zip(runs["windlass"], runs["nginx"]))
print(f"\nh2load -c 10 -m 10 over h2c, {len(runs['nginx'])} interleaved runs. Windlass/nginx run by run: {ratios}.")
PY
cat "bench/results/h2-$STAMP.md"
