#!/usr/bin/env bash
# The whole test suite: installs what it needs, then lint, native unit tests,
# the ABI tests of the built .wasm, and end-to-end tests through a real Envoy.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/build-filter.sh

echo "== format and lint"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== native unit tests and ABI tests of target/aigw_filter.wasm"
cargo test --workspace

echo "== fuzzing the filter's parsers and translators (bounded)"
scripts/fuzz.sh "${AIGW_FUZZ_SECONDS:-20}"

echo "== end-to-end tests: aigw run + Envoy + filter + fake providers"
cargo build -p aigw
.venv/bin/python -m pytest wasm-tests/e2e -q
