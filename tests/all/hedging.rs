//! Hedged requests (`hedge_after` on a route): a first attempt still unanswered after the delay
//! is raced by the same request on the route's next target; the first answer wins and the
//! loser's upstream connection is closed at once.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{MockUpstream, Outcome, Reply, SseReader, Weir, chat, client, metric, post};

/// Providers `a` and `b` in front of `up` and a route `gpt` that tries `a` (model `a_model`)
/// first and hedges to `b` (model `b_model`) after `delay`.
async fn start(up: &MockUpstream, a_model: &str, b_model: &str, delay: &str) -> Weir {
    let a = up.provider_toml("a", "discover_models = false", "");
    let b = up.provider_toml("b", "discover_models = false", "");
    Weir::start(&format!(
        "{a}\n{b}\n[[routes]]\nmodel = \"gpt\"\nhedge_after = \"{delay}\"\n\
         targets = [{{ provider = \"a\", model = \"{a_model}\" }}, {{ provider = \"b\", model = \"{b_model}\", weight = 0 }}]\n"
    ))
    .await
}

async fn ask(weir: &Weir) -> (Reply, Duration) {
    let started = Instant::now();
    let reply = post(&weir.url("/v1/chat/completions"), &chat("gpt", "hi")).await;
    (reply, started.elapsed())
}

fn hedges(metrics: &str, provider: &str, outcome: &str) -> f64 {
    metric(metrics, "weir_hedges_total", &[("provider", provider), ("outcome", outcome)])
}

#[tokio::test]
async fn a_silent_first_attempt_is_hedged_the_hedge_wins_and_the_loser_is_closed() {
    let up = MockUpstream::start().await;
    let weir = start(&up, "m;hold", "m", "200ms").await;
    let (reply, took) = ask(&weir).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("x-weir-provider"), Some("b"));
    assert_eq!(reply.header("x-weir-attempts"), Some("2"));
    assert!(took >= Duration::from_millis(200) && took < Duration::from_millis(1500), "answered after {took:?}");
    let models: Vec<String> = up.chats().iter().map(|s| s.model().to_owned()).collect();
    assert_eq!(models, ["m;hold", "m"], "the hedge went after the first attempt");
    let closed = Instant::now();
    up.wait_until("the losing attempt's connection closed", |seen| seen[0].outcome == Outcome::Cancelled).await;
    assert!(closed.elapsed() < Duration::from_secs(1), "closed after {:?}", closed.elapsed());
    let metrics = weir.metrics().await;
    assert_eq!((hedges(&metrics, "b", "sent"), hedges(&metrics, "b", "won")), (1.0, 1.0), "{metrics}");
    assert_eq!(hedges(&metrics, "a", "cancelled"), 1.0);
}

#[tokio::test]
async fn a_first_attempt_answering_before_the_delay_is_never_hedged() {
    let up = MockUpstream::start().await;
    let weir = start(&up, "m", "other", "1s").await;
    for _ in 0..5 {
        let (reply, _) = ask(&weir).await;
        assert_eq!((reply.status, reply.header("x-weir-provider")), (200, Some("a")), "{}", reply.text);
    }
    assert!(up.chats().iter().all(|s| s.model() == "m"), "no hedge was sent");
    assert_eq!(hedges(&weir.metrics().await, "b", "sent"), 0.0);
}

#[tokio::test]
async fn the_first_attempt_still_wins_when_it_answers_before_the_hedge() {
    let up = MockUpstream::start().await;
    let weir = start(&up, "m;latency=500", "m;latency=3000", "100ms").await;
    let (reply, took) = ask(&weir).await;
    assert_eq!((reply.status, reply.header("x-weir-provider")), (200, Some("a")), "{}", reply.text);
    assert!(took < Duration::from_millis(1500), "answered after {took:?}");
    up.wait_until("the hedge's connection closed", |seen| seen.len() == 2 && seen[1].outcome == Outcome::Cancelled)
        .await;
    let metrics = weir.metrics().await;
    assert_eq!((hedges(&metrics, "b", "sent"), hedges(&metrics, "b", "won")), (1.0, 0.0));
    assert_eq!(hedges(&metrics, "b", "cancelled"), 1.0);
}

#[tokio::test]
async fn a_stream_late_to_its_first_token_is_hedged_before_the_client_sees_a_byte() {
    let up = MockUpstream::start().await;
    let weir = start(&up, "m;stall=3000;chunks=2", "m;chunks=2", "200ms").await;
    let mut body = chat("gpt", "x");
    body["stream"] = json!(true);
    let started = Instant::now();
    let resp = client().post(weir.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(resp.headers().get("x-weir-provider").unwrap(), "b");
    let events = SseReader::new(resp).rest().await;
    assert!(started.elapsed() < Duration::from_millis(1500), "streamed after {:?}", started.elapsed());
    assert_eq!(events.len(), 2 + 1 + 1, "b's whole stream alone: {events:?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
}
