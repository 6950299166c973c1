#!/usr/bin/env bash
# Builds the proxy-wasm filter for wasm32-wasip1 into target/aigw_filter.wasm.
# Uses rustup's wasm32-wasip1 target where it can be installed; otherwise
# Debian's rustc-web with build-std against wasi-libc (see ../shared/DESIGN.md).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=target/aigw_filter.wasm
TARGET_DIR=${CARGO_TARGET_DIR:-target}

build_with_rustup() {
  rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1 \
    || rustup target add wasm32-wasip1 >/dev/null 2>&1 || return 1
  cargo build --release -p aigw-filter --target wasm32-wasip1
}

build_with_debian() {
  if ! dpkg -s rustc-web cargo-web rust-web-src wasi-libc lld >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || { echo "need root to apt-get install the wasm toolchain" >&2; exit 1; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web cargo-web rust-web-src wasi-libc lld >/dev/null
  fi
  local wasi_lib deb_cargo
  wasi_lib=$(dirname "$(dpkg -L wasi-libc | grep -m1 '/libc.a$')")
  deb_cargo=$(dpkg -L cargo-web | grep -m1 '/bin/cargo$')
  # A separate target dir keeps Debian's rustc from invalidating rustup's builds.
  PATH="$(dirname "$deb_cargo"):$PATH" RUSTC_BOOTSTRAP=1 \
  RUSTFLAGS="-C linker=wasm-ld -C link-self-contained=no -L $wasi_lib" \
  CARGO_TARGET_DIR=target/wasm-deb \
    cargo build --release -p aigw-filter --target wasm32-wasip1 -Zbuild-std=std,panic_abort
  mkdir -p "$TARGET_DIR/wasm32-wasip1/release"
  cp target/wasm-deb/wasm32-wasip1/release/aigw_filter.wasm "$TARGET_DIR/wasm32-wasip1/release/"
}

if [ "${AIGW_WASM_TOOLCHAIN:-auto}" != debian ] && build_with_rustup 2>/dev/null; then
  :
else
  build_with_debian
fi
mkdir -p target
cp "$TARGET_DIR/wasm32-wasip1/release/aigw_filter.wasm" "$OUT"
echo "built $OUT ($(wc -c <"$OUT") bytes)"
