//! Anthropic end to end: the `anthropic` provider kind behind the OpenAI front door
//! (translated), the `/v1/messages` front door in front of an Anthropic upstream (the client's
//! bytes through, events relayed) and in front of an OpenAI upstream (translated), errors in
//! each front door's shape, token counting, and the first-party plugins on `/v1/messages`.

use serde_json::{Value, json};

use crate::support::anthropic::{self, MockAnthropic, TEXT, USAGE};
use crate::support::plugins::plugin_toml;
use crate::support::{MockUpstream, Reply, Weir, chat, client, metric, post};

fn messages(model: &str, text: &str) -> Value {
    json!({"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}]})
}

async fn post_messages(weir: &Weir, body: &Value) -> Reply {
    let req = client().post(weir.url("/v1/messages")).header("anthropic-version", "2023-06-01").json(body);
    Reply::read(req.send().await.unwrap()).await
}

/// The raw body of a streamed answer and its events.
async fn stream(weir: &Weir, path: &str, body: &Value) -> (u16, String) {
    let resp = client().post(weir.url(path)).json(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

fn openai_data(text: &str) -> Vec<String> {
    text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).map(str::to_owned).collect()
}

#[tokio::test]
async fn an_openai_client_is_served_by_an_anthropic_provider() {
    let up = MockAnthropic::start().await;
    let weir = Weir::start(&up.provider_toml("ant", r#"models = ["claude-x"]"#)).await;

    let mut body = chat("claude-x", "hello");
    body["messages"] = json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]);
    body["stop"] = json!("END");
    let reply = post(&weir.url("/v1/chat/completions"), &body).await;

    assert_eq!(reply.status, 200, "{}", reply.text);
    let v = reply.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], TEXT.concat());
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let (input, output, read, created) = USAGE;
    assert_eq!(v["usage"]["prompt_tokens"], input + read + created);
    assert_eq!(v["usage"]["completion_tokens"], output);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], read);
    let seen = &up.messages()[0];
    assert_eq!(seen.api_key.as_deref(), Some("sk-ant-test-key"));
    assert_eq!(seen.version.as_deref(), Some("2023-06-01"));
    assert_eq!(seen.authorization, None, "no OpenAI-style header goes to Anthropic");
    assert_eq!(seen.body["system"], "be brief");
    assert_eq!(seen.body["messages"], json!([{"role": "user", "content": [{"type": "text", "text": "hello"}]}]));
    assert_eq!(seen.body["max_tokens"], 4096, "the provider's default_max_tokens fills what the client left out");
    assert_eq!(seen.body["stop_sequences"], json!(["END"]));
}

#[tokio::test]
async fn an_openai_stream_with_tools_is_translated_event_by_event() {
    let up = MockAnthropic::start().await;
    let weir = Weir::start(&up.provider_toml("ant", "")).await;
    let mut body = chat("ant/claude;tools", "weather in Oslo?");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    body["max_tokens"] = json!(100);
    body["tools"] =
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    body["tool_choice"] = json!("required");

    let (status, text) = stream(&weir, "/v1/chat/completions", &body).await;

    assert_eq!(status, 200, "{text}");
    let data = openai_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let content: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(content, TEXT.concat());
    let call = chunks.iter().find_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["id"].as_str());
    assert_eq!(call, Some("toolu_01Mock"));
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"city": "Oslo"}));
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
    let usage = chunks.iter().find(|c| c["usage"].is_object()).expect("a usage chunk");
    assert_eq!(usage["usage"]["completion_tokens"], USAGE.1);
    let seen = &up.messages()[0];
    assert_eq!(seen.body["tool_choice"], json!({"type": "any"}));
    assert_eq!(seen.body["tools"][0]["input_schema"], json!({"type": "object"}));
    assert_eq!(seen.body["max_tokens"], 100);
}

#[tokio::test]
async fn anthropic_errors_reach_an_openai_client_with_the_right_status() {
    let up = MockAnthropic::start().await;
    // No retries: each request below reaches the mock once, so the count at the end is exact.
    let weir = Weir::start(&up.provider_toml("ant", "[providers.retry]\nmax_retries = 0")).await;

    let limited = post(&weir.url("/v1/chat/completions"), &chat("ant/claude;status=429", "x")).await;
    assert_eq!(limited.status, 429, "{}", limited.text);
    assert_eq!(limited.header("retry-after"), Some("7"));
    assert!(limited.error_message().contains("rate limit"), "{}", limited.text);

    let long = post(&weir.url("/v1/chat/completions"), &chat("ant/claude;status=400", "x")).await;
    assert_eq!(long.status, 400);
    assert!(long.error_message().contains("prompt is too long"), "{}", long.text);

    let busy = post(&weir.url("/v1/chat/completions"), &chat("ant/claude;status=529", "x")).await;
    assert_eq!(busy.status, 503, "Anthropic's overloaded is a 503 to clients");

    let auth = post(&weir.url("/v1/chat/completions"), &chat("ant/claude;status=401", "x")).await;
    assert_eq!(auth.status, 502);
    assert!(!auth.text.contains("sk-ant-test-key"), "{}", auth.text);

    // The 529 was retried (overloaded is retryable): count only what follows.
    let reached = up.messages().len();
    let mut many = chat("ant/claude", "x");
    many["n"] = json!(2);
    let refused = post(&weir.url("/v1/chat/completions"), &many).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.error_param().as_deref(), Some("n"));

    let mut json_mode = chat("ant/claude", "x");
    json_mode["response_format"] = json!({"type": "json_object"});
    let refused = post(&weir.url("/v1/chat/completions"), &json_mode).await;
    assert_eq!((refused.status, refused.error_param().as_deref()), (400, Some("response_format")), "{}", refused.text);
    assert_eq!(up.messages().len(), reached, "refused requests never reach the provider");
}

#[tokio::test]
async fn an_anthropic_client_request_goes_upstream_byte_for_byte() {
    let up = MockAnthropic::start().await;
    let weir = Weir::start(&up.provider_toml("ant", r#"models = ["claude-x"]"#)).await;
    // Odd spacing, key order and prompt caching markers: all must survive untouched.
    let raw = r#"{ "max_tokens":64,"model":"claude-x",
        "system":[{"type":"text","text":"long context","cache_control":{"type":"ephemeral"}}],
        "messages":[{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]}],
        "top_k": 5 }"#;

    let resp = client().post(weir.url("/v1/messages")).header("content-type", "application/json").body(raw).send();
    let reply = Reply::read(resp.await.unwrap()).await;

    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(up.messages()[0].raw, raw.as_bytes(), "the client's bytes, unchanged");
    let v = reply.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["text"], TEXT.concat());
    assert_eq!(v["usage"]["cache_read_input_tokens"], USAGE.2);
}

#[tokio::test]
async fn an_anthropic_stream_is_relayed_event_by_event() {
    let up = MockAnthropic::start().await;
    let weir = Weir::start(&up.provider_toml("ant", "")).await;
    let mut body = messages("ant/claude;tools", "weather?");
    body["stream"] = json!(true);

    let (status, text) = stream(&weir, "/v1/messages", &body).await;

    assert_eq!(status, 200, "{text}");
    let names: Vec<String> = anthropic::events(&text).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    assert!(names.iter().any(|n| n == "ping"), "ping is relayed too: {names:?}");
    assert_eq!(names.iter().filter(|n| *n == "content_block_start").count(), 2);
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn a_cut_anthropic_stream_ends_with_an_error_event() {
    let up = MockAnthropic::start().await;
    let weir = Weir::start(&up.provider_toml("ant", "")).await;
    for (model, says) in [("ant/claude;cut", "before message_stop"), ("ant/claude;error_event", "Overloaded")] {
        let mut body = messages(model, "x");
        body["stream"] = json!(true);
        let (status, text) = stream(&weir, "/v1/messages", &body).await;
        assert_eq!(status, 200);
        let events = anthropic::events(&text);
        let (name, last) = events.last().unwrap();
        assert_eq!(name, "error", "{text}");
        assert!(last["error"]["message"].as_str().unwrap().contains(says), "{text}");
        assert!(!events.iter().any(|(n, _)| n == "message_stop"));

        // The OpenAI client of the same stream learns it too.
        let mut body = chat(model, "x");
        body["stream"] = json!(true);
        let (_, text) = stream(&weir, "/v1/chat/completions", &body).await;
        let last: Value = serde_json::from_str(openai_data(&text).last().unwrap()).unwrap();
        assert!(last["error"]["message"].as_str().unwrap().contains(says), "{text}");
    }
}

#[tokio::test]
async fn an_anthropic_client_is_served_by_an_openai_provider() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&up.provider_toml("up", r#"models = ["gpt-up"]"#, "")).await;
    let mut body = messages("gpt-up", "hello there");
    body["system"] = json!("be kind");
    body["stop_sequences"] = json!(["END"]);

    let reply = post_messages(&weir, &body).await;

    assert_eq!(reply.status, 200, "{}", reply.text);
    let v = reply.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["content"][0], json!({"type": "text", "text": "hello there"}));
    assert_eq!(v["stop_reason"], "end_turn");
    let seen = &up.chats()[0];
    assert_eq!(seen.body["messages"][0], json!({"role": "system", "content": "be kind"}));
    assert_eq!(seen.body["max_completion_tokens"], 64);
    assert_eq!(seen.body["stop"], json!(["END"]));

    body["stream"] = json!(true);
    body["model"] = json!("up/m;chunks=3");
    let (status, text) = stream(&weir, "/v1/messages", &body).await;
    assert_eq!(status, 200, "{text}");
    let events = anthropic::events(&text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    let text: String = events.iter().filter_map(|(_, e)| e["delta"]["text"].as_str()).collect();
    assert_eq!(text, "c0 c1 c2 ");
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["usage"]["output_tokens"], crate::support::upstream::USAGE.1, "{delta}");
    assert_eq!(up.chats()[1].body["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn anthropic_clients_get_anthropic_error_bodies() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&up.provider_toml("up", r#"models = ["gpt-up"]"#, "")).await;

    let missing =
        post_messages(&weir, &json!({"model": "gpt-up", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(missing.status, 400);
    let v = missing.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("max_tokens"), "{v}");

    let unknown = post_messages(&weir, &messages("no-such-model", "x")).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"]["type"], "not_found_error");

    let limited = post_messages(&weir, &messages("up/m;status=429;retry_after=3", "x")).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn tokens_of_anthropic_answers_and_streams_are_counted() {
    let up = MockAnthropic::start().await;
    let weir = Weir::start(&up.provider_toml("ant", r#"models = ["claude-x"]"#)).await;
    let (input, output, read, created) = USAGE;

    assert_eq!(post(&weir.url("/v1/chat/completions"), &chat("claude-x", "a")).await.status, 200);
    let mut body = messages("claude-x", "b");
    body["stream"] = json!(true);
    assert_eq!(stream(&weir, "/v1/messages", &body).await.0, 200);

    let text = client().get(weir.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let count = |kind| metric(&text, "weir_tokens_total", &[("provider", "ant"), ("kind", kind)]);
    assert_eq!(count("prompt"), (2 * (input + read + created)) as f64, "{text}");
    assert_eq!(count("completion"), (2 * output) as f64);
    assert_eq!(count("cached"), (2 * read) as f64);
}

#[tokio::test]
async fn models_are_discovered_from_an_anthropic_provider() {
    let up = MockAnthropic::start().await;
    let weir = Weir::start(&up.provider_toml("ant", "")).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let v: Value = client().get(weir.url("/v1/models")).send().await.unwrap().json().await.unwrap();
        let ids: Vec<&str> = v["data"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
        if ids.contains(&"claude-mock-1") && ids.contains(&"claude-mock-2") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not discovered: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(post_messages(&weir, &messages("claude-mock-2", "x")).await.status, 200);
}

#[tokio::test]
async fn prompt_guard_and_pii_redact_work_on_anthropic_messages() {
    let up = MockAnthropic::start().await;
    let mut config = up.provider_toml("ant", r#"models = ["claude-x"]"#);
    config +=
        &plugin_toml("prompt-guard", "prompt-guard", r#"config = { deny_keywords = ["forbidden"], max_tokens = 100 }"#);
    config += &plugin_toml("pii-redact", "pii-redact", "");
    let weir = Weir::start(&config).await;

    let mut body = messages("claude-x", "mail me at jane@example.com");
    body["system"] = json!([{"type": "text", "text": "the operator is bob@example.com"}]);
    let reply = post_messages(&weir, &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let sent = up.messages()[0].raw.clone();
    let sent = String::from_utf8_lossy(&sent);
    assert!(!sent.contains("jane@example.com") && !sent.contains("bob@example.com"), "{sent}");

    let refused = post_messages(&weir, &messages("claude-x", "this is forbidden")).await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert_eq!(refused.json()["type"], "error");
    let mut body = messages("claude-x", "fine");
    body["system"] = json!("forbidden instructions");
    assert_eq!(post_messages(&weir, &body).await.status, 400, "the system prompt is a prompt text too");
    let mut body = messages("claude-x", "fine");
    body["max_tokens"] = json!(1000);
    let refused = post_messages(&weir, &body).await;
    assert_eq!((refused.status, refused.json()["error"]["type"].as_str()), (400, Some("invalid_request_error")));
    assert!(refused.text.contains("max_tokens 1000 is above the limit of 100"), "{}", refused.text);
    assert_eq!(up.messages().len(), 1);
}

#[tokio::test]
async fn pii_redact_masks_anthropic_answers_and_stream_events() {
    let up = MockAnthropic::start().await;
    let mut config = up.provider_toml("ant", "");
    config += &plugin_toml("pii-redact", "pii-redact", "config = { responses = true, streams = true }");
    let weir = Weir::start(&config).await;

    let reply = post_messages(&weir, &messages("ant/claude;pii", "hi")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let text = reply.json()["content"][0]["text"].as_str().unwrap().to_owned();
    assert!(text.starts_with("Mail ") && !text.contains("ops@example.com"), "{text}");

    let mut body = messages("ant/claude;pii", "hi");
    body["stream"] = json!(true);
    let (status, sse) = stream(&weir, "/v1/messages", &body).await;
    assert_eq!(status, 200, "{sse}");
    let text: String = anthropic::events(&sse).iter().filter_map(|(_, e)| e["delta"]["text"].as_str()).collect();
    assert!(text.starts_with("Mail ") && !text.contains("ops@example.com"), "{text}");
    assert!(sse.contains("event: message_stop"), "{sse}");
}
