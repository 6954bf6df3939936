#!/usr/bin/env bash
# The SLO rollup storage measurement (not CI): a year of per-minute rollups for 100 services
# written through the real store (SQLite) with downsampling applied; prints the file size
# (target: at most 500 MB) and the write, downsample and report times.
#
#   bench/slo-storage.sh                      # 100 services, 365 days
#   SLO_BENCH_SERVICES=10 SLO_BENCH_DAYS=30 bench/slo-storage.sh
#   SLO_BENCH_MINUTE_DAYS=365 bench/slo-storage.sh   # every day through minute rows (hours)
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --release -p windlass-monitor --test slo_storage -- --ignored --nocapture
