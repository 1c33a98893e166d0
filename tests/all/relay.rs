//! OpenAI endpoints Weir relays without modelling them: completions, moderations, images,
//! audio, files and batches go to an `openai`-kind provider through its pool, bytes as they
//! are, with the provider's key; errors come back in OpenAI's shape.

use serde_json::{Value, json};

use crate::support::{MockUpstream, Reply, SseReader, Weir, client, metric, post};

const MOCK_FIRST: &str = "[[providers]]\nname = \"echo\"\nkind = \"mock\"\nmodels = [\"echo-1\"]\n";

#[tokio::test]
async fn json_endpoints_route_by_model_and_reach_the_provider_with_its_key() {
    let up = MockUpstream::start().await;
    // The mock provider first: bodies without a model still find the openai-kind one.
    let config = format!(
        "{MOCK_FIRST}{}",
        up.provider_toml(
            "oai",
            "models = [\"gpt-3.5-turbo-instruct\"]\naliases = { instruct = \"gpt-3.5-turbo-instruct\" }",
            ""
        )
    );
    let weir = Weir::start(&config).await;

    let reply = post(&weir.url("/v1/completions"), &json!({"model": "instruct", "prompt": "Say hi"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["choices"][0]["text"], "Hello there");
    assert_eq!(reply.header("x-weir-provider"), Some("oai"));
    assert!(reply.header("x-request-id").is_some());
    let seen = up.seen_on("/v1/completions");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body["model"], "gpt-3.5-turbo-instruct", "the alias is mapped to the provider's name");
    assert_eq!(seen[0].body["prompt"], "Say hi");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer sk-test-key"));

    // A stream comes back as the upstream's SSE, terminator included.
    let resp = client()
        .post(weir.url("/v1/completions"))
        .json(&json!({"model": "gpt-3.5-turbo-instruct", "prompt": "x", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = SseReader::new(resp).rest().await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    assert_eq!(events.len(), 3, "{events:?}");

    // Without a model: the first openai-kind provider in config order.
    let reply = post(&weir.url("/v1/moderations"), &json!({"input": "fine"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["path"], "/v1/moderations");
    assert_eq!(reply.json()["authorization"], true);

    // Counted per endpoint and provider.
    let m = weir.metrics().await;
    let count = |endpoint: &str| {
        metric(&m, "weir_requests_total", &[("provider", "oai"), ("endpoint", endpoint), ("status", "200")])
    };
    assert_eq!((count("completions"), count("moderations")), (2.0, 1.0), "{m}");
}

#[tokio::test]
async fn files_and_batches_keep_method_path_query_and_multipart_bodies() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&up.provider_toml("oai", "", "")).await;

    let boundary = "weirboundary42";
    let upload = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\
         Content-Type: application/jsonl\r\n\r\n{{\"custom_id\":\"1\"}}\r\n--{boundary}--\r\n"
    );
    let resp = client()
        .post(weir.url("/v1/files"))
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(upload.clone())
        .send()
        .await
        .unwrap();
    let reply = Reply::read(resp).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let seen = up.seen_on("/v1/files");
    assert_eq!(seen[0].raw, upload, "the multipart body arrives byte for byte");
    assert_eq!(seen[0].headers["content-type"].to_str().unwrap(), format!("multipart/form-data; boundary={boundary}"));

    for (method, path, query) in [
        ("GET", "/v1/files/file-abc123/content", None),
        ("DELETE", "/v1/files/file-abc123", None),
        ("GET", "/v1/batches", Some("limit=2&after=batch_x")),
        ("POST", "/v1/batches/batch_abc/cancel", None),
    ] {
        let url = match query {
            Some(q) => format!("{}?{q}", weir.url(path)),
            None => weir.url(path),
        };
        let resp = client().request(method.parse().unwrap(), url).send().await.unwrap();
        let reply = Reply::read(resp).await;
        assert_eq!(reply.status, 200, "{method} {path}: {}", reply.text);
        let last = up.seen().last().cloned().unwrap();
        assert_eq!((last.method.as_str(), last.path.as_str()), (method, path));
        assert_eq!(last.query.as_deref(), query);
    }

    // Another method on a relayed path is 405; an id that is not one segment is 404.
    let resp = client().put(weir.url("/v1/files")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    let resp = client().get(weir.url("/v1/files/a/b")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn binary_answers_stream_through_whole_and_upstream_errors_keep_openais_shape() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&up.provider_toml("oai", "models = [\"tts-1\"]", "")).await;

    let resp = client()
        .post(weir.url("/v1/audio/speech"))
        .json(&json!({"model": "tts-1", "input": "hello", "voice": "alloy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "audio/mpeg");
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(bytes.len(), crate::support::SPEECH_BYTES);
    assert!(bytes.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8), "the audio arrives unchanged");

    let reply = post(&weir.url("/v1/moderations"), &json!({"input": "bad"})).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    let body: Value = reply.json();
    assert_eq!(body["error"]["code"], "mock_refused", "{}", reply.text);
    assert!(!reply.text.contains("sk-test-key"));
}

#[tokio::test]
async fn without_an_openai_kind_provider_a_relayed_endpoint_is_a_404_naming_it() {
    let weir = Weir::start(MOCK_FIRST).await;

    let reply = post(&weir.url("/v1/completions"), &json!({"model": "echo-1", "prompt": "x"})).await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    assert!(reply.error_message().contains("POST /v1/completions"), "{}", reply.text);
    assert!(reply.error_message().contains("echo"), "names the provider the model routes to: {}", reply.text);

    let resp = client().get(weir.url("/v1/files")).send().await.unwrap();
    let reply = Reply::read(resp).await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    assert!(reply.error_message().contains("GET /v1/files"), "{}", reply.text);

    let reply = post(&weir.url("/v1/completions"), &json!({"model": "nope", "prompt": "x"})).await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    assert_eq!(reply.error_code(), "model_not_found");
}
