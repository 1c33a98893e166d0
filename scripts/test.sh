#!/usr/bin/env bash
# Weir's one test command (CI runs it through .ci/run). Needs only Rust (rustup), Python 3 and
# the package registries. Steps: toolchain targets, a pinned Python venv in .venv, plugin
# builds, rustfmt, clippy, `cargo test` (unit + end-to-end against the real binary), then the
# official OpenAI Python SDK against the real binary. Stops with a non-zero exit at the first
# failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# Verified together: openai 3.54.0 + pytest 9.2.0 on Python 3.11.
OPENAI_VERSION="3.54.0"
PYTEST_VERSION="9.2.0"

step() { printf '\n==> %s\n' "$*"; }
started=$SECONDS

step "toolchain: wasm32-wasip2 target, rustfmt, clippy"
if command -v rustup >/dev/null; then
    rustup target add wasm32-wasip2
    rustup component add rustfmt clippy
fi
cargo --version

step "python venv (.venv): openai==$OPENAI_VERSION pytest==$PYTEST_VERSION"
if ! .venv/bin/python -c 'import sys' 2>/dev/null; then
    rm -rf .venv
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
    "openai==$OPENAI_VERSION" "pytest==$PYTEST_VERSION"

# ---- plugin builds (wasm32-wasip2) -------------------------------------------------------
# Build every wasm component the end-to-end tests load here, before `cargo test`.
if [[ -f plugins/Cargo.toml ]]; then
    step "plugins: build for wasm32-wasip2"
    cargo build --manifest-path plugins/Cargo.toml --target wasm32-wasip2 --release
    step "plugins: fmt, clippy (native and wasm32-wasip2), native unit tests"
    cargo fmt --manifest-path plugins/Cargo.toml --all -- --check
    cargo clippy --manifest-path plugins/Cargo.toml --workspace --all-targets -- -D warnings
    cargo clippy --manifest-path plugins/Cargo.toml --workspace --target wasm32-wasip2 -- -D warnings
    cargo test --manifest-path plugins/Cargo.toml --workspace
fi
# ---- end of plugin builds ----------------------------------------------------------------

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test (unit + end-to-end)"
cargo test --workspace

step "python SDK tests (official openai package against target/debug/weir)"
# `cargo test` built target/debug/weir for the end-to-end tests; a separate `cargo build` would
# resolve features without dev-dependencies and rebuild half the dependency tree.
.venv/bin/python -m pytest tests/sdk -q -p no:cacheprovider

step "all tests passed in $((SECONDS - started))s"
