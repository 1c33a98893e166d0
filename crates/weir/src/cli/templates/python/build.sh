#!/usr/bin/env bash
# Builds build/{{name}}.wasm from app.py with componentize-py (PyPI, installed into a venv in
# $WEIR_PLUGIN_TOOLS, default .tools/). Exit status: 0 built, 3 when the toolchain cannot be
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

venv_tools "componentize-py=={{componentize_py_version}}"
componentize-py -d wit -w plugin componentize -p src app -o build/{{name}}.wasm
echo "built build/{{name}}.wasm ($(wc -c <build/{{name}}.wasm) bytes)"
