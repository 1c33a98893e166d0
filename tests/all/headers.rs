//! Headers across Weir: the provider's rate-limit, timing and request-id headers reach the
//! client (whole answers, streams and errors), nothing else of its head does; the request's id
//! and trace context reach the provider.

use serde_json::json;

use crate::support::upstream::RELAY_HEADERS;
use crate::support::{MockUpstream, Reply, SseReader, Weir, chat, client};

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// The relayed headers every answer of a `relay` request must carry, as the client sees them.
fn assert_relayed(headers: &reqwest::header::HeaderMap, what: &str) {
    for (name, value) in RELAY_HEADERS {
        match *name {
            "set-cookie" | "x-internal" => assert!(headers.get(*name).is_none(), "{what}: {name} was relayed"),
            "x-request-id" => assert_eq!(headers["x-upstream-request-id"], value, "{what}"),
            _ => assert_eq!(headers.get(*name).map(|v| v.to_str().unwrap()), Some(*value), "{what}: {name}"),
        }
    }
}

#[tokio::test]
async fn rate_limit_and_request_id_headers_are_relayed_on_answers_and_streams() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&up.provider_toml("up", "", "")).await;

    let resp = client()
        .post(weir.url("/v1/chat/completions"))
        .header("x-request-id", "client-id-1")
        .json(&chat("up/m;relay", "hi"))
        .send()
        .await
        .unwrap();
    let headers = resp.headers().clone();
    let reply = Reply::read(resp).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_relayed(&headers, "answer");
    assert_eq!(headers["x-request-id"], "client-id-1", "Weir's request id stays the client's");

    let mut body = chat("up/m;relay;chunks=2", "hi");
    body["stream"] = json!(true);
    let resp = client().post(weir.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_relayed(resp.headers(), "stream");
    assert_eq!(SseReader::new(resp).rest().await.last().map(String::as_str), Some("[DONE]"));

    // Without `relay`, none of them appear.
    let resp = client().post(weir.url("/v1/chat/completions")).json(&chat("up/m", "hi")).send().await.unwrap();
    assert!(resp.headers().get("x-ratelimit-limit-requests").is_none());
    assert!(resp.headers().get("x-upstream-request-id").is_none());
}

#[tokio::test]
async fn an_upstream_rate_limit_error_keeps_its_headers_and_retry_after() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&up.provider_toml("up", "", "")).await;

    let resp = client()
        .post(weir.url("/v1/chat/completions"))
        .json(&chat("up/m;relay;status=429;retry_after=7", "hi"))
        .send()
        .await
        .unwrap();
    let headers = resp.headers().clone();
    let reply = Reply::read(resp).await;

    assert_eq!(reply.status, 429, "{}", reply.text);
    assert_eq!(headers["retry-after"], "7");
    assert_relayed(&headers, "429");
}

#[tokio::test]
async fn the_request_id_and_trace_context_go_upstream() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&up.provider_toml("up", "", "")).await;

    let resp = client()
        .post(weir.url("/v1/chat/completions"))
        .header("x-request-id", "client-id-2")
        .header("traceparent", TRACEPARENT)
        .header("tracestate", "vendor=1")
        .header("cookie", "session=client")
        .json(&chat("up/m", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = &up.chats()[0];
    assert_eq!(seen.headers["x-request-id"], "client-id-2");
    assert_eq!(seen.headers["traceparent"], TRACEPARENT);
    assert_eq!(seen.headers["tracestate"], "vendor=1");
    assert!(seen.headers.get("cookie").is_none(), "only the allow-listed headers go upstream");

    // Without one, the id Weir makes goes upstream and back to the client.
    let resp = client().post(weir.url("/v1/chat/completions")).json(&chat("up/m", "hi")).send().await.unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(id.starts_with("req_"), "{id}");
    assert_eq!(up.chats()[1].headers["x-request-id"], id.as_str());
    assert!(up.chats()[1].headers.get("traceparent").is_none());
}
