#!/usr/bin/env bash
# Closed-loop A/B of this tree's weir against another commit's, with nginx in the same run: the
# check that a change did not make the default chain slower, on machines where "x nginx" itself
# moves with the VM (both sides move together). Builds REV in a worktree (target/ab/<rev>, kept
# for the next run) with REV's own scripts/pgo.sh, and this tree with scripts/pgo.sh; serves one
# mock upstream through nginx, REV's weir and this weir, each weir with its own default plugin
# chain; runs AB_ROUNDS rounds of AB_SECS seconds closed loop at c=32 (bench body), one run per
# target per round in an order that rotates; prints each round and the medians. Not part of the
# test suite. See docs/benchmarks.md.
#
#   scripts/ab.sh bfdc4ce                  # wave 1's request path against this one
#   AB_ROUNDS=16 AB_SECS=5 scripts/ab.sh REV
#
# REV needs scripts/pgo.sh and scripts/bench-common.sh (every commit since wave 1 has them).
# First build of a REV: ~20 minutes on 2 cores (two release builds and the training load).
# AB_WORKTREE=DIR uses an existing checkout of REV instead of target/ab/<rev>.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/bench-common.sh
. "$ROOT/scripts/bench-common.sh"
[ $# = 1 ] || { sed -n '2,16p' "$0"; exit 2; }
REV=$(git rev-parse --short "$1^{commit}")
ROUNDS=${AB_ROUNDS:-12}
SECS=${AB_SECS:-5}
export PATH="$HOME/.cargo/bin:$PATH"
bench_install_nginx
HOST=$(rustc -vV | awk '/^host:/ {print $2}')

WT=${AB_WORKTREE:-$ROOT/target/ab/$REV}
if [ ! -d "$WT" ]; then
    echo "==> worktree of $REV at $WT" >&2
    git worktree prune # forgets a worktree whose directory `cargo clean` removed
    git worktree add --detach "$WT" "$REV" >&2
fi
echo "==> building $REV (its scripts/pgo.sh)" >&2
(cd "$WT" && scripts/pgo.sh >/dev/null)
echo "==> building this tree (scripts/pgo.sh)" >&2
scripts/pgo.sh >/dev/null
A_BIN=$WT/target/pgo/$HOST/release/weir
B_BIN=$ROOT/target/pgo/$HOST/release/weir

bench_tmp weir-ab
bench_bodies "$TMP"
MOCK_PORT=$(free_port)
"$ROOT/target/release/weir-mock-upstream" --listen "127.0.0.1:$MOCK_PORT" --threads 2 >"$TMP/mock.log" 2>&1 &
PIDS+=($!)
N_PORT=$(free_port)
bench_nginx "$TMP/nginx" "$N_PORT" "$MOCK_PORT"
# Each side's config from its own scripts (REV's chain may name .wasm files in its tree).
A_PORT=$(free_port)
(cd "$WT" && . scripts/bench-common.sh && bench_weir_config "$A_PORT" "$MOCK_PORT" "$TMP/cache-a" \
    && bench_default_chain "$WT/plugins/target/wasm32-wasip2/release") >"$TMP/a.toml"
"$A_BIN" serve --config "$TMP/a.toml" >"$TMP/a.log" 2>&1 &
A_PID=$!
PIDS+=($!)
B_PORT=$(free_port)
{ bench_weir_config "$B_PORT" "$MOCK_PORT" "$TMP/cache-b"; bench_default_chain; } >"$TMP/b.toml"
"$B_BIN" serve --config "$TMP/b.toml" >"$TMP/b.log" 2>&1 &
B_PID=$!
PIDS+=($!)
for port in "$N_PORT" "$A_PORT" "$B_PORT"; do wait_http "http://127.0.0.1:$port/" 30; done

# CPU time (user + system, clock ticks) of a target's processes.
ticks() {
    local pids s=0
    case $1 in
        nginx) pids=$(cat "/proc/$NGINX_PID/task/$NGINX_PID/children") ;;
        a) pids=$A_PID ;;
        b) pids=$B_PID ;;
    esac
    for p in $pids; do s=$((s + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
    echo "$s"
}
port() { case $1 in nginx) echo "$N_PORT" ;; a) echo "$A_PORT" ;; b) echo "$B_PORT" ;; esac; }
# One closed-loop run: "<target> <200 answers> <other answers> <CPU ticks>".
run() { # target secs
    local t0 t1 counts
    t0=$(ticks "$1")
    counts=$(oha --no-tui --output-format json -w -z "${2}s" -c 32 -m POST -T application/json \
        -D "$TMP/body.json" "http://127.0.0.1:$(port "$1")/v1/chat/completions" \
        | python3 -c 'import json,sys; d=json.load(sys.stdin)["statusCodeDistribution"]; ok=d.get("200",0); print(ok, sum(d.values())-ok)')
    t1=$(ticks "$1")
    echo "$1 $counts $((t1 - t0))"
}
for t in nginx a b; do run "$t" 2 >/dev/null; done
ORDER=(nginx a b)
for r in $(seq 1 "$ROUNDS"); do
    line=""
    for i in 0 1 2; do line="$line $(run "${ORDER[$(( (i + r) % 3 ))]}" "$SECS")"; done
    echo "$line" | tee -a "$TMP/rounds"
done
python3 - "$TMP/rounds" "$REV" "$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo +)" "$SECS" \
    "$(getconf CLK_TCK)" <<'PY'
import statistics as st, sys
path, rev, head, secs, hz = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
rounds = []
for line in open(path):
    f = line.split()
    rounds.append({f[i]: (int(f[i + 1]), int(f[i + 2]), int(f[i + 3])) for i in range(0, len(f), 4)})
errors = sum(r[t][1] for r in rounds for t in r)
def rps(r, t): return r[t][0] / secs
def cpu_us(r, t): return r[t][2] / hz * 1e6 / max(r[t][0], 1)
def med(xs): return st.median(xs)
def spread(xs): return f"{med(xs):.3f} ({min(xs):.2f}-{max(xs):.2f})"
print(f"\n{len(rounds)} rounds of {secs:g} s, closed loop c=32, default chain; {errors} non-200 answers\n")
print(f"| | nginx | {rev} | {head} |\n|---|---:|---:|---:|")
print("| req/s, median | " + " | ".join(f"{med([rps(r, t) for r in rounds]):,.0f}" for t in ("nginx", "a", "b")) + " |")
print("| x nginx, median (range) | 1 | " + " | ".join(spread([rps(r, t) / rps(r, "nginx") for r in rounds]) for t in ("a", "b")) + " |")
print("| CPU per request, median | " + " | ".join(f"{med([cpu_us(r, t) for r in rounds]):.1f} us" for t in ("nginx", "a", "b")) + " |")
print(f"\n{head} over {rev}, paired per round (median): req/s "
      f"{med([rps(r, 'b') / rps(r, 'a') for r in rounds]):.3f}, CPU per request "
      f"{med([cpu_us(r, 'b') / cpu_us(r, 'a') for r in rounds]):.3f}")
PY
