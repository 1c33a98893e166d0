//! The happy path: chat (whole and streamed), embeddings, model listing and routing.

use serde_json::json;

use crate::support::{MockUpstream, Outcome, Reply, SseReader, Weir, chat, client, post};

#[tokio::test]
async fn non_stream_chat_is_relayed_with_overhead_header() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&up.provider_toml("up", r#"models = ["gpt-up"]"#, "")).await;

    let reply = post(&weir.url("/v1/chat/completions"), &chat("gpt-up", "hello there")).await;

    assert_eq!(reply.status, 200, "{}", reply.text);
    let v = reply.json();
    assert_eq!(v["choices"][0]["message"]["content"], "hello there");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(reply.header("x-weir-provider"), Some("up"));
    assert!(reply.header("x-request-id").is_some_and(|id| !id.is_empty()));
    let overhead: u64 = reply.header("x-weir-overhead-us").expect("x-weir-overhead-us").parse().unwrap();
    assert!(overhead < 20_000_000, "overhead {overhead}us is not plausible");
    let seen = up.chats();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].model(), "gpt-up");
    assert_eq!(seen[0].prompt(), "hello there");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer sk-test-key"));
}

#[tokio::test]
async fn stream_is_relayed_chunk_by_chunk() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&up.provider_toml("up", "", "")).await;
    let mut body = chat("up/m;chunks=4;hold_after=2", "ignored");
    body["stream"] = json!(true);

    let resp = client().post(weir.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    assert!(resp.headers().contains_key("x-weir-overhead-us"));
    let mut events = SseReader::new(resp);

    // The upstream holds after two chunks: both must reach the client before it goes on.
    let first = events.next().await.unwrap();
    let second = events.next().await.unwrap();
    let seen = &up.chats()[0];
    assert_eq!((seen.outcome, seen.chunks_sent), (Outcome::InProgress, 2), "upstream moved on before release");
    up.release();
    let mut all = vec![first, second];
    all.extend(events.rest().await);

    assert_eq!(all.last().map(String::as_str), Some("[DONE]"));
    let text: String = all[..all.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<serde_json::Value>(e).unwrap())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "c0 c1 c2 c3 ");
    assert_eq!(up.chats()[0].outcome, Outcome::Completed);
}

#[tokio::test]
async fn embeddings_are_relayed() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&up.provider_toml("up", r#"models = ["emb-up"]"#, "")).await;

    let reply = post(&weir.url("/v1/embeddings"), &json!({"model": "emb-up", "input": ["a", "b"]})).await;

    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["data"].as_array().unwrap().len(), 2);
    assert!(reply.header("x-weir-overhead-us").is_some());
    let seen = up.seen_on("/v1/embeddings");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body["input"], json!(["a", "b"]));
}

#[tokio::test]
async fn models_are_aggregated_and_a_failing_provider_does_not_fail_the_list() {
    let up = MockUpstream::start().await;
    let down = MockUpstream::failing(500).await;
    let config = format!(
        "{}{}{}",
        up.provider_toml("up", r#"models = ["gpt-up"]"#, ""),
        down.provider_toml("down", r#"models = ["down-conf"]"#, ""),
        "[[providers]]\nname = \"mock\"\nkind = \"mock\"\nmodels = [\"mock-1\"]\naliases = { echo = \"mock-1\" }\n",
    );
    let weir = Weir::start(&config).await;

    // Discovery runs in the background at startup; wait (bounded) for the upstream's list.
    let mut ids = Vec::new();
    for _ in 0..100 {
        let reply = Reply::read(client().get(weir.url("/v1/models")).send().await.unwrap()).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let v = reply.json();
        assert_eq!(v["object"], "list");
        ids = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
        if ids.iter().any(|m| m == "up-model-a") {
            let owner = v["data"].as_array().unwrap().iter().find(|m| m["id"] == "up-model-a").unwrap();
            assert_eq!(owner["owned_by"], "up");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for want in ["gpt-up", "down-conf", "mock-1", "echo", "up-model-a", "up-model-b"] {
        assert!(ids.iter().any(|m| m == want), "{want} missing from {ids:?}");
    }
    assert!(!down.seen_on("/v1/models").is_empty(), "the failing provider was never asked for its models");
    weir.wait_for_log("model discovery failed").await;

    let one = Reply::read(client().get(weir.url("/v1/models/gpt-up")).send().await.unwrap()).await;
    assert_eq!((one.status, one.json()["owned_by"].as_str()), (200, Some("up")));
    let none = Reply::read(client().get(weir.url("/v1/models/nope")).send().await.unwrap()).await;
    assert_eq!((none.status, none.error_code().as_str()), (404, "model_not_found"));
}

#[tokio::test]
async fn routing_explicit_bare_alias_discovered_and_unknown() {
    let up = MockUpstream::start().await;
    let config = format!(
        "{}{}",
        up.provider_toml("up", "models = [\"gpt-up\"]\naliases = { fast = \"gpt-up\" }", ""),
        "[[providers]]\nname = \"mock\"\nkind = \"mock\"\nmodels = [\"mock-1\"]\n",
    );
    let weir = Weir::start(&config).await;
    let url = weir.url("/v1/chat/completions");
    up.wait_until("model discovery", |s| s.iter().any(|r| r.path == "/v1/models")).await;

    // (requested model, provider that must answer, model the upstream must see)
    let cases = [
        ("up/anything-else", "up", Some("anything-else")),
        ("gpt-up", "up", Some("gpt-up")),
        ("fast", "up", Some("gpt-up")),
        ("mock-1", "mock", None),
        ("mock/mock-1", "mock", None),
    ];
    for (model, provider, upstream_model) in cases {
        let before = up.chats().len();
        let reply = post(&url, &chat(model, "route me")).await;
        assert_eq!(reply.status, 200, "{model}: {}", reply.text);
        assert_eq!(reply.header("x-weir-provider"), Some(provider), "{model}");
        assert_eq!(reply.json()["choices"][0]["message"]["content"], "route me");
        let chats = up.chats();
        match upstream_model {
            Some(m) => assert_eq!((chats.len(), chats.last().unwrap().model()), (before + 1, m), "{model}"),
            None => assert_eq!(chats.len(), before, "{model} must not reach the upstream"),
        }
    }

    // A model only the upstream's /v1/models listed routes there once discovered.
    let mut reply = post(&url, &chat("up-model-b", "x")).await;
    for _ in 0..100 {
        if reply.status != 404 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        reply = post(&url, &chat("up-model-b", "x")).await;
    }
    assert_eq!((reply.status, reply.header("x-weir-provider")), (200, Some("up")), "{}", reply.text);
    assert_eq!(up.chats().last().unwrap().model(), "up-model-b");

    for unknown in ["no-such-model", "nobody/m", "up/"] {
        let reply = post(&url, &chat(unknown, "x")).await;
        assert_eq!(reply.status, 404, "{unknown}: {}", reply.text);
        assert_eq!(reply.error_code(), "model_not_found");
        assert_eq!(reply.error_param().as_deref(), Some("model"));
        assert!(reply.error_message().contains(unknown), "{}", reply.text);
    }
}

#[tokio::test]
async fn unedited_bodies_go_upstream_as_sent_and_the_others_are_reserialised() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&up.provider_toml("up", "models = [\"gpt-up\"]\naliases = { fast = \"gpt-up\" }", "")).await;
    let url = weir.url("/v1/chat/completions");
    let send =
        |body: &'static str| client().post(url.as_str()).header("content-type", "application/json").body(body).send();
    // Valid but unusual formatting (spacing, key order, escapes, a trailing zero): forwarded
    // byte for byte, since nothing edited the request.
    let odd = "{ \"messages\" : [ {\"content\":\"caf\\u00e9 \\\"q\\\"\", \"role\":\"user\"} ],\n \"model\":\"gpt-up\", \"temperature\": 0.50 }";
    // A repeated key: Weir (routing, validation, plugins) reads the last copy; the provider
    // must read the same, so the body is re-serialised with one copy.
    let repeated = r#"{"model":"gpt-up","messages":[{"role":"user","content":"first","content":"second"}]}"#;
    // An alias: the provider gets its own model name.
    let alias = r#"{"model":"fast","messages":[{"role":"user","content":"via alias"}]}"#;
    for body in [odd, repeated, alias] {
        let resp = send(body).await.unwrap();
        assert_eq!(resp.status(), 200, "{body}: {}", resp.text().await.unwrap());
    }
    let seen = up.chats();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].raw, odd);
    assert_eq!(seen[0].prompt(), "caf\u{e9} \"q\"");
    assert_eq!(seen[1].raw.matches("\"content\"").count(), 1, "{}", seen[1].raw);
    assert_eq!(seen[1].prompt(), "second");
    assert_ne!(seen[2].raw, alias);
    assert_eq!(seen[2].model(), "gpt-up");
    assert_eq!(seen[2].prompt(), "via alias");
}
