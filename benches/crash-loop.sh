#!/usr/bin/env bash
# The long crash loop (issue 19): the end-to-end test crash::acknowledged_points_and_deletes_
# survive_a_crash_loop run for ROUNDS rounds (default 20) with each seed of SEEDS. Each round
# writes through line protocol (its three endpoints), remote write and OTLP/HTTP while
# persists, compactions and deletes run, kills the server with SIGKILL at a random moment,
# starts it again on the same folder and checks that every acknowledged point is queryable
# exactly once and no acknowledged delete is undone. Prints one line of figures per seed and
# stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
ROUNDS="${ROUNDS:-20}"
SEEDS="${SEEDS:-1 2 3}"
for seed in $SEEDS; do
  if ! out=$(SLUICE_CRASH_ROUNDS="$ROUNDS" SLUICE_CRASH_SEED="$seed" cargo test -q --test e2e \
    -- --exact crash::acknowledged_points_and_deletes_survive_a_crash_loop --nocapture 2>&1); then
    echo "$out" | tail -40
    exit 1
  fi
  echo "$out" | grep "^crash loop:"
done
