#!/usr/bin/env bash
# Two Sluice builds on the same load, alternating, so that the machine's drift falls on both
# alike: the end-to-end check that a change (a refactoring, say) costs nothing. Each run is a
# fresh server taking the TSBS set (100 hosts x 24 h) with durable acknowledgements, the
# server on core 0 and the load generator on core 1.
#
#   BEFORE=/path/to/older/sluice benches/ab.sh                 # 5 rounds of line protocol
#   BEFORE=... RUNS=3 PROTOCOLS="line-protocol remote-write otlp" benches/ab.sh
#
# Build the older server from a worktree, in a target folder of its own (cargo names a path
# crate's artifacts without its path, so two checkouts sharing one overwrite each other's):
#   git worktree add ../before <commit>
#   (cd ../before && CARGO_TARGET_DIR=/tmp/before-target cargo build --release --bin sluice)
#
# Prints one line per run: build, protocol, values/s, server CPU per value.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
: "${BEFORE:?set BEFORE to the older sluice binary}"

run() { # server protocol -> prints "values_per_second ns_per_value"
  local server=$1 protocol=$2
  rm -rf "$work/data"
  taskset -c 0 "$server" serve --http-bind 127.0.0.1:18181 --data-dir "$work/data" \
    >"$work/sluice.log" 2>&1 &
  local pid=$!
  wait_for http://127.0.0.1:18181/health
  local out
  out=$(taskset -c 1 "$bin/sluice-load" --url http://127.0.0.1:18181 --protocol "$protocol" \
    --server-pid "$pid" --verify)
  kill "$pid"; wait "$pid" || true
  echo "$out" | grep -q "^verified" || { echo "$out" >&2; return 1; }
  local rate ns
  rate=$(echo "$out" | awk '/^field values\/s:/ {print $3}')
  ns=$(echo "$out" | sed -nE 's/^server CPU:.*\(([0-9]+) ns per field value.*/\1/p')
  echo "$rate $ns"
}

for round in $(seq "${RUNS:-5}"); do
  for protocol in ${PROTOCOLS:-line-protocol}; do
    for build in before after; do
      server="$bin/sluice"
      [ "$build" = before ] && server="$BEFORE"
      read -r rate ns < <(run "$server" "$protocol")
      awk -v r="$round" -v b="$build" -v p="$protocol" -v rate="$rate" -v ns="$ns" \
        'BEGIN { printf "round %s  %-6s  %-13s  %6.2f M values/s  %4s ns CPU per value\n", r, b, p, rate / 1e6, ns }'
    done
  done
done
