//! A provider's keys (issue 28): a key answered 429 rests and the request goes to another key;
//! a key answered 401/403 is left out for a cool-down (logged by position, never by value);
//! with every key left out the client gets a 502 that says so, and nothing goes upstream.

use crate::support::{MockUpstream, Weir, chat, post};

/// Provider `up` with keys `sk-one` and `sk-two` of weights `weights`, no retries: any second
/// request upstream is the key rotation's own.
async fn start(up: &MockUpstream, weights: (u32, u32)) -> Weir {
    Weir::start(&format!(
        "[[providers]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
         keys = [{{ value = \"sk-one\", weight = {} }}, {{ value = \"sk-two\", weight = {} }}]\ndiscover_models = false\n\
         [providers.retry]\nmax_retries = 0\n",
        up.base_url(),
        weights.0,
        weights.1
    ))
    .await
}

fn keys_sent(up: &MockUpstream) -> Vec<String> {
    up.chats().iter().map(|s| s.authorization.clone().unwrap_or_default().replace("Bearer ", "")).collect()
}

#[tokio::test]
async fn a_429_rotates_to_the_other_key_which_serves_until_the_first_has_rested() {
    let up = MockUpstream::start().await;
    // The limited key nearly always comes first: the rotation is what serves.
    let weir = start(&up, (1000, 1)).await;
    for _ in 0..8 {
        let reply =
            post(&weir.url("/v1/chat/completions"), &chat("up/m;status=429;retry_after=30;for_key=sk-one", "x")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let sent = keys_sent(&up);
    let one = sent.iter().filter(|k| *k == "sk-one").count();
    assert_eq!(one, 1, "the limited key rests for its Retry-After: {sent:?}");
    assert_eq!(sent.len(), 8 + one, "only the limited request went again: {sent:?}");
}

#[tokio::test]
async fn a_rejected_key_is_left_out_and_logged_without_its_value() {
    let up = MockUpstream::start().await;
    let weir = start(&up, (1, 1000)).await;
    for _ in 0..8 {
        let reply = post(&weir.url("/v1/chat/completions"), &chat("up/m;status=401;for_key=sk-two", "x")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let sent = keys_sent(&up);
    let two = sent.iter().filter(|k| *k == "sk-two").count();
    assert_eq!(two, 1, "the rejected key was left out: {sent:?}");
    weir.wait_for_log("upstream rejected a key").await;
    assert!(!weir.logs().contains("sk-two"), "the key is never logged");
}

#[tokio::test]
async fn with_every_key_rejected_the_client_gets_a_clear_502_and_nothing_goes_upstream() {
    let up = MockUpstream::start().await;
    let weir = start(&up, (1, 1)).await;
    let reply = post(&weir.url("/v1/chat/completions"), &chat("up/m;status=401", "x")).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (502, "upstream_auth_failed"), "{}", reply.text);
    assert_eq!(up.chats().len(), 2, "each key was tried once");

    let reply = post(&weir.url("/v1/chat/completions"), &chat("up/m;status=401", "x")).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (502, "no_usable_key"), "{}", reply.text);
    assert!(reply.error_message().contains("no usable key"), "{}", reply.text);
    assert!(!reply.text.contains("sk-one") && !reply.text.contains("sk-two"), "{}", reply.text);
    assert_eq!(up.chats().len(), 2, "nothing was sent with a rejected key");
}

#[tokio::test]
async fn a_key_whose_requests_keep_failing_with_5xx_is_set_aside_by_its_breaker() {
    let up = MockUpstream::start().await;
    // The failing key nearly always comes first until its breaker opens.
    let weir = start(&up, (1000, 1)).await;
    let mut failed = 0;
    for _ in 0..20 {
        let reply = post(&weir.url("/v1/chat/completions"), &chat("up/m;status=500;for_key=sk-one", "x")).await;
        failed += usize::from(reply.status != 200);
    }
    let sent = keys_sent(&up);
    let one = sent.iter().filter(|k| *k == "sk-one").count();
    assert_eq!(one, 5, "five 5xx in a row set the key aside: {sent:?}");
    assert_eq!(failed, 5, "no retries here: each failure reached the client, then the other key served");
    assert!(weir.logs().contains("keep failing"), "the key is named by position in the log");
    assert!(!weir.logs().contains("sk-one"), "never by value");
}
