#!/usr/bin/env bash
# Issue 19, item 14: peak memory of Sluice beside VictoriaMetrics on the TSBS cpu-only load,
# for the 100-host day and for 4,000 hosts x 3 h, sent as line protocol and as Prometheus
# remote write (4 connections). Each server starts fresh on an empty folder with its default
# flags. Sluice's peak (VmHWM) covers the load (hours persist as they fall due meanwhile),
# then persisting the rest and a compaction round; VictoriaMetrics' covers the load, a
# force_flush and 30 s of its background merges.
#
#   benches/memory.sh              # both data sets, both protocols
#   RUNS=2 benches/memory.sh
#
# Needs the Debian package victoria-metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh

summary="$work/summary"
for run in $(seq "${RUNS:-1}"); do
  for data in "100 24" "4000 3"; do
    read -r hosts hours <<<"$data"
    for protocol in line-protocol remote-write; do
      echo "=== run $run: $hosts hosts x $hours h, $protocol: Sluice"
      "$bin/sluice" serve --http-bind 127.0.0.1:18181 --data-dir "$work/sluice" \
        2>"$work/sluice.log" >/dev/null &
      pid=$!
      wait_for http://127.0.0.1:18181/health
      out=$("$bin/sluice-load" --url http://127.0.0.1:18181 --protocol "$protocol" \
        --hosts "$hosts" --hours "$hours" --server-pid "$pid" --persist)
      # every row arrived (checked after the peak is taken: a query is not part of it)
      "$bin/sluice-load" --url http://127.0.0.1:18181 --protocol "$protocol" \
        --hosts "$hosts" --hours "$hours" --skip-load --verify | grep verified
      kill "$pid"; wait "$pid" || true
      rm -rf "$work/sluice"
      echo "$out" | grep -E 'values/s|peak RSS|server CPU|persisted|compacted'
      sluice=$(echo "$out" | awk '/peak RSS.*whole run/ {print $4}')

      echo "=== run $run: $hosts hosts x $hours h, $protocol: VictoriaMetrics $(dpkg-query -W -f='${Version}' victoria-metrics 2>/dev/null || echo '?')"
      start_victoria_metrics
      out=$("$bin/sluice-load" --url http://127.0.0.1:18428 --target victoria-metrics \
        --protocol "$protocol" --hosts "$hosts" --hours "$hours" --server-pid "$pid" \
        --settle-secs 30)
      kill "$pid"; wait "$pid" || true
      rm -rf "$work/vm"
      echo "$out" | grep -E 'values/s|peak RSS|server CPU'
      vm=$(echo "$out" | awk '/peak RSS.*whole run/ {print $4}')
      echo "$run $hosts x $hours h $protocol: Sluice $sluice MiB, VictoriaMetrics $vm MiB, $(awk -v a="$sluice" -v b="$vm" 'BEGIN {printf "%.2fx", a / b}')" >>"$summary"
    done
  done
done
echo "=== peak RSS, Sluice / VictoriaMetrics"
cat "$summary"
