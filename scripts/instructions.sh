#!/usr/bin/env bash
# User-space instructions per proxied request, counted by valgrind's callgrind: a figure that
# does not move with the load of a shared machine (wall-clock throughput on a 2-vCPU VM moves
# by +-10% between runs; this moves by well under 1%). For comparing two builds of the
# request path; not part of the test suite. See docs/benchmarks.md.
#
#   scripts/instructions.sh                 # the current `profiling` build (release + symbols)
#   scripts/instructions.sh A=path B=path   # each binary in turn, same mock and requests
#
# Weir runs with one openai provider pointing at the bench mock upstream, once with no plugins
# and once with the default chain (the [[plugins]] of the embedded default config). Under
# valgrind the plugins' instances are allocated on demand (WEIR_PLUGIN_ALLOCATOR=on-demand:
# the pooling allocator reserves more address space than valgrind allows); that changes what
# making an instance costs, not what a hook call costs. Requests: the 1,085-byte chat body of
# scripts/bench.sh, 200 warm-up requests, then INSTR_REQUESTS (1,000) at concurrency 4,
# counted from a callgrind reset to a dump. Installs valgrind (Debian) and oha (crates.io)
# when missing. Knobs: INSTR_REQUESTS, BENCH_SKIP_BUILD=1, INSTR_KEEP=DIR (keep each
# callgrind profile there, for callgrind_annotate), INSTR_CACHE=1 (callgrind's cache
# simulation too, ~2x slower: first-level instruction and data cache misses per request, how
# much distinct code and data the path touches, which the instruction count does not show).
# The `profiling` profile is the release build with line tables and symbols (the release
# binary is stripped), so kept profiles name functions and lines; debug info does not change
# the generated code.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/bench-common.sh
. "$ROOT/scripts/bench-common.sh"
N=${INSTR_REQUESTS:-1000}

export PATH="$HOME/.cargo/bin:$PATH"
command -v oha >/dev/null || cargo install --locked oha
if ! command -v valgrind >/dev/null; then
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
    else sudo apt-get update -qq && sudo apt-get install -y -qq valgrind >/dev/null; fi
fi
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    bench_build weir-bench
    cargo build -q --profile profiling -p weir
fi
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("weir=$ROOT/target/profiling/weir")

bench_tmp weir-instr

bench_bodies "$TMP"
MOCK_PORT=$(free_port)
"$ROOT/target/release/weir-mock-upstream" --listen "127.0.0.1:$MOCK_PORT" --threads 1 >"$TMP/mock.log" 2>&1 &
PIDS+=($!)

load() { # url count
    oha --no-tui --output-format json -n "$2" -c 4 -m POST -T application/json -D "$TMP/body.json" "$1" \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); c=d["statusCodeDistribution"]; print(c.get("200",0))'
}

# One config per chain: none, and the embedded default config's [[plugins]].
write_config() { # chain port
    bench_weir_config "$2" "$MOCK_PORT" "$TMP/wasm-cache"
    [ "$1" = none ] || bench_default_chain
}

CACHE_SIM=()
SHOW=Ir
if [ "${INSTR_CACHE:-0}" = 1 ]; then
    CACHE_SIM=(--cache-sim=yes)
    SHOW=Ir,I1mr,D1mr,D1mw
    echo "| build | plugins | requests | instructions per request | I1 misses | D1 misses |"
    echo "|---|---|---:|---:|---:|---:|"
else
    echo "| build | plugins | requests | instructions per request |"
    echo "|---|---|---:|---:|"
fi
for t in "${TARGETS[@]}"; do
    label=${t%%=*}; bin=${t#*=}
    for chain in none default; do
        run="$label-$chain"
        port=$(free_port)
        write_config "$chain" "$port" >"$TMP/$run.toml"
        if [ "$chain" != none ]; then
            # Compile the plugins into the cache natively first: under valgrind it takes minutes.
            "$bin" serve --config "$TMP/$run.toml" >"$TMP/$run-warm.log" 2>&1 &
            warm=$!
            PIDS+=($warm)
            wait_http "http://127.0.0.1:$port/health" 120
            kill "$warm"
            wait "$warm" 2>/dev/null || true
        fi
        WEIR_PLUGIN_ALLOCATOR=on-demand valgrind --tool=callgrind "${CACHE_SIM[@]}" --callgrind-out-file="$TMP/$run.cg" \
            "$bin" serve --config "$TMP/$run.toml" >"$TMP/$run.log" 2>&1 &
        vg=$!
        PIDS+=($vg)
        wait_http "http://127.0.0.1:$port/health" 120
        url="http://127.0.0.1:$port/v1/chat/completions"
        load "$url" 200 >/dev/null
        callgrind_control -z "$vg" >/dev/null 2>&1
        ok=$(load "$url" "$N")
        callgrind_control -d "$vg" >/dev/null 2>&1
        sleep 1
        dump=$(ls -t "$TMP/$run.cg"* | head -1)
        # The PROGRAM TOTALS line in $SHOW's order, without its percentages and commas.
        read -r -a totals < <(callgrind_annotate --show="$SHOW" "$dump" 2>/dev/null \
            | awk '/PROGRAM TOTALS/ && !t {gsub(/\([^)]*\)/, ""); gsub(",", ""); t=$0} END {print t}')
        total=${totals[0]}
        [ "$ok" = "$N" ] || echo "warning: $run answered $ok of $N requests with 200" >&2
        [ -z "${INSTR_KEEP:-}" ] || cp "$dump" "$INSTR_KEEP/$run.callgrind"
        if [ ${#CACHE_SIM[@]} -gt 0 ]; then
            echo "| $label | $chain | $N | $((total / N)) | $((totals[1] / N)) | $(((totals[2] + totals[3]) / N)) |"
        else
            echo "| $label | $chain | $N | $((total / N)) |"
        fi
        kill "$vg" 2>/dev/null || true
        wait "$vg" 2>/dev/null || true
    done
done
