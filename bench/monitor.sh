#!/usr/bin/env bash
# The monitor's probe benchmark (not CI). Two parts, one command:
#
# 1. 10,000 HTTP probes at 30 s against loopback targets, run at the same time by `windlass
#    server` (a generated windlass.toml with 10,000 [probes.p<N>]) and by Prometheus scraping
#    blackbox_exporter's /probe for the same 10,000 URLs (scrape_interval 30s, module http_2xx).
#    After a warm-up of one interval, and once both report every probe up, each process's CPU
#    (utime + stime from /proc/<pid>/stat, as a share of one core) and RSS (VmRSS, max and end)
#    are sampled over DURATION seconds. The whole `windlass server` process is measured: it
#    also runs its other loops (SLO collection, alerting, the auto-rollback guard, retirement,
#    database schedules), with nothing to do here.
# 2. Measured, not asserted: the time from a primary's death to an alert and an open incident.
#    A second server watches one `windlass-demo` with a critical probe (interval 1s,
#    failure_threshold 3); the demo is killed with SIGKILL, and `windlass alerts` and `windlass
#    incident list` are polled until the alert fires and the incident is open. KILLS times.
#
#   cargo build --release -p windlass -p windlass-runtime -p windlass-bench -p windlass-demo   # the server needs windlass-shim
#   bash bench/monitor.sh                # 10,000 probes, 600 s measured, 5 kills
#   DURATION=60 bash bench/monitor.sh    # a short trial run
#   PROBES=1000 KILLS=2 BIN=target/debug bash bench/monitor.sh
#
# Needs: apt-get install prometheus prometheus-blackbox-exporter curl python3
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
track() { PIDS+=("$1"); }
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/${PROFILE:-release}}
PROBES=${PROBES:-10000}
DURATION=${DURATION:-600}
UPSTREAMS=${UPSTREAMS:-4}
KILLS=${KILLS:-5}
INTERVAL=30
need prometheus prometheus-blackbox-exporter curl python3
for tool in windlass windlass-shim windlass-demo bench-upstream; do
  [ -x "$BIN/$tool" ] || { echo "missing $BIN/$tool: cargo build --release -p windlass -p windlass-runtime -p windlass-bench -p windlass-demo" >&2; exit 1; }
done
BIN=$(cd "$BIN" && pwd)
RESULTS=bench/results/monitor-$(date -u +%Y%m%d-%H%M%S)
mkdir -p bench/results
export WINDLASS_EDGE_TOKEN=bench-edge-token-0123456789abcdef
say() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
# On failure, the end of every log before the work directory goes.
trap 'code=$?; if [ $code != 0 ]; then for log in "$WORK"/*.log; do echo "--- $log" >&2; tail -5 "$log" >&2; done; fi; cleanup' EXIT
# Stops a process this script started (and waits for it), so the next part runs on a quiet machine.
stop() { for pid in "$@"; do kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done; }
# Polls `condition` (a command) every second until it succeeds; gives up after $1 seconds.
wait_for() {
  local limit=$1 what=$2; shift 2
  for _ in $(seq "$limit"); do "$@" && return 0; sleep 1; done
  echo "gave up waiting for $what after $limit s" >&2
  exit 1
}

# --- Part 1: 10,000 probes, Windlass against Prometheus + blackbox_exporter ----------------------

ports=()
for _ in $(seq "$UPSTREAMS"); do
  port=$(free_port)
  PORT=$port "$BIN/bench-upstream" >/dev/null 2>&1 & track $!
  ports+=("$port")
done
UPSTREAM_PIDS=("${PIDS[@]}")
for port in "${ports[@]}"; do wait_port "$port"; done
# bench-upstream answers 200 "ok" to any path and query.
curl -sf "http://127.0.0.1:${ports[0]}/health?i=0" >/dev/null

EDGE_PORT=$(free_port) ADMIN_PORT=$(free_port) API_PORT=$(free_port) BB_PORT=$(free_port) PROM_PORT=$(free_port)
mkdir -p "$WORK/probes"
CONFIG=$WORK/probes/windlass.toml
# The same 10,000 URLs for both systems, spread over the upstreams: /health?i=N.
python3 - "$WORK" "$PROBES" "$INTERVAL" "$BB_PORT" "${ports[@]}" <<'EOF'
import sys
work, probes, interval, bb_port, ports = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]
urls = [f"http://127.0.0.1:{ports[i % len(ports)]}/health?i={i}" for i in range(probes)]
with open(f"{work}/probes/windlass.toml", "w") as f:
    f.write('[project]\nname = "probes"\n\n[environments.bench]\n')
    for i, url in enumerate(urls):
        f.write(f'\n[probes.p{i}]\ntype = "http"\nurl = "{url}"\ninterval = "{interval}s"\n')
# blackbox_exporter's http_2xx as Debian ships it (/etc/prometheus/blackbox.yml).
with open(f"{work}/blackbox.yml", "w") as f:
    f.write("modules:\n  http_2xx:\n    prober: http\n")
# Prometheus: the standard blackbox relabelling; the same 10 s timeout as Windlass's default.
with open(f"{work}/prometheus.yml", "w") as f:
    f.write(f"""global:
  scrape_interval: {interval}s
  scrape_timeout: 10s
  evaluation_interval: {interval}s
scrape_configs:
  - job_name: blackbox
    metrics_path: /probe
    params:
      module: [http_2xx]
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: 127.0.0.1:{bb_port}
    static_configs:
      - targets:
""")
    for url in urls:
        f.write(f"          - '{url}'\n")
EOF
"$BIN/windlass" validate --config "$CONFIG" bench >/dev/null

say "starting windlass (edge + server, $PROBES probes) and prometheus + blackbox_exporter"
"$BIN/windlass" edge --config "$CONFIG" --env bench --listen 127.0.0.1:$EDGE_PORT \
  --admin-listen 127.0.0.1:$ADMIN_PORT --state "$WORK/edge.json" >"$WORK/edge.log" 2>&1 & EDGE=$!; track $EDGE
wait_port "$ADMIN_PORT"
export WINDLASS_TOKEN=$("$BIN/windlass" token create --admin --for bench --config "$CONFIG" --state "$WORK/state" 2>/dev/null)
export WINDLASS_SERVER=http://127.0.0.1:$API_PORT
"$BIN/windlass" server --config "$CONFIG" --state "$WORK/state" --listen 127.0.0.1:$API_PORT \
  --edge-admin 127.0.0.1:$ADMIN_PORT --edge-listen 127.0.0.1:$EDGE_PORT >"$WORK/server.log" 2>&1 & SERVER=$!; track $SERVER
prometheus-blackbox-exporter --config.file="$WORK/blackbox.yml" --web.listen-address=127.0.0.1:$BB_PORT \
  >"$WORK/blackbox.log" 2>&1 & BLACKBOX=$!; track $BLACKBOX
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prometheus-data" \
  --web.listen-address=127.0.0.1:$PROM_PORT >"$WORK/prometheus.log" 2>&1 & PROMETHEUS=$!; track $PROMETHEUS
wait_port "$API_PORT"; wait_port "$BB_PORT"; wait_port "$PROM_PORT"

# Counts of probes: Windlass's up ones and all their checks; Prometheus's successful ones.
windlass_probes() { # prints "<probes> <up> <checks>"
  "$BIN/windlass" probes bench --output json >"$WORK/probes.json" || true
  python3 -c '
import json, sys
probes = json.load(open(sys.argv[1]))["probes"]
print(len(probes), sum(p["health"] == "up" for p in probes), sum(p["checks"] or 0 for p in probes))
' "$WORK/probes.json" 2>/dev/null || echo "0 0 0"
}
prom_query() { # one number: the value of an instant query (0 when empty)
  curl -sf "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$1" 2>/dev/null | python3 -c '
import json, sys
result = json.load(sys.stdin)["data"]["result"]
print(int(float(result[0]["value"][1])) if result else 0)' 2>/dev/null || echo 0
}
all_up() {
  read -r n up _ < <(windlass_probes)
  local prom; prom=$(prom_query 'count(probe_success == 1)')
  say "windlass: $up of $n probes up; prometheus: $prom of $PROBES probes succeeding"
  [ "$n" = "$PROBES" ] && [ "$up" = "$PROBES" ] && [ "$prom" = "$PROBES" ]
}
# Probes spread their first run over the interval: warm up for one interval, then check.
sleep $((INTERVAL + 5))
wait_for 120 "every probe up in both systems" all_up
read -r _ _ checks_before < <(windlass_probes)

# /proc sampler: every 5 s, each process's utime+stime and VmRSS, and the machine's busy share.
cat >"$WORK/sample.py" <<'EOF'
import json, os, sys, time
duration, names, pids = float(sys.argv[1]), sys.argv[2].split(","), [int(p) for p in sys.argv[3].split(",")]
tick = os.sysconf("SC_CLK_TCK")
def cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick          # utime + stime, seconds
def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024                 # MiB
def machine():
    values = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)     # busy, total (jiffies)
start, cpu0, m0 = time.monotonic(), [cpu(p) for p in pids], machine()
peak = [rss(p) for p in pids]
while time.monotonic() - start < duration:
    time.sleep(min(5, max(0, duration - (time.monotonic() - start))))
    peak = [max(a, rss(p)) for a, p in zip(peak, pids)]
elapsed, cpu1, m1 = time.monotonic() - start, [cpu(p) for p in pids], machine()
out = {"seconds": round(elapsed, 1), "machine_busy": (m1[0] - m0[0]) / max(1, m1[1] - m0[1]) * os.cpu_count(), "processes": {}}
for name, pid, c0, c1, top in zip(names, pids, cpu0, cpu1, peak):
    out["processes"][name] = {"pid": pid, "cpu_s": round(c1 - c0, 2), "core_share": (c1 - c0) / elapsed,
                              "rss_max_mib": round(top, 1), "rss_end_mib": round(rss(pid), 1)}
print(json.dumps(out))
EOF
say "measuring for $DURATION s"
python3 "$WORK/sample.py" "$DURATION" windlass-server,prometheus,blackbox_exporter,windlass-edge \
  "$SERVER,$PROMETHEUS,$BLACKBOX,$EDGE" >"$WORK/sample.json"
# After the window (so the listing's cost is not in it): the checks each system ran in it.
read -r n up checks_after < <(windlass_probes)
prom_checks=$(prom_query "sum(count_over_time(probe_success[${DURATION}s]))")
prom_up=$(prom_query 'count(probe_success == 1)')
python3 - "$WORK/sample.json" "$PROBES" "$DURATION" "$((checks_after - checks_before))" "$prom_checks" "$up" "$prom_up" \
  "$(prometheus --version 2>&1 | head -1 | awk '{print $3}')" "$(prometheus-blackbox-exporter --version 2>&1 | head -1 | awk '{print $3}')" \
  >"$RESULTS-probes.md" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
probes, duration, w_checks, p_checks, w_up, p_up, prom_v, bb_v = sys.argv[2:10]
p = s["processes"]
w, pr, bb = p["windlass-server"], p["prometheus"], p["blackbox_exporter"]
both = {"core_share": pr["core_share"] + bb["core_share"], "rss_max_mib": pr["rss_max_mib"] + bb["rss_max_mib"],
        "rss_end_mib": pr["rss_end_mib"] + bb["rss_end_mib"]}
pct = lambda x: f"{100 * x:.2f}%"
print(f"{probes} HTTP probes at 30 s, {s['seconds']:.0f} s measured; machine busy {s['machine_busy']:.2f} of its cores on average.")
print(f"Checks run in the window: windlass {int(w_checks):,}, prometheus+blackbox {int(p_checks):,} "
      f"(expected {int(probes) * int(duration) // 30:,}). Up at the end: windlass {w_up}, prometheus {p_up}.\n")
print("| process | CPU (share of one core) | RSS max | RSS end |")
print("|---|---|---|---|")
rows = [("windlass server (whole process)", w), ("prometheus " + prom_v, pr), ("blackbox_exporter " + bb_v, bb),
        ("prometheus + blackbox_exporter", both), ("(windlass edge, idle, not the monitor)", p["windlass-edge"])]
for name, r in rows:
    print(f"| {name} | {pct(r['core_share'])} | {r['rss_max_mib']:.1f} MiB | {r['rss_end_mib']:.1f} MiB |")
print()
print("| windlass ÷ (prometheus + blackbox_exporter) | CPU | RSS max | RSS end |")
print("|---|---|---|---|")
print(f"| ratio | {w['core_share'] / both['core_share']:.2f} | {w['rss_max_mib'] / both['rss_max_mib']:.2f} | {w['rss_end_mib'] / both['rss_end_mib']:.2f} |")
print(f"| windlass ÷ blackbox_exporter alone | {w['core_share'] / bb['core_share']:.2f} | {w['rss_max_mib'] / bb['rss_max_mib']:.2f} | {w['rss_end_mib'] / bb['rss_end_mib']:.2f} |")
print()
ok = lambda cond: "met" if cond else "MISSED"
print(f"- windlass CPU ≤ 5% of one core: {ok(w['core_share'] <= 0.05)} ({pct(w['core_share'])})")
print(f"- windlass RSS ≤ 100 MB: {ok(w['rss_max_mib'] * 1.048576 <= 100)} (max {w['rss_max_mib'] * 1.048576:.1f} MB)")
print(f"- CPU ≤ half of prometheus + blackbox_exporter: {ok(w['core_share'] <= both['core_share'] / 2)} (ratio {w['core_share'] / both['core_share']:.2f})")
print(f"- RSS ≤ half of prometheus + blackbox_exporter: {ok(w['rss_max_mib'] <= both['rss_max_mib'] / 2)} (ratio {w['rss_max_mib'] / both['rss_max_mib']:.2f})")
EOF
cp "$WORK/sample.json" "$RESULTS-probes.json"
cat "$RESULTS-probes.md"
stop "$SERVER" "$EDGE" "$PROMETHEUS" "$BLACKBOX" "${UPSTREAM_PIDS[@]}"

# --- Part 2: a primary's death to an alert and an open incident -------------------------------------

say "part 2: $KILLS kills of a probed primary"
DEMO_PORT=$(free_port) EDGE_PORT=$(free_port) ADMIN_PORT=$(free_port) API_PORT=$(free_port)
mkdir -p "$WORK/failover"
CONFIG=$WORK/failover/windlass.toml
cat >"$CONFIG" <<EOF
[project]
name = "shop"

[environments.production]

# Never deployed: the probe names it so its alert and incident belong to a service.
[services.api]
run = "$BIN/windlass-demo"

[probes.api-primary]
type = "http"
url = "http://127.0.0.1:$DEMO_PORT/health"
interval = "1s"
failure_threshold = 3
service = "api"
severity = "critical"
EOF
"$BIN/windlass" validate --config "$CONFIG" production >/dev/null
"$BIN/windlass" edge --config "$CONFIG" --env production --listen 127.0.0.1:$EDGE_PORT \
  --admin-listen 127.0.0.1:$ADMIN_PORT --state "$WORK/edge2.json" >"$WORK/edge2.log" 2>&1 & track $!
wait_port "$ADMIN_PORT"
export WINDLASS_TOKEN=$("$BIN/windlass" token create --admin --for bench --config "$CONFIG" --state "$WORK/state2" 2>/dev/null)
export WINDLASS_SERVER=http://127.0.0.1:$API_PORT
"$BIN/windlass" server --config "$CONFIG" --state "$WORK/state2" --listen 127.0.0.1:$API_PORT \
  --edge-admin 127.0.0.1:$ADMIN_PORT --edge-listen 127.0.0.1:$EDGE_PORT >"$WORK/server2.log" 2>&1 & track $!
wait_port "$API_PORT"

start_demo() { PORT=$DEMO_PORT "$BIN/windlass-demo" >>"$WORK/demo.log" 2>&1 & DEMO=$!; track $DEMO; wait_port "$DEMO_PORT"; }
probe_up() { "$BIN/windlass" probes production --output json 2>/dev/null | grep -q '"health": "up"'; }
no_firing() { "$BIN/windlass" alerts production --output json | python3 -c 'import json,sys; sys.exit(len(json.load(sys.stdin)["alerts"]) != 0)'; }
ready() { probe_up && no_firing; }
: >"$WORK/kills"
for run in $(seq "$KILLS"); do
  start_demo
  wait_for 60 "the probe up and no alert firing" ready
  sleep 1.$((RANDOM % 10))   # kill at a random point of the probe's second
  killed=$(date +%s%N); stop "$DEMO"
  alert_seen="" incident_seen="" alert_json="" incident_json=""
  deadline=$((killed + 30000000000))
  while [ -z "$incident_seen" ] && [ "$(date +%s%N)" -lt "$deadline" ]; do
    if [ -z "$alert_seen" ]; then
      alert_json=$("$BIN/windlass" alerts production --output json)
      grep -q '"status": "firing"' <<<"$alert_json" && alert_seen=$(date +%s%N)
    fi
    if [ -n "$alert_seen" ]; then
      incident_json=$("$BIN/windlass" incident list production --output json)
      grep -q '"status": "open"' <<<"$incident_json" && incident_seen=$(date +%s%N)
    fi
    [ -n "$incident_seen" ] || sleep 0.05
  done
  [ -n "$incident_seen" ] || { echo "run $run: no open incident 30 s after the kill" >&2; exit 1; }
  python3 - "$run" "$killed" "$alert_seen" "$incident_seen" "$alert_json" "$incident_json" >>"$WORK/kills" <<'EOF'
import json, sys
from datetime import datetime, timezone
run, killed, alert_seen, incident_seen = sys.argv[1], *map(int, sys.argv[2:5])
alert = next(a for a in json.loads(sys.argv[5])["alerts"] if a["name"] == "api-primary" and a["status"] == "firing")
incident = next(i for i in json.loads(sys.argv[6])["incidents"] if i["status"] == "open")
assert alert["id"] in incident["alerts"], (alert, incident)
def ns(text):  # RFC 3339 with up to nanoseconds
    head, _, frac = text.rstrip("Z").partition(".")
    whole = datetime.fromisoformat(head).replace(tzinfo=timezone.utc).timestamp()
    return int(whole) * 10**9 + int((frac + "000000000")[:9])
ms = lambda t: (t - killed) / 1e6
print(run, incident["id"], f"{ms(ns(alert['fired_at'])):.0f}", f"{ms(ns(incident['opened_at'])):.0f}",
      f"{ms(alert_seen):.0f}", f"{ms(incident_seen):.0f}")
EOF
  read -r _ incident fired opened seen_alert seen_incident < <(tail -1 "$WORK/kills")
  say "kill $run: alert fired ${fired} ms, incident $incident opened ${opened} ms after the kill (seen by polling at ${seen_alert} / ${seen_incident} ms)"
  "$BIN/windlass" incident resolve "$incident" --note "bench: kill $run done" >/dev/null
done
{
  echo
  echo "A primary's death (SIGKILL of the probed windlass-demo; probe interval 1s, failure_threshold 3), $KILLS kills, ms after the kill:"
  echo
  echo "| kill | alert fired_at | incident opened_at | alert seen (polling) | open incident seen (polling) |"
  echo "|---|---|---|---|---|"
  awk '{printf "| %s | %s | %s | %s | %s |\n", $1, $3, $4, $5, $6}' "$WORK/kills"
  sort -n -k3 "$WORK/kills" | awk '{a[NR]=$3; o[NR]=$4} END {m=int((NR+1)/2); printf "\nmedian: alert fired %s ms, incident opened %s ms after the kill (by the sorted alert times); max alert %s ms\n", a[m], o[m], a[NR]}'
} | tee "$RESULTS-kills.md"
say "results: $RESULTS-probes.md, $RESULTS-kills.md"
