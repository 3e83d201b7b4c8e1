#!/usr/bin/env bash
# Issue 20's benchmark: the TSBS queries q1-q5 on Sluice (SQL) and VictoriaMetrics (PromQL)
# over the same 100 hosts x 24 h (unless other sluice-load arguments are given), side by
# side in one run, with the server's CPU time per query. Each server starts fresh.
#
#   benches/query.sh              # every part once
#   RUNS=2 benches/query.sh       # the whole sequence twice
#
# Prints, in order:
#   1. Sluice with the day in the write buffer only, then the same server after
#      POST /api/v3/persist and /api/v3/compact (the day in one Parquet file);
#   2. Sluice with the first 12 hours persisted and the last 12 in the buffer;
#   3. VictoriaMetrics 1.79 after /internal/force_flush and once its background merges are
#      done (they would take CPU from its timed queries), its queries with nocache=1.
# Each query: median, p90 and min of 10 runs after two warm-ups, the server's CPU time per
# query over the timed runs (from /proc/<pid>/task/*/schedstat), and for Sluice where that
# time went (`ms a query`: the phases, Parquet scan parts and operators, from /metrics).
# Sluice's answers must be the same rows in all three states (checked at the end of a run).
# Needs the Debian package victoria-metrics for 3.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
url=http://127.0.0.1:18181

start_sluice() {
  rm -rf "$work/sluice"
  # the day stays in the buffer until persisted by hand
  "$bin/sluice" serve --http-bind 127.0.0.1:18181 --data-dir "$work/sluice" \
    --persist-after 100000h --buffer-memory-limit 4GiB 2>"$work/sluice.log" >/dev/null &
  pid=$!
  wait_for $url/health
}

for run in $(seq "${RUNS:-1}"); do
  echo "=== run $run, 1. Sluice $("$bin/sluice" --version): the day in the buffer, then persisted"
  start_sluice
  "$bin/sluice-load" --url $url --server-pid "$pid" --verify --tsbs-queries \
    --answers-dir "$work/answers/buffer" "$@" | grep -E "^(verified|tsbs|  ms)"
  echo "--- persisted and compacted"
  "$bin/sluice-load" --url $url --server-pid "$pid" --skip-load --persist --tsbs-queries \
    --answers-dir "$work/answers/persisted" "$@" | grep -E "^(compacted|tsbs|  ms)"
  kill "$pid"; wait "$pid" || true

  echo "=== run $run, 2. Sluice: 12 hours persisted, 12 in the buffer"
  start_sluice
  "$bin/sluice-load" --url $url --hours 12 "$@" >/dev/null
  curl -fs -XPOST $url/api/v3/persist >/dev/null
  "$bin/sluice-load" --url $url --server-pid "$pid" --hours 24 --send-after-hours 12 \
    --tsbs-queries --answers-dir "$work/answers/half" "$@" | grep -E "^(tsbs|  ms)"
  kill "$pid"; wait "$pid" || true
  # the same rows in each state (q4 and q5 have no ORDER BY: their rows may come in any order)
  for state in persisted half; do
    for q in "$work"/answers/buffer/*; do
      name=$(basename "$q")
      if ! cmp -s <(sort "$q") <(sort "$work/answers/$state/$name"); then
        echo "answers differ: $name, buffer against $state" >&2
        exit 1
      fi
    done
  done
  echo "answers: the same rows with the day buffered, persisted, and half and half"

  if command -v victoria-metrics >/dev/null; then
    echo "=== run $run, 3. VictoriaMetrics $(dpkg-query -W -f='${Version}' victoria-metrics 2>/dev/null || echo '?')"
    start_victoria_metrics
    "$bin/sluice-load" --url http://127.0.0.1:18428 --target victoria-metrics \
      --server-pid "$pid" --settle-secs 5 --tsbs-queries "$@" | grep -E "^(tsbs|settled)"
    kill "$pid"; wait "$pid" || true
  fi
done
