#!/usr/bin/env bash
# Builds build/{{name}}.wasm from plugin.js with @bytecodealliance/componentize-js (npm; the
# component carries SpiderMonkey, ~12 MB). Uses $WEIR_PLUGIN_TOOLS/node_modules when it holds
# the pinned version, else `npm install`s package.json into ./node_modules. Exit status:
# 0 built, 3 when the toolchain cannot be installed here (reason printed), anything else failed.
# (`jco componentize` is not used: jco 1.35 cannot read the WIT.)
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p build

skip() { echo "SKIPPED: $1" >&2; exit 3; }

VERSION="{{componentize_js_version}}"
# has_componentize DIR: DIR/node_modules holds componentize-js $VERSION.
has_componentize() {
    [[ -x "$1/node_modules/.bin/componentize-js" ]] &&
        grep -q "\"version\": \"$VERSION\"" "$1/node_modules/@bytecodealliance/componentize-js/package.json"
}
command -v node >/dev/null || skip "needs node (and npm)"
if [[ -n "${WEIR_PLUGIN_TOOLS:-}" ]] && has_componentize "$WEIR_PLUGIN_TOOLS"; then
    modules="$WEIR_PLUGIN_TOOLS/node_modules"
else
    if ! has_componentize .; then
        command -v npm >/dev/null || skip "needs npm"
        npm install --no-audit --no-fund --loglevel=error || skip "npm install failed"
    fi
    modules="$PWD/node_modules"
fi
# http and fetch-event are off: a plugin has no network.
"$modules/.bin/componentize-js" plugin.js --wit wit --world-name plugin \
    --disable http --disable fetch-event --out build/{{name}}.wasm
echo "built build/{{name}}.wasm ($(wc -c <build/{{name}}.wasm) bytes)"
