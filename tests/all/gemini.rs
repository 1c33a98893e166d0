//! The `gemini` provider kind behind the OpenAI front door: chat, streams, tools, images and
//! embeddings translated to Gemini's wire format and back, its errors mapped, its key kept in
//! `x-goog-api-key` and out of every answer and log line.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::gemini::{MockGemini, SIGNATURE, USAGE};
use crate::support::{Reply, SseReader, Weir, chat, client, metric, post, weir_check};

const KEY: &str = "AIzaTEST-gemini-key-0123456789";
const MODELS: &str = r#"models = ["gemini-2.0-flash", "text-embedding-004", "err429", "err400", "err403", "cut",
    "echokey", "blocked"]"#;

async fn start(g: &MockGemini) -> Weir {
    Weir::start(&g.provider_toml("gem", KEY, &format!("{MODELS}\ndiscover_models = false"))).await
}

async fn stream_events(weir: &Weir, body: &Value) -> (u16, Vec<String>) {
    let resp = client().post(weir.url("/v1/chat/completions")).json(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, SseReader::new(resp).rest().await)
}

#[tokio::test]
async fn gemini_chat_is_translated_both_ways_with_the_key_in_its_header() {
    let g = MockGemini::start().await;
    let weir = start(&g).await;
    let body = json!({"model": "gemini-2.0-flash", "max_tokens": 20, "temperature": 0.2, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello there"}
    ]});
    let reply = post(&weir.url("/v1/chat/completions"), &body).await;

    assert_eq!(reply.status, 200, "{}", reply.text);
    let v = reply.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hello there");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let (p, c, cached) = USAGE;
    assert_eq!(v["usage"]["prompt_tokens"], p);
    assert_eq!(v["usage"]["completion_tokens"], c);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], cached);
    assert_eq!(reply.header("x-weir-provider"), Some("gem"));

    let seen = g.posts();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1beta/models/gemini-2.0-flash:generateContent");
    assert_eq!(seen[0].api_key.as_deref(), Some(KEY));
    assert_eq!(seen[0].authorization, None, "the key goes only in x-goog-api-key");
    assert!(seen[0].query.as_deref().is_none_or(|q| !q.contains(KEY)), "the key stays out of the URL");
    let sent = &seen[0].body;
    assert_eq!(sent["systemInstruction"], json!({"parts": [{"text": "Be brief."}]}));
    assert_eq!(sent["contents"], json!([{"role": "user", "parts": [{"text": "hello there"}]}]));
    assert_eq!(sent["generationConfig"], json!({"maxOutputTokens": 20, "temperature": 0.2}));
}

#[tokio::test]
async fn gemini_stream_is_translated_event_by_event_with_usage_at_the_end() {
    let g = MockGemini::start().await;
    let weir = start(&g).await;
    let mut body = chat("gemini-2.0-flash", "one two three");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (status, events) = stream_events(&weir, &body).await;

    assert_eq!(status, 200, "{events:?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"), "{chunks:?}");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned)).collect();
    assert_eq!(text, "echo: one two three");
    let deltas = chunks.iter().filter(|c| c["choices"][0]["delta"]["content"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(deltas.count(), 4, "one delta per upstream event: {chunks:?}");
    let finish: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0].get("finish_reason")).collect();
    assert!(finish.iter().any(|f| *f == "stop"), "{chunks:?}");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]), "usage comes last, in a chunk without choices: {last}");
    assert_eq!(last["usage"]["prompt_tokens"], USAGE.0);
    assert_eq!(last["usage"]["completion_tokens"], USAGE.1);

    let seen = g.posts();
    assert_eq!(seen[0].path, "/v1beta/models/gemini-2.0-flash:streamGenerateContent");
    assert_eq!(seen[0].query.as_deref(), Some("alt=sse"));

    // Without include_usage, no usage chunk (as OpenAI streams).
    body.as_object_mut().unwrap().remove("stream_options");
    let (_, events) = stream_events(&weir, &body).await;
    assert!(!events.iter().any(|e| e.contains("\"usage\"")), "{events:?}");
}

#[tokio::test]
async fn gemini_tool_calls_round_trip_with_the_function_name_on_the_result() {
    let g = MockGemini::start().await;
    let weir = start(&g).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
            "additionalProperties": false}}}]);
    let first = json!({"model": "gemini-2.0-flash", "tools": tools, "tool_choice": "required",
        "messages": [{"role": "user", "content": "weather in Paris?"}]});
    let reply = post(&weir.url("/v1/chat/completions"), &first).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let v = reply.json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    let id = call["id"].as_str().unwrap().to_owned();
    assert!(!id.is_empty());
    let sent = &g.posts()[0].body;
    let decl = &sent["tools"][0]["functionDeclarations"][0];
    assert_eq!(decl["name"], "get_weather");
    assert!(decl["parameters"].get("additionalProperties").is_none(), "refused by Gemini, dropped: {decl}");
    assert_eq!(sent["toolConfig"]["functionCallingConfig"]["mode"], "ANY");

    let second = json!({"model": "gemini-2.0-flash", "tools": tools, "messages": [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": id, "content": "{\"temp\": 21}"}
    ]});
    let reply = post(&weir.url("/v1/chat/completions"), &second).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["choices"][0]["message"]["content"], "result: {\"output\":{\"temp\":21}}");
    let sent = &g.posts()[1].body;
    assert_eq!(sent["contents"][1]["role"], "model");
    assert_eq!(sent["contents"][1]["parts"][0]["functionCall"]["name"], "get_weather");
    assert_eq!(sent["contents"][1]["parts"][0]["thoughtSignature"], SIGNATURE, "the signature returns via the id");
    assert_eq!(sent["contents"][1]["parts"][0]["functionCall"]["id"], "call_0");
    assert_eq!(result_id(sent), "call_0");
    let result = &sent["contents"][2];
    assert_eq!(result["role"], "user");
    assert_eq!(result["parts"][0]["functionResponse"]["name"], "get_weather");
    assert_eq!(result["parts"][0]["functionResponse"]["response"], json!({"output": {"temp": 21}}));

    // Streamed, the call arrives as an OpenAI tool call delta.
    let mut streamed = first.clone();
    streamed["stream"] = json!(true);
    let (status, events) = stream_events(&weir, &streamed).await;
    assert_eq!(status, 200);
    let chunks: Vec<Value> =
        events.iter().filter(|e| *e != "[DONE]").map(|e| serde_json::from_str(e).unwrap()).collect();
    let call = chunks.iter().find_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["name"].as_str());
    assert_eq!(call, Some("get_weather"), "{events:?}");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "tool_calls"), "{events:?}");
}

fn result_id(sent: &Value) -> &str {
    sent["contents"][2]["parts"][0]["functionResponse"]["id"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn gemini_images_go_inline_and_web_urls_are_refused_naming_the_field() {
    let g = MockGemini::start().await;
    let weir = start(&g).await;
    let image = |url: &str| {
        json!({"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is it?"},
            {"type": "image_url", "image_url": {"url": url}}
        ]}]})
    };
    let reply = post(&weir.url("/v1/chat/completions"), &image("data:image/png;base64,iVBORw0KGgo=")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let part = &g.posts()[0].body["contents"][0]["parts"][1];
    assert_eq!(part, &json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}));

    let reply = post(&weir.url("/v1/chat/completions"), &image("https://example.com/cat.png")).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.error_param().as_deref(), Some("messages[0].content[1]"));
    let reply = post(
        &weir.url("/v1/chat/completions"),
        &json!({"model": "gemini-2.0-flash", "n": 3,
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!((reply.status, reply.error_param().as_deref()), (400, Some("n")), "{}", reply.text);
    assert_eq!(g.posts().len(), 1, "refused requests never reach Gemini");
}

#[tokio::test]
async fn gemini_embeddings_use_batch_embed_contents_and_answer_in_openais_shape() {
    let g = MockGemini::start().await;
    let weir = start(&g).await;
    let body = json!({"model": "text-embedding-004", "input": ["alpha", "beta"], "dimensions": 4});
    let reply = post(&weir.url("/v1/embeddings"), &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let v = reply.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["object"], "embedding");
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["data"][1]["embedding"], json!([1.0, 1.25, 1.5, 1.75]));
    let seen = &g.posts()[0];
    assert_eq!(seen.path, "/v1beta/models/text-embedding-004:batchEmbedContents");
    let requests = seen.body["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0]["model"], "models/text-embedding-004");
    assert_eq!(requests[1]["content"]["parts"][0]["text"], "beta");
    assert_eq!(requests[1]["outputDimensionality"], 4);

    let reply = post(&weir.url("/v1/embeddings"), &json!({"model": "text-embedding-004", "input": [[1, 2]]})).await;
    assert_eq!((reply.status, reply.error_param().as_deref()), (400, Some("input")), "{}", reply.text);
}

#[tokio::test]
async fn gemini_errors_are_mapped_with_status_and_never_relay_the_key() {
    let g = MockGemini::start().await;
    let weir = start(&g).await;
    let url = weir.url("/v1/chat/completions");

    let reply = post(&url, &chat("err429", "x")).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (429, "rate_limit_exceeded"), "{}", reply.text);
    assert!(reply.error_message().contains("RESOURCE_EXHAUSTED"), "{}", reply.text);
    assert_eq!(reply.header("retry-after"), Some("20"), "Google's RetryInfo becomes Retry-After");

    let reply = post(&url, &chat("err400", "x")).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(reply.error_message().contains("INVALID_ARGUMENT: Invalid JSON payload"), "{}", reply.text);

    let reply = post(&url, &chat("err403", "x")).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (502, "upstream_auth_failed"), "{}", reply.text);
    assert!(!reply.text.contains(KEY), "{}", reply.text);

    let reply = post(&url, &chat("blocked", "x")).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(reply.error_message().contains("blocked the prompt"), "{}", reply.text);

    let reply = post(&url, &chat("echokey", "x")).await;
    assert_eq!(reply.status, 200);
    assert!(!reply.text.contains(KEY), "an answer quoting the key is scrubbed: {}", reply.text);
    let mut body = chat("echokey", "x");
    body["stream"] = json!(true);
    let (_, events) = stream_events(&weir, &body).await;
    assert!(!events.concat().contains(KEY), "{events:?}");
    assert!(!weir.logs().contains(KEY), "the key is in the logs");
}

#[tokio::test]
async fn a_cut_gemini_stream_ends_with_an_error_event() {
    let g = MockGemini::start().await;
    let weir = start(&g).await;
    let mut body = chat("cut", "one two three");
    body["stream"] = json!(true);
    let (status, events) = stream_events(&weir, &body).await;
    assert_eq!(status, 200);
    assert!(events.iter().any(|e| e.contains("echo: ")), "what came is relayed: {events:?}");
    assert_ne!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_invalid_response", "{last}");
    assert!(last["error"]["message"].as_str().unwrap().contains("ended the stream early"), "{last}");
}

#[tokio::test]
async fn gemini_tokens_are_counted_and_its_models_discovered() {
    let g = MockGemini::start().await;
    let weir = Weir::start(&g.provider_toml("gem", KEY, "models = [\"gemini-2.0-flash\"]")).await;
    assert_eq!(post(&weir.url("/v1/chat/completions"), &chat("gemini-2.0-flash", "hi")).await.status, 200);
    let mut body = chat("gemini-2.0-flash", "hi there");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (status, _) = stream_events(&weir, &body).await;
    assert_eq!(status, 200);

    let m = weir.metrics().await;
    let tokens = |kind| metric(&m, "weir_tokens_total", &[("provider", "gem"), ("kind", kind)]);
    let (p, c, cached) = USAGE;
    assert_eq!(
        (tokens("prompt"), tokens("completion"), tokens("cached")),
        (2.0 * p as f64, 2.0 * c as f64, 2.0 * cached as f64),
        "{m}"
    );

    // Discovery lists Gemini's models without their `models/` prefix (polled, bounded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = Reply::read(client().get(weir.url("/v1/models")).send().await.unwrap()).await;
        if reply.text.contains("text-embedding-004") {
            assert!(!reply.text.contains("models/"), "{}", reply.text);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never discovered: {}", reply.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = g.seen().into_iter().find(|s| s.method == "GET").expect("a model listing");
    assert_eq!(listed.path, "/v1beta/models");
    assert_eq!(listed.api_key.as_deref(), Some(KEY));
}

#[test]
fn weir_check_refuses_a_gemini_provider_without_keys() {
    let config = "[[providers]]\nname = \"gem\"\nkind = \"gemini\"\nmodels = [\"gemini-2.0-flash\"]\n";
    let out = weir_check(config, &[]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("providers[0].keys"), "{text}");

    let good = format!("{config}keys = [{{ value = \"${{GEMINI_E2E_KEY}}\" }}]\n");
    let out = weir_check(&good, &[("GEMINI_E2E_KEY", "AIzaCHECK-0123456789")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("AIzaCHECK"), "{stdout}");
}
