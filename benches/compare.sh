#!/usr/bin/env bash
# The end-to-end load benchmark, Sluice and VictoriaMetrics side by side: each server is
# started fresh on an empty folder, loaded by sluice-load with the same data over the same
# number of connections, and stopped. Extra arguments go to every sluice-load run
# (e.g. --hosts 10 --hours 1 for a quick look).
#
#   benches/compare.sh                       # 100 hosts x 24 h, 4 connections
#   RUNS=3 benches/compare.sh                # alternate the two servers three times
#
# Needs the Debian package victoria-metrics (1.79 on Debian 12/13); without it, only Sluice runs.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
query="SELECT date_bin(INTERVAL '1 minute', time) AS minute, max(usage_user) FROM cpu WHERE hostname = 'host_8' AND time >= '2026-01-01T12:00:00Z' AND time < '2026-01-01T13:00:00Z' GROUP BY minute ORDER BY minute"

for run in $(seq "${RUNS:-1}"); do
  echo "=== run $run: Sluice $("$bin/sluice" --version)"
  rm -rf "$work/sluice"
  "$bin/sluice" serve --http-bind 127.0.0.1:18181 --data-dir "$work/sluice" 2>"$work/sluice.log" >/dev/null &
  pid=$!
  wait_for http://127.0.0.1:18181/health
  "$bin/sluice-load" --url http://127.0.0.1:18181 --target sluice --server-pid "$pid" \
    --verify --query "$query" "$@"
  kill "$pid"; wait "$pid" || true

  if command -v victoria-metrics >/dev/null; then
    echo "=== run $run: VictoriaMetrics $(dpkg-query -W -f='${Version}' victoria-metrics 2>/dev/null || echo '?')"
    start_victoria_metrics
    "$bin/sluice-load" --url http://127.0.0.1:18428 --target victoria-metrics \
      --server-pid "$pid" "$@"
    kill "$pid"; wait "$pid" || true
  fi
done
