#!/usr/bin/env bash
# Issue 4's benchmark: Prometheus remote write 1.0 ingest of the TSBS cpu-only set (100 hosts x
# 24 h unless other sluice-load arguments are given; each field a metric cpu_<field>, the ten
# tags as labels), into Sluice and into VictoriaMetrics' /api/v1/write, the same bodies, each
# server fresh on an empty folder. Two shapes of request, 2,000 samples each:
#   1. one sample per series entry, as Prometheus sends what it scrapes;
#   2. 60 consecutive samples (10 minutes) of a series per entry, as a batching agent or a
#      backfill sends them.
#
#   benches/remote-write.sh                 # 3 rounds
#   ROUNDS=5 benches/remote-write.sh --connections 8
#
# This machine's speed drifts by a third from minute to minute, so each round runs both
# servers back to back (which goes first alternates between rounds) and the summary gives
# every round's ratio and their median. Needs the Debian package victoria-metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh

rounds="${ROUNDS:-3}"
summary="$work/summary"

# run_one NAME PER_SERIES: loads a fresh server, appends "NAME PER_SERIES samples/s" to the
# summary.
run_one() {
  local name=$1 per_series=$2 url pid out
  if [ "$name" = sluice ]; then
    echo "=== Sluice, $per_series sample(s) per series entry"
    "$bin/sluice" serve --http-bind 127.0.0.1:18181 --data-dir "$work/sluice" \
      --persist-after 100000h 2>"$work/sluice.log" >/dev/null &
    pid=$!
    url=http://127.0.0.1:18181
    wait_for $url/health
    out=$("$bin/sluice-load" --url $url --protocol remote-write \
      --samples-per-series "$per_series" --server-pid "$pid" --verify "${args[@]}")
  else
    echo "=== VictoriaMetrics $(dpkg-query -W -f='${Version}' victoria-metrics 2>/dev/null || echo '?'), $per_series sample(s) per series entry"
    start_victoria_metrics
    url=http://127.0.0.1:18428
    out=$("$bin/sluice-load" --url $url --target victoria-metrics --protocol remote-write \
      --samples-per-series "$per_series" --server-pid "$pid" "${args[@]}")
  fi
  kill "$pid"; wait "$pid" || true
  rm -rf "$work/sluice" "$work/vm"
  echo "$out" | grep -E 'samples/s|retries|peak RSS|server CPU|verified'
  echo "$name $per_series $(echo "$out" | awk '/^samples\/s:/ {print $2}')" >>"$summary"
}

args=("$@")
have_vm=$(command -v victoria-metrics >/dev/null && echo yes || echo no)
for round in $(seq "$rounds"); do
  for per_series in 1 60; do
    if [ "$have_vm" = no ]; then
      run_one sluice "$per_series"
    elif [ $((round % 2)) = 1 ]; then
      run_one sluice "$per_series"; run_one vm "$per_series"
    else
      run_one vm "$per_series"; run_one sluice "$per_series"
    fi
  done
done

echo
echo "=== Summary: samples/s per round, Sluice / VictoriaMetrics"
for per_series in 1 60; do
  awk -v p="$per_series" '
    $2 == p && $1 == "sluice" { s[++ns] = $3 }
    $2 == p && $1 == "vm" { v[++nv] = $3 }
    END {
      line = sprintf("%2d per entry:", p)
      for (i = 1; i <= ns; i++) {
        if (i <= nv) {
          r[i] = s[i] / v[i]
          line = line sprintf("  %.2f/%.2f M (%.2fx)", s[i] / 1e6, v[i] / 1e6, r[i])
        } else {
          line = line sprintf("  %.2f M", s[i] / 1e6)
        }
      }
      if (nv > 0) {
        n = (ns < nv) ? ns : nv
        for (i = 2; i <= n; i++)  # insertion sort (mawk has no asort)
          for (j = i; j > 1 && r[j - 1] > r[j]; j--) { t = r[j]; r[j] = r[j - 1]; r[j - 1] = t }
        median = (n % 2) ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
        line = line sprintf("  median %.2fx", median)
      }
      print line
    }' "$summary"
done
