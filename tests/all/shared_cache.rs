//! State shared through Redis: two real Weir processes and one real `redis-server` on
//! 127.0.0.1. An answer cached through one instance is a hit on the other; with Redis down or
//! not answering, requests are still answered (a miss) within the bound, and hits across
//! instances resume once Redis is back. A plugin's kv is one store across instances.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::plugins::{plugin_toml, runtime_toml};
use crate::support::redis::RedisServer;
use crate::support::{MockUpstream, Reply, Weir, chat, metric, post};

/// Longest one Redis round trip may take (`[state] redis_timeout`).
const REDIS_TIMEOUT_MS: u64 = 200;

fn config(up: &MockUpstream, redis_url: &str) -> String {
    format!(
        "[cache]\nenabled = true\n[state]\nredis_url = \"{redis_url}\"\nredis_timeout = \"{REDIS_TIMEOUT_MS}ms\"\n{}",
        up.provider_toml("up", "", "")
    )
}

async fn ask(weir: &Weir, text: &str) -> Reply {
    post(&weir.url("/v1/chat/completions"), &chat("up/m", text)).await
}

/// Waits (at most 5 s) until Redis holds `n` keys: the cache's write is not awaited by the client.
async fn wait_keys(redis: &RedisServer, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.dbsize().await < n {
        assert!(Instant::now() < deadline, "Redis never held {n} keys");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_answer_cached_through_one_instance_is_a_hit_on_another() {
    let redis = RedisServer::start().await;
    let up = MockUpstream::start().await;
    let a = Weir::start(&config(&up, &redis.url())).await;
    let b = Weir::start(&config(&up, &redis.url())).await;

    let first = ask(&a, "shared question").await;
    assert_eq!((first.status, first.header("x-weir-cache")), (200, Some("miss")), "{}", first.text);
    wait_keys(&redis, 1).await;
    let other = ask(&b, "shared question").await;
    assert_eq!(other.status, 200, "{}", other.text);
    assert_eq!(other.header("x-weir-cache"), Some("hit"));
    assert_eq!(other.header("x-weir-provider"), Some("up"));
    assert_eq!(other.json(), first.json());
    assert_eq!(up.chats().len(), 1, "one upstream call for both instances");

    // The other instance replays it as a stream too.
    let mut body = chat("up/m", "shared question");
    body["stream"] = json!(true);
    let replay = post(&b.url("/v1/chat/completions"), &body).await;
    assert_eq!(replay.header("x-weir-cache"), Some("hit"));
    assert!(replay.text.ends_with("data: [DONE]\n\n"), "{}", replay.text);
    assert_eq!(up.chats().len(), 1);
    assert_eq!(metric(&b.metrics().await, "weir_cache_total", &[("result", "hit")]), 2.0);
}

#[tokio::test]
async fn a_redis_that_does_not_answer_costs_at_most_its_bound_and_the_request_is_a_miss() {
    // Accepts connections and never answers: the worst kind of outage.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}/0", silent.local_addr().unwrap());
    let up = MockUpstream::start().await;
    let weir = Weir::start(&config(&up, &url)).await;
    for i in 0..3 {
        let started = Instant::now();
        let r = ask(&weir, &format!("silent {i}")).await;
        let took = started.elapsed();
        assert_eq!((r.status, r.header("x-weir-cache")), (200, Some("miss")), "{}", r.text);
        let overhead_us: u64 = r.header("x-weir-overhead-us").unwrap().parse().unwrap();
        assert!(overhead_us < (REDIS_TIMEOUT_MS + 300) * 1000, "Weir's own time {overhead_us} us");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
    // The in-process tier still answers.
    assert_eq!(ask(&weir, "silent 0").await.header("x-weir-cache"), Some("hit"));
    drop(silent);
}

#[tokio::test]
async fn with_redis_killed_requests_are_misses_and_hits_resume_after_a_restart() {
    let mut redis = RedisServer::start().await;
    let up = MockUpstream::start().await;
    let a = Weir::start(&config(&up, &redis.url())).await;
    let b = Weir::start(&config(&up, &redis.url())).await;
    assert_eq!(ask(&a, "before").await.header("x-weir-cache"), Some("miss"));
    wait_keys(&redis, 1).await;

    redis.kill();
    for weir in [&a, &b] {
        let started = Instant::now();
        let r = ask(weir, "during the outage").await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.header("x-weir-cache"), Some("miss"));
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    }
    let unavailable = metric(&a.metrics().await, "weir_cache_redis_errors_total", &[]);
    assert!(unavailable >= 1.0, "the failures are counted: {unavailable}");

    // Back (empty: nothing was persisted). Within a few seconds an answer cached through one
    // instance is a hit on the other again.
    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    for i in 0.. {
        let text = format!("after the restart {i}");
        assert_eq!(ask(&a, &text).await.status, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
        if ask(&b, &text).await.header("x-weir-cache") == Some("hit") {
            break;
        }
        assert!(Instant::now() < deadline, "no hit across instances after Redis came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Two instances running the `misbehave` plugin in its `count` mode (it answers with
/// `kv.incr("hits")`): with Redis their counts are one sequence.
#[tokio::test]
async fn a_plugins_kv_is_one_store_across_instances() {
    let redis = RedisServer::start().await;
    let up = MockUpstream::start().await;
    let counter = plugin_toml("counter", "misbehave", r#"config = { mode = "count", always = true }"#);
    let cfg = format!(
        "[state]\nredis_url = \"{}\"\nredis_timeout = \"{REDIS_TIMEOUT_MS}ms\"\n{}{}{counter}",
        redis.url(),
        runtime_toml(),
        up.provider_toml("up", "", "")
    );
    let a = Weir::start(&cfg).await;
    let b = Weir::start(&cfg).await;
    let mut counts = Vec::new();
    for weir in [&a, &b, &a, &b] {
        let r = ask(weir, "count me").await;
        assert_eq!(r.status, 200, "{}", r.text);
        counts.push(r.json()["count"].as_i64().unwrap());
    }
    assert_eq!(counts, [1, 2, 3, 4], "one counter for both instances");
    assert_eq!(redis.dbsize().await, 1, "kept in Redis");
}

/// With Redis gone, `fail-open` counts in the instance's own store and `fail-closed` refuses
/// (the plugin's `incr` gets an error, which `misbehave` answers as -1); neither waits long.
#[tokio::test]
async fn a_plugins_kv_without_redis_falls_back_or_refuses_as_configured() {
    let mut redis = RedisServer::start().await;
    let up = MockUpstream::start().await;
    let counter = plugin_toml("counter", "misbehave", r#"config = { mode = "count", always = true }"#);
    let cfg = |mode: &str| {
        format!(
            "[state]\nredis_url = \"{}\"\nredis_timeout = \"{REDIS_TIMEOUT_MS}ms\"\non_unavailable = \"{mode}\"\n{}{}{counter}\n\
             timeout = \"2s\"\n",
            redis.url(),
            runtime_toml(),
            up.provider_toml("up", "", "")
        )
    };
    let open = Weir::start(&cfg("fail-open")).await;
    let closed = Weir::start(&cfg("fail-closed")).await;
    assert_eq!(ask(&open, "x").await.json()["count"], 1);
    redis.kill();
    for (weir, want) in [(&open, 1), (&open, 2), (&closed, -1)] {
        let started = Instant::now();
        let r = ask(weir, "x").await;
        assert_eq!((r.status, r.json()["count"].as_i64()), (200, Some(want)), "{}", r.text);
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    }
    assert!(metric(&open.metrics().await, "weir_plugin_kv_redis_errors_total", &[]) >= 1.0);
}
