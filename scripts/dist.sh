#!/usr/bin/env bash
# A release binary to ship and its symbols, kept apart: builds the first-party plugins (they
# are embedded in weir) and the `profiling` profile (release code with line tables and
# symbols), then splits it with objcopy into dist/weir (stripped, with a .gnu_debuglink to
# its symbols) and dist/weir.debug (line tables and symbols, for gdb, perf and crash
# addresses: keep it beside the binary or in a debug-file directory). The code is the same
# as `cargo build --release`, which strips everything and keeps nothing.
#
#   scripts/dist.sh              # prints the two paths
#
# Knobs (environment): DIST_SKIP_BUILD=1 (split the existing target/profiling/weir).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v objcopy >/dev/null || { echo "objcopy (binutils) is needed to split the symbols" >&2; exit 1; }

if [ "${DIST_SKIP_BUILD:-0}" != 1 ]; then
    if command -v rustup >/dev/null; then rustup target add wasm32-wasip2 >/dev/null 2>&1; fi
    echo "==> building the first-party plugins (wasm32-wasip2)" >&2
    cargo build -q --manifest-path plugins/Cargo.toml --target wasm32-wasip2 --release
    echo "==> building weir (profile: profiling)" >&2
    cargo build -q --profile profiling -p weir
fi
src=target/profiling/weir
[ -x "$src" ] || { echo "no $src: run without DIST_SKIP_BUILD=1" >&2; exit 1; }
mkdir -p dist
objcopy --only-keep-debug "$src" dist/weir.debug
# --add-gnu-debuglink records the name and CRC of the symbols file; debuggers look for it
# beside the binary (and under /usr/lib/debug).
objcopy --strip-all --add-gnu-debuglink=dist/weir.debug "$src" dist/weir
chmod -x dist/weir.debug
echo "==> $(du -h dist/weir | cut -f1) binary, $(du -h dist/weir.debug | cut -f1) symbols" >&2
echo "$PWD/dist/weir"
echo "$PWD/dist/weir.debug"
