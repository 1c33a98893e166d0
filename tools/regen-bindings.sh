#!/usr/bin/env bash
# Regenerates the committed C and Go bindings of the example plugins (and the `weir plugin new`
# templates that embed them) after a change to wit/. Builds tools/bindgen (wit-bindgen's C and Go
# generators as libraries, ~1 min) instead of installing wit-bindgen-cli (15-20 min).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --manifest-path tools/bindgen/Cargo.toml
bin=tools/bindgen/target/release/weir-bindgen
$bin c wit examples/plugins/c/bindings
$bin go wit examples/plugins/go
echo "regenerated; rebuild the examples: examples/plugins/{c,go}/build.sh"
