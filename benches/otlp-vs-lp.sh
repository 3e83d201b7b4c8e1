#!/usr/bin/env bash
# OTLP against line protocol, the issue 5 target: rounds of three runs (line protocol, OTLP at
# 8,192 values a request, OTLP at 2,000), each on a fresh server, with the TSBS set (100
# hosts x 24 h). Two placements:
#
# - shared: server and load generator share both cores (what the earlier rounds measured);
# - pinned: the server on core 0, the load generator on core 1 (`taskset`), so the
#   generator's own cost, which differs by protocol (OTLP sends 991 MB where line protocol
#   sends 297 MB), does not come out of the server's share.
#
#   benches/otlp-vs-lp.sh                 # 5 rounds, pinned then shared
#   RUNS=3 MODES=pinned benches/otlp-vs-lp.sh
#
# Prints one line per run: values/s, server CPU per value, cores used; and each round's
# OTLP / line protocol.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh

run() { # mode protocol [values per request] -> prints "values_per_second ns_per_value cores"
  local mode=$1 protocol=$2 server_cpus="" load_cpus="" extra=()
  if [ "$mode" = pinned ]; then server_cpus="taskset -c 0"; load_cpus="taskset -c 1"; fi
  [ $# -gt 2 ] && extra=(--samples-per-request "$3")
  rm -rf "$work/data"
  $server_cpus "$bin/sluice" serve --http-bind 127.0.0.1:18181 --data-dir "$work/data" \
    >"$work/sluice.log" 2>&1 &
  local pid=$!
  wait_for http://127.0.0.1:18181/health
  local out
  out=$($load_cpus "$bin/sluice-load" --url http://127.0.0.1:18181 --protocol "$protocol" \
    "${extra[@]}" --server-pid "$pid" --verify)
  kill "$pid"; wait "$pid" || true
  echo "$out" | grep -q "^verified" || { echo "$out" >&2; return 1; }
  local rate ns cores
  rate=$(echo "$out" | awk '/^field values\/s:/ {print $3}')
  ns=$(echo "$out" | sed -nE 's/^server CPU:.*\(([0-9]+) ns per field value, ([0-9.]+) cores\)/\1/p')
  cores=$(echo "$out" | sed -nE 's/^server CPU:.*\(([0-9]+) ns per field value, ([0-9.]+) cores\)/\2/p')
  echo "$rate $ns $cores"
}

for mode in ${MODES:-pinned shared}; do
  echo "=== $mode: $("$bin/sluice" --version)"
  for round in $(seq "${RUNS:-5}"); do
    read -r lp lp_ns lp_cores < <(run "$mode" line-protocol)
    read -r big big_ns big_cores < <(run "$mode" otlp 8192)
    read -r small small_ns small_cores < <(run "$mode" otlp 2000)
    [ -n "$lp" ] && [ -n "$big" ] && [ -n "$small" ] || { echo "a run failed" >&2; exit 1; }
    awk -v r="$round" -v lp="$lp" -v lpn="$lp_ns" -v lpc="$lp_cores" \
      -v b="$big" -v bn="$big_ns" -v bc="$big_cores" \
      -v s="$small" -v sn="$small_ns" -v sc="$small_cores" 'BEGIN {
        printf "round %s | LP %.2f M (%s ns, %s cores) | OTLP 8192 %.2f M (%s ns, %s cores) %d%% | OTLP 2000 %.2f M (%s ns, %s cores) %d%%\n",
          r, lp / 1e6, lpn, lpc, b / 1e6, bn, bc, 100 * b / lp, s / 1e6, sn, sc, 100 * s / lp
      }'
  done
done
