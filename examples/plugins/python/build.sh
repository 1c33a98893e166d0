#!/usr/bin/env bash
# Builds build/guard.wasm from app.py with componentize-py (PyPI, installed into a venv).
cd "$(dirname "$0")"
source ../toolchain.sh
venv_tools "componentize-py==$COMPONENTIZE_PY_VERSION"
componentize-py -d "$WIT_DIR" -w plugin componentize -p . app -o "$OUT/guard.wasm"
done_built "$OUT/guard.wasm"
