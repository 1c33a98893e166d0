//! A client that goes away cancels its work: a queued request never reaches the upstream, an
//! in-flight call is closed, a stream stops being read from the upstream, and a plugin call it
//! interrupts costs no plugin instance.

use std::time::Duration;

use serde_json::json;

use crate::support::plugins::{plugin_toml, runtime_toml};
use crate::support::{MockUpstream, Outcome, SseReader, Weir, chat, client, metric, post};

#[tokio::test]
async fn disconnect_while_queued_never_reaches_the_upstream() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&up.provider_toml("up", "", "workers = 1\nqueue = 4\nqueue_timeout = \"20s\"")).await;
    let url = weir.url("/v1/chat/completions");

    let first = tokio::spawn({
        let url = url.clone();
        async move { post(&url, &chat("up/m;hold", "q0")).await }
    });
    up.wait_until("q0 in flight", |s| s.iter().any(|r| r.prompt() == "q0")).await;
    let leaver = tokio::spawn({
        let url = url.clone();
        async move { post(&url, &chat("up/m;hold", "q1")).await }
    });
    weir.wait_queue_depth("up", 1).await;
    leaver.abort(); // drops the request future: the client closes its connection
    assert!(leaver.await.unwrap_err().is_cancelled());
    // Let weir read the close before a worker is free to pick the job (no timing is asserted).
    tokio::time::sleep(Duration::from_millis(300)).await;

    up.release();
    assert_eq!(first.await.unwrap().status, 200);
    // FIFO: once q2 (queued after q1) is answered, the worker has passed q1.
    assert_eq!(post(&url, &chat("up/m", "q2")).await.status, 200);
    let prompts: Vec<String> = up.chats().iter().map(|s| s.prompt()).collect();
    assert_eq!(prompts, ["q0", "q2"], "the abandoned request reached the upstream");
    assert_eq!(metric(&weir.metrics().await, "weir_pool_cancelled_total", &[("provider", "up")]), 1.0);
}

#[tokio::test]
async fn disconnect_while_in_flight_closes_the_upstream_call() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&up.provider_toml("up", "", "workers = 1")).await;
    let url = weir.url("/v1/chat/completions");

    let leaver = tokio::spawn(async move { post(&url, &chat("up/m;hold", "gone")).await });
    up.wait_until("request in flight", |s| s.iter().any(|r| r.prompt() == "gone")).await;
    leaver.abort();

    up.wait_until("upstream call cancelled", |s| s.iter().any(|r| r.outcome == Outcome::Cancelled)).await;
    up.release();
    let m = weir.metrics().await;
    assert_eq!(metric(&m, "weir_pool_cancelled_total", &[("provider", "up")]), 1.0);
    // The worker is free again.
    assert_eq!(post(&weir.url("/v1/chat/completions"), &chat("up/m", "next")).await.status, 200);
}

#[tokio::test]
async fn disconnect_mid_stream_stops_the_upstream_read() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&up.provider_toml("up", "", "")).await;
    let mut body = chat("up/m;chunks=500;chunk_delay=20", "x");
    body["stream"] = json!(true);

    let resp = client().post(weir.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    let mut events = SseReader::new(resp);
    for _ in 0..3 {
        assert!(events.next().await.is_some());
    }
    drop(events);

    up.wait_until("stream cancelled", |s| s.iter().any(|r| r.outcome == Outcome::Cancelled)).await;
    let sent = up.chats()[0].chunks_sent;
    assert!(sent < 500, "the upstream streamed everything ({sent} chunks)");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(up.chats()[0].chunks_sent, sent, "the upstream kept streaming after the cancel");
    weir.wait_for_log("status=499").await;
}

#[tokio::test]
async fn disconnect_during_a_plugin_call_costs_no_plugin_instance() {
    let up = MockUpstream::start().await;
    // A plugin that spins on requests carrying `x-misbehave`, with a deadline far beyond the
    // test: only the client leaving ends those calls.
    let plugin = plugin_toml(
        "spin",
        "misbehave",
        "instances = 2\ntimeout = \"20s\"\nfuel = 100000000000\n\
         config = { mode = \"loop\", trigger_header = \"x-misbehave\" }",
    );
    let config = up.provider_toml("up", r#"models = ["gpt-up"]"#, "") + &plugin + &runtime_toml();
    let weir = Weir::start(&config).await;
    let url = weir.url("/v1/chat/completions");

    // Three clients give up mid-call, more than the plugin has instances.
    for i in 0..3 {
        let sent = client()
            .post(&url)
            .header("x-misbehave", "1")
            .timeout(Duration::from_millis(300))
            .json(&chat("gpt-up", &format!("gone {i}")))
            .send()
            .await;
        assert!(sent.unwrap_err().is_timeout());
    }
    // Each cancelled call's instance is replaced: a normal request is served at once rather
    // than waiting out the plugin's 20 s timeout for an instance.
    let started = std::time::Instant::now();
    let reply = post(&url, &chat("gpt-up", "still served")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(started.elapsed() < Duration::from_secs(5), "waited {:?} for a plugin instance", started.elapsed());
    // Each of the three was replaced (the last one as soon as weir has read its client's close).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = weir.metrics().await;
        let labels = [("plugin", "spin"), ("reason", "cancelled")];
        let cancelled = metric(&text, "weir_plugin_instances_replaced_total", &labels);
        if cancelled == 3.0 {
            break;
        }
        assert!(cancelled < 3.0 && std::time::Instant::now() < deadline, "cancelled = {cancelled}:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
