//! Bad client input: every case gets an OpenAI-style JSON error with the right status, and
//! none of them reaches the upstream.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::support::{MockUpstream, Reply, Weir, chat, client, post};

async fn start(up: &MockUpstream) -> Weir {
    let config = format!("[server]\nmax_body_bytes = 1024\n{}", up.provider_toml("up", r#"models = ["gpt-up"]"#, ""));
    Weir::start(&config).await
}

async fn post_raw(url: &str, body: &'static str) -> Reply {
    let req = client().post(url).header("content-type", "application/json").body(body);
    Reply::read(req.send().await.unwrap()).await
}

#[tokio::test]
async fn malformed_json_is_400_invalid_json() {
    let up = MockUpstream::start().await;
    let weir = start(&up).await;
    for path in ["/v1/chat/completions", "/v1/embeddings"] {
        for (body, code) in [
            ("{\"model\": ", "invalid_json"),
            ("not json at all", "invalid_json"),
            ("", "invalid_json"),
            ("[1, 2]", "invalid_request"),
        ] {
            let reply = post_raw(&weir.url(path), body).await;
            assert_eq!(reply.status, 400, "{path} {body:?}: {}", reply.text);
            assert_eq!(reply.error_code(), code, "{path} {body:?}");
            assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
        }
    }
    assert!(up.chats().is_empty() && up.seen_on("/v1/embeddings").is_empty());
}

#[tokio::test]
async fn missing_or_invalid_fields_are_400_naming_the_param() {
    let up = MockUpstream::start().await;
    let weir = start(&up).await;
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/v1/chat/completions", json!({"messages": user}), "model"),
        ("/v1/chat/completions", json!({"model": 42, "messages": user}), "model"),
        ("/v1/chat/completions", json!({"model": "", "messages": user}), "model"),
        ("/v1/chat/completions", json!({"model": "gpt-up"}), "messages"),
        ("/v1/chat/completions", json!({"model": "gpt-up", "messages": "hi"}), "messages"),
        ("/v1/chat/completions", json!({"model": "gpt-up", "messages": []}), "messages"),
        ("/v1/chat/completions", json!({"model": "gpt-up", "messages": [{"role": "robot"}]}), "messages[0].role"),
        ("/v1/chat/completions", json!({"model": "gpt-up", "messages": [1]}), "messages[0]"),
        ("/v1/chat/completions", json!({"model": "gpt-up", "messages": user, "stream": "yes"}), "stream"),
        ("/v1/chat/completions", json!({"model": "gpt-up", "messages": user, "temperature": 7}), "temperature"),
        ("/v1/chat/completions", json!({"model": "gpt-up", "messages": user, "max_tokens": -1}), "max_tokens"),
        ("/v1/embeddings", json!({"input": "x"}), "model"),
        ("/v1/embeddings", json!({"model": "gpt-up"}), "input"),
        ("/v1/embeddings", json!({"model": "gpt-up", "input": {"a": 1}}), "input"),
        ("/v1/embeddings", json!({"model": "gpt-up", "input": "x", "stream": true}), "stream"),
    ];
    for (path, body, param) in cases {
        let reply = post(&weir.url(path), &body).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text);
        assert_eq!(reply.error_code(), "invalid_request", "{body}");
        assert_eq!(reply.error_param().as_deref(), Some(param), "{body}: {}", reply.text);
    }
    assert!(up.chats().is_empty() && up.seen_on("/v1/embeddings").is_empty());
}

#[tokio::test]
async fn body_over_max_body_bytes_is_413_with_content_length_and_chunked() {
    let up = MockUpstream::start().await;
    let weir = start(&up).await;
    let url = weir.url("/v1/chat/completions");
    let big = serde_json::to_vec(&chat("gpt-up", &"x".repeat(4000))).unwrap();

    // Declared length over the limit.
    let reply = Reply::read(
        client().post(&url).header("content-type", "application/json").body(big.clone()).send().await.unwrap(),
    )
    .await;
    assert_eq!(reply.status, 413, "{}", reply.text);
    assert_eq!(reply.error_code(), "body_too_large");

    // No length declared (chunked): the limit is enforced while reading.
    let parts: Vec<Result<Bytes, std::io::Error>> = big.chunks(500).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(parts));
    let reply =
        Reply::read(client().post(&url).header("content-type", "application/json").body(body).send().await.unwrap())
            .await;
    assert_eq!(reply.status, 413, "{}", reply.text);
    assert_eq!(reply.error_code(), "body_too_large");

    // Just under the limit still works, chunked or not.
    let small = serde_json::to_vec(&chat("gpt-up", &"y".repeat(900))).unwrap();
    assert!(small.len() <= 1024);
    let reply = Reply::read(
        client().post(&url).header("content-type", "application/json").body(small.clone()).send().await.unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let parts: Vec<Result<Bytes, std::io::Error>> = small.chunks(300).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(parts));
    let reply =
        Reply::read(client().post(&url).header("content-type", "application/json").body(body).send().await.unwrap())
            .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(up.chats().len(), 2);
}

#[tokio::test]
async fn unknown_model_route_and_method_are_json_errors() {
    let up = MockUpstream::start().await;
    let weir = start(&up).await;

    let reply = post(&weir.url("/v1/chat/completions"), &chat("gpt-nope", "x")).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (404, "model_not_found"));
    assert!(reply.header("x-weir-overhead-us").is_some(), "errors carry the overhead header too");
    let reply = post(&weir.url("/v1/embeddings"), &json!({"model": "nope/x", "input": "x"})).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (404, "model_not_found"));

    let reply = Reply::read(client().get(weir.url("/v1/nothing-here")).send().await.unwrap()).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (404, "not_found"));
    let reply = Reply::read(client().get(weir.url("/v1/chat/completions")).send().await.unwrap()).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (405, "method_not_allowed"));
    assert!(up.chats().is_empty());
}
