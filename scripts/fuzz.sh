#!/usr/bin/env bash
# Runs every cargo-fuzz target of the filter for a bounded time (seconds per
# target: $1, default 20), after replaying the inputs under
# filter/fuzz/regressions/<target>/ (earlier findings), starting from seeds
# made of the shared conformance data (scripts/fuzz-seeds.py). A crash fails the
# script; its input is saved under filter/fuzz/artifacts/<target>/ and belongs
# in regressions/ once fixed.
set -euo pipefail
cd "$(dirname "$0")/../filter"
SECONDS_PER_TARGET=${1:-20}
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo +nightly install cargo-fuzz --locked
fi
log=$(mktemp)
seeds=$(mktemp -d)
trap 'rm -rf "$log" "$seeds"' EXIT
# Real requests and answers to start from (the shared conformance data).
PYTHON=../.venv/bin/python
[ -x "$PYTHON" ] || PYTHON=python3
"$PYTHON" ../scripts/fuzz-seeds.py "$seeds"
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
  corpus=(fuzz/corpus/"$target")
  mkdir -p "${corpus[0]}"
  [ -d "$seeds/$target" ] && corpus+=("$seeds/$target")
  if ! cargo +nightly fuzz run "$target" "${corpus[@]}" -- -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 >"$log" 2>&1; then
    grep -E "panicked|SUMMARY|ERROR|Test unit written" "$log" || tail -20 "$log"
    echo "fuzz target $target failed" >&2
    exit 1
  fi
  grep -E "^Done" "$log" || true
done
