#!/usr/bin/env bash
# Soak run (issue 4; not in CI): `aigw run` (release) in front of the Rust
# fake upstream, steady mixed traffic (OpenAI JSON and streamed, Bedrock
# Converse with SigV4, Anthropic Messages, provider errors, unknown models,
# per-user rate limits) for SOAK_MINUTES, with Envoy's and aigw's memory and
# every wasm VM's linear memory sampled every SOAK_SAMPLE_SECONDS. Writes
# scripts/bench/soak-results.{md,json}: RSS growth per 100k requests.
#
# Environment: SOAK_MINUTES (5), SOAK_RATE (1000 req/s), SOAK_CONNECTIONS (8),
# SOAK_SAMPLE_SECONDS (5), SOAK_SKIP_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null 2>&1 || sudo apt-get install -y -qq wrk >/dev/null; }
[ -x .venv/bin/envoy ] || scripts/setup.sh >&2
export CARGO_TARGET_DIR=$ROOT/target/bench
if [ "${SOAK_SKIP_BUILD:-0}" != 1 ]; then
  env -u CARGO_TARGET_DIR scripts/build-filter.sh >&2
  cargo build --release -q -p aigw -p aigw-fake-upstream
fi
exec python3 scripts/bench/soak.py \
  --aigw "$CARGO_TARGET_DIR/release/aigw" \
  --upstream "$CARGO_TARGET_DIR/release/aigw-fake-upstream" \
  --envoy "$ROOT/.venv/bin/envoy" --wasm "$ROOT/target/aigw_filter.wasm" \
  --minutes "${SOAK_MINUTES:-5}" --rate "${SOAK_RATE:-1000}" \
  --connections "${SOAK_CONNECTIONS:-8}" --sample-seconds "${SOAK_SAMPLE_SECONDS:-5}"
