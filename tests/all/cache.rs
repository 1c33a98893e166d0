//! The response cache in one instance: a repeated request is answered without an upstream
//! call (`x-weir-cache: hit`), whatever its field order; `cache-control` opts out; errors are
//! never kept; a whole answer is replayed as a well-formed stream in the OpenAI and Anthropic
//! formats and a streamed answer answers a later whole request; entries expire after `ttl`
//! and `max_entries` bounds them.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{MockUpstream, Reply, Weir, chat, client, metric, post};

fn config(up: &MockUpstream, cache: &str) -> String {
    format!("[cache]\nenabled = true\n{cache}\n{}", up.provider_toml("up", "", ""))
}

async fn post_with(weir: &Weir, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
    let mut req = client().post(weir.url(path)).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Reply::read(req.send().await.unwrap()).await
}

fn streamed(mut body: Value) -> Value {
    body["stream"] = json!(true);
    body
}

/// The `data:` payloads of an OpenAI stream, checking its framing and its `[DONE]` end.
fn openai_events(text: &str) -> Vec<Value> {
    let events: Vec<&str> = text.split_terminator("\n\n").collect();
    assert_eq!(events.last(), Some(&"data: [DONE]"), "{text}");
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap_or_else(|| panic!("{e}"))).unwrap())
        .collect()
}

fn openai_text(events: &[Value]) -> String {
    events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect()
}

#[tokio::test]
async fn a_repeated_request_is_answered_from_the_cache_without_an_upstream_call() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&config(&up, "")).await;
    let body = chat("up/m", "what is a weir");

    let first = post(&weir.url("/v1/chat/completions"), &body).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.header("x-weir-cache"), Some("miss"));
    let second = post(&weir.url("/v1/chat/completions"), &body).await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(second.header("x-weir-cache"), Some("hit"));
    assert_eq!(second.header("x-weir-provider"), Some("up"), "the provider whose answer it is");
    assert_eq!(second.json(), first.json());
    assert_eq!(up.chats().len(), 1, "the hit made no upstream call");

    let m = weir.metrics().await;
    assert_eq!(metric(&m, "weir_cache_total", &[("result", "hit")]), 1.0);
    assert_eq!(metric(&m, "weir_cache_total", &[("result", "miss")]), 1.0);

    // Another question, or another parameter, is another entry.
    let mut warmer = body.clone();
    warmer["temperature"] = json!(1.5);
    assert_eq!(post(&weir.url("/v1/chat/completions"), &warmer).await.header("x-weir-cache"), Some("miss"));
    assert_eq!(up.chats().len(), 2);
}

#[tokio::test]
async fn field_order_and_delivery_fields_do_not_change_the_key() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&config(&up, "")).await;
    let a = r#"{"model":"up/m","temperature":0,"messages":[{"role":"user","content":"order"}]}"#;
    let b = r#"{ "messages" : [ {"content":"order","role":"user"} ], "user":"u-7", "temperature":0, "model":"up/m" }"#;
    let send = |text: &'static str| {
        let req = client().post(weir.url("/v1/chat/completions")).header("content-type", "application/json");
        async move { Reply::read(req.body(text).send().await.unwrap()).await }
    };
    assert_eq!(send(a).await.header("x-weir-cache"), Some("miss"));
    let reordered = send(b).await;
    assert_eq!(reordered.status, 200, "{}", reordered.text);
    assert_eq!(reordered.header("x-weir-cache"), Some("hit"));
    assert_eq!(up.chats().len(), 1);
}

#[tokio::test]
async fn cache_control_no_cache_skips_the_lookup_and_no_store_keeps_nothing() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&config(&up, "")).await;
    let url = "/v1/chat/completions";

    let body = chat("up/m", "fresh please");
    let fresh = post_with(&weir, url, &body, &[("cache-control", "no-cache")]).await;
    assert_eq!(fresh.status, 200);
    assert_eq!(fresh.header("x-weir-cache"), None, "skipped: no verdict");
    let fresh = post_with(&weir, url, &body, &[("cache-control", "no-cache")]).await;
    assert_eq!(fresh.header("x-weir-cache"), None);
    assert_eq!(up.chats().len(), 2, "no-cache always goes upstream");
    // What no-cache fetched was kept.
    assert_eq!(post(&weir.url(url), &body).await.header("x-weir-cache"), Some("hit"));

    let secret = chat("up/m", "do not keep this");
    assert_eq!(post_with(&weir, url, &secret, &[("cache-control", "no-store")]).await.status, 200);
    assert_eq!(post(&weir.url(url), &secret).await.header("x-weir-cache"), Some("miss"), "no-store kept nothing");
    assert_eq!(up.chats().len(), 4);
}

#[tokio::test]
async fn errors_are_never_cached() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&config(&up, "")).await;
    let body = chat("up/m;status=400", "bad");
    for _ in 0..2 {
        let r = post(&weir.url("/v1/chat/completions"), &body).await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert_ne!(r.header("x-weir-cache"), Some("hit"));
    }
    assert_eq!(up.chats().len(), 2, "each error came from upstream");
    // An unknown model is refused before any lookup.
    let r = post(&weir.url("/v1/chat/completions"), &chat("nope/m", "x")).await;
    assert_eq!((r.status, r.header("x-weir-cache")), (404, None));
}

#[tokio::test]
async fn a_cached_answer_is_replayed_as_a_well_formed_openai_stream() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&config(&up, "")).await;
    let body = chat("up/m", "replay me as a stream");
    let whole = post(&weir.url("/v1/chat/completions"), &body).await;
    let text = whole.json()["choices"][0]["message"]["content"].as_str().unwrap().to_owned();

    let mut with_usage = streamed(body.clone());
    with_usage["stream_options"] = json!({"include_usage": true});
    let replay = post(&weir.url("/v1/chat/completions"), &with_usage).await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.header("x-weir-cache"), Some("hit"));
    assert_eq!(replay.header("content-type"), Some("text/event-stream"));
    let events = openai_events(&replay.text);
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(openai_text(&events), text);
    assert!(events.iter().any(|e| e["choices"][0]["finish_reason"] == "stop"), "{events:?}");
    assert!(events.iter().all(|e| e["object"] == "chat.completion.chunk"));
    assert!(events.last().unwrap()["usage"]["total_tokens"].as_u64().unwrap() > 0, "asked-for usage chunk");
    assert_eq!(up.chats().len(), 1);

    // And the other way: a streamed answer, recorded, answers a later whole request.
    let other = chat("up/m", "stream first then whole");
    let first = post(&weir.url("/v1/chat/completions"), &streamed(other.clone())).await;
    assert_eq!(first.header("x-weir-cache"), Some("miss"));
    let streamed_text = openai_text(&openai_events(&first.text));
    let later = post(&weir.url("/v1/chat/completions"), &other).await;
    assert_eq!(later.header("x-weir-cache"), Some("hit"), "{}", later.text);
    assert_eq!(later.json()["choices"][0]["message"]["content"], streamed_text.as_str());
    assert_eq!(later.json()["object"], "chat.completion");
    assert_eq!(up.chats().len(), 2);
}

#[tokio::test]
async fn a_cached_answer_is_replayed_as_a_well_formed_anthropic_stream() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&config(&up, "")).await;
    let body =
        json!({"model": "up/m", "max_tokens": 64, "messages": [{"role": "user", "content": "hi from anthropic"}]});
    let headers = [("anthropic-version", "2023-06-01")];
    let whole = post_with(&weir, "/v1/messages", &body, &headers).await;
    assert_eq!(whole.status, 200, "{}", whole.text);
    assert_eq!(whole.header("x-weir-cache"), Some("miss"));
    let text = whole.json()["content"][0]["text"].as_str().unwrap().to_owned();

    let replay = post_with(&weir, "/v1/messages", &streamed(body), &headers).await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.header("x-weir-cache"), Some("hit"));
    // Each event is `event: <type>` then `data: <json>` whose `type` matches.
    let mut types = Vec::new();
    let mut streamed_text = String::new();
    for event in replay.text.split_terminator("\n\n") {
        let (name, data) = event.split_once('\n').unwrap_or_else(|| panic!("{event}"));
        let name = name.strip_prefix("event: ").unwrap_or_else(|| panic!("{event}"));
        let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data["type"], name);
        if let Some(t) = data["delta"]["text"].as_str() {
            streamed_text.push_str(t);
        }
        types.push(name.to_owned());
    }
    assert_eq!(types.first().map(String::as_str), Some("message_start"), "{types:?}");
    assert_eq!(types.last().map(String::as_str), Some("message_stop"), "{types:?}");
    for t in ["content_block_start", "content_block_delta", "content_block_stop", "message_delta"] {
        assert!(types.iter().any(|x| x == t), "{t} missing: {types:?}");
    }
    assert_eq!(streamed_text, text);
    assert_eq!(up.chats().len(), 1);
}

#[tokio::test]
async fn an_entry_expires_after_its_ttl() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&config(&up, "ttl = \"400ms\"")).await;
    let body = chat("up/m", "short lived");
    assert_eq!(post(&weir.url("/v1/chat/completions"), &body).await.header("x-weir-cache"), Some("miss"));
    assert_eq!(post(&weir.url("/v1/chat/completions"), &body).await.header("x-weir-cache"), Some("hit"));
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(post(&weir.url("/v1/chat/completions"), &body).await.header("x-weir-cache"), Some("miss"));
    assert_eq!(up.chats().len(), 2);
}

#[tokio::test]
async fn max_entries_bounds_the_cache_and_the_least_recent_goes() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&config(&up, "max_entries = 2")).await;
    for q in ["one", "two", "three"] {
        assert_eq!(
            post(&weir.url("/v1/chat/completions"), &chat("up/m", q)).await.header("x-weir-cache"),
            Some("miss")
        );
    }
    assert_eq!(
        post(&weir.url("/v1/chat/completions"), &chat("up/m", "three")).await.header("x-weir-cache"),
        Some("hit")
    );
    assert_eq!(
        post(&weir.url("/v1/chat/completions"), &chat("up/m", "one")).await.header("x-weir-cache"),
        Some("miss"),
        "the oldest was evicted"
    );
    assert_eq!(up.chats().len(), 4);
}

#[tokio::test]
async fn without_cache_config_there_is_no_verdict() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&up.provider_toml("up", "", "")).await;
    let body = chat("up/m", "uncached");
    for _ in 0..2 {
        assert_eq!(post(&weir.url("/v1/chat/completions"), &body).await.header("x-weir-cache"), None);
    }
    assert_eq!(up.chats().len(), 2);
}

#[tokio::test]
async fn with_per_key_each_virtual_key_has_its_own_entries() {
    let up = MockUpstream::start().await;
    let keys = "[[keys]]\nname = \"team-a\"\nvalue = \"sk-weir-team-a-0001\"\n\n\
                [[keys]]\nname = \"team-b\"\nvalue = \"sk-weir-team-b-0002\"\n";
    let weir = Weir::start(&format!("{keys}\n{}", config(&up, "per_key = true"))).await;
    let body = chat("up/m", "shared question");
    let ask = |key: &'static str| {
        let (weir, body) = (&weir, &body);
        async move { post_with(weir, "/v1/chat/completions", body, &[("authorization", key)]).await }
    };

    let a1 = ask("Bearer sk-weir-team-a-0001").await;
    assert_eq!((a1.status, a1.header("x-weir-cache")), (200, Some("miss")), "{}", a1.text);
    let b1 = ask("Bearer sk-weir-team-b-0002").await;
    assert_eq!(b1.header("x-weir-cache"), Some("miss"), "another key does not see team-a's entry");
    let a2 = ask("Bearer sk-weir-team-a-0001").await;
    assert_eq!(a2.header("x-weir-cache"), Some("hit"));
    assert_eq!(up.chats().len(), 2);
}
