#!/usr/bin/env bash
# Issue 4's benchmark: Prometheus remote write 1.0 ingest of the TSBS cpu-only set (100 hosts x
# 24 h unless other sluice-load arguments are given; each field a metric cpu_<field>, the ten
# tags as labels), into Sluice and into VictoriaMetrics' /api/v1/write, the same bodies, each
# server fresh on an empty folder. Two shapes of request, 2,000 samples each:
#   1. one sample per series entry, as Prometheus sends what it scrapes;
#   2. 60 consecutive samples (10 minutes) of a series per entry, as a batching agent or a
#      backfill sends them.
#
#   benches/remote-write.sh
#
# Needs the Debian package victoria-metrics for the comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh

for per_series in 1 60; do
  echo "=== Sluice, $per_series sample(s) per series entry"
  "$bin/sluice" serve --http-bind 127.0.0.1:18181 --data-dir "$work/sluice-$per_series" \
    --persist-after 100000h 2>"$work/sluice.log" >/dev/null &
  pid=$!
  wait_for http://127.0.0.1:18181/health
  "$bin/sluice-load" --url http://127.0.0.1:18181 --protocol remote-write \
    --samples-per-series "$per_series" --server-pid "$pid" --verify "$@"
  kill "$pid"; wait "$pid" || true

  if command -v victoria-metrics >/dev/null; then
    echo "=== VictoriaMetrics $(dpkg-query -W -f='${Version}' victoria-metrics 2>/dev/null || echo '?'), $per_series sample(s) per series entry"
    victoria-metrics -retentionPeriod=100y -storageDataPath="$work/vm-$per_series" \
      -httpListenAddr=127.0.0.1:18428 >"$work/vm.log" 2>&1 &
    pid=$!
    wait_for http://127.0.0.1:18428/health
    "$bin/sluice-load" --url http://127.0.0.1:18428 --target victoria-metrics \
      --protocol remote-write --samples-per-series "$per_series" --server-pid "$pid" "$@"
    kill "$pid"; wait "$pid" || true
  fi
done
