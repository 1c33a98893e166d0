#!/usr/bin/env bash
# Builds build/{{name}}.wasm: `cargo build --target wasm32-wasip2 --release` (the SDK from
# vendor/, other crates from crates.io; the wasm32-wasip2 target added with rustup when
# missing). Exit status: 0 built, 3 when the toolchain cannot be installed here (reason
# printed), anything else failed.
set -euo pipefail
cd "$(dirname "$0")"

skip() { echo "SKIPPED: $1" >&2; exit 3; }

command -v cargo >/dev/null || skip "needs Rust (cargo), e.g. from rustup"
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2 || skip "rustup target add wasm32-wasip2 failed"
fi
cargo build --release --target wasm32-wasip2
mkdir -p build
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{crate}}.wasm" build/{{name}}.wasm
echo "built build/{{name}}.wasm ($(wc -c <build/{{name}}.wasm) bytes)"
