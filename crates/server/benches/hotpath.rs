//! Hot-path pieces of one request, without sockets or plugins: model routing, the JSON front
//! door (scan + validate a ~1 KB chat body; parse it into a tree and serialize it, as plugins'
//! edits need), the pool queue alone,
//! and a whole pool hand-off (submit → worker → the built-in mock provider on a one-word
//! prompt, so the provider's own work is small → reply); the secret scrub of an upstream
//! answer and a stream chunk, and the copy of the client headers plugins may see.
//!
//! Run: `cargo bench -p weir --bench hotpath -- --warm-up-time 1 --measurement-time 3`.
#![allow(missing_docs)]

mod common;

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use weir_server::config::Config;
use weir_server::exchange::JsonBody;
use weir_server::format::Endpoint;
use weir_server::policy::{Plan, Policy, Served, Target, attempt};
use weir_server::pool::{Pool, Queue, Reply};
use weir_server::providers::{Provider, ProviderRequest};
use weir_server::routing::Router;

/// A ~1 KB chat completion body, like the load benchmark sends.
fn chat_body() -> Bytes {
    Bytes::from(serde_json::to_vec(&common::bench_chat_body()).unwrap())
}

fn config() -> Config {
    Config::from_toml(
        r#"
        [[providers]]
        name = "openai"
        kind = "mock"
        models = ["gpt-4o", "gpt-4o-mini", "o3", "text-embedding-3-small"]
        aliases = { fast = "gpt-4o-mini", smart = "o3" }
        [[providers]]
        name = "local"
        kind = "mock"
        models = ["llama-3.1-8b", "qwen-2.5-7b"]
        "#,
    )
    .unwrap()
}

fn routing(c: &mut Criterion) {
    let router = Router::new(&config().providers);
    c.bench_function("route_configured_model", |b| b.iter(|| router.route(black_box("llama-3.1-8b")).unwrap()));
    c.bench_function("route_alias", |b| b.iter(|| router.route(black_box("fast")).unwrap()));
    c.bench_function("route_provider_prefix", |b| b.iter(|| router.route(black_box("local/anything")).unwrap()));
    c.bench_function("route_unknown_model_404", |b| b.iter(|| router.route(black_box("nope")).unwrap_err()));
}

fn json_handling(c: &mut Criterion) {
    let body = chat_body();
    assert!((1000..1200).contains(&body.len()), "body is {} bytes", body.len());
    c.bench_function("json_parse_1kb", |b| b.iter(|| weir_server::json::parse_object(black_box(&body)).unwrap()));
    let map = weir_server::json::parse_object(&body).unwrap();
    c.bench_function("json_validate_1kb", |b| {
        b.iter(|| weir_server::api::validate(Endpoint::OPENAI_CHAT, black_box(&map)).unwrap())
    });
    c.bench_function("json_parse_validate_1kb", |b| {
        b.iter(|| {
            let m = weir_server::json::parse_object(black_box(&body)).unwrap();
            weir_server::api::validate(Endpoint::OPENAI_CHAT, &m).unwrap();
            m
        })
    });
    // What the front door does now: one scan, no tree (the body stays bytes).
    c.bench_function("json_read_request_1kb", |b| {
        b.iter(|| {
            weir_server::api::read_request(
                Endpoint::OPENAI_CHAT,
                black_box(body.clone()),
                weir_server::api::BodyUse::Forward,
            )
            .unwrap()
        })
    });
    c.bench_function("json_serialize_1kb", |b| b.iter(|| serde_json::to_vec(black_box(&map)).unwrap()));
    c.bench_function("json_serde_value_parse_1kb", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)).unwrap())
    });
}

/// One attempt, as the policy makes it.
async fn submit(target: &Target, req: ProviderRequest) -> Result<Reply, weir_server::error::Error> {
    let mut upstream = std::time::Duration::ZERO;
    attempt(target, req, &mut upstream, None).await
}

fn queue_handoff(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Pool admission's fast path: take a free slot, hand it back.
    let q: Queue<u64> = Queue::new((0..64).collect(), 1024);
    c.bench_function("queue_take_release", |b| {
        b.iter(|| {
            let w = q.take().ok().flatten().unwrap();
            q.release(black_box(w))
        })
    });

    let cfg = config();
    let mut provider_cfg = cfg.providers[1].clone();
    provider_cfg.pool.workers = 4;
    let provider = std::sync::Arc::new(Provider::from_config(&provider_cfg, 1).unwrap());
    let pool = rt.block_on(async { Pool::start("local", &[], provider_cfg.pool.clone()) });
    let target = Target::new(pool, provider.clone(), &provider_cfg);
    // A one-word prompt: the mock echoes it word by word, so a long prompt would measure the
    // mock (about 45 us for 1 KB), not the hand-off.
    let tiny = json!({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "hi"}]});
    let map = tiny.as_object().unwrap().clone();
    c.bench_function("pool_submit_mock_reply", |b| {
        b.iter(|| {
            let req = ProviderRequest {
                endpoint: Endpoint::OPENAI_CHAT,
                model: "llama-3.1-8b".into(),
                body: JsonBody::from_map(map.clone()),
                stream: false,
                secrets: Default::default(),
                affinity: weir_server::affinity::Affinity::NONE,
                trace: Default::default(),
            };
            rt.block_on(submit(&target, req)).ok().unwrap()
        })
    });
    // The same through the policy stage with its default retries (the request is kept to
    // resend: one copy), budget deposit and attempt accounting: what the happy path pays.
    let policy = Policy::new(&cfg);
    let targets = [target.clone()];
    c.bench_function("policy_execute_mock_reply", |b| {
        b.iter(|| {
            let req = ProviderRequest {
                endpoint: Endpoint::OPENAI_CHAT,
                model: "llama-3.1-8b".into(),
                body: JsonBody::from_map(map.clone()),
                stream: false,
                secrets: Default::default(),
                affinity: weir_server::affinity::Affinity::NONE,
                trace: Default::default(),
            };
            let mut served = Served::new(0);
            rt.block_on(policy.execute(&targets, &Plan::new(0, &[]), req, &mut served)).ok().unwrap()
        })
    });
    // The same on a two-thread runtime, as in Weir: the call still runs on the submitting task
    // (until 705eb0e a worker task ran it, often on the other thread: 21.5 us here).
    let mt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let pool = mt.block_on(async { Pool::start("local", &[], provider_cfg.pool.clone()) });
    let target = Target::new(pool, provider, &provider_cfg);
    c.bench_function("pool_submit_mock_reply_2_threads", |b| {
        b.iter(|| {
            let req = ProviderRequest {
                endpoint: Endpoint::OPENAI_CHAT,
                model: "llama-3.1-8b".into(),
                body: JsonBody::from_map(map.clone()),
                stream: false,
                secrets: Default::default(),
                affinity: weir_server::affinity::Affinity::NONE,
                trace: Default::default(),
            };
            mt.block_on(submit(&target, req)).ok().unwrap()
        })
    });
}

/// The scan every upstream answer and stream event gets (three secrets, none present: the
/// usual case), and the header copy for plugins under the credential rule.
fn secrets(c: &mut Criterion) {
    let secrets = weir_server::secrets::Secrets::new([
        "sk-proj-Q7hZ2xW9pLm4vR8tKdY3aB6cD1eF0gH",
        "hdr-Jc6wN1bT5yUe8Gs0",
        "Wz4Rt8-qP3mK7nB2",
    ]);
    let answer = Bytes::from(
        serde_json::to_vec(&json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "lorem ipsum dolor sit amet ".repeat(32)},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }))
        .unwrap(),
    );
    let chunk = Bytes::from_static(
        br#"{"id":"chatcmpl-up","object":"chat.completion.chunk","created":0,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"hello "},"finish_reason":null}]}"#,
    );
    c.bench_function("scrub_answer_1kb_clean", |b| b.iter(|| secrets.scrub_bytes(black_box(answer.clone()))));
    c.bench_function("scrub_chunk_clean", |b| b.iter(|| secrets.scrub_bytes(black_box(chunk.clone()))));
    let mut headers = http::HeaderMap::new();
    for (n, v) in [
        ("host", "127.0.0.1:8080"),
        ("user-agent", "OpenAI/Python 1.54.0"),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("authorization", "Bearer sk-x"),
        ("x-stainless-lang", "python"),
        ("content-length", "1100"),
    ] {
        headers.insert(http::HeaderName::from_static(n), http::HeaderValue::from_static(v));
    }
    let rule = weir_server::exchange::HeaderRule::default();
    c.bench_function("client_headers_7", |b| {
        b.iter(|| weir_server::exchange::client_headers(black_box(&headers), &rule))
    });
}

criterion_group!(benches, routing, json_handling, queue_handoff, secrets);
criterion_main!(benches);
