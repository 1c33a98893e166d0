#!/usr/bin/env bash
# Load benchmark: Weir against a direct path and an nginx reverse proxy, in one run, on
# loopback only, in OpenAI's format and Anthropic's (passed through, and translated from an
# OpenAI client). Installs what it needs (oha from crates.io, nginx from Debian), builds Weir
# and the bench helpers in release, starts a fast mock upstream, nginx and several Weir
# configurations, drives each in interleaved rounds after a warm-up, prints one table and
# stops every process it started. Not part of the test suite. See docs/benchmarks.md.
#
#   scripts/bench.sh            # full run, ~6-8 minutes on 2 cores (plus the build)
#   scripts/bench.sh --quick    # ~2 minutes, one round of short runs
#   scripts/bench.sh --out FILE # also write the table (markdown) to FILE
#   scripts/bench.sh --flaky    # only the flaky-upstream scenario: 5% of answers are 503s;
#                               # success rate and latency direct vs Weir retrying (~1 minute)
#   BENCH_PGO=0 BENCH_SECS=1 scripts/bench.sh --quick   # smoke check: it runs, figures meaningless
#
# Weir is the profile-guided release build of scripts/pgo.sh (~18 minutes to build from clean
# on 2 cores); BENCH_PGO=0 measures the plain `cargo build --release` instead.
# Knobs (environment): BENCH_ROUNDS, BENCH_SECS (seconds per run), BENCH_WARMUP_SECS,
# BENCH_CONCURRENCY (closed loop, default 32), BENCH_PGO (1 or 0, default 1),
# BENCH_SKIP_BUILD=1 (use existing binaries), BENCH_IDLE_CONNS (idle connections held for the
# memory-per-connection line, default 500).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/bench-common.sh
. "$ROOT/scripts/bench-common.sh"

QUICK=0
FLAKY=0
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --flaky) FLAKY=1 ;;
        --out) OUT="$2"; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    ROUNDS=${BENCH_ROUNDS:-1}; SECS=${BENCH_SECS:-2}; WARMUP=${BENCH_WARMUP_SECS:-1}
else
    ROUNDS=${BENCH_ROUNDS:-2}; SECS=${BENCH_SECS:-5}; WARMUP=${BENCH_WARMUP_SECS:-2}
fi
CONC=${BENCH_CONCURRENCY:-32}

# ---------------------------------------------------------------- tools
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v oha >/dev/null; then
    echo "==> installing oha (load generator) from crates.io; takes a few minutes once"
    cargo install --locked oha
fi
bench_install_nginx
NGINX=$(bench_nginx_bin)
if ! command -v redis-server >/dev/null; then
    echo "==> installing redis-server (shared state of the keys scenario) from Debian"
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
    else sudo apt-get update -qq && sudo apt-get install -y -qq redis-server >/dev/null; fi
fi
command -v python3 >/dev/null || { echo "python3 is needed for the report" >&2; exit 1; }

PGO=${BENCH_PGO:-1}
HOST=$(rustc -vV | awk '/^host:/ {print $2}')
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    if [ "$PGO" = 1 ]; then
        # Builds the plugins and the bench helpers too.
        scripts/pgo.sh
    else
        echo "==> building plugins (wasm32-wasip2), weir and the bench helpers (release)"
        bench_build weir weir-bench
    fi
fi
if [ "$PGO" = 1 ]; then
    WEIR=$ROOT/target/pgo/$HOST/release/weir
    BUILD=pgo
else
    WEIR=$ROOT/target/release/weir
    BUILD=release
fi
[ -x "$WEIR" ] || { echo "no weir binary at $WEIR: run without BENCH_SKIP_BUILD=1" >&2; exit 1; }
MOCK=$ROOT/target/release/weir-mock-upstream
STREAMC=$ROOT/target/release/weir-stream-client
WASM=$ROOT/plugins/target/wasm32-wasip2/release

# ---------------------------------------------------------------- processes
bench_tmp weir-bench

if [ "$FLAKY" = 1 ]; then
    . "$ROOT/scripts/bench-flaky.sh"
    exit 0
fi

# Request bodies: a ~1 KB chat completion (system + user message), and the same in
# Anthropic's Messages shape.
bench_bodies "$TMP"

MOCK_PORT=$(free_port)
# Stream chunks are spaced 1 ms apart (8 chunks), so time to first byte and total differ.
"$MOCK" --listen "127.0.0.1:$MOCK_PORT" --threads 2 --chunks 8 --chunk-delay-us 1000 >"$TMP/mock.log" 2>&1 &
PIDS+=($!)

# Shared state of the keys scenario: a Redis without persistence.
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
# A second mock instance as the OTLP collector of the traced Weir (POST /v1/traces accepted).
OTLP_PORT=$(free_port)
"$MOCK" --listen "127.0.0.1:$OTLP_PORT" --threads 1 >"$TMP/otlp.log" 2>&1 &
PIDS+=($!)

NGINX_PORT=$(free_port)
bench_nginx "$TMP/nginx" "$NGINX_PORT" "$MOCK_PORT"

# Weir configurations. "default" is the [[plugins]] chain of the embedded default config.
provider() { bench_weir_config "$1" "$MOCK_PORT" "$TMP/wasm-cache" "${2:-openai}"; }
plugin() { # name file [extra toml lines]
    printf '\n[[plugins]]\nname = "%s"\npath = "%s/%s.wasm"\n%s\n' "$1" "$WASM" "$2" "${3:-}"
}
default_chain() { bench_default_chain; }
DEFAULT_N=$(grep -c '^\[\[plugins\]\]' crates/config/src/default.toml)

declare -A WEIR_PORT WEIR_PID WEIR_IDLE
start_weir() { # label config-file
    local port; port=$(free_port)
    WEIR_PORT[$1]=$port
    sed -i "s/__PORT__/$port/" "$2"
    "$WEIR" serve --config "$2" >"$TMP/weir-$1.log" 2>&1 &
    WEIR_PID[$1]=$!
    PIDS+=($!)
}
{ provider __PORT__; } >"$TMP/weir-none.toml"
# The default chain with the resilience a deployment turns on: retries (on by default), a circuit
# breaker and a fallback provider, none of them triggered (the happy path's cost).
resilience() {
    printf '\n[providers.breaker]\n\n[[providers]]\nname = "backup"\nkind = "openai"\n'
    printf 'base_url = "http://127.0.0.1:%s/v1"\nmodels = ["bench-2"]\ndiscover_models = false\n' "$MOCK_PORT"
    printf '\n[fallbacks]\n"bench-1" = ["backup/bench-2"]\n'
}
{ provider __PORT__; resilience; default_chain; } >"$TMP/weir-default.toml"
{
    provider __PORT__
    plugin request-log request_log 'config = { level = "debug" }'
    plugin prompt-guard prompt_guard 'config = { deny_keywords = ["ignore previous instructions"] }'
    plugin pii-redact pii_redact 'config = { email = true, phone = true, card = true }'
    plugin model-alias model_alias 'config = { aliases = { fast = "bench-1" } }'
    plugin noop noop
} >"$TMP/weir-five.toml"
# Stalled: a plugin that spins until its 20 ms deadline on requests carrying x-misbehave
# (1% of the load), fail-open so those requests are still answered; plus the default chain.
# Its fuel is raised far above what 20 ms can burn, so the wall-clock deadline (not fuel,
# which would stop the loop after ~7 ms) is what ends each stall.
{
    provider __PORT__
    plugin misbehave misbehave 'instances = 4
timeout = "20ms"
fuel = 100000000000
on_error = "fail-open"
config = { mode = "loop", hook = "request" }'
    default_chain
} >"$TMP/weir-stall.toml"
# Records: no plugins, one request record per request to a JSON-lines file sink (the event
# bus on the request path; rotated at 256 MiB so a long run cannot fill the disk).
{
    printf '[[events.sinks]]\nkind = "file"\npath = "%s/records.jsonl"\nmax_bytes = 268435456\nkeep = 1\n\n' "$TMP"
    provider __PORT__
} >"$TMP/weir-records.toml"
# Keys: a virtual key with every limit on (none of them reached), counted in Redis (one
# script per request) with the default chain: what the issue 29 target measures.
BENCH_KEY=sk-bench-virtual-key-0001
{
    provider __PORT__
    default_chain
    printf '\n[state]\nredis_url = "redis://127.0.0.1:%s/0"\n' "$REDIS_PORT"
    printf '\n[[keys]]\nname = "bench"\nvalue = "%s"\nrpm = 1000000000\ntpm = 1000000000000\n' "$BENCH_KEY"
    printf 'max_concurrent = 100000\nbudget = { usd = 1000000000.0, period = "30d" }\n'
} >"$TMP/weir-keys.toml"
start_weir none "$TMP/weir-none.toml"
start_weir records "$TMP/weir-records.toml"
start_weir default "$TMP/weir-default.toml"
start_weir five "$TMP/weir-five.toml"
start_weir stall "$TMP/weir-stall.toml"
# Anthropic-format upstream (the mock's /v1/messages), no plugins: an Anthropic client's
# request passes through, an OpenAI client's is translated both ways.
{ provider __PORT__ anthropic; } >"$TMP/weir-anth.toml"
start_weir anth "$TMP/weir-anth.toml"
# Traces and records (issue 30's target): every request sampled, its spans exported over
# OTLP/HTTP to the local collector, and its record on the JSON-lines file sink.
{
    printf '[[events.sinks]]\nkind = "file"\npath = "%s/records-traced.jsonl"\nmax_bytes = 268435456\nkeep = 1\n\n' "$TMP"
    provider __PORT__
    printf '\n[tracing]\nendpoint = "http://127.0.0.1:%s/v1/traces"\nsample_ratio = 1.0\n' "$OTLP_PORT"
} >"$TMP/weir-traced.toml"
start_weir traced "$TMP/weir-traced.toml"
start_weir keys "$TMP/weir-keys.toml"
# The response cache on, no plugins: every request carries the same body, so after the first
# each is a hit answered without an upstream call.
{ provider __PORT__; printf '\n[cache]\nenabled = true\n'; } >"$TMP/weir-cache.toml"
start_weir cache "$TMP/weir-cache.toml"
WEIRS=(none default five stall anth records keys traced cache)

wait_http "http://127.0.0.1:$MOCK_PORT/v1/models"
wait_http "http://127.0.0.1:$NGINX_PORT/v1/models"
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
wait_http "http://127.0.0.1:$OTLP_PORT/v1/models"
for w in "${WEIRS[@]}"; do wait_http "http://127.0.0.1:${WEIR_PORT[$w]}/health"; done
sleep 1
for w in "${WEIRS[@]}"; do
    WEIR_IDLE[$w]=$(awk '/VmRSS/{print $2}' "/proc/${WEIR_PID[$w]}/status")
done

declare -A URL=(
    [direct]="http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
    [nginx]="http://127.0.0.1:$NGINX_PORT/v1/chat/completions"
    [weir-none]="http://127.0.0.1:${WEIR_PORT[none]}/v1/chat/completions"
    [weir-default]="http://127.0.0.1:${WEIR_PORT[default]}/v1/chat/completions"
    [weir-five]="http://127.0.0.1:${WEIR_PORT[five]}/v1/chat/completions"
    [weir-keys]="http://127.0.0.1:${WEIR_PORT[keys]}/v1/chat/completions"
    [weir-stall]="http://127.0.0.1:${WEIR_PORT[stall]}/v1/chat/completions"
    [weir-records]="http://127.0.0.1:${WEIR_PORT[records]}/v1/chat/completions"
    [direct-anth]="http://127.0.0.1:$MOCK_PORT/v1/messages"
    [nginx-anth]="http://127.0.0.1:$NGINX_PORT/v1/messages"
    [weir-anth]="http://127.0.0.1:${WEIR_PORT[anth]}/v1/messages"
    [weir-xlat]="http://127.0.0.1:${WEIR_PORT[anth]}/v1/chat/completions"
    [weir-traced]="http://127.0.0.1:${WEIR_PORT[traced]}/v1/chat/completions"
    [weir-cache]="http://127.0.0.1:${WEIR_PORT[cache]}/v1/chat/completions"
)
# The Anthropic-format targets, all against the mock's /v1/messages: direct, nginx, Weir
# passing an Anthropic client through, Weir translating an OpenAI client (same process).
ANTH=(direct-anth nginx-anth weir-anth weir-xlat)
# What each target is sent (OpenAI's body unless listed), and the Weir process behind it.
declare -A BODY=([direct-anth]=anthropic [nginx-anth]=anthropic [weir-anth]=anthropic)
declare -A PROC=([weir-none]=none [weir-default]=default [weir-five]=five [weir-stall]=stall
    [weir-anth]=anth [weir-xlat]=anth [weir-records]=records
    [weir-keys]=keys [weir-traced]=traced [weir-cache]=cache)
# Targets that need a virtual key.
declare -A AUTH=([weir-keys]="authorization: Bearer $BENCH_KEY")
body_file() { # target [suffix]
    if [ -n "${BODY[$1]:-}" ]; then echo "$TMP/body-${BODY[$1]}${2:-}.json"; else echo "$TMP/body${2:-}.json"; fi
}

# ---------------------------------------------------------------- load
RES=$TMP/results
mkdir -p "$RES"
oha_run() { # out secs target [extra oha args...]
    local out=$1 secs=$2 t=$3; shift 3
    if [ -n "${AUTH[$t]:-}" ]; then set -- -H "${AUTH[$t]}" "$@"; fi
    oha --no-tui --output-format json -w -z "${secs}s" -m POST -T application/json -D "$(body_file "$t")" \
        "$@" "${URL[$t]}" >"$out" 2>"$out.err" || echo "{\"failed\": true}" >"$out"
}
closed() { oha_run "$1" "$2" "$3" -c "$CONC"; }
# CPU time (user + system, clock ticks) of a proxy target's processes: weir's process, nginx's
# workers. The direct path has no proxy.
cpu_ticks() { # target
    local pids
    case $1 in
        nginx*) pids=$(cat "/proc/$NGINX_PID/task/$NGINX_PID/children") ;;
        weir-*) pids=${WEIR_PID[${PROC[$1]}]} ;;
        *) echo 0; return ;;
    esac
    # shellcheck disable=SC2086
    awk '{t += $14 + $15} END {print t + 0}' $(printf '/proc/%s/stat ' $pids)
}
# A closed-loop run that also records the proxy's CPU ticks over it.
closed_cpu() { # out secs target
    local c0 c1
    c0=$(cpu_ticks "$3")
    closed "$1" "$2" "$3"
    c1=$(cpu_ticks "$3")
    echo $((c1 - c0)) >"${1%.json}.cpu"
}
fixed() { oha_run "$1" "$2" "$3" -c "$CONC" -q "$4" --latency-correction; }
stream() { # out secs target
    "$STREAMC" --url "${URL[$3]}" --body "$(body_file "$3" -stream)" --concurrency "$CONC" --duration-s "$2" \
        >"$1" 2>"$1.err" || echo '{"failed": true}' >"$1"
}
# The other 99%: 990 req/s without the trigger, while 10 req/s carry it.
stalled() {
    oha_run "$1.stall" "$2" "$3" -c 4 -q 10 --latency-correction -H "x-misbehave: 1" &
    local side=$!
    fixed "$1" "$2" "$3" 990
    wait "$side"
}

TARGETS=(direct nginx weir-none weir-default weir-five weir-keys)
# Observability targets: closed loop only, judged against nginx in the same rotation.
OBS=(weir-traced)
echo "==> load: uptime before: $(uptime)"
echo "==> warm-up (${WARMUP}s per target)"
for t in "${TARGETS[@]}" weir-stall weir-records "${ANTH[@]}" "${OBS[@]}" weir-cache; do closed /dev/null "$WARMUP" "$t"; done
for t in direct nginx weir-none weir-default "${ANTH[@]}"; do stream "$TMP/warm.json" "$WARMUP" "$t"; done

# The targets in round r, rotated by r - 1: no target always runs first after another
# scenario's load, or always last when the host's load drifts through a round.
rotated() { # round target...
    local r=$1; shift
    local n=$# i
    local -a all=("$@")
    for ((i = 0; i < n; i++)); do echo "${all[$(((i + r - 1) % n))]}"; done
}
for r in $(seq 1 "$ROUNDS"); do
    echo "==> round $r/$ROUNDS (${SECS}s per run)"
    mapfile -t ORDER < <(rotated "$r" "${TARGETS[@]}")
    # Closed loop and stream interleave both formats' targets in one rotation.
    # weir-records and weir-traced (observability on the request path) run in the closed loop only.
    mapfile -t CORDER < <(rotated "$r" "${TARGETS[@]}" weir-records "${ANTH[@]}" "${OBS[@]}" weir-cache)
    mapfile -t SORDER < <(rotated "$r" direct nginx weir-none weir-default "${ANTH[@]}")
    for t in "${CORDER[@]}"; do closed_cpu "$RES/closed.$t.$r.json" "$SECS" "$t"; done
    for t in "${ORDER[@]}"; do fixed "$RES/rate1000.$t.$r.json" "$SECS" "$t" 1000; done
    fixed "$RES/rate1000.weir-cache.$r.json" "$SECS" weir-cache 1000
    for t in "${ORDER[@]}"; do fixed "$RES/rate5000.$t.$r.json" "$SECS" "$t" 5000; done
    for t in "${SORDER[@]}"; do stream "$RES/stream.$t.$r.json" "$SECS" "$t"; done
    fixed "$RES/stall0.weir-stall.$r.json" "$SECS" weir-stall 1000
    stalled "$RES/stall1.weir-stall.$r.json" "$SECS" weir-stall
done
echo "==> load: uptime after: $(uptime)"

# Memory per idle client connection: BENCH_IDLE_CONNS keep-alive connections to the
# no-plugins Weir, one request each, held open while its VmRSS is read again (SDK clients
# keep pools of such connections).
IDLE_CONNS=${BENCH_IDLE_CONNS:-500}
rss_before=$(awk '/VmRSS/{print $2}' "/proc/${WEIR_PID[none]}/status")
python3 bench/idle_conns.py "${WEIR_PORT[none]}" "$IDLE_CONNS" "$TMP/body.json" 5 >"$TMP/idle.out" &
held=$!
for _ in $(seq 1 100); do grep -q ready "$TMP/idle.out" 2>/dev/null && break; sleep 0.1; done
rss_held=$(awk '/VmRSS/{print $2}' "/proc/${WEIR_PID[none]}/status")
echo "idle weir-none $IDLE_CONNS $rss_before $rss_held $(awk '/ready/{print $2}' "$TMP/idle.out")" >"$RES/idle.txt"
wait "$held" || true

# ---------------------------------------------------------------- report
{
    for w in "${WEIRS[@]}"; do
        echo "rss weir-$w $(awk '/VmHWM/{print $2}' "/proc/${WEIR_PID[$w]}/status") ${WEIR_IDLE[$w]}"
    done
} >"$RES/rss.txt"
getconf CLK_TCK >"$RES/clk_tck.txt"
META="rounds=$ROUNDS secs=$SECS warmup=$WARMUP concurrency=$CONC default_plugins=$DEFAULT_N"
META="$META oha=$(oha --version | awk '{print $2}') nginx=$("$NGINX" -v 2>&1 | sed 's#.*/##')"
META="$META weir=$(git rev-parse --short HEAD)$(git diff --quiet -- host bench || echo +dirty) build=$BUILD"
python3 bench/report.py "$RES" "$META" | tee "${OUT:-/dev/null}"
for w in "${WEIRS[@]}"; do
    if grep -q "panicked" "$TMP/weir-$w.log"; then echo "warning: weir-$w logged a panic" >&2; fi
done
