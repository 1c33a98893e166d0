#!/usr/bin/env bash
# Measures each built example (and two Rust plugins for comparison) with a release `weir`:
# component size, cold compile, compile-cache load, one instantiate + init, and the mean
# `on-request` call on a clean 1 KB prompt (guards, checkout and conversion included).
# Usage: cargo build --release -p weir && examples/plugins/measure.sh [path/to/weir]
set -euo pipefail
cd "$(dirname "$0")/../.."
WEIR="${1:-target/release/weir}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -c 'import json; print(json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 1000}]}))' >"$work/req.json"
echo "| plugin | size | cold compile | cached load | instantiate + init | on-request, 1 KB |"
echo "| --- | --- | --- | --- | --- | --- |"
for entry in python:examples/plugins/python/build/guard.wasm js:examples/plugins/js/build/guard.wasm \
    go:examples/plugins/go/build/guard.wasm c:examples/plugins/c/build/guard.wasm \
    "rust prompt-guard:plugins/target/wasm32-wasip2/release/prompt_guard.wasm" \
    "rust noop:plugins/target/wasm32-wasip2/release/noop.wasm"; do
    name="${entry%%:*}" wasm="${entry#*:}"
    [[ -f "$wasm" ]] || { echo "| $name | not built | | | | |"; continue; }
    cache="$work/cache-${name// /-}"
    cold="$(WEIR_LOG=error "$WEIR" plugin inspect --cache-dir "$cache" "$wasm")"
    warm="$(WEIR_LOG=error "$WEIR" plugin inspect --cache-dir "$cache" "$wasm")"
    call="$(WEIR_LOG=error "$WEIR" plugin test --cache-dir "$cache" --request "$work/req.json" --repeat 2000 "$wasm")"
    size="$(wc -c <"$wasm" | awk '{printf "%.2f MB", $1/1e6}')"
    field() { sed -n "s/^$1 *[a-z ]*in \([0-9.]*\) ms.*/\1/p" <<<"$2"; }
    c="$(field compile: "$cold")" w="$(field compile: "$warm")"
    i="$(sed -n 's/^instantiate: *\([0-9.]*\) ms.*/\1/p' <<<"$warm")"
    m="$(sed -n 's/.*calls, mean \([0-9.]*\) ms per call/\1/p' <<<"$call")"
    printf '| %s | %s | %.0f ms | %.1f ms | %.2f ms | %.1f µs |\n' "$name" "$size" "$c" "$w" "$i" "$(echo "$m * 1000" | bc -l)"
done
