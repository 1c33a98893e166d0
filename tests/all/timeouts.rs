//! Timeouts per phase: a stream slow to its first event is retried or falls back before any
//! byte reaches the client; a stream that stalls later ends with an error event in its front
//! door's format; a silent upstream never holds a client past the request's total timeout
//! (`total_timeout`, or the client's `x-weir-timeout-ms` up to `max_client_timeout`).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::anthropic::events as anthropic_events;
use crate::support::{MockUpstream, Reply, SseReader, Weir, chat, client, metric};

/// Provider `a` (`a_pool` lines in its pool table, `max_retries` retries with short backoffs)
/// and `b`, both in front of `up`.
async fn start(up: &MockUpstream, a_pool: &str, max_retries: u32) -> Weir {
    let retry =
        format!("[providers.retry]\nmax_retries = {max_retries}\nbase_backoff = \"5ms\"\nmax_backoff = \"10ms\"");
    let a = up.provider_toml("a", "discover_models = false", &format!("{a_pool}\n{retry}"));
    let b = up.provider_toml("b", "discover_models = false", "");
    Weir::start(&format!("{a}\n{b}")).await
}

fn streaming(model: &str) -> serde_json::Value {
    let mut body = chat(model, "x");
    body["stream"] = json!(true);
    body
}

async fn send(weir: &Weir, body: &serde_json::Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client().post(weir.url("/v1/chat/completions")).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn a_stream_slow_to_its_first_token_is_retried_before_the_client_sees_a_byte() {
    let up = MockUpstream::start().await;
    let weir = start(&up, "first_token_timeout = \"300ms\"\nrequest_timeout = \"10s\"", 2).await;
    let started = Instant::now();
    let resp = send(&weir, &streaming("a/m;fail_times=1;stall=3000;chunks=3"), &[]).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers().get("x-weir-attempts").unwrap(), "2");
    let events = SseReader::new(resp).rest().await;
    let took = started.elapsed();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    assert!(!events.iter().any(|e| e.contains("error")), "the slow attempt left no trace: {events:?}");
    assert_eq!(events.len(), 3 + 1 + 1, "3 chunks, the finish chunk and [DONE]: {events:?}");
    assert!(took >= Duration::from_millis(300) && took < Duration::from_millis(2000), "answered after {took:?}");
    assert_eq!(up.chats().len(), 2, "one slow attempt, one answered");
    let metrics = weir.metrics().await;
    assert_eq!(metric(&metrics, "weir_timeouts_total", &[("provider", "a"), ("phase", "first_token")]), 1.0);
    assert_eq!(metric(&metrics, "weir_retries_total", &[("provider", "a"), ("reason", "timeout")]), 1.0);
}

#[tokio::test]
async fn a_stream_slow_to_its_first_token_falls_back_to_the_next_provider() {
    let up = MockUpstream::start().await;
    let weir = start(&up, "first_token_timeout = \"250ms\"", 0).await;
    let started = Instant::now();
    let resp = send(&weir, &streaming("a/m;stall=1500;chunks=2"), &[("x-weir-fallbacks", "b/m;chunks=2")]).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers().get("x-weir-provider").unwrap(), "b");
    let events = SseReader::new(resp).rest().await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    assert!(started.elapsed() < Duration::from_millis(2000), "answered after {:?}", started.elapsed());
    let models: Vec<String> = up.chats().iter().map(|s| s.model().to_owned()).collect();
    assert_eq!(models, ["m;stall=1500;chunks=2", "m;chunks=2"]);
    // The slow attempt's connection was closed, not left reading.
    up.wait_until("the slow attempt cancelled", |seen| seen[0].outcome == crate::support::upstream::Outcome::Cancelled)
        .await;
}

#[tokio::test]
async fn a_stream_that_stalls_mid_way_ends_with_an_error_event_after_the_idle_timeout() {
    let up = MockUpstream::start().await;
    let weir = start(&up, "idle_timeout = \"400ms\"\nrequest_timeout = \"10s\"", 2).await;
    let started = Instant::now();
    let resp = send(&weir, &streaming("a/m;chunks=4;hold_after=2"), &[]).await;
    assert_eq!(resp.status().as_u16(), 200);
    let events = SseReader::new(resp).rest().await;
    let took = started.elapsed();
    assert_eq!(events.len(), 3, "two chunks, then the error: {events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"), "never a clean end: {events:?}");
    let error: serde_json::Value = serde_json::from_str(&events[2]).unwrap();
    assert_eq!(error["error"]["code"], "upstream_timeout", "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("idle_timeout"), "{error}");
    assert!(took >= Duration::from_millis(400) && took < Duration::from_millis(2500), "ended after {took:?}");
    assert_eq!(up.chats().len(), 1, "bytes had gone to the client: no retry");
    let metrics = weir.metrics().await;
    assert_eq!(metric(&metrics, "weir_timeouts_total", &[("provider", "a"), ("phase", "idle")]), 1.0);

    // The Anthropic front door ends the same stall with its own error event, never message_stop.
    let mut body = json!({"model": "a/m;chunks=4;hold_after=2", "max_tokens": 50, "stream": true,
                          "messages": [{"role": "user", "content": "x"}]});
    body["stream"] = json!(true);
    let resp = client()
        .post(weir.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let text = tokio::time::timeout(Duration::from_secs(5), resp.text()).await.expect("stream hung").unwrap();
    let names: Vec<String> = anthropic_events(&text).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.last().map(String::as_str), Some("error"), "{text}");
    assert!(!names.iter().any(|n| n == "message_stop"), "{text}");
}

#[tokio::test]
async fn a_silent_upstream_never_holds_a_client_past_the_total_timeout() {
    let up = MockUpstream::start().await;
    let weir =
        start(&up, "total_timeout = \"700ms\"\nrequest_timeout = \"20s\"\nmax_client_timeout = \"1500ms\"", 2).await;
    let ask = |model: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let weir = &weir;
        async move {
            let started = Instant::now();
            let reply = Reply::read(send(weir, &chat(model, "x"), &headers).await).await;
            (reply, started.elapsed())
        }
    };
    let (reply, took) = ask("a/m;hold", vec![]).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (504, "upstream_timeout"), "{}", reply.text);
    assert!(took >= Duration::from_millis(700) && took < Duration::from_millis(1500), "answered after {took:?}");
    assert_eq!(up.chats().len(), 1, "no retry starts past the deadline");

    // The client's own timeout replaces it ...
    let (reply, took) = ask("a/m;hold", vec![("x-weir-timeout-ms", "250")]).await;
    assert_eq!(reply.status, 504);
    assert!(took >= Duration::from_millis(250) && took < Duration::from_millis(650), "answered after {took:?}");
    // ... up to max_client_timeout.
    let (reply, took) = ask("a/m;hold", vec![("x-weir-timeout-ms", "60000")]).await;
    assert_eq!(reply.status, 504);
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_millis(2500), "answered after {took:?}");
    let (reply, _) = ask("a/m", vec![("x-weir-timeout-ms", "soon")]).await;
    assert_eq!((reply.status, reply.error_param().as_deref()), (400, Some("x-weir-timeout-ms")), "{}", reply.text);
    // A quick answer is not affected.
    let (reply, _) = ask("a/m", vec![("x-weir-timeout-ms", "5000")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    // A stream still running at the deadline ends with an error event.
    let started = Instant::now();
    let resp = send(&weir, &streaming("a/m;chunks=40;chunk_delay=100"), &[("x-weir-timeout-ms", "600")]).await;
    let events = SseReader::new(resp).rest().await;
    assert!(started.elapsed() < Duration::from_millis(1500), "ended after {:?}", started.elapsed());
    assert!(events.len() > 2 && events.len() < 20, "{events:?}");
    assert!(events.last().unwrap().contains("total timeout"), "{events:?}");
    let metrics = weir.metrics().await;
    assert!(metric(&metrics, "weir_timeouts_total", &[("provider", "a"), ("phase", "total")]) >= 4.0, "{metrics}");
}
