//! Active health checks (`pool.health_check_interval`): a provider's model list is probed at
//! start and periodically, never a model call; probes feed `/ready` and the circuit breaker.

use std::time::{Duration, Instant};

use crate::support::{MockUpstream, Weir, chat, metric, post};

/// One provider `up` in front of `upstream`, probed every 200ms, with a breaker.
async fn start(upstream: &MockUpstream, cooldown: &str) -> Weir {
    let pool = "health_check_interval = \"200ms\"\nhealth_check_timeout = \"1s\"\n\
                [providers.retry]\nmax_retries = 0";
    let breaker = format!("[providers.breaker]\nconsecutive_failures = 2\ncooldown = \"{cooldown}\"");
    Weir::start(&format!("{}\n{breaker}\n", upstream.provider_toml("up", "discover_models = false", pool))).await
}

/// Waits (at most 10 s) until `cond` holds for the metrics text.
async fn wait_metrics(weir: &Weir, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = weir.metrics().await;
        if cond(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "never: {what}\n{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn failing_probes_open_the_breaker_and_take_the_provider_out_before_any_request() {
    let up = MockUpstream::failing(503).await;
    let weir = start(&up, "60s").await;
    wait_metrics(&weir, "the breaker opened", |m| metric(m, "weir_breaker_state", &[("provider", "up")]) == 2.0).await;
    let (status, ready) = weir.ready().await;
    assert_eq!((status, &ready["providers"]["up"]["state"]), (503, &"failed".into()), "{ready}");
    let reply = post(&weir.url("/v1/chat/completions"), &chat("up/m", "hi")).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (503, "circuit_open"), "{}", reply.text);
    let seen = up.seen();
    assert!(seen.len() >= 2 && seen.iter().all(|s| s.path == "/v1/models"), "only model-list probes: {seen:?}");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer sk-test-key"), "probed with the provider's key");
    let m = weir.metrics().await;
    assert!(metric(&m, "weir_health_checks_total", &[("provider", "up"), ("result", "failed")]) >= 2.0, "{m}");
}

#[tokio::test]
async fn a_successful_probe_after_the_cooldown_closes_the_breaker_without_a_client_request() {
    let up = MockUpstream::start().await;
    let weir = start(&up, "500ms").await;
    for _ in 0..2 {
        assert_eq!(post(&weir.url("/v1/chat/completions"), &chat("up/m;status=500", "hi")).await.status, 502);
    }
    assert_eq!(metric(&weir.metrics().await, "weir_breaker_state", &[("provider", "up")]), 2.0);
    let m =
        wait_metrics(&weir, "the breaker closed", |m| metric(m, "weir_breaker_state", &[("provider", "up")]) == 0.0)
            .await;
    assert_eq!(up.chats().len(), 2, "no client request was the trial");
    assert!(metric(&m, "weir_health_checks_total", &[("provider", "up"), ("result", "ok")]) >= 1.0);
    let (status, ready) = weir.ready().await;
    assert_eq!(status, 200, "{ready}");
    let reply = post(&weir.url("/v1/chat/completions"), &chat("up/m", "hi")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}
