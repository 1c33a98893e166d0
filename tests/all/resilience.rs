//! Surviving provider failures: retries with backoff and `Retry-After`, the retry budget,
//! errors that keep their upstream code. Fallbacks and breakers: `resilience_routes.rs`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{MockUpstream, Reply, Weir, chat, client, metric, post};

/// Retry settings with short backoffs, then `more` lines of `[providers.retry]`.
fn fast_retries(more: &str) -> String {
    format!("request_timeout = \"2s\"\n[providers.retry]\nbase_backoff = \"5ms\"\nmax_backoff = \"20ms\"\n{more}")
}

async fn start(up: &MockUpstream, retry: &str) -> Weir {
    Weir::start(&up.provider_toml("up", "discover_models = false", &fast_retries(retry))).await
}

async fn ask(weir: &Weir, model: &str) -> Reply {
    post(&weir.url("/v1/chat/completions"), &chat(model, "hello")).await
}

#[tokio::test]
async fn a_500_once_then_200_is_retried_and_the_client_gets_the_answer() {
    let up = MockUpstream::start().await;
    let weir = start(&up, "").await;
    let reply = ask(&weir, "up/m;fail_times=1").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(up.chats().len(), 2, "one failed attempt, one answered");
    assert_eq!(reply.header("x-weir-attempts"), Some("2"));
    assert_eq!(reply.header("x-weir-provider"), Some("up"));
    let metrics = weir.metrics().await;
    assert_eq!(metric(&metrics, "weir_retries_total", &[("provider", "up"), ("reason", "server_error")]), 1.0);

    // A connection reset before the response head is retried too.
    let reply = ask(&weir, "up/m;fail_times=1;reset").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(up.chats().len(), 4);
}

#[tokio::test]
async fn a_429_with_retry_after_waits_that_long_before_the_retry() {
    let up = MockUpstream::start().await;
    let weir = start(&up, "").await;
    let started = Instant::now();
    let reply = ask(&weir, "up/m;fail_times=1;status=429;retry_after=1").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(started.elapsed() >= Duration::from_secs(1), "retried after {:?}", started.elapsed());
    assert_eq!(up.chats().len(), 2);

    // A Retry-After past max_retry_after (5s) is not waited for: the 429 goes back with it.
    let started = Instant::now();
    let reply = ask(&weir, "up/m;status=429;retry_after=30").await;
    assert_eq!((reply.status, reply.header("retry-after")), (429, Some("30")));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(up.chats().len(), 3, "no retry");
}

#[tokio::test]
async fn a_persistent_503_makes_bounded_attempts_then_a_clean_503() {
    let up = MockUpstream::start().await;
    let weir = start(&up, "max_retries = 3").await;
    let reply = ask(&weir, "up/m;status=503").await;
    assert_eq!((reply.status, reply.error_code().as_str()), (503, "upstream_error"), "{}", reply.text);
    assert_eq!(up.chats().len(), 4, "1 + max_retries");
    assert_eq!(reply.header("x-weir-attempts"), Some("4"));
}

#[tokio::test]
async fn a_400_is_never_retried_and_keeps_the_providers_code() {
    let up = MockUpstream::start().await;
    let weir = start(&up, "").await;
    let reply = ask(&weir, "up/m;status=400").await;
    assert_eq!(reply.status, 400);
    assert_eq!(up.chats().len(), 1);
    for code in ["context_length_exceeded", "content_policy_violation"] {
        let reply = ask(&weir, &format!("up/m;status=400;code={code}")).await;
        assert_eq!((reply.status, reply.error_code()), (400, code.to_owned()), "{}", reply.text);
    }
    let reply = ask(&weir, "up/m;status=429;code=rate_limit_exceeded;retry_after=30").await;
    assert_eq!((reply.status, reply.error_code().as_str()), (429, "rate_limit_exceeded"));
    // Not a short identifier: Weir's own code instead.
    let reply = ask(&weir, "up/m;status=422;code=has spaces").await;
    assert_eq!(reply.error_code(), "upstream_error");
    assert_eq!(up.chats().len(), 5, "none of them retried");
}

#[tokio::test]
async fn the_retry_budget_caps_retries_under_a_sustained_outage() {
    let up = MockUpstream::start().await;
    // 20% of requests plus 0.1/s over a 10s window (1 retry).
    let weir = start(&up, "budget_ratio = 0.2\nbudget_min_per_second = 0.1\nbudget_window = \"10s\"").await;
    let requests = 50;
    for _ in 0..requests {
        assert_eq!(ask(&weir, "up/m;status=503").await.status, 503);
    }
    let attempts = up.chats().len();
    // Two window generations may both count: at most the ratio of all requests plus the reserve.
    let most = requests + requests / 5 + 1 + 1;
    assert!(attempts <= most, "{attempts} attempts for {requests} requests (at most {most})");
    assert!(attempts > requests, "some retries were allowed ({attempts})");
    let metrics = weir.metrics().await;
    assert!(metric(&metrics, "weir_retry_budget_exhausted_total", &[("provider", "up")]) >= 30.0, "{metrics}");
}

#[tokio::test]
async fn a_stream_is_retried_while_no_byte_went_to_the_client() {
    let up = MockUpstream::start().await;
    let weir = start(&up, "").await;
    let mut body = chat("up/m;fail_times=1;status=502;chunks=2", "x");
    body["stream"] = json!(true);
    let resp = client().post(weir.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers().get("x-weir-attempts").unwrap(), "2");
    let events = crate::support::SseReader::new(resp).rest().await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    assert_eq!(up.chats().len(), 2);
}

#[tokio::test]
async fn a_complete_stream_without_done_ends_cleanly_and_a_cut_one_with_an_error() {
    let up = MockUpstream::start().await;
    let weir = start(&up, "").await;
    let read = |include_usage: bool| {
        let mut body = chat("up/m;chunks=2;cut=nodone", "x");
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": include_usage});
        let req = client().post(weir.url("/v1/chat/completions")).json(&body);
        async move { crate::support::SseReader::new(req.send().await.unwrap()).rest().await }
    };
    // Finish reason and usage came: only the terminator is missing.
    let events = read(true).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    assert!(!events.iter().any(|e| e.contains("\"error\"")), "{events:?}");
    // No usage yet: the answer may have been cut.
    let events = read(false).await;
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    assert!(events.last().unwrap().contains("upstream_invalid_response"), "{events:?}");
}
