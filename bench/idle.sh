#!/usr/bin/env bash
# Memory with idle keep-alive connections, side by side in one run: the RSS of the Windlass edge
# (the whole process, one worker) and of one nginx worker (`worker_connections` 20,480) while a
# client holds CONNECTIONS (default 10,000) idle connections open to it, half of them after one
# request answered 200 (keep-alive), half never having sent a byte. Measured a few seconds after
# the last one opened, before any idle timeout fires (nginx's shortest is 60 s, the edge's
# default header-read timeout 60 s). The server's established connections are counted with `ss`
# to prove they were all held. RUNS interleaved runs (default 3); each opens, measures, closes.
#
#   bash bench/idle.sh      # needs nginx, python3, ss; raises `ulimit -n` (root or a high hard limit)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${RUNS:-3}
CONNECTIONS=${CONNECTIONS:-10000}
need nginx taskset python3 ss
# As high as allowed (a container may cap the hard limit: 20,000 here); the client, the edge and
# nginx's worker each hold one descriptor per connection, in processes of their own.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
[ "$NOFILE" -ge $((CONNECTIONS + 1000)) ] || { echo "ulimit -n is $NOFILE: too low for $CONNECTIONS connections" >&2; exit 1; }
build_release

start_upstream

start_edge

NGINX_PORT=$(free_port)
sed "s/UPSTREAM/127.0.0.1:$UP_PORT/; s/NGINX_PORT/$NGINX_PORT/; s#PIDFILE#$WORK/nginx.pid#" bench/nginx.conf \
  | sed "s/worker_connections 4096;/worker_connections 20480;/; s/^worker_processes 1;/worker_processes 1;\nworker_rlimit_nofile $NOFILE;/" \
  > "$WORK/nginx.conf"
grep -q 'worker_connections 20480;' "$WORK/nginx.conf" || { echo "nginx.conf: worker_connections not raised" >&2; exit 1; }
NGINX_PIDFILES+=("$WORK/nginx.pid")
taskset -c 1 nginx -c "$WORK/nginx.conf" -p "$WORK" & PIDS+=($!)
wait_port "$NGINX_PORT"
sleep 0.3
NGINX_WORKER=$(pgrep -P "$(cat "$WORK/nginx.pid")" | head -1)

# The client: opens the connections (200 at a time), sends one request on every other one and
# reads its answer (must be 200), prints "ready <opened> <answered>", then holds them until killed.
cat > "$WORK/client.py" <<'PY'
import asyncio, socket, struct, sys
port, count, source = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
async def main():
    held, answered, gate = [], 0, asyncio.Semaphore(200)
    async def one(i):
        nonlocal answered
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if i % 2 == 0:
                writer.write(b"GET / HTTP/1.1\r\nHost: bench.localhost\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200"), head
                length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                answered += 1
            held.append((reader, writer))
    await asyncio.gather(*(one(i) for i in range(count)))
    print(f"ready {len(held)} {answered}", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
PY

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
established() { ss -Htn state established "( sport = :$1 )" | wc -l; }

# name port pid
measure() {
  local name=$1 port=$2 pid=$3 before after held
  before=$(rss_kb "$pid")
  : > "$WORK/client.out"
  # Each measurement from a source address of its own (127.0.0.0/8 is all local): the sockets
  # a run leaves in TIME_WAIT (about half, despite SO_LINGER 0) would otherwise use up the
  # ephemeral ports of one source address within three runs.
  SOURCE=$((SOURCE + 1))
  taskset -c 0 python3 "$WORK/client.py" "$port" "$CONNECTIONS" "127.0.0.$SOURCE" > "$WORK/client.out" 2>&1 &
  local client=$!
  PIDS+=("$client")
  for _ in $(seq 1200); do grep -q '^ready' "$WORK/client.out" && break; kill -0 "$client" 2>/dev/null || break; sleep 0.1; done
  grep -q '^ready' "$WORK/client.out" || { echo "$name: the client failed:" >&2; cat "$WORK/client.out" >&2; ss -s >&2; exit 1; }
  sleep 3  # let the server settle (buffers freed after the answered requests)
  after=$(rss_kb "$pid")
  held=$(established "$port")
  echo "$name rss_before_kb $before rss_after_kb $after established $held client $(cat "$WORK/client.out")" >> "$WORK/raw"
  kill "$client"; wait "$client" 2>/dev/null || true
  sleep 2  # the server closes its side
}

SOURCE=10
for run in $(seq "$RUNS"); do
  echo "run $run/$RUNS" >&2
  measure windlass "$EDGE_PORT" "$EDGE_PID"
  measure nginx "$NGINX_PORT" "$NGINX_WORKER"
done

STAMP=$(date -u +%Y%m%d-%H%M%S)
cp "$WORK/raw" "bench/results/idle-$STAMP.raw"
python3 - "$WORK/raw" > "bench/results/idle-$STAMP.md" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    w = line.split()
    runs.setdefault(w[0], []).append({"before": int(w[2]), "after": int(w[4]), "held": int(w[6]), "opened": int(w[9]), "answered": int(w[10])})
n = runs["nginx"][0]["opened"]
print(f"{n:,} idle connections, half of them after one request (keep-alive).\n")
print("| process | RSS with the connections (median of runs) | vs nginx | KB per connection (1st run, fresh process) | every run: RSS before → with (MiB), connections held |")
print("|---|---|---|---|---|")
med = {name: statistics.median(r["after"] for r in rs) for name, rs in runs.items()}
for name, label in [("windlass", "windlass edge (whole process)"), ("nginx", "nginx worker")]:
    rs = runs[name]
    first = (rs[0]["after"] - rs[0]["before"]) / rs[0]["opened"]
    every = " · ".join(f"{r['before'] / 1024:.1f} → {r['after'] / 1024:.1f}, {r['held']:,}" for r in rs)
    print(f"| {label} | {med[name] / 1024:,.1f} MiB | {med[name] / med['nginx']:.2f} | {first:.2f} | {every} |")
ratios = " / ".join(f"{w['after'] / g['after']:.2f}" for w, g in zip(runs["windlass"], runs["nginx"]))
print(f"\nWindlass/nginx RSS run by run: {ratios}. 'held': the server side's established connections (ss). "
      "nginx allocates its connection table (worker_connections) at start; its RSS before the 2nd run is what the 1st left.")
PY
cat "bench/results/idle-$STAMP.md"
