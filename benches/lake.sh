#!/usr/bin/env bash
# Issue 3's benchmarks: Sluice on its Parquet lake, beside VictoriaMetrics and InfluxDB 1.6 on
# the same data (100 hosts x 24 h of TSBS cpu-only unless other sluice-load arguments are
# given), each server fresh on an empty folder.
#
#   benches/lake.sh
#
# Prints, in order:
#   1. Sluice ingest with no persistence during the load (--persist-after far away), then
#      POST /api/v3/persist and /api/v3/compact with bytes per field value after each, then
#      the TSBS queries (median of 10 after a warm-up) on the persisted data;
#   2. a restart of that server after 1.08 M more field values went to its WAL only
#      (kill -9), and how long until the first query answers;
#   3. Sluice ingest with persistence running during the load (every ended hour is due,
#      checked every 100 ms);
#   4. VictoriaMetrics 1.79: ingest, and bytes per field value after a flush and 30 s of merges;
#   5. InfluxDB 1.6: ingest, bytes on disk after 30 s, the TSBS queries in InfluxQL.
# Needs the Debian packages victoria-metrics and influxdb for 4 and 5.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
sluice_url=http://127.0.0.1:18181

echo "=== 1. Sluice: load, persist, compact, TSBS queries"
"$bin/sluice" serve --http-bind 127.0.0.1:18181 --data-dir "$work/sluice" \
  --persist-after 100000h 2>"$work/sluice.log" >/dev/null &
pid=$!
wait_for $sluice_url/health
"$bin/sluice-load" --url $sluice_url --server-pid "$pid" --verify --persist \
  --data-dir "$work/sluice" --tsbs-queries "$@"

echo "=== 2. Sluice: restart with the day persisted and 1.08 M field values in the WAL only"
"$bin/sluice-load" --url $sluice_url --hours 3 --start-after-hours 24 "$@" | grep "field values/s"
kill -9 "$pid"; wait "$pid" || true
started=$(date +%s.%N)
"$bin/sluice" serve --http-bind 127.0.0.1:18181 --data-dir "$work/sluice" \
  --persist-after 100000h 2>>"$work/sluice.log" >/dev/null &
pid=$!
until curl -fs -G $sluice_url/api/v3/query_sql --data-urlencode db=bench \
  --data-urlencode "q=SELECT count(*) FROM cpu" >"$work/count" 2>/dev/null; do sleep 0.01; done
echo "restart: first query answered after $(echo "$(date +%s.%N) - $started" | bc) s: $(cat "$work/count")"
grep "loaded the catalog" "$work/sluice.log" | tail -1
kill "$pid"; wait "$pid" || true

echo "=== 3. Sluice: load with persistence running"
rm -rf "$work/sluice"
"$bin/sluice" serve --http-bind 127.0.0.1:18181 --data-dir "$work/sluice" \
  --persist-after 0s --persist-interval 100ms 2>"$work/sluice.log" >/dev/null &
pid=$!
wait_for $sluice_url/health
"$bin/sluice-load" --url $sluice_url --server-pid "$pid" --verify "$@"
echo "persisted during the load: $(grep -c 'persisted buffered partitions' "$work/sluice.log") rounds"
kill "$pid"; wait "$pid" || true

if command -v victoria-metrics >/dev/null; then
  echo "=== 4. VictoriaMetrics $(dpkg-query -W -f='${Version}' victoria-metrics 2>/dev/null || echo '?')"
  start_victoria_metrics
  "$bin/sluice-load" --url http://127.0.0.1:18428 --target victoria-metrics --server-pid "$pid" \
    --data-dir "$work/vm" --settle-secs 30 "$@"
  kill "$pid"; wait "$pid" || true
fi

if command -v influxd >/dev/null; then
  echo "=== 5. InfluxDB $(dpkg-query -W -f='${Version}' influxdb 2>/dev/null || echo '?')"
  INFLUXDB_META_DIR="$work/influx/meta" INFLUXDB_DATA_DIR="$work/influx/data" \
    INFLUXDB_DATA_WAL_DIR="$work/influx/wal" INFLUXDB_HTTP_BIND_ADDRESS=127.0.0.1:18086 \
    INFLUXDB_BIND_ADDRESS=127.0.0.1:18088 INFLUXDB_REPORTING_DISABLED=true \
    INFLUXDB_DATA_QUERY_LOG_ENABLED=false INFLUXDB_HTTP_LOG_ENABLED=false \
    influxd >"$work/influx.log" 2>&1 &
  pid=$!
  wait_for http://127.0.0.1:18086/ping
  curl -fs -XPOST http://127.0.0.1:18086/query --data-urlencode 'q=CREATE DATABASE bench' >/dev/null
  "$bin/sluice-load" --url http://127.0.0.1:18086 --target influxdb --server-pid "$pid" \
    --data-dir "$work/influx" --settle-secs 30 --tsbs-queries "$@"
  kill "$pid"; wait "$pid" || true
fi
