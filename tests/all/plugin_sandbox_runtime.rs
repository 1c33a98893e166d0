//! The plugin sandbox at run time against hostile plugins (`plugins/testing/misbehave`,
//! `sandbox_runtime.rs` modes): one bulk-memory instruction as large as the cap allows, a
//! fail-open plugin spinning in `on-stream-chunk`, replacement instances that fail or spin in
//! `init` after a trap, log floods and forged log lines, clashing custom metric names.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::json;

use crate::support::plugins::{plugin_toml, runtime_toml};
use crate::support::{MockUpstream, Reply, SseReader, Weir, chat, client, metric, weir_check};

/// The largest `memory_limit` the gateway accepts (`MAX_MEMORY_LIMIT`).
const MAX_MEMORY_LIMIT: usize = 256 * 1024 * 1024;

async fn send(weir: &Weir, trigger: Option<&str>, text: &str) -> (Reply, Duration) {
    let mut req = client().post(weir.url("/v1/chat/completions")).json(&chat("gpt-up", text));
    if let Some(h) = trigger {
        req = req.header(h, "1");
    }
    let started = Instant::now();
    let reply = Reply::read(req.send().await.unwrap()).await;
    (reply, started.elapsed())
}

/// `n` clean requests, 8 at a time; their replies and latencies.
async fn clean_load(weir: &Weir, n: usize) -> Vec<(Reply, Duration)> {
    futures_util::stream::iter(0..n)
        .map(|i| async move { send(weir, None, &format!("clean {i}")).await })
        .buffer_unordered(8)
        .collect()
        .await
}

fn assert_all_ok(replies: &[(Reply, Duration)]) -> Duration {
    for (reply, _) in replies {
        assert_eq!(reply.status, 200, "a clean request failed: {}", reply.text);
    }
    replies.iter().map(|(_, took)| *took).max().unwrap_or_default()
}

#[test]
fn a_memory_limit_whose_fill_would_outlast_the_deadline_is_refused() {
    let config = format!(
        "[[providers]]\nname = \"mock\"\nkind = \"mock\"\nmodels = [\"m\"]\n{}",
        plugin_toml("big", "misbehave", "memory_limit = 1073741824\nconfig = { mode = \"memory-fill\" }")
    );
    let out = weir_check(&config, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a 1 GiB memory_limit was accepted");
    assert!(stderr.contains("plugins[0].memory_limit") && stderr.contains(&MAX_MEMORY_LIMIT.to_string()), "{stderr}");
}

#[tokio::test]
async fn a_memory_fill_at_the_largest_cap_overshoots_little_and_spares_clean_requests() {
    let up = MockUpstream::start().await;
    let mut config = up.provider_toml("up", r#"models = ["gpt-up"]"#, "");
    config += &plugin_toml(
        "filler",
        "misbehave",
        &format!(
            "instances = 2\nmemory_limit = {MAX_MEMORY_LIMIT}\nfuel = 100000000000\ntimeout = \"100ms\"\n\
             config = {{ mode = \"memory-fill\" }}"
        ),
    );
    config += &runtime_toml();
    let weir = Weir::start(&config).await;
    let mut fills = Vec::new();
    let mut clean_worst = Duration::ZERO;
    for round in 0..3 {
        let text = format!("fill {round}");
        let (fill, clean) = tokio::join!(send(&weir, Some("x-misbehave"), &text), async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            clean_load(&weir, 16).await
        });
        // The fill either ends within the deadline (the plugin answers) or the deadline
        // stops the call right after it (the epoch check follows the instruction).
        let ended = fill.0.text.contains("\"filled\"") || fill.0.error_message().contains("`filler`");
        assert!(ended, "{}", fill.0.text);
        fills.push(fill.1);
        clean_worst = clean_worst.max(assert_all_ok(&clean));
    }
    eprintln!(
        "memory-fill of {MAX_MEMORY_LIMIT} B with a 100 ms deadline: {fills:?}; slowest clean request {clean_worst:?}"
    );
    // The fastest of three, so a burst of load on a shared machine does not decide it: a
    // 256 MiB fill takes ~0.15 s on an idle 2-core VM, the 1 GiB fill this replaces 1.1 s.
    let fastest = fills.iter().min().copied().unwrap_or_default();
    assert!(fastest < Duration::from_millis(700), "the fill's request took {fastest:?}");
}

#[tokio::test]
async fn a_fail_open_plugin_spinning_in_a_chunk_is_skipped_for_the_rest_of_the_stream() {
    let mut config = String::from("[[providers]]\nname = \"mock\"\nkind = \"mock\"\nmodels = [\"mock-1\"]\n");
    config += &plugin_toml(
        "spinner",
        "misbehave",
        "timeout = \"100ms\"\nfuel = 100000000000\non_error = \"fail-open\"\n\
         config = { mode = \"spin-chunk\", hook = \"chunk\" }",
    );
    config += &runtime_toml();
    let weir = Weir::start(&config).await;
    let words: Vec<String> = (0..20).map(|i| format!("w{i}")).collect();
    let mut body = chat("mock-1", &words.join(" "));
    body["stream"] = json!(true);
    let started = Instant::now();
    let resp =
        client().post(weir.url("/v1/chat/completions")).header("x-misbehave", "1").json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let events = SseReader::new(resp).rest().await;
    let took = started.elapsed();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let text = events.concat();
    assert!(words.iter().all(|w| text.contains(w.as_str())), "every chunk passes untouched: {events:?}");
    let metrics = weir.metrics().await;
    let calls = metric(&metrics, "weir_plugin_calls_total", &[("plugin", "spinner"), ("hook", "on_stream_chunk")]);
    let skipped = metric(&metrics, "weir_plugin_skipped_total", &[("plugin", "spinner"), ("hook", "on_stream_chunk")]);
    eprintln!("20-chunk stream with a spinning fail-open plugin: {took:?}, {calls} chunk calls");
    assert_eq!(calls, 1.0, "the plugin was called again after it failed");
    assert_eq!(skipped, 1.0);
    // One deadline (100 ms, hard stop 150 ms), not one per chunk (20 x 100 ms).
    assert!(took < Duration::from_secs(1), "the stream took {took:?}");
}

/// Polls `/ready` until the plugin's state is `want` (at most 10 s).
async fn wait_plugin_state(weir: &Weir, plugin: &str, want: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, ready) = weir.ready().await;
        if ready["plugins"][plugin]["state"] == want {
            return ready;
        }
        assert!(Instant::now() < deadline, "plugin {plugin} never became {want}: {ready}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn failing_replacements_back_off_surface_and_leave_clean_requests_alone() {
    let up = MockUpstream::start().await;
    let mut config = up.provider_toml("up", r#"models = ["gpt-up"]"#, "");
    config += &plugin_toml(
        "flaky",
        "misbehave",
        "instances = 4\ntimeout = \"200ms\"\nconfig = { mode = \"init-fails-after-trap\" }",
    );
    config += &runtime_toml();
    let weir = Weir::start(&config).await;

    // Two traps, each making the next two `init`s fail, while clean requests keep coming.
    let (traps, clean) = tokio::join!(
        futures_util::future::join(
            send(&weir, Some("x-misbehave"), "trap 1"),
            send(&weir, Some("x-misbehave"), "trap 2")
        ),
        async {
            let ready = wait_plugin_state(&weir, "flaky", "degraded").await;
            let mut clean = clean_load(&weir, 200).await;
            clean.extend(clean_load(&weir, 40).await);
            (ready, clean)
        }
    );
    for (reply, _) in [traps.0, traps.1] {
        assert_eq!(reply.status, 500, "{}", reply.text);
        assert!(reply.error_message().contains("trapped"), "{}", reply.text);
    }
    let (degraded, clean) = clean;
    let clean_worst = assert_all_ok(&clean);
    eprintln!("clean requests while replacements failed: slowest {clean_worst:?}");
    assert!(clean_worst < Duration::from_secs(1), "clean requests took up to {clean_worst:?}");
    assert!(degraded["plugins"]["flaky"]["instances"].as_u64().unwrap() < 4, "{degraded}");
    assert_eq!(degraded["status"], "ready", "a degraded plugin does not make the gateway unready");

    // Four failed attempts (two per trap), spaced by backoff, then the pool heals.
    let ready = wait_plugin_state(&weir, "flaky", "ready").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while weir.ready().await.1["plugins"]["flaky"]["instances"] != 4 {
        assert!(Instant::now() < deadline, "pool did not heal: {ready}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = weir.metrics().await;
    assert_eq!(metric(&metrics, "weir_plugin_replace_failures_total", &[("plugin", "flaky")]), 4.0);
    assert_eq!(metric(&metrics, "weir_plugin_degraded", &[("plugin", "flaky")]), 0.0);
    assert_eq!(weir.ready().await.1["plugins"]["flaky"]["replace_failures"], 4);
    // Logged once per transition, not once per attempt.
    let logs = weir.logs();
    let degraded_lines = logs.matches("plugin degraded").count();
    let recovered_lines = logs.matches("plugin recovered").count();
    assert!((1..=2).contains(&degraded_lines), "{logs}");
    assert_eq!(recovered_lines, degraded_lines, "{logs}");
}

#[tokio::test]
async fn a_replacement_spinning_in_init_costs_clean_requests_little() {
    let up = MockUpstream::start().await;
    let mut config = up.provider_toml("up", r#"models = ["gpt-up"]"#, "");
    config += &plugin_toml(
        "spinit",
        "misbehave",
        "instances = 4\ntimeout = \"50ms\"\nfuel = 100000000000\nconfig = { mode = \"init-spins-after-trap\" }",
    );
    config += &runtime_toml();
    let weir = Weir::start(&config).await;
    for i in 0..2 {
        let (reply, _) = send(&weir, Some("x-misbehave"), &format!("trap {i}")).await;
        assert_eq!(reply.status, 500, "{}", reply.text);
    }
    // The refill's first `init` spins to its 1 s deadline meanwhile.
    let started = Instant::now();
    let clean = clean_load(&weir, 200).await;
    let clean_worst = assert_all_ok(&clean);
    let mut took: Vec<Duration> = clean.iter().map(|(_, t)| *t).collect();
    took.sort();
    eprintln!(
        "200 clean requests in {:?} while init spun: p50 {:?}, p99 {:?}, max {clean_worst:?}",
        started.elapsed(),
        took[100],
        took[197]
    );
    assert!(clean_worst < Duration::from_secs(1), "clean requests took up to {clean_worst:?}");
    wait_plugin_state(&weir, "spinit", "degraded").await;
    let metrics = weir.metrics().await;
    // One attempt at a time, then a wait of four times its 1 s: at most one failure so far
    // per trap-free second, not one per lost instance.
    let failures = metric(&metrics, "weir_plugin_replace_failures_total", &[("plugin", "spinit")]);
    assert!((1.0..=2.0).contains(&failures), "{failures} failed attempts");
}

#[tokio::test]
async fn plugin_log_floods_are_rate_limited_and_counted() {
    let up = MockUpstream::start().await;
    let mut config = up.provider_toml("up", r#"models = ["gpt-up"]"#, "");
    for mode in ["log-flood", "stdout-flood"] {
        config += &plugin_toml(
            mode,
            "misbehave",
            &format!(
                "timeout = \"5s\"\nfuel = 100000000000\n\
                 config = {{ mode = \"{mode}\", trigger_header = \"x-{mode}\" }}"
            ),
        );
    }
    config += &runtime_toml();
    let weir = Weir::start(&config).await;
    let started = Instant::now();
    for mode in ["log-flood", "stdout-flood"] {
        let (reply, _) = send(&weir, Some(&format!("x-{mode}")), "flood").await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let elapsed = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = weir.logs();
    let metrics = weir.metrics().await;
    for (mode, filler) in [("log-flood", 'x'), ("stdout-flood", 'y')] {
        let bytes: usize = logs.lines().filter(|l| l.contains(&format!("plugin=\"{mode}\""))).map(str::len).sum();
        let run = filler.to_string().repeat(64);
        let lines = logs.lines().filter(|l| l.contains(&format!("plugin=\"{mode}\"")) && l.contains(&run)).count();
        let dropped = metric(&metrics, "weir_plugin_log_dropped_total", &[("plugin", mode)]);
        eprintln!("{mode}: {lines} lines ({bytes} B) logged, {dropped} dropped in {elapsed:.2} s");
        // The burst (256 KiB) plus 64 KiB/s, with room for each line's prefix.
        let allowed = (256.0 * 1024.0 + 64.0 * 1024.0 * elapsed) * 1.2;
        assert!((bytes as f64) < allowed, "{mode} logged {bytes} B (allowed {allowed})");
        assert!(dropped > 1000.0, "{mode}: {dropped} lines dropped");
        assert_eq!(lines as f64 + dropped, if mode == "log-flood" { 2200.0 } else { 1700.0 });
    }
}

#[tokio::test]
async fn plugin_log_lines_cannot_forge_gateway_lines() {
    let up = MockUpstream::start().await;
    let mut config = up.provider_toml("up", r#"models = ["gpt-up"]"#, "");
    config += &plugin_toml("forger", "misbehave", "config = { mode = \"log-forge\" }");
    config += &runtime_toml();
    let weir = Weir::start(&config).await;
    let (reply, _) = send(&weir, Some("x-misbehave"), "forge").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    weir.wait_for_log("FORGED via stdout").await;
    let logs = weir.logs();
    let forged: Vec<&str> = logs.lines().filter(|l| l.contains("FORGED")).collect();
    assert_eq!(forged.len(), 2, "{logs}");
    for line in forged {
        assert!(line.contains("plugin=\"forger\""), "a plugin line without its tag: {line}");
        assert!(!line.starts_with("2026-01-01"), "{line}");
        assert!(!line.contains('\r') && !line.contains('\u{1b}'), "{line:?}");
    }
    assert!(logs.contains("innocent\\n2026-01-01"), "the newline is shown escaped: {logs}");
}

#[tokio::test]
async fn clashing_custom_metric_names_keep_the_exposition_valid() {
    let up = MockUpstream::start().await;
    let mut config = up.provider_toml("up", r#"models = ["gpt-up"]"#, "");
    config += &plugin_toml("clash", "misbehave", "config = { mode = \"metric-collide\" }");
    config += &runtime_toml();
    let weir = Weir::start(&config).await;
    let (reply, _) = send(&weir, Some("x-misbehave"), "collide").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let text = weir.metrics().await;
    let mut types = HashSet::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(types.insert(name.to_owned()), "duplicate TYPE for {name}:\n{text}");
    }
    // A sample's family: its name, or a histogram's or summary's base name.
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|base| types.contains(*base)))
            .unwrap_or(name);
        if family != name {
            assert!(!types.contains(name), "{name} is both a family and a histogram's series:\n{text}");
        }
    }
    assert_eq!(metric(&text, "weir_plugin_custom_dup", &[("plugin", "clash")]), 1.0, "{text}");
    assert_eq!(metric(&text, "weir_plugin_custom_fine", &[("plugin", "clash")]), 1.0, "{text}");
    assert!(!text.contains("# TYPE weir_plugin_custom_lat_count"), "{text}");
}

#[tokio::test]
async fn with_no_instance_left_and_replacements_failing_requests_do_not_wait_out_the_deadline() {
    let up = MockUpstream::start().await;
    let mut config = up.provider_toml("up", r#"models = ["gpt-up"]"#, "");
    config += &plugin_toml(
        "drained",
        "misbehave",
        "instances = 2\ntimeout = \"1s\"\non_error = \"fail-open\"\nconfig = { mode = \"init-fails-after-trap\" }",
    );
    config += &runtime_toml();
    let weir = Weir::start(&config).await;
    // Both instances trap at once; the four `init`s after them fail, backing off ~0.75 s.
    let (a, b) = tokio::join!(send(&weir, Some("x-misbehave"), "trap a"), send(&weir, Some("x-misbehave"), "trap b"));
    assert_eq!((a.0.status, b.0.status), (200, 200), "fail-open: {} {}", a.0.text, b.0.text);
    let ready = wait_plugin_state(&weir, "drained", "degraded").await;
    assert_eq!(ready["plugins"]["drained"]["instances"], 0, "{ready}");
    for i in 0..4 {
        let (reply, took) = send(&weir, None, &format!("clean {i}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        // Skipped at once (fail-open), not after waiting 1 s for an instance.
        assert!(took < Duration::from_millis(300), "clean request {i} took {took:?}");
    }
    let metrics = weir.metrics().await;
    assert!(metric(&metrics, "weir_plugin_calls_total", &[("plugin", "drained"), ("outcome", "busy")]) >= 1.0);
}
