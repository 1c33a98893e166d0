//! Where a failed request goes next: fallbacks (`[fallbacks]` and `x-weir-fallbacks`), what
//! never goes to one (content-policy refusals, the same model after a context-length error),
//! and the circuit breaker that skips a failing provider and lets it back in with a probe.

use std::time::{Duration, Instant};

use crate::support::anthropic::MockAnthropic;
use crate::support::{MockUpstream, Reply, Weir, chat, client, metric, post};

/// Providers `a` and `b` in front of the same mock upstream, `a` with `a_extra` lines after
/// its pool table, then `rest` (e.g. `[fallbacks]`).
async fn start(up: &MockUpstream, a_extra: &str, rest: &str) -> Weir {
    let pool = format!("[providers.retry]\nmax_retries = 0\n{a_extra}");
    let a = up.provider_toml("a", "discover_models = false", &pool);
    let b = up.provider_toml("b", "discover_models = false", "[providers.retry]\nbase_backoff = \"5ms\"");
    Weir::start(&format!("{a}\n{b}\n{rest}")).await
}

async fn ask(weir: &Weir, model: &str, fallbacks: Option<&str>) -> Reply {
    let mut req = client().post(weir.url("/v1/chat/completions")).json(&chat(model, "hello"));
    if let Some(f) = fallbacks {
        req = req.header("x-weir-fallbacks", f);
    }
    Reply::read(req.send().await.unwrap()).await
}

#[tokio::test]
async fn a_503_falls_back_to_the_next_provider_which_is_named() {
    let up = MockUpstream::start().await;
    let weir = start(&up, "", "[fallbacks]\n\"a/m;status=503\" = [\"b/other\"]\n").await;
    let reply = ask(&weir, "a/m;status=503", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("x-weir-provider"), Some("b"));
    assert_eq!(reply.header("x-weir-attempts"), Some("2"));
    assert_eq!(reply.json()["model"], "other", "the model field names the model that answered");
    let models: Vec<String> = up.chats().iter().map(|s| s.model().to_owned()).collect();
    assert_eq!(models, ["m;status=503", "other"]);
    let metrics = weir.metrics().await;
    assert_eq!(metric(&metrics, "weir_fallbacks_total", &[("provider", "b")]), 1.0);

    // The same per request, by header; a provider that is not configured is a 400.
    let reply = ask(&weir, "a/m;status=500", Some("b/third")).await;
    assert_eq!((reply.status, reply.header("x-weir-provider")), (200, Some("b")));
    let reply = ask(&weir, "a/m", Some("nowhere/x")).await;
    assert_eq!(reply.status, 400);
    assert!(reply.error_message().contains("x-weir-fallbacks"), "{}", reply.text);
}

#[tokio::test]
async fn context_length_goes_to_a_fallback_model_but_never_again_to_the_same_model() {
    let up = MockUpstream::start().await;
    let weir = start(&up, "", "").await;
    let long = "m;status=400;code=context_length_exceeded";
    let reply = ask(&weir, &format!("a/{long}"), Some(&format!("b/{long}, b/big"))).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("x-weir-provider"), Some("b"));
    let models: Vec<String> = up.chats().iter().map(|s| s.model().to_owned()).collect();
    assert_eq!(models, [long, "big"], "the same model was not asked twice");
}

#[tokio::test]
async fn an_anthropic_prompt_too_long_goes_to_the_configured_fallback_model() {
    let up = MockAnthropic::start().await;
    let a = up.provider_toml("ant", "[providers.retry]\nmax_retries = 0");
    let b = up.provider_toml("big", "");
    // The mock answers `status=400` with Anthropic's "prompt is too long" invalid_request_error.
    let long = "claude;status=400";
    let weir =
        Weir::start(&format!("{a}\n{b}\n[fallbacks]\n\"ant/{long}\" = [\"big/{long}\", \"big/claude-large\"]\n")).await;
    let reply = ask(&weir, &format!("ant/{long}"), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("x-weir-provider"), Some("big"));
    let models: Vec<String> = up.messages().iter().map(|s| s.body["model"].as_str().unwrap().to_owned()).collect();
    assert_eq!(models, [long, "claude-large"], "the same model was not asked twice");

    // Without a fallback the client sees the code it can act on.
    let reply = ask(&weir, &format!("big/{long}"), None).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (400, "context_length_exceeded"), "{}", reply.text);
}

#[tokio::test]
async fn a_content_policy_refusal_is_returned_and_not_sent_to_a_fallback() {
    let up = MockUpstream::start().await;
    let weir = start(&up, "", "").await;
    let reply = ask(&weir, "a/m;status=400;code=content_policy_violation", Some("b/other")).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (400, "content_policy_violation"), "{}", reply.text);
    assert_eq!(up.chats().len(), 1);
}

#[tokio::test]
async fn the_breaker_opens_after_failures_fails_fast_and_recovers_after_a_probe() {
    let up = MockUpstream::start().await;
    let weir = start(&up, "[providers.breaker]\nconsecutive_failures = 2\ncooldown = \"1s\"\n", "").await;
    for _ in 0..2 {
        assert_eq!(ask(&weir, "a/m;status=500", None).await.status, 502);
    }
    let started = Instant::now();
    let reply = ask(&weir, "a/m", None).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (503, "circuit_open"), "{}", reply.text);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(up.chats().len(), 2, "the open breaker sent nothing upstream");
    let (_, ready) = weir.ready().await;
    assert_eq!(ready["providers"]["a"]["state"], "failed", "{ready}");
    assert_eq!(metric(&weir.metrics().await, "weir_breaker_state", &[("provider", "a")]), 2.0);

    // An open provider is skipped for its fallback.
    let reply = ask(&weir, "a/m", Some("b/m")).await;
    assert_eq!((reply.status, reply.header("x-weir-provider")), (200, Some("b")));

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reply = ask(&weir, "a/m", None).await;
    assert_eq!(reply.status, 200, "the probe after the cool-down went through: {}", reply.text);
    assert_eq!(metric(&weir.metrics().await, "weir_breaker_state", &[("provider", "a")]), 0.0);
    let (_, ready) = weir.ready().await;
    assert_ne!(ready["providers"]["a"]["state"], "failed", "{ready}");
    let reply = post(&weir.url("/v1/chat/completions"), &chat("a/m", "again")).await;
    assert_eq!(reply.status, 200);
}
