#!/usr/bin/env bash
# Runs every cargo-fuzz target of the filter for a bounded time (seconds per
# target: $1, default 20), after replaying the inputs under
# filter/fuzz/regressions/<target>/ (earlier findings). A crash fails the
# script; its input is saved under filter/fuzz/artifacts/<target>/ and belongs
# in regressions/ once fixed.
set -euo pipefail
cd "$(dirname "$0")/../filter"
SECONDS_PER_TARGET=${1:-20}
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo +nightly install cargo-fuzz --locked
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in $(cargo +nightly fuzz list); do
  regressions=()
  if [ -d "fuzz/regressions/$target" ]; then
    mapfile -t regressions < <(find "fuzz/regressions/$target" -type f)
  fi
  echo "== fuzz $target (${SECONDS_PER_TARGET}s, ${#regressions[@]} regression inputs)"
  if [ ${#regressions[@]} -gt 0 ] && ! cargo +nightly fuzz run "$target" "${regressions[@]}" >"$log" 2>&1; then
    grep -E "panicked|SUMMARY|ERROR" "$log" || tail -20 "$log"
    echo "fuzz target $target fails on a regression input" >&2
    exit 1
  fi
  if ! cargo +nightly fuzz run "$target" -- -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 >"$log" 2>&1; then
    grep -E "panicked|SUMMARY|ERROR|Test unit written" "$log" || tail -20 "$log"
    echo "fuzz target $target failed" >&2
    exit 1
  fi
  grep -E "^Done" "$log" || true
done
