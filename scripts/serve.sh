#!/usr/bin/env bash
# Sets up and runs Weir on its embedded default config (127.0.0.1:8080, built-in mock provider,
# the first-party plugin chain). Needs only Rust (rustup). Extra arguments go to `weir serve`,
# e.g. `scripts/serve.sh --config examples/weir.toml`. A first argument `--pgo` runs the
# profile-guided build of scripts/pgo.sh instead of the plain release build (~18 minutes to
# build from clean on 2 cores; it also installs oha and llvm-tools for its training load).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = --pgo ]; then
    shift
    weir=$(scripts/pgo.sh)
    echo "==> starting weir, profile-guided build (Ctrl-C stops it gracefully)"
    exec "$weir" serve "$@"
fi
if command -v rustup >/dev/null; then
    rustup target add wasm32-wasip2 >/dev/null
fi
echo "==> building the first-party plugins (wasm32-wasip2)"
cargo build --manifest-path plugins/Cargo.toml --target wasm32-wasip2 --release
echo "==> building weir (release)"
cargo build --release -p weir
echo "==> starting weir (Ctrl-C stops it gracefully)"
exec target/release/weir serve "$@"
