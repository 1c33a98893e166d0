#!/usr/bin/env python3
"""Turns the raw results of scripts/bench.sh into one markdown report.

Usage: report.py RESULTS_DIR "META". RESULTS_DIR holds `<scenario>.<target>.<round>.json`
(oha JSON, or weir-stream-client JSON for the `stream` scenario), for closed-loop runs
`closed.<target>.<round>.cpu` (the proxy's CPU clock ticks over the run), `clk_tck.txt` and
`rss.txt` and `idle.txt`. RPS and latency are the mean over rounds. "added" is the target's latency minus the
direct path's in the same scenario and the same round, the median over rounds: a round hit by
a burst from other tenants moves every target in it, and one such round moves a mean of
differences but not their median. "x nginx" is the target's throughput divided by nginx's, and
"proxy CPU us/req" the proxy processes' user + system time divided by the requests answered.
The Anthropic-format targets (`*-anth`, `weir-xlat`) are judged against `direct-anth` and
`nginx-anth`, which send the same upstream Anthropic's request.
"""

import glob
import json
import os
import sys
from collections import defaultdict

res_dir, meta = sys.argv[1], sys.argv[2]
runs = defaultdict(list)  # (scenario, target) -> [dict]
by_round = defaultdict(dict)  # (scenario, target) -> {round: dict}
for path in sorted(glob.glob(os.path.join(res_dir, "*.json"))):
    scenario, target, rnd, _ = os.path.basename(path).split(".")
    with open(path) as f:
        try:
            data = json.load(f)
        except ValueError:
            data = {"failed": True}
    stall_path = path + ".stall"
    if os.path.exists(stall_path):
        with open(stall_path) as f:
            try:
                data["_stall"] = json.load(f)
            except ValueError:
                data["_stall"] = {"failed": True}
    runs[(scenario, target)].append(data)
    by_round[(scenario, target)][rnd] = data


def cpu_us_per_request(target):
    """The proxy's mean CPU time per request over the closed-loop rounds, in microseconds."""
    tck_path = os.path.join(res_dir, "clk_tck.txt")
    if not os.path.exists(tck_path):
        return None
    with open(tck_path) as fh:
        hz = float(fh.read().strip() or 0)
    per_round = []
    for path in sorted(glob.glob(os.path.join(res_dir, f"closed.{target}.*.cpu"))):
        with open(path) as fh:
            ticks = float(fh.read().strip() or 0)
        with open(path[: -len(".cpu")] + ".json") as fh:
            try:
                d = oha(json.load(fh))
            except ValueError:
                d = None
        n = d["requests"] + d["errors"] if d else 0
        if hz and n and ticks:
            per_round.append(ticks / hz * 1e6 / n)
    return sum(per_round) / len(per_round) if per_round else None


def oha(d):
    """rps, p50/p90/p99 (ms), requests, errors from one oha JSON document."""
    if d.get("failed"):
        return None
    s, p = d["summary"], d.get("latencyPercentiles", {})
    codes = d.get("statusCodeDistribution", {})
    ok = sum(n for c, n in codes.items() if c.startswith("2"))
    bad = sum(n for c, n in codes.items() if not c.startswith("2"))
    bad += sum(d.get("errorDistribution", {}).values())
    ms = lambda k: (p.get(k) or 0.0) * 1000.0  # noqa: E731
    return {"rps": s.get("requestsPerSec") or 0.0, "p50": ms("p50"), "p90": ms("p90"), "p99": ms("p99"),
            "requests": ok, "errors": bad}


def stream(d):
    if d.get("failed"):
        return None
    return {"rps": d["rps"], "requests": d["requests"], "errors": d["errors"],
            "ttfb50": d["ttfb_p50_ms"], "ttfb99": d["ttfb_p99_ms"],
            "p50": d["total_p50_ms"], "p90": d["total_p90_ms"], "p99": d["total_p99_ms"]}


def mean(scenario, target, parse=oha, key=None):
    rows = [parse(d[key] if key else d) for d in runs.get((scenario, target), []) if not key or key in d]
    rows = [r for r in rows if r]
    if not rows:
        return None
    out = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    out["errors"] = sum(r["errors"] for r in rows)
    out["requests"] = sum(r["requests"] for r in rows)
    return out


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    if not n:
        return None
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def paired(scenario, target, key, parse=oha, base="direct"):
    """Per round both finished, in round order: (round, the `base` target's `key`, the target's
    `key` minus it)."""
    direct, mine = by_round.get((scenario, base), {}), by_round.get((scenario, target), {})
    out = []
    for rnd in sorted(set(direct) & set(mine), key=int):
        d, m = parse(direct[rnd]), parse(mine[rnd])
        if d and m:
            out.append((rnd, d[key], m[key] - d[key]))
    return out


def added(scenario, target, key, parse=oha, base="direct"):
    """Median over rounds of the target's `key` minus the `base` target's in the same round."""
    return median([diff for _, _, diff in paired(scenario, target, key, parse, base)])


def f(v, digits=3):
    return "-" if v is None else f"{v:.{digits}f}"


def with_nginx(add50, nginx50):
    """An added p50 with nginx's in the same run beside it: the target is absolute, but on a
    shared host what any proxy adds moves by more than the margin it leaves."""
    return f"{add50:.3f} ms" + (f" (nginx added {nginx50:.3f} ms)" if nginx50 is not None else "")


def rounds_table(scenario, title):
    """The rounds of `scenario` one by one: how far the host's own tail (the direct path's
    p99) moves between rounds, and what each proxy added in the same round."""
    rounds = sorted(by_round.get((scenario, "direct"), {}), key=int)
    if not rounds:
        return
    diffs = {(t, k): {rnd: diff for rnd, _, diff in paired(scenario, t, k)} for t in TARGETS[1:] for k in ("p50", "p99")}
    out.append(f"#### {title}, round by round (added = target minus direct, same round)\n")
    out.append("| round | direct p50 ms | direct p99 ms | "
               + " | ".join(f"{LABEL[t]}: added p50 / p99 ms" for t in TARGETS[1:]) + " |")
    out.append("|---:|---:|---:|" + "---:|" * (len(TARGETS) - 1))
    for rnd in rounds:
        d = oha(by_round[(scenario, "direct")][rnd])
        cells = [f"{f(diffs[(t, 'p50')][rnd])} / {f(diffs[(t, 'p99')][rnd])}" if rnd in diffs[(t, "p50")] else "-"
                 for t in TARGETS[1:]]
        base = f"{f(d['p50'])} | {f(d['p99'])}" if d else "- | -"
        out.append(f"| {rnd} | {base} | " + " | ".join(cells) + " |")
    out.append("")


TARGETS = ["direct", "nginx", "weir-none", "weir-default", "weir-five", "weir-keys"]
LABEL = {"direct": "direct (no proxy)", "nginx": "nginx", "weir-none": "weir, no plugins",
         "weir-default": "weir, default chain", "weir-five": "weir, 5 plugins", "weir-stall": "weir, stall chain",
         "weir-records": "weir, request records to a JSON file",
         "weir-keys": "weir, default chain + virtual key limits on Redis",
         "direct-anth": "direct (no proxy), /v1/messages", "nginx-anth": "nginx, /v1/messages",
         "weir-anth": "weir, /v1/messages passthrough", "weir-xlat": "weir, OpenAI client translated",
         "weir-cache": "weir, response cache (every request a hit)"}
ANTH = ["direct-anth", "nginx-anth", "weir-anth", "weir-xlat"]
out = []
out.append(f"Run: {meta}\n")
checks = []

for scenario, title in [("closed", "Closed loop, concurrency 32, non-stream"),
                        ("rate1000", "Fixed rate 1,000 req/s (latency-corrected), non-stream"),
                        ("rate5000", "Fixed rate 5,000 req/s (latency-corrected), non-stream")]:
    cpu = scenario == "closed"
    out.append(f"### {title}\n")
    out.append("| target | RPS | p50 ms | p90 ms | p99 ms | errors | added p50 ms | added p99 ms | RPS x nginx |"
               + (" proxy CPU us/req |" if cpu else ""))
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if cpu else ""))
    nginx, nginx50 = mean(scenario, "nginx"), added(scenario, "nginx", "p50")
    for t in TARGETS + (["weir-records"] if cpu and mean(scenario, "weir-records") else []):
        m = mean(scenario, t)
        if not m:
            out.append(f"| {LABEL[t]} | failed | | | | | | | |" + (" |" if cpu else ""))
            continue
        add50 = added(scenario, t, "p50") if t != "direct" else None
        add99 = added(scenario, t, "p99") if t != "direct" else None
        ratio = m["rps"] / nginx["rps"] if nginx and nginx["rps"] else None
        out.append(f"| {LABEL[t]} | {m['rps']:.0f} | {f(m['p50'])} | {f(m['p90'])} | {f(m['p99'])} | "
                   f"{m['errors']} | {f(add50)} | {f(add99)} | {f(ratio, 2)} |"
                   + (f" {f(cpu_us_per_request(t), 1)} |" if cpu else ""))
        if scenario == "closed" and t == "weir-records" and ratio is not None:
            checks.append(("throughput, request records to the JSON sink, closed loop c=32 >= 0.75 x nginx",
                           f"{ratio:.2f}", ratio >= 0.75))
        if scenario == "closed" and t == "weir-default" and ratio is not None:
            checks.append(("throughput, default chain, closed loop c=32 >= 0.60 x nginx", f"{ratio:.2f}", ratio >= 0.6))
        if scenario == "closed" and t == "weir-keys" and ratio is not None:
            checks.append(("throughput, virtual keys + limits on Redis, closed loop c=32 >= 0.60 x nginx",
                           f"{ratio:.2f}", ratio >= 0.6))
        if scenario == "rate1000" and t == "weir-default" and add50 is not None:
            checks.append(("added latency p50 @1,000 req/s (default chain) <= 0.15 ms", with_nginx(add50, nginx50),
                           add50 <= 0.15))
            # In a round where the direct path's own p99 is above the target, the host's tail
            # swamps what a proxy adds (the difference can even come out negative). The verdict
            # takes the median over the other (quiet) rounds, and needs at least half of all
            # rounds to be quiet.
            pairs = paired(scenario, t, "p99")
            quiet = [diff for _, base, diff in pairs if base <= 1.0]
            q99 = median(quiet)
            judged = q99 is not None and 2 * len(quiet) >= len(pairs)
            nginx_quiet = median([diff for _, base, diff in paired(scenario, "nginx", "p99") if base <= 1.0])
            checks.append(("added latency p99 @1,000 req/s (default chain) <= 1 ms",
                           (f"{q99:.3f} ms" if q99 is not None else "-")
                           + f" ({len(quiet)} of {len(pairs)} rounds with direct p99 <= 1 ms"
                           + (f"; nginx added {nginx_quiet:.3f} ms in them)" if nginx_quiet is not None else ")"),
                           q99 <= 1.0 if judged else None))
        if scenario == "rate1000" and t == "weir-none" and add50 is not None:
            checks.append(("added latency p50 @1,000 req/s (no plugins) <= 0.15 ms", with_nginx(add50, nginx50),
                           add50 <= 0.15))
    out.append("")
    if scenario == "rate1000":
        rounds_table(scenario, title)

out.append("### Stream, closed loop, concurrency 32 (8 chunks 1 ms apart)\n")
out.append("| target | RPS | TTFB p50 ms | TTFB p99 ms | total p50 ms | total p99 ms | errors | added TTFB p50 ms "
           "| RPS x nginx |")
out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
sn = mean("stream", "nginx", stream)
for t in ["direct", "nginx", "weir-none", "weir-default"]:
    m = mean("stream", t, stream)
    if not m:
        out.append(f"| {LABEL[t]} | failed | | | | | | | |")
        continue
    add = added("stream", t, "ttfb50", stream) if t != "direct" else None
    ratio = m["rps"] / sn["rps"] if sn and sn["rps"] else None
    out.append(f"| {LABEL[t]} | {m['rps']:.0f} | {f(m['ttfb50'])} | {f(m['ttfb99'])} | {f(m['p50'])} | "
               f"{f(m['p99'])} | {m['errors']} | {f(add)} | {f(ratio, 2)} |")
out.append("")

# Observability: the same upstream and body as the closed-loop table, with traces sampled at
# 100% and exported over OTLP/HTTP to a local receiver that accepts them.
OBS = [t for t in ["weir-none", "weir-traced"] if mean("closed", t)]
LABEL["weir-traced"] = "weir, traces at 100% (OTLP to a local receiver) + records to a JSON file"
if "weir-traced" in OBS:
    out.append("### Observability: closed loop, concurrency 32, non-stream\n")
    out.append("| target | RPS | p50 ms | p99 ms | errors | RPS x nginx | proxy CPU us/req |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    nginx = mean("closed", "nginx")
    for t in OBS:
        m = mean("closed", t)
        ratio = m["rps"] / nginx["rps"] if nginx and nginx["rps"] else None
        out.append(f"| {LABEL[t]} | {m['rps']:.0f} | {f(m['p50'])} | {f(m['p99'])} | {m['errors']} | "
                   f"{f(ratio, 2)} | {f(cpu_us_per_request(t), 1)} |")
        if t == "weir-traced" and ratio is not None:
            checks.append(("traces at 100%, closed loop c=32 >= 0.75 x nginx", f"{ratio:.2f}", ratio >= 0.75))
    out.append("")

# Anthropic's format: the same upstream (the mock's /v1/messages) behind every target, so nginx
# and the passthrough carry Anthropic's request while the translated target carries OpenAI's.
out.append("### Anthropic-format upstream: closed loop, concurrency 32, non-stream\n")
out.append("| target | RPS | p50 ms | p90 ms | p99 ms | errors | added p50 ms | added p99 ms | RPS x nginx "
           "| proxy CPU us/req |")
out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
nginx = mean("closed", "nginx-anth")
for t in ANTH:
    m = mean("closed", t)
    if not m:
        out.append(f"| {LABEL[t]} | failed | | | | | | | | |")
        continue
    add50 = added("closed", t, "p50", base="direct-anth") if t != "direct-anth" else None
    add99 = added("closed", t, "p99", base="direct-anth") if t != "direct-anth" else None
    ratio = m["rps"] / nginx["rps"] if nginx and nginx["rps"] else None
    out.append(f"| {LABEL[t]} | {m['rps']:.0f} | {f(m['p50'])} | {f(m['p90'])} | {f(m['p99'])} | "
               f"{m['errors']} | {f(add50)} | {f(add99)} | {f(ratio, 2)} | {f(cpu_us_per_request(t), 1)} |")
    if t == "weir-xlat" and ratio is not None:
        checks.append(("OpenAI client -> Anthropic upstream (translated), closed loop c=32 >= 0.70 x nginx",
                       f"{ratio:.2f}", ratio >= 0.7))
    if t == "weir-anth" and ratio is not None:
        checks.append(("Anthropic client -> Anthropic upstream (passthrough), closed loop c=32 >= 0.80 x nginx",
                       f"{ratio:.2f}", ratio >= 0.8))
out.append("")

out.append("### Anthropic-format upstream: stream, closed loop, concurrency 32 (8 writes 1 ms apart)\n")
out.append("| target | RPS | TTFB p50 ms | TTFB p99 ms | total p50 ms | total p99 ms | errors | added TTFB p50 ms "
           "| RPS x nginx |")
out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
sn = mean("stream", "nginx-anth", stream)
for t in ANTH:
    m = mean("stream", t, stream)
    if not m:
        out.append(f"| {LABEL[t]} | failed | | | | | | | |")
        continue
    add = added("stream", t, "ttfb50", stream, base="direct-anth") if t != "direct-anth" else None
    ratio = m["rps"] / sn["rps"] if sn and sn["rps"] else None
    out.append(f"| {LABEL[t]} | {m['rps']:.0f} | {f(m['ttfb50'])} | {f(m['ttfb99'])} | {f(m['p50'])} | "
               f"{f(m['p99'])} | {m['errors']} | {f(add)} | {f(ratio, 2)} |")
out.append("")
# What translating adds to the first byte: the translated stream's TTFB p50 minus the
# passthrough's, same process, same upstream stream, same round; the median over rounds.
xlat = added("stream", "weir-xlat", "ttfb50", stream, base="weir-anth")
if xlat is not None:
    out.append(f"Translation's TTFB p50 over the passthrough stream (paired per round, median): {xlat:.3f} ms\n")
    checks.append(("stream translation adds to TTFB p50 over passthrough <= 0.1 ms", f"{xlat:.3f} ms",
                   xlat <= 0.1))

# The response cache: the same request every time, so each is answered from Weir's memory;
# "added" against the direct path is negative when a hit is faster than the mock itself.
out.append("### Response cache hits against the direct path (non-stream)\n")
out.append("| load | target | RPS | p50 ms | p99 ms | errors | added p50 ms | proxy CPU us/req |")
out.append("|---|---|---:|---:|---:|---:|---:|---:|")
for scenario, load in [("closed", "closed loop c=32"), ("rate1000", "1,000 req/s")]:
    for t in ["direct", "weir-none", "weir-cache"]:
        m = mean(scenario, t)
        if not m:
            out.append(f"| {load} | {LABEL[t]} | failed | | | | | |")
            continue
        add50 = added(scenario, t, "p50") if t != "direct" else None
        cpu = f(cpu_us_per_request(t), 1) if scenario == "closed" and t != "direct" else ""
        out.append(f"| {load} | {LABEL[t]} | {m['rps']:.0f} | {f(m['p50'])} | {f(m['p99'])} | {m['errors']} | "
                   f"{f(add50)} | {cpu} |")
        if t == "weir-cache" and add50 is not None and scenario == "rate1000":
            checks.append(("a cache hit is answered faster than the direct path (p50 @1,000 req/s)",
                           f"{add50:+.3f} ms", add50 < 0))
out.append("")

out.append("### Stalled plugin: 1% of requests spin a plugin to its 20 ms deadline (1,000 req/s total)\n")
out.append("| load | requests measured | p50 ms | p90 ms | p99 ms | errors |")
out.append("|---|---:|---:|---:|---:|---:|")
s0 = mean("stall0", "weir-stall")
s1 = mean("stall1", "weir-stall")
st = mean("stall1", "weir-stall", key="_stall")
if s0:
    out.append(f"| no stalls: 1,000 req/s clean | {s0['requests']} | {f(s0['p50'])} | {f(s0['p90'])} | {f(s0['p99'])} "
               f"| {s0['errors']} |")
if s1:
    out.append(f"| with stalls: the 99% (990 req/s clean) | {s1['requests']} | {f(s1['p50'])} | {f(s1['p90'])} | "
               f"{f(s1['p99'])} | {s1['errors']} |")
if st:
    out.append(f"| with stalls: the 1% (10 req/s, stalled) | {st['requests']} | {f(st['p50'])} | {f(st['p90'])} | "
               f"{f(st['p99'])} | {st['errors']} |")
out.append("")

out.append("### Weir memory\n")
out.append("| weir process | idle RSS MB | peak RSS (VmHWM) MB |")
out.append("|---|---:|---:|")
with open(os.path.join(res_dir, "rss.txt")) as fh:
    for line in fh:
        _, name, hwm, idle = line.split()
        # One process serves both Anthropic-format Weir targets.
        label = "weir, anthropic provider, no plugins" if name == "weir-anth" else LABEL.get(name, name)
        out.append(f"| {label} | {int(idle) / 1024:.1f} | {int(hwm) / 1024:.1f} |")
        if name == "weir-default":
            checks.append(("peak RSS (default chain, whole run) <= 60 MB", f"{int(hwm) / 1024:.1f} MB",
                           int(hwm) / 1024 <= 60))
            checks.append(("idle RSS (default chain) <= 30 MB", f"{int(idle) / 1024:.1f} MB", int(idle) / 1024 <= 30))
idle_path = os.path.join(res_dir, "idle.txt")
if os.path.exists(idle_path):
    with open(idle_path) as fh:
        _, name, n, before, held, ok = (fh.read().split() + ["0"])[:6]
    grown = int(held) - int(before)
    out.append("")
    out.append(f"{n} idle keep-alive client connections to {LABEL.get(name, name)} (one request each, {ok} "
               f"answered 200): RSS +{grown / 1024:.1f} MB, {grown / int(n):.1f} kB per connection.")
out.append("")

out.append("### Targets\n")
out.append("| target | measured | met |")
out.append("|---|---:|---|")
for name, value, ok in checks:
    verdict = "not measurable: the host's own tail is above the target" if ok is None else "yes" if ok else "NO"
    out.append(f"| {name} | {value} | {verdict} |")
print("\n".join(out))
