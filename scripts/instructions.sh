#!/usr/bin/env bash
# User-space instructions per proxied request, counted by valgrind's callgrind: a figure that
# does not move with the load of a shared machine (wall-clock throughput on a 2-vCPU VM moves
# by +-10% between runs; this moves by well under 1%). For comparing two builds of the
# request path; not part of the test suite. See docs/benchmarks.md.
#
#   scripts/instructions.sh                 # the current release build
#   scripts/instructions.sh A=path B=path   # each binary in turn, same mock and requests
#
# Weir runs with one openai provider pointing at the bench mock upstream and no plugins
# (wasmtime's pooling allocator reserves more address space than valgrind allows, so the
# plugin chain is measured by `cargo bench -p weir --bench plugins` instead). Requests: the
# 1,085-byte chat body of scripts/bench.sh, 200 warm-up requests, then INSTR_REQUESTS (1,000)
# at concurrency 4, counted from a callgrind reset to a dump. Installs valgrind (Debian) and
# oha (crates.io) when missing. Knobs: INSTR_REQUESTS, BENCH_SKIP_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${INSTR_REQUESTS:-1000}

export PATH="$HOME/.cargo/bin:$PATH"
command -v oha >/dev/null || cargo install --locked oha
if ! command -v valgrind >/dev/null; then
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
    else sudo apt-get update -qq && sudo apt-get install -y -qq valgrind >/dev/null; fi
fi
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    cargo build -q --release -p weir -p weir-bench
fi
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("weir=$ROOT/target/release/weir")

# shellcheck source=scripts/bench-common.sh
. "$ROOT/scripts/bench-common.sh"
bench_tmp weir-instr

bench_bodies "$TMP"
MOCK_PORT=$(free_port)
"$ROOT/target/release/weir-mock-upstream" --listen "127.0.0.1:$MOCK_PORT" --threads 1 >"$TMP/mock.log" 2>&1 &
PIDS+=($!)

load() { # url count
    oha --no-tui --output-format json -n "$2" -c 4 -m POST -T application/json -D "$TMP/body.json" "$1" \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); c=d["statusCodeDistribution"]; print(c.get("200",0))'
}

echo "| build | requests | instructions per request |"
echo "|---|---:|---:|"
for t in "${TARGETS[@]}"; do
    label=${t%%=*}; bin=${t#*=}
    port=$(free_port)
    bench_weir_config "$port" "$MOCK_PORT" "$TMP/wasm-cache" >"$TMP/$label.toml"
    valgrind --tool=callgrind --callgrind-out-file="$TMP/$label.cg" "$bin" serve --config "$TMP/$label.toml" \
        >"$TMP/$label.log" 2>&1 &
    vg=$!
    PIDS+=($vg)
    for _ in $(seq 1 600); do curl -s -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.2; done
    url="http://127.0.0.1:$port/v1/chat/completions"
    load "$url" 200 >/dev/null
    callgrind_control -z "$vg" >/dev/null 2>&1
    ok=$(load "$url" "$N")
    callgrind_control -d "$vg" >/dev/null 2>&1
    sleep 1
    dump=$(ls -t "$TMP/$label.cg"* | head -1)
    total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1; exit}')
    [ "$ok" = "$N" ] || echo "warning: $label answered $ok of $N requests with 200" >&2
    echo "| $label | $N | $((total / N)) |"
    kill "$vg" 2>/dev/null || true
    wait "$vg" 2>/dev/null || true
done
