#!/usr/bin/env bash
# Build the latency-probe health check into target/latency-probe.wasm.
#
# Needs Rust with the wasm32-wasip2 target (added here with rustup when it
# is missing). CARGO_TARGET_DIR, when set, is where cargo builds (the
# repository's tests share one with the project templates). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v cargo >/dev/null 2>&1; then
    echo "build.sh: cargo not found (needed: Rust, see rust-toolchain.toml)." >&2
    exit 1
fi
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
# --locked: the versions of Cargo.lock, the ones the repository's own
# workspace builds and tests with.
cargo build --release --locked --target wasm32-wasip2
mkdir -p target
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/latency_probe.wasm" target/latency-probe.wasm
echo "built $PWD/target/latency-probe.wasm ($(du -h target/latency-probe.wasm | cut -f1))"
