#!/usr/bin/env bash
# Deploys under steady load: failed requests through the edge during a blue-green deploy, a
# rolling deploy, a warm rollback and a server kill -9 + restart; the time from
# `windlass rollback` (to a warm color) to its recorded end (p50 of 10); and Windlass's own
# overhead in a whole deploy of the example (total minus waiting on the services).
#
#   bench/deploys.sh            # release build (cargo build --release --workspace first)
#   PROFILE=debug bench/deploys.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
track() { PIDS+=("$1"); }
BIN=${CARGO_TARGET_DIR:-target}/${PROFILE:-release}
# The example limits each client to 100 requests/s on api (200/s at the edge): stay below.
RATE=${RATE:-80}

cp -r examples/maily "$WORK/maily"; rm -rf "$WORK/maily/.windlass"
CONFIG=$WORK/maily/windlass.toml STATE=$WORK/state
EDGE_PORT=$(free_port) ADMIN_PORT=$(free_port) API_PORT=$(free_port)
export WINDLASS_EDGE_TOKEN=bench-edge-token-0123456789abcdef
"$BIN/windlass" edge --config "$CONFIG" --env staging --listen 127.0.0.1:$EDGE_PORT \
  --admin-listen 127.0.0.1:$ADMIN_PORT --state "$WORK/edge.json" >"$WORK/edge.log" 2>&1 & track $!
wait_port "$ADMIN_PORT"
export WINDLASS_TOKEN=$("$BIN/windlass" token create --admin --for bench --config "$CONFIG" --state "$STATE" 2>/dev/null)
export WINDLASS_SERVER=http://127.0.0.1:$API_PORT
start_server() {
  "$BIN/windlass" server --config "$CONFIG" --state "$STATE" --listen 127.0.0.1:$API_PORT \
    --edge-admin 127.0.0.1:$ADMIN_PORT --edge-listen 127.0.0.1:$EDGE_PORT >>"$WORK/server.log" 2>&1 &
  SERVER=$!; track $SERVER; wait_port "$API_PORT"
}
start_server
trap '"$BIN/windlass" status >/dev/null 2>&1; cleanup_instances; cleanup' EXIT
cleanup_instances() { pkill -f "windlass-shim $STATE" 2>/dev/null || true; }

"$BIN/windlass" deploy staging >/dev/null
# Windlass's own overhead in a whole deploy of the example: the command's wall time, and the
# server's account of the deploy (the deploy.succeeded event's data), minus the time spent
# waiting on services (instance start to health gate passed, concurrent waits counted once).
overheads=()
for _ in $(seq 5); do
  start=$(date +%s%N); "$BIN/windlass" deploy staging >/dev/null; end=$(date +%s%N)
  data=$("$BIN/windlass" events staging --kind deploy.succeeded --output json)
  overheads+=("$(python3 -c "
import json, sys
event = json.loads(sys.argv[1])['events'][0]
d = event['data']
wall = ($end - $start) // 1000000
print(wall, d['elapsed_ms'], d['service_waits_ms'], d['overhead_ms'], wall - d['service_waits_ms'])
" "$data")")
done
printf '%s\n' "${overheads[@]}" | sort -n -k4 | awk '{w[NR]=$1; e[NR]=$2; s[NR]=$3; o[NR]=$4; c[NR]=$5}
  END {m=int((NR+1)/2); print "whole deploy of the example (5 runs, median by overhead): command " w[m] " ms; server " e[m] " ms, of which waiting on services " s[m] " ms; Windlass overhead " o[m] " ms in the server, " c[m] " ms as the command sees it (max " o[NR] " ms)"}'
# Rollback timing first, while only api changes between deploys: a rollback across the rolling
# ai-worker deploy below would also re-roll ai-worker, and be timed as a redeploy.
times=()
for _ in $(seq 10); do
  "$BIN/windlass" deploy staging --only backend >/dev/null
  start=$(date +%s%N); "$BIN/windlass" rollback staging >"$WORK/rollback.log"; end=$(date +%s%N)
  # Only api changed since the target, and its old color is warm: a switch, nothing redeployed.
  if ! grep -q "switch api back" "$WORK/rollback.log" || grep -q "redeploy" "$WORK/rollback.log"; then
    echo "not a pure warm switch:"; cat "$WORK/rollback.log"; exit 1
  fi
  times+=($(( (end - start) / 1000000 )))
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print "rollback to a warm color, command start to recorded end: p50 " a[int((NR+1)/2)] " ms, max " a[NR] " ms (10 runs)"}'
under_load() { # name, host, command...
  local name=$1 host=$2; shift 2
  "$BIN/bench-load" --target 127.0.0.1:$EDGE_PORT --host "$host" --path /version --rate "$RATE" \
    --connections 16 --seconds 8 >"$WORK/load.json" & local load=$!
  sleep 1; "$@" >/dev/null; wait $load
  python3 -c "import json,sys; r=json.load(open('$WORK/load.json')); print(f'$name: {r[\"failed\"]} failed of {r[\"requests\"]} requests (p99 {r[\"p99_us\"]/1000:.1f} ms)')"
}
under_load "blue-green deploy of api" api.maily.localhost "$BIN/windlass" deploy staging --only backend
under_load "rolling deploy of ai-worker" ai.maily.localhost "$BIN/windlass" deploy staging --only ai
under_load "rollback (api switched back warm, ai-worker re-rolled)" api.maily.localhost "$BIN/windlass" rollback staging
kill_and_restart() { kill -9 "$SERVER"; sleep 1; start_server; }
under_load "server kill -9 and restart" api.maily.localhost kill_and_restart

