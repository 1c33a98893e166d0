//! Plugins end to end: the first-party plugins acting on real requests, and misbehaving
//! plugins under concurrent load costing only their own request (fail-closed) or nothing
//! (fail-open) while the pool heals.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{Value, json};

use crate::support::plugins::{plugin_toml, runtime_toml, wasm};
use crate::support::weir::WEIR_BIN;
use crate::support::{MockUpstream, Reply, SseReader, Weir, chat, client, metric};

/// The modes of `plugins/testing/misbehave` and the failure each must be reported as.
const MODES: [(&str, &str); 6] = [
    ("loop", "ran out of fuel"),
    ("memory", "memory limit"),
    ("trap", "trapped"),
    ("recursion", "trapped"),
    ("oversized", "max_output_bytes"),
    ("invalid", "invalid decision"),
];

/// One misbehave plugin per mode, each triggered by its own header `x-bad-<mode>`.
fn misbehaving_chain(on_error: &str) -> String {
    MODES
        .iter()
        .map(|(mode, _)| {
            plugin_toml(
                mode,
                "misbehave",
                &format!(
                    "instances = 2\nmemory_limit = 16777216\ntimeout = \"500ms\"\non_error = \"{on_error}\"\n\
                     config = {{ mode = \"{mode}\", trigger_header = \"x-bad-{mode}\" }}"
                ),
            )
        })
        .collect()
}

async fn send(weir: &Weir, header: Option<&str>, text: &str) -> (Reply, Duration) {
    let mut req = client().post(weir.url("/v1/chat/completions")).json(&chat("gpt-up", text));
    if let Some(h) = header {
        req = req.header(h, "1");
    }
    let started = Instant::now();
    let reply = Reply::read(req.send().await.unwrap()).await;
    (reply, started.elapsed())
}

/// Sends `rounds` of one good request plus one per mode, 8 at a time; returns
/// (mode or "good", reply, latency) for each.
async fn load(weir: &Weir, rounds: usize) -> Vec<(&'static str, Reply, Duration)> {
    let mut jobs = Vec::new();
    for r in 0..rounds {
        jobs.push(("good", r));
        for (mode, _) in MODES {
            jobs.push((mode, r));
        }
    }
    futures_util::stream::iter(jobs)
        .map(|(mode, r)| async move {
            let header = (mode != "good").then(|| format!("x-bad-{mode}"));
            let (reply, took) = send(weir, header.as_deref(), &format!("hello {r}")).await;
            (mode, reply, took)
        })
        .buffer_unordered(8)
        .collect()
        .await
}

async fn wait_healed(weir: &Weir, plugins: &[&str], instances: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = weir.metrics().await;
        let healed = plugins.iter().all(|p| {
            metric(&text, "weir_plugin_instances", &[("plugin", p)]) == instances
                && metric(&text, "weir_plugin_instances_idle", &[("plugin", p)]) == instances
        });
        if healed {
            return text;
        }
        assert!(Instant::now() < deadline, "pools did not heal:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn first_party_plugins_act_on_requests() {
    let up = MockUpstream::start().await;
    let mut config = up.provider_toml("up", r#"models = ["gpt-up"]"#, "");
    config += &plugin_toml("request-log", "request-log", r#"config = { headers = ["user-agent"] }"#);
    config +=
        &plugin_toml("prompt-guard", "prompt-guard", r#"config = { deny_keywords = ["forbidden"], max_tokens = 100 }"#);
    config += &plugin_toml("pii-redact", "pii-redact", "config = { responses = true }");
    config += &plugin_toml("model-alias", "model-alias", r#"config = { aliases = { fast = "gpt-up" } }"#);
    config += &runtime_toml();
    let weir = Weir::start(&config).await;

    // model-alias routes the friendly name; pii-redact masks before the prompt leaves.
    let reply = client()
        .post(weir.url("/v1/chat/completions"))
        .header("user-agent", "e2e-agent")
        .json(&chat("fast", "write to ann@example.com or call +1 415 555 0199"))
        .send()
        .await
        .unwrap();
    let reply = Reply::read(reply).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let seen = up.chats();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].model(), "gpt-up");
    assert_eq!(seen[0].prompt(), "write to [email] or call [phone]");

    // prompt-guard refuses with a clear OpenAI-style error; the provider is not called.
    let (reply, _) = send(&weir, None, "this is FORBIDDEN talk").await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.error_code(), "prompt_blocked");
    assert_eq!(reply.header("x-weir-error-source"), Some("plugin"));
    // The token limit holds under either of OpenAI's names, and with both set the larger counts.
    for limits in [
        json!({"max_tokens": 1000}),
        json!({"max_completion_tokens": 1000}),
        json!({"max_tokens": 50, "max_completion_tokens": 1000}),
        json!({"max_tokens": 1000, "max_completion_tokens": 50}),
    ] {
        let mut body = chat("gpt-up", "hi");
        body.as_object_mut().unwrap().extend(limits.as_object().unwrap().clone());
        let reply =
            Reply::read(client().post(weir.url("/v1/chat/completions")).json(&body).send().await.unwrap()).await;
        assert_eq!(reply.error_code(), "max_tokens_too_high", "{limits}: {}", reply.text);
    }
    assert_eq!(up.chats().len(), 1);

    // request-log wrote an audit line with metadata only, tagged with the plugin name.
    weir.wait_for_log("\"event\":\"response\"").await;
    let logs = weir.logs();
    let line = logs.lines().find(|l| l.contains("\"event\":\"request\"") && l.contains("e2e-agent")).expect(&logs);
    assert!(line.contains("request-log"), "{line}");
    assert!(!logs.contains("ann@example.com"), "the prompt leaked into the logs");
    assert!(!logs.contains("sk-test-key"), "the API key leaked into the logs");

    let text = weir.metrics().await;
    assert!(metric(&text, "weir_plugin_calls_total", &[("plugin", "prompt-guard"), ("outcome", "rejected")]) >= 5.0);
    assert!(metric(&text, "weir_plugin_calls_total", &[("plugin", "pii-redact"), ("hook", "on_response")]) >= 1.0);
}

#[tokio::test]
async fn pii_redact_rewrites_stream_chunks() {
    let mut config = String::from("[[providers]]\nname = \"mock\"\nkind = \"mock\"\nmodels = [\"mock-1\"]\n");
    config += &plugin_toml("pii-redact", "pii-redact", "config = { email = false, streams = true }");
    config += &runtime_toml();
    let weir = Weir::start(&config).await;
    // The mock provider echoes the prompt word by word; email redaction is off, so the
    // request reaches it intact and the answer's chunks carry the phone number.
    let mut body = chat("mock-1", "call 4155550199 now");
    body["stream"] = json!(true);
    let resp = client().post(weir.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let events = SseReader::new(resp).rest().await;
    let text: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert!(!text.contains("4155550199"), "{text}");
    assert!(text.contains("[phone]"), "{events:?}");
}

#[tokio::test]
async fn misbehaving_plugins_fail_closed_only_their_own_request_and_heal() {
    let up = MockUpstream::start().await;
    let config =
        up.provider_toml("up", r#"models = ["gpt-up"]"#, "") + &misbehaving_chain("fail-closed") + &runtime_toml();
    let weir = Weir::start(&config).await;

    let results = load(&weir, 4).await;
    let mut good_latency = Duration::ZERO;
    for (mode, reply, took) in &results {
        if *mode == "good" {
            assert_eq!(reply.status, 200, "a good request failed: {}", reply.text);
            good_latency = good_latency.max(*took);
            continue;
        }
        let expect = MODES.iter().find(|(m, _)| m == mode).unwrap().1;
        assert_eq!(reply.status, 500, "{mode}: {}", reply.text);
        assert_eq!(reply.error_code(), "plugin_error", "{mode}");
        let message = reply.error_message();
        // On a saturated machine a wall-clock deadline may stop a call before its own guard.
        let classified = message.contains(expect) || message.contains("deadline");
        assert!(message.contains(&format!("`{mode}`")) && classified, "{mode}: {message}");
    }
    // Good requests never waited on a stalled plugin for long (generous for a busy 2-core CI).
    assert!(good_latency < Duration::from_secs(3), "good requests took up to {good_latency:?}");
    assert_eq!(up.chats().len(), 4, "only the good requests reached the provider");

    let plugins: Vec<&str> = MODES.iter().map(|(m, _)| *m).collect();
    let text = wait_healed(&weir, &plugins, 2.0).await;
    // Every call that broke its store (all but output/invalid failures) replaced its instance.
    for (plugin, _) in MODES {
        let broke = results
            .iter()
            .filter(|(m, r, _)| {
                *m == plugin
                    && !r.error_message().contains("max_output_bytes")
                    && !r.error_message().contains("invalid")
            })
            .count();
        let replaced = metric(&text, "weir_plugin_instances_replaced_total", &[("plugin", plugin)]);
        assert_eq!(replaced, broke as f64, "{plugin} instances replaced");
    }
    let trap = metric(&text, "weir_plugin_instances_replaced_total", &[("plugin", "trap"), ("reason", "trap")]);
    assert_eq!(trap, 4.0, "a panic is a trap");
    // Each of the 4 spinning calls (~7 ms of fuel, yielding every 2M) left its serving thread,
    // which is how the good requests above kept their latency. (Quick calls of the same plugin
    // move too when an epoch tick happens to fall inside one, hence at least.)
    let moved = metric(&text, "weir_plugin_calls_moved_total", &[("plugin", "loop")]);
    assert!(moved >= 4.0, "loop calls moved to the plugin runtime: {moved}");
    // Healed pools serve again.
    let (reply, _) = send(&weir, None, "after").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[tokio::test]
async fn misbehaving_plugins_fail_open_cost_nothing() {
    let up = MockUpstream::start().await;
    let config =
        up.provider_toml("up", r#"models = ["gpt-up"]"#, "") + &misbehaving_chain("fail-open") + &runtime_toml();
    let weir = Weir::start(&config).await;

    let results = load(&weir, 3).await;
    for (mode, reply, _) in &results {
        assert_eq!(reply.status, 200, "{mode}: {}", reply.text);
    }
    assert_eq!(up.chats().len(), results.len());
    let plugins: Vec<&str> = MODES.iter().map(|(m, _)| *m).collect();
    let text = wait_healed(&weir, &plugins, 2.0).await;
    for plugin in plugins {
        let skipped = metric(&text, "weir_plugin_skipped_total", &[("plugin", plugin)]);
        assert_eq!(skipped, 3.0, "{plugin} skipped count");
    }
}

#[tokio::test]
async fn stream_chunk_failure_ends_the_stream_with_an_error_event() {
    let mut config = String::from("[[providers]]\nname = \"mock\"\nkind = \"mock\"\nmodels = [\"mock-1\"]\n");
    config += &plugin_toml("chunky", "misbehave", r#"config = { mode = "trap", hook = "chunk" }"#);
    config += &runtime_toml();
    let weir = Weir::start(&config).await;
    let mut body = chat("mock-1", "one two three");
    body["stream"] = json!(true);
    let resp =
        client().post(weir.url("/v1/chat/completions")).header("x-misbehave", "1").json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let events = SseReader::new(resp).rest().await;
    let last = events.last().expect("an error event");
    let v: Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["error"]["code"], "plugin_error", "{events:?}");
    assert!(v["error"]["message"].as_str().unwrap().contains("`chunky`"));
}

#[tokio::test]
async fn unknown_contract_version_is_refused_at_startup() {
    let dir = std::env::temp_dir().join(format!("weir-e2e-plugin-version-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("weir.toml");
    let config = format!(
        "[[providers]]\nname = \"mock\"\nkind = \"mock\"\nmodels = [\"m\"]\n{}{}",
        plugin_toml("future", "wrong-version", ""),
        runtime_toml()
    );
    std::fs::write(&path, config).unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(WEIR_BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .output(),
    )
    .await
    .expect("weir exits")
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("plugin future") && stderr.contains("weir:plugin@1.0.0"), "{stderr}");
    assert!(stderr.contains("supports weir:plugin@0.2.1") && stderr.contains("still loads @0.1.0"), "{stderr}");
    assert!(wasm("wrong-version").ends_with(".wasm"));
}

/// A component built for `weir:plugin@0.2.0` (`plugins/testing/contract-v0_2_0`), before
/// 0.2.1 added `max-tokens`, loads on the 0.2.1 gateway with no legacy notice: its 0.2.0
/// imports and export resolve to the 0.2.1 definitions, its response edits take effect on
/// OpenAI- and Anthropic-format requests, and its rejections stop a request.
#[tokio::test]
async fn plugins_built_for_an_earlier_0_2_contract_load_and_run() {
    let up = MockUpstream::start().await;
    let mut config = up.provider_toml("up", r#"models = ["gpt-up"]"#, "");
    config += &plugin_toml("older", "contract-v0_2_0", "");
    config += &runtime_toml();
    let weir = Weir::start(&config).await;
    assert!(!weir.logs().contains("runs on OpenAI-format requests only"), "{}", weir.logs());

    let (reply, _) = send(&weir, None, "hello").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("x-contract"), Some("openai gpt-up"));
    let body = json!({"model": "gpt-up", "max_tokens": 16, "messages": [{"role": "user", "content": "hello"}]});
    let req = client().post(weir.url("/v1/messages")).header("anthropic-version", "2023-06-01").json(&body);
    let reply = Reply::read(req.send().await.unwrap()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("x-contract"), Some("anthropic gpt-up"));

    let (reply, _) = send(&weir, None, "please contract-reject this").await;
    assert_eq!((reply.status, reply.error_code()), (403, "contract_rejected".to_owned()), "{}", reply.text);
    assert_eq!(up.chats().len(), 2, "a rejected request never reaches the provider");
}

/// A component built for `weir:plugin@0.1.0` (`plugins/testing/legacy-v0_1`) still loads and
/// runs on OpenAI-format requests: its `endpoint()` names the endpoint, its edits, rejections
/// and response headers take effect, and its kv, log and metrics imports work.
#[tokio::test]
async fn legacy_v0_1_plugins_still_load_and_run() {
    let up = MockUpstream::start().await;
    let mut config = up.provider_toml("up", r#"models = ["gpt-up"]"#, "");
    config += &plugin_toml("old", "legacy-v0_1", "");
    config += &runtime_toml();
    let weir = Weir::start(&config).await;
    assert!(weir.logs().contains("weir:plugin@0.1.0: it runs on OpenAI-format requests only"), "{}", weir.logs());

    let (reply, _) = send(&weir, None, "hello").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("x-legacy"), Some("chat-completions"));
    assert_eq!(up.chats()[0].prompt(), "hello [legacy:chat-completions]");

    let body = json!({"model": "gpt-up", "input": "hi"});
    let reply = Reply::read(client().post(weir.url("/v1/embeddings")).json(&body).send().await.unwrap()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("x-legacy"), Some("embeddings"));

    let (reply, _) = send(&weir, Some("x-legacy-reject"), "hello").await;
    assert_eq!((reply.status, reply.error_code()), (403, "legacy_rejected".to_owned()), "{}", reply.text);
    assert_eq!(up.chats().len(), 1, "a rejected request never reaches the provider");

    weir.wait_for_log("legacy plugin saw embeddings call 2").await;
    let text = weir.metrics().await;
    assert_eq!(metric(&text, "weir_plugin_custom_legacy_calls", &[("plugin", "old")]), 2.0);
}
