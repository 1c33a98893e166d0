# The flaky-upstream scenario of scripts/bench.sh (sourced by `scripts/bench.sh --flaky`, after
# the build, with $MOCK, $WEIR, $TMP, $PIDS, $SECS, $CONC and the bench-common helpers set):
# the mock answers 5% of model calls with a 503; oha drives it directly and through Weir with
# its default retries (short backoffs), and the table shows each path's success rate and
# latency, so the cost of surviving the failures is the latency Weir adds.

bench_bodies "$TMP"
FLAKY_PERCENT=${BENCH_FLAKY_PERCENT:-5}
MOCK_PORT=$(free_port)
"$MOCK" --listen "127.0.0.1:$MOCK_PORT" --threads 2 --fail-percent "$FLAKY_PERCENT" >"$TMP/mock.log" 2>&1 &
PIDS+=($!)
WEIR_PORT=$(free_port)
{
    bench_weir_config "$WEIR_PORT" "$MOCK_PORT" "$TMP/wasm-cache"
    printf '\n[providers.retry]\nbase_backoff = "5ms"\nmax_backoff = "20ms"\n'
} >"$TMP/weir-flaky.toml"
"$WEIR" serve --config "$TMP/weir-flaky.toml" >"$TMP/weir-flaky.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$MOCK_PORT/v1/models"
wait_http "http://127.0.0.1:$WEIR_PORT/health"

echo "==> flaky upstream: ${FLAKY_PERCENT}% of answers are 503s; ${SECS}s closed loop, ${CONC} connections"
for t in direct weir; do
    case $t in
        direct) url="http://127.0.0.1:$MOCK_PORT/v1/chat/completions" ;;
        weir) url="http://127.0.0.1:$WEIR_PORT/v1/chat/completions" ;;
    esac
    oha --no-tui --output-format json -w -z "${WARMUP}s" -c "$CONC" -m POST -T application/json \
        -D "$TMP/body.json" "$url" >/dev/null 2>&1 || true
    oha --no-tui --output-format json -w -z "${SECS}s" -c "$CONC" -m POST -T application/json \
        -D "$TMP/body.json" "$url" >"$TMP/flaky.$t.json" 2>"$TMP/flaky.$t.err" || echo '{"failed": true}' >"$TMP/flaky.$t.json"
done
python3 - "$TMP" <<'PY'
import json, sys
rows = []
for t in ("direct", "weir"):
    r = json.load(open(f"{sys.argv[1]}/flaky.{t}.json"))
    if r.get("failed"):
        rows.append((t, "failed", "", "", ""))
        continue
    codes = {int(k): v for k, v in r["statusCodeDistribution"].items()}
    total = sum(codes.values()) or 1
    ok = codes.get(200, 0) / total * 100
    pct = r["latencyPercentiles"]
    ms = lambda k: f'{(pct.get(k) or 0) * 1000:.2f}'
    rows.append((t, f"{r['summary']['requestsPerSec']:.0f}", f"{ok:.2f}%", ms("p50"), ms("p99")))
print("| path | req/s | success | p50 ms | p99 ms |")
print("| --- | --- | --- | --- | --- |")
for row in rows:
    print("| " + " | ".join(row) + " |")
PY
grep -q panicked "$TMP/weir-flaky.log" && echo "warning: weir logged a panic" >&2 || true
