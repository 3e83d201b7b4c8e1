#!/usr/bin/env bash
# Issue 21's storage target: bytes per sample on disk of the TSBS day (100 hosts x 24 h unless
# other sluice-load arguments are given) sent as Prometheus remote write (a table per metric
# cpu_<field>, the ten tags as labels), each server fresh on an empty folder:
#   1. Sluice after POST /api/v3/persist and /api/v3/compact (its live Parquet files);
#   2. the same with --parquet-whole-floats-as-integers false (every value DOUBLE);
#   3. VictoriaMetrics 1.79 after /internal/force_flush and once its merges are done.
#
#   benches/disk.sh
#   PROFILE=dev benches/disk.sh    # bytes do not depend on the build: a debug build will do
#
# Needs the Debian package victoria-metrics for 3.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
url=http://127.0.0.1:18181

sluice() {
  rm -rf "$work/sluice"
  "$bin/sluice" serve --http-bind 127.0.0.1:18181 --data-dir "$work/sluice" \
    --persist-after 100000h "$@" 2>"$work/sluice.log" >/dev/null &
  pid=$!
  wait_for $url/health
}

echo "=== 1. Sluice $("$bin/sluice" --version)"
sluice
"$bin/sluice-load" --url $url --protocol remote-write --server-pid "$pid" --verify --persist \
  "$@" | grep -E "^(verified|persisted|compacted)"
kill "$pid"; wait "$pid" || true

echo "=== 2. Sluice, --parquet-whole-floats-as-integers false"
sluice --parquet-whole-floats-as-integers false
"$bin/sluice-load" --url $url --protocol remote-write --server-pid "$pid" --persist \
  "$@" | grep -E "^(persisted|compacted)"
kill "$pid"; wait "$pid" || true

if command -v victoria-metrics >/dev/null; then
  echo "=== 3. VictoriaMetrics $(dpkg-query -W -f='${Version}' victoria-metrics 2>/dev/null || echo '?')"
  start_victoria_metrics
  "$bin/sluice-load" --url http://127.0.0.1:18428 --target victoria-metrics \
    --protocol remote-write --server-pid "$pid" --data-dir "$work/vm" --settle-secs 30 \
    "$@" | grep -E "^(settled|on disk)"
  kill "$pid"; wait "$pid" || true
fi
