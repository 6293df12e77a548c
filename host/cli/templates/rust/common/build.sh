#!/usr/bin/env bash
# Build the plugin: a WebAssembly component for wasm32-wasip2.
set -euo pipefail
cd "$(dirname "$0")"
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
cargo build --release --target wasm32-wasip2
mkdir -p target
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/__CRATE__.wasm" "target/__NAME__.wasm"
echo "built target/__NAME__.wasm"
