#!/usr/bin/env bash
# Builds build/guard.wasm from guard.js with @bytecodealliance/componentize-js (SpiderMonkey,
# ~12 MB; npm package installed into ./node_modules).
# Not componentize-qjs 0.4.5 (QuickJS, 1.6 MB): its components keep borrowed request handles
# past the call ("borrow handles still remain", and it refuses to dispose borrows), so every
# hook traps.
# `jco componentize` is not used: jco 1.35 fails to read the WIT (preview2-shim 0.26).
cd "$(dirname "$0")"
source ../toolchain.sh
command -v node >/dev/null && command -v npm >/dev/null || skip "needs node and npm"
if [[ ! -x node_modules/.bin/componentize-js ]]; then
    npm install --no-audit --no-fund --no-package-lock --loglevel=error || skip "npm install failed"
fi
# http and fetch-event are off: a plugin has no network.
node_modules/.bin/componentize-js guard.js --wit "$WIT_DIR" --world-name plugin \
    --disable http --disable fetch-event --out "$OUT/guard.wasm"
done_built "$OUT/guard.wasm"
