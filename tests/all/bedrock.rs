//! A `bedrock` provider end to end: an OpenAI client through the real binary to the mock
//! Bedrock Runtime (tests/support/bedrock.rs), which verifies each request's SigV4 signature
//! and answers in Converse / ConverseStream wire shapes.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::bedrock::{ACCESS_KEY, MockBedrock, REGION, SECRET_KEY, SESSION_TOKEN, USAGE};
use crate::support::{Reply, SseReader, Weir, chat, client, metric, post, weir_check};

const MODEL: &str = "anthropic.claude-3-haiku-20240307-v1:0";

async fn stream_events(url: &str, body: &Value) -> (u16, Vec<String>) {
    let resp = client().post(url).json(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, SseReader::new(resp).rest().await)
}

#[tokio::test]
async fn chat_is_signed_sent_as_converse_and_answered_in_openai_shape() {
    let br = MockBedrock::start(None).await;
    let weir = Weir::start(&br.provider_with_keys("br")).await;
    let body = json!({ "model": MODEL, "messages": [
        { "role": "system", "content": "Be brief." }, { "role": "user", "content": "hello there" }
    ], "max_tokens": 20, "temperature": 0.2 });
    let r = post(&weir.url("/v1/chat/completions"), &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hello there");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let (input, output, cached) = USAGE;
    assert_eq!(v["usage"]["prompt_tokens"], input + cached, "cache reads count as prompt tokens");
    assert_eq!(v["usage"]["completion_tokens"], output);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], cached);

    let seen = br.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].signature_ok, "the mock recomputed the signature and it matched");
    assert_eq!(seen[0].path, "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse");
    assert_eq!(seen[0].body["system"], json!([{ "text": "Be brief." }]));
    assert_eq!(seen[0].body["messages"], json!([{ "role": "user", "content": [{ "text": "hello there" }] }]));
    assert_eq!(seen[0].body["inferenceConfig"], json!({ "maxTokens": 20, "temperature": 0.2 }));
    assert!(seen[0].headers.get("x-amz-security-token").is_none());
    let auth = seen[0].headers["authorization"].to_str().unwrap();
    assert!(
        auth.contains(&format!("Credential={ACCESS_KEY}/")) && auth.contains(&format!("/{REGION}/bedrock/")),
        "{auth}"
    );

    let m = weir.metrics().await;
    let tokens = |kind| metric(&m, "weir_tokens_total", &[("provider", "br"), ("kind", kind)]);
    assert_eq!(
        (tokens("prompt"), tokens("completion"), tokens("cached")),
        ((input + cached) as f64, output as f64, cached as f64),
        "{m}"
    );
}

#[tokio::test]
async fn a_stream_arrives_event_by_event_with_usage_at_the_end() {
    let br = MockBedrock::start(None).await;
    let weir = Weir::start(&br.provider_with_keys("br")).await;
    let mut body = chat(MODEL, "one two three");
    body["stream"] = json!(true);
    body["stream_options"] = json!({ "include_usage": true });
    let (status, events) = stream_events(&weir.url("/v1/chat/completions"), &body).await;
    assert_eq!(status, 200);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "echo: one two three");
    let deltas = chunks.iter().filter(|c| c["choices"][0]["delta"]["content"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(deltas.count() >= 4, "one chunk per Bedrock delta: {events:?}");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"), "{events:?}");
    let usage = chunks.iter().find_map(|c| c.get("usage").filter(|u| !u.is_null())).expect("a usage chunk");
    assert_eq!(usage["completion_tokens"], USAGE.1);
    let seen = br.seen();
    assert!(seen[0].path.ends_with("/converse-stream") && seen[0].signature_ok, "{seen:?}");
    assert_eq!(seen[0].headers["accept"], "application/vnd.amazon.eventstream");
    let m = weir.metrics().await;
    assert_eq!(metric(&m, "weir_tokens_total", &[("provider", "br"), ("kind", "completion")]), USAGE.1 as f64, "{m}");
}

#[tokio::test]
async fn tools_round_trip_as_tool_use_and_tool_result() {
    let br = MockBedrock::start(None).await;
    let weir = Weir::start(&br.provider_with_keys("br")).await;
    let url = weir.url("/v1/chat/completions");
    let tools = json!([{ "type": "function", "function": { "name": "weather", "description": "Weather of a city",
        "parameters": { "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"] } } }]);
    let mut messages = vec![json!({ "role": "user", "content": "Weather in Paris?" })];
    let r =
        post(&url, &json!({ "model": MODEL, "messages": messages, "tools": tools, "tool_choice": "required" })).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["id"], "tooluse_mock01");
    assert_eq!(call["function"]["name"], "weather");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({ "city": "Paris" }));
    let sent = &br.seen()[0].body;
    assert_eq!(sent["toolConfig"]["toolChoice"], json!({ "any": {} }));
    assert_eq!(sent["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["required"], json!(["city"]));

    messages.push(v["choices"][0]["message"].clone());
    messages.push(json!({ "role": "tool", "tool_call_id": "tooluse_mock01", "content": "sunny, 21C" }));
    let r = post(&url, &json!({ "model": MODEL, "messages": messages, "tools": tools })).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["choices"][0]["message"]["content"], "echo: result tooluse_mock01: \"sunny, 21C\"");
    let sent = &br.seen()[1].body;
    assert_eq!(sent["messages"][1]["content"][1]["toolUse"]["input"], json!({ "city": "Paris" }));
    assert_eq!(
        sent["messages"][2],
        json!({ "role": "user", "content": [{ "toolResult": { "toolUseId": "tooluse_mock01",
            "content": [{ "text": "sunny, 21C" }], "status": "success" } }] })
    );

    // The same call streamed: the name first, then the arguments in pieces.
    let body = json!({ "model": MODEL, "messages": [{ "role": "user", "content": "Weather?" }], "tools": tools, "stream": true });
    let (status, events) = stream_events(&url, &body).await;
    assert_eq!(status, 200);
    let chunks: Vec<Value> =
        events.iter().filter(|e| *e != "[DONE]").map(|e| serde_json::from_str(e).unwrap()).collect();
    let calls: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0)).collect();
    assert_eq!(calls[0]["function"]["name"], "weather");
    let args: String = calls.iter().filter_map(|c| c["function"]["arguments"].as_str()).collect();
    assert_eq!(args, "{\"city\":\"Paris\"}");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "tool_calls"), "{events:?}");
}

#[tokio::test]
async fn an_image_data_url_is_sent_as_bytes_and_an_image_url_is_refused() {
    let br = MockBedrock::start(None).await;
    let weir = Weir::start(&br.provider_with_keys("br")).await;
    let url = weir.url("/v1/chat/completions");
    let image = |u: &str| {
        json!({ "model": MODEL, "messages": [{ "role": "user", "content": [
        { "type": "text", "text": "what is it?" }, { "type": "image_url", "image_url": { "url": u } }
    ] }] })
    };
    let r = post(&url, &image("data:image/png;base64,iVBORw0KGgoAAAANSUhEUg==")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["choices"][0]["message"]["content"], "echo: what is it? [image png 24 bytes]");
    assert_eq!(
        br.seen()[0].body["messages"][0]["content"][1],
        json!({ "image": { "format": "png", "source": { "bytes": "iVBORw0KGgoAAAANSUhEUg==" } } })
    );
    let r = post(&url, &image("https://example.com/cat.png")).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_param().as_deref(), Some("messages[0].content[1]"));
    let mut n = chat(MODEL, "x");
    n["n"] = json!(3);
    let r = post(&url, &n).await;
    assert_eq!((r.status, r.error_param().as_deref()), (400, Some("n")), "{}", r.text);
    assert_eq!(br.seen().len(), 1, "refused requests never reach Bedrock");
}

#[tokio::test]
async fn aws_errors_map_to_their_status_and_a_stream_exception_ends_the_stream_as_an_error() {
    let br = MockBedrock::start(None).await;
    let weir = Weir::start(&br.provider_with_keys("br")).await;
    let url = weir.url("/v1/chat/completions");
    let r = post(&url, &chat(&format!("br/{MODEL};error=ThrottlingException"), "x")).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert!(r.error_message().contains("ThrottlingException from the mock"), "{}", r.text);
    let r = post(&url, &chat(&format!("br/{MODEL};error=ValidationException"), "x")).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = post(&url, &chat(&format!("br/{MODEL};error=ModelNotReadyException"), "x")).await;
    assert_eq!(r.status, 503, "{}", r.text);
    let r = post(&url, &chat(&format!("br/{MODEL};error=AccessDeniedException"), "x")).await;
    assert_eq!(r.status, 502, "{}", r.text);
    assert!(!r.text.contains("from the mock"), "auth text is never relayed: {}", r.text);

    let mut body = chat(&format!("br/{MODEL};exception=throttlingException"), "a b c");
    body["stream"] = json!(true);
    let (status, events) = stream_events(&url, &body).await;
    assert_eq!(status, 200);
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(last["error"]["message"].as_str().unwrap().contains("throttlingException mid-stream"), "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"), "a failed stream does not end as complete: {events:?}");

    let mut body = chat(&format!("br/{MODEL};cut"), "a b c");
    body["stream"] = json!(true);
    let (_, events) = stream_events(&url, &body).await;
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(last["error"]["message"].as_str().unwrap().contains("messageStop"), "{events:?}");
}

#[tokio::test]
async fn credentials_come_from_aws_env_vars_with_a_session_token_and_secrets_never_leak() {
    let br = MockBedrock::start(Some(SESSION_TOKEN)).await;
    let mut weir = Weir::builder(&br.provider_toml("br", ""))
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_SESSION_TOKEN", SESSION_TOKEN)
        .start()
        .await;
    let url = weir.url("/v1/chat/completions");
    let r = post(&url, &chat(MODEL, "hi")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let seen = br.seen();
    assert!(seen[0].signature_ok);
    assert_eq!(seen[0].headers["x-amz-security-token"], SESSION_TOKEN);

    let leak = format!("br/{MODEL};leak");
    let r = post(&url, &chat(&leak, "hi")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut stream = chat(&leak, "hi");
    stream["stream"] = json!(true);
    let (_, events) = stream_events(&url, &stream).await;
    let streamed = events.join("\n");
    let admin = Reply::read(client().get(weir.url("/v1/models")).send().await.unwrap()).await;
    for text in [&r.text, &streamed, &admin.text] {
        assert!(!text.contains(SECRET_KEY) && !text.contains(SESSION_TOKEN), "leaked: {text}");
    }
    assert!(r.text.contains("secret <redacted> token <redacted>"), "{}", r.text);
    weir.sigterm();
    assert!(weir.wait_exit(Duration::from_secs(20)).await.success());
    let logs = weir.logs();
    assert!(!logs.contains(SECRET_KEY) && !logs.contains(SESSION_TOKEN), "leaked in logs:\n{logs}");
}

#[tokio::test]
async fn a_wrong_secret_key_is_refused_by_the_signature_check() {
    let br = MockBedrock::start(None).await;
    let config = br.provider_toml(
        "br",
        &format!("region = \"{REGION}\"\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"not-the-right-secret-key\"\n"),
    );
    let weir = Weir::start(&config).await;
    let r = post(&weir.url("/v1/chat/completions"), &chat(MODEL, "hi")).await;
    assert_eq!(r.status, 502, "{}", r.text);
    assert!(r.error_message().contains("rejected Weir's AWS credentials"), "{}", r.text);
    assert!(!br.seen()[0].signature_ok);
}

#[test]
fn check_names_missing_region_and_credentials_and_where_they_are_looked_for() {
    let table = "[[providers]]\nname = \"br\"\nkind = \"bedrock\"\nmodels = [\"m\"]\n";
    let out = weir_check(table, &[("AWS_REGION", ""), ("AWS_DEFAULT_REGION", ""), ("AWS_ACCESS_KEY_ID", "")]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(err.contains("providers[0].region") && err.contains("AWS_REGION"), "{err}");
    let out =
        weir_check(table, &[("AWS_REGION", "eu-west-1"), ("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(err.contains("providers[0].access_key_id") && err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    let env = [("AWS_REGION", "eu-west-1"), ("AWS_ACCESS_KEY_ID", "AKIAX"), ("AWS_SECRET_ACCESS_KEY", "s3cr3t-s3cr3t")];
    let out = weir_check(table, &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
