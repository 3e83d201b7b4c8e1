# Sourced by the benchmark scripts (run from the repository root): builds the release server
# and load generator (PROFILE=dev: the debug ones, for figures that do not depend on the
# build, such as bytes on disk), sets $bin to their folder and $work to a scratch folder
# removed on exit (with every server the script started), and defines wait_for URL.

target_dir="${CARGO_TARGET_DIR:-target}"
profile="${PROFILE:-release}"
cargo build --profile "$profile" --bin sluice
cargo build --profile "$profile" -p sluice-bench --bin sluice-load
if [ "$profile" = dev ]; then bin="$target_dir/debug"; else bin="$target_dir/$profile"; fi
work=$(mktemp -d)
trap 'pkill -P $$ || true; rm -rf "$work"' EXIT

# Waits up to 15 s for URL to answer.
wait_for() {
  for _ in $(seq 300); do
    curl -fs "$1" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "server at $1 did not come up" >&2
  return 1
}

# Starts VictoriaMetrics on an empty $work/vm at 127.0.0.1:18428, as every comparison runs it
# (-retentionPeriod=100y: the TSBS day lies in the past), sets $pid to it and waits until it
# answers.
start_victoria_metrics() {
  rm -rf "$work/vm"
  victoria-metrics -retentionPeriod=100y -storageDataPath="$work/vm" \
    -httpListenAddr=127.0.0.1:18428 >"$work/vm.log" 2>&1 &
  pid=$!
  wait_for http://127.0.0.1:18428/health
}
