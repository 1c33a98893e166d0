//! Upstream failures: timeouts, error statuses, malformed bodies and cut streams are mapped
//! to clear errors with the right status (never a bare 500), whole or as a final SSE event.

use serde_json::{Value, json};

use crate::support::{MockUpstream, Reply, SseReader, Weir, chat, client, post};

async fn start(up: &MockUpstream) -> Weir {
    Weir::start(&up.provider_toml("up", "", "request_timeout = \"400ms\"")).await
}

/// Streams `model` and returns every event's data.
async fn stream(weir: &Weir, model: &str) -> (u16, Vec<String>) {
    let mut body = chat(model, "x");
    body["stream"] = json!(true);
    let resp = client().post(weir.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, SseReader::new(resp).rest().await)
}

/// The error code in the last SSE event, checking no `[DONE]` came.
fn final_error_code(events: &[String]) -> String {
    assert!(!events.iter().any(|e| e == "[DONE]"), "a failed stream must not end with [DONE]: {events:?}");
    let last: Value = serde_json::from_str(events.last().expect("no events")).unwrap();
    last["error"]["code"].as_str().unwrap_or_else(|| panic!("last event is not an error: {last}")).to_owned()
}

#[tokio::test]
async fn slow_upstream_is_504_upstream_timeout() {
    let up = MockUpstream::start().await;
    let weir = start(&up).await;
    let reply = post(&weir.url("/v1/chat/completions"), &chat("up/m;latency=3000", "x")).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (504, "upstream_timeout"), "{}", reply.text);

    // A stream that stalls after its first chunk ends with a timeout error event.
    let (status, events) = stream(&weir, "up/m;chunks=3;hold_after=1").await;
    assert_eq!(status, 200);
    assert!(events[0].contains("c0"), "{events:?}");
    assert_eq!(final_error_code(&events), "upstream_timeout");
    up.release();
}

#[tokio::test]
async fn upstream_error_statuses_are_mapped_with_their_message() {
    let up = MockUpstream::start().await;
    let weir = start(&up).await;
    // (upstream status, status the client gets, code): a 4xx keeps the upstream's own code
    // (the mock's is `mock_<status>`).
    let cases = [
        (400, 400, "mock_400"),
        (404, 404, "mock_404"),
        (422, 422, "mock_422"),
        (429, 429, "mock_429"),
        (500, 502, "upstream_error"),
        (502, 502, "upstream_error"),
        (503, 503, "upstream_error"),
        (504, 504, "upstream_error"),
        (401, 502, "upstream_auth_failed"),
        (403, 502, "upstream_auth_failed"),
    ];
    for (upstream, expected, code) in cases {
        let reply = post(&weir.url("/v1/chat/completions"), &chat(&format!("up/m;status={upstream}"), "x")).await;
        assert_eq!(reply.status, expected, "upstream {upstream}: {}", reply.text);
        assert_eq!(reply.error_code(), code, "upstream {upstream}");
        let message = reply.error_message();
        assert!(message.contains("provider up"), "upstream {upstream}: {message}");
        if upstream == 401 || upstream == 403 {
            assert!(!message.contains("sk-test-key") && !reply.text.contains("sk-test-key"), "{}", reply.text);
        } else {
            assert!(message.contains(&format!("mock upstream failure {upstream}")), "{message}");
        }
    }
    let reply = post(&weir.url("/v1/chat/completions"), &chat("up/m;status=400", "x")).await;
    assert_eq!(reply.error_param().as_deref(), Some("messages"), "the upstream's param is kept");
    let reply = post(&weir.url("/v1/chat/completions"), &chat("up/m;status=429;retry_after=7", "x")).await;
    assert_eq!(reply.header("retry-after"), Some("7"));
    let reply = post(&weir.url("/v1/embeddings"), &json!({"model": "up/e;status=500", "input": "x"})).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (502, "upstream_error"));
}

#[tokio::test]
async fn malformed_upstream_body_is_502() {
    let up = MockUpstream::start().await;
    let weir = start(&up).await;
    let reply = post(&weir.url("/v1/chat/completions"), &chat("up/m;malformed", "x")).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (502, "upstream_invalid_response"), "{}", reply.text);
    let reply = post(&weir.url("/v1/embeddings"), &json!({"model": "up/e;malformed", "input": "x"})).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (502, "upstream_invalid_response"), "{}", reply.text);
    // A stream request answered with a non-stream body: a plain JSON error, no event stream.
    let mut body = chat("up/m;malformed", "x");
    body["stream"] = json!(true);
    let reply = Reply::read(client().post(weir.url("/v1/chat/completions")).json(&body).send().await.unwrap()).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (502, "upstream_invalid_response"), "{}", reply.text);
}

#[tokio::test]
async fn cut_streams_end_with_an_error_event() {
    let up = MockUpstream::start().await;
    let weir = start(&up).await;

    let (status, events) = stream(&weir, "up/m;chunks=3;cut=nodone").await;
    assert_eq!(status, 200);
    assert_eq!(events.iter().filter(|e| e.contains("chat.completion.chunk")).count(), 4, "{events:?}");
    assert_eq!(final_error_code(&events), "upstream_invalid_response");

    let (status, events) = stream(&weir, "up/m;chunks=3;cut=drop").await;
    assert_eq!(status, 200);
    assert!(events.iter().any(|e| e.contains("c2")), "chunks before the cut are relayed: {events:?}");
    assert_eq!(final_error_code(&events), "upstream_unavailable");

    // An error before the stream started is a plain JSON error with the mapped status.
    let mut body = chat("up/m;status=503", "x");
    body["stream"] = json!(true);
    let resp = client().post(weir.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_error");
}

#[tokio::test]
async fn unreachable_upstream_is_502_upstream_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        "[[providers]]\nname = \"gone\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\n\
         models = [\"m\"]\ndiscover_models = false\n"
    );
    let weir = Weir::start(&config).await;
    let reply = post(&weir.url("/v1/chat/completions"), &chat("m", "x")).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (502, "upstream_unavailable"), "{}", reply.text);
    assert!(reply.error_message().contains("provider gone"));
}

#[tokio::test]
async fn upstream_redirects_are_not_followed() {
    // Following a redirect would resend the prompt and the provider key to wherever the
    // Location points; Weir reports it as an upstream error instead.
    let up = MockUpstream::start().await;
    let weir = start(&up).await;
    let reply = post(&weir.url("/v1/chat/completions"), &chat("up/m;redirect", "x")).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (502, "upstream_error"), "{}", reply.text);
    assert!(reply.error_message().contains("307"), "{}", reply.text);
    assert_eq!(up.chats().len(), 1);
    assert!(up.seen_on("/v1/redirected").is_empty(), "the redirect was followed: {:?}", up.seen().len());
}

#[tokio::test]
async fn connections_the_provider_closed_are_replaced_without_failing_requests() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&up.provider_toml("up", "discover_models = false", "workers = 2")).await;
    let url = weir.url("/v1/chat/completions");
    // Keep-alive: sequential requests share one connection per worker.
    for i in 0..6 {
        let reply = post(&url, &chat("up/m", &format!("warm {i}"))).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let warm = up.connections_accepted();
    assert!((1..=2).contains(&warm), "6 sequential requests opened {warm} connections");
    // The provider drops its idle connections, sometimes just before the next request (Weir
    // has then not yet seen the close: the request is never written on the dead connection
    // and goes out on a fresh one).
    for round in 0..20u64 {
        up.close_connections().await;
        if round % 2 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let reply = post(&url, &chat("up/m", &format!("after close {round}"))).await;
        assert_eq!(reply.status, 200, "round {round}: {}", reply.text);
    }
    assert!(up.connections_accepted() > warm, "no connection was replaced");
    assert_eq!(up.chats().len(), 26, "every request reached the provider exactly once");
}
