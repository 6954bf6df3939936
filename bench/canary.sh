#!/usr/bin/env bash
# Canary aborts: the time from the first bad canary interval (the verdict that aborts, `failed_at`
# in `windlass canary status`) to the edge setting the canary pool's weight to 0 (its event in
# GET /edge/events), over 10 aborted deploys; and, as context, from the deploy's recorded start to
# that weight 0.
#
#   bench/canary.sh             # release build (cargo build --release --workspace first)
#   PROFILE=debug bench/canary.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
track() { PIDS+=("$1"); }
BIN=${CARGO_TARGET_DIR:-target}/${PROFILE:-release}
RUNS=${RUNS:-10}
# Half of the load reaches the canary (weight 50): 50/s, well over min_requests = 10 a second.
RATE=${RATE:-100}

mkdir -p "$WORK/shop"
CONFIG=$WORK/shop/windlass.toml STATE=$WORK/state
write_config() { # the api service's env
  cat >"$CONFIG" <<EOF
[project]
name = "shop"

[environments.production]

[pipeline]
phases = ["validate", "backend", "verification", "traffic"]

[services.api]
phase = "backend"
run = "$PWD/$BIN/windlass-demo"
instances = 1
strategy = { canary = [{ weight = 50, pause = "30s" }, { weight = 100 }] }
analysis = { interval = "1s", max_error_rate = "5%", min_requests = 10, failure_limit = 1 }
keep_warm = "0s"
route = { host = "api.shop.localhost", path = "/" }
health = { path = "/health", interval = "100ms", timeout = "1s", healthy_after = 1, start_timeout = "20s" }
env = { $1 }
EOF
}
write_config 'VERSION = "v1"'
EDGE_PORT=$(free_port) ADMIN_PORT=$(free_port) API_PORT=$(free_port)
export WINDLASS_EDGE_TOKEN=bench-edge-token-0123456789abcdef
"$BIN/windlass" edge --config "$CONFIG" --env production --listen 127.0.0.1:$EDGE_PORT \
  --admin-listen 127.0.0.1:$ADMIN_PORT --state "$WORK/edge.json" >"$WORK/edge.log" 2>&1 & track $!
wait_port "$ADMIN_PORT"
export WINDLASS_TOKEN=$("$BIN/windlass" token create --admin --for bench --config "$CONFIG" --state "$STATE" 2>/dev/null)
export WINDLASS_SERVER=http://127.0.0.1:$API_PORT
"$BIN/windlass" server --config "$CONFIG" --state "$STATE" --listen 127.0.0.1:$API_PORT \
  --edge-admin 127.0.0.1:$ADMIN_PORT --edge-listen 127.0.0.1:$EDGE_PORT >>"$WORK/server.log" 2>&1 & track $!
wait_port "$API_PORT"
# The shims outlive the server; each instance's child dies with its shim. A pid is only killed
# when its command line names this run's instance directory.
stop_instances() {
  for status in "$STATE"/instances/*/status.json; do
    [ -f "$status" ] || continue
    local dir pid; dir=$(dirname "$status")
    pid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("shim_pid") or "")' "$status")
    if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$dir"; then
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
}
trap 'stop_instances; cleanup' EXIT

"$BIN/windlass" deploy production --reason v1 >/dev/null
: >"$WORK/gaps"
for n in $(seq "$RUNS"); do
  write_config "VERSION = \"v2-$n\", FAULT_ERROR_RATE = \"0.5\""
  # Bounded in time (and so in count): stopped as soon as the deploy has failed.
  "$BIN/bench-load" --target 127.0.0.1:$EDGE_PORT --host api.shop.localhost --path /version --rate "$RATE" \
    --connections 4 --seconds 60 >/dev/null & load=$!
  code=0; "$BIN/windlass" deploy production --reason "bad v2-$n" >"$WORK/deploy.log" 2>&1 || code=$?
  kill "$load" 2>/dev/null || true; wait "$load" 2>/dev/null || true
  if [ "$code" != 1 ]; then echo "run $n: the deploy exited $code, not 1 (an aborted canary):"; cat "$WORK/deploy.log"; exit 1; fi
  id=$(sed -n 's/^deploy \([^ ]*\) started$/\1/p' "$WORK/deploy.log")
  "$BIN/windlass" canary status production --output json >"$WORK/canary.json"
  "$BIN/windlass" deploy show "$id" --output json >"$WORK/deploy.json"
  curl -sf -H "Authorization: Bearer $WINDLASS_EDGE_TOKEN" "http://127.0.0.1:$ADMIN_PORT/edge/events" >"$WORK/events.json"
  python3 - "$n" "$id" "$WORK" <<'EOF'
import json, re, sys
from datetime import datetime
n, deploy_id, work = sys.argv[1], sys.argv[2], sys.argv[3]
ms = lambda text: round(datetime.fromisoformat(text).timestamp() * 1000)
canary = next(c for c in json.load(open(f"{work}/canary.json"))["canaries"] if c["service"] == "api")
assert canary["deploy_id"] == deploy_id and canary["outcome"] == "aborted" and canary["failed_at"], canary
started = ms(json.load(open(f"{work}/deploy.json"))["deploy"]["started_at"])
failed = ms(canary["failed_at"])
# The abort's weights, {"<stable>": 100, "<canary>": 0}: the first such event since the deploy began.
zero = re.compile(r'"%s": 0\b' % re.escape(canary["canary"]))
at = min(e["at_unix_ms"] for e in json.load(open(f"{work}/events.json"))["events"]
         if e["service"] == "api" and e["kind"] == "weights" and zero.search(e["message"]) and e["at_unix_ms"] >= started)
print(at - failed, at - started, file=open(f"{work}/gaps", "a"))
print(f"run {n}: first bad interval to weight 0: {at - failed} ms; deploy start to weight 0: {at - started} ms "
      f"(bad interval: {canary['last']['errors']} errors of {canary['last']['requests']} requests)")
EOF
done
summary() { sort -n | awk '{a[NR]=$1} END {print "p50 " a[int((NR+1)/2)] " ms, max " a[NR] " ms"}'; }
echo "first bad interval to weight 0: $(cut -d' ' -f1 "$WORK/gaps" | summary) ($RUNS aborts)"
echo "deploy start to weight 0: $(cut -d' ' -f2 "$WORK/gaps" | summary) ($RUNS aborts)"
