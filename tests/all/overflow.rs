//! Back-pressure: each overflow policy under a bounded flood against a held (slow) upstream,
//! and pool isolation between providers. The upstream `hold`s requests until released, so the
//! pool's state at each step is known exactly instead of guessed from timings.

use tokio::task::JoinHandle;

use crate::support::{MockUpstream, Reply, Weir, chat, metric, post};

/// Sends one chat request tagged `tag` in the background.
fn send(weir: &Weir, model: &str, tag: &str) -> JoinHandle<Reply> {
    let (url, body) = (weir.url("/v1/chat/completions"), chat(model, tag));
    tokio::spawn(async move { post(&url, &body).await })
}

async fn join(handles: Vec<JoinHandle<Reply>>) -> Vec<Reply> {
    futures_util::future::join_all(handles).await.into_iter().map(Result::unwrap).collect()
}

fn assert_ok_echo(replies: &[Reply], tags: &[&str]) {
    for (r, tag) in replies.iter().zip(tags) {
        assert_eq!(r.status, 200, "{tag}: {}", r.text);
        assert_eq!(r.json()["choices"][0]["message"]["content"], *tag);
    }
}

#[tokio::test]
async fn reject_answers_429_with_retry_after_once_the_queue_is_full() {
    let up = MockUpstream::start().await;
    let pool = "workers = 2\nqueue = 3\noverflow = \"reject\"\nqueue_timeout = \"10s\"";
    let weir = Weir::start(&up.provider_toml("up", "", pool)).await;

    let mut admitted: Vec<_> = ["r0", "r1"].iter().map(|t| send(&weir, "up/m;hold", t)).collect();
    up.wait_until("two requests in flight", |s| s.len() >= 3).await; // + the model listing
    admitted.extend(["r2", "r3", "r4"].iter().map(|t| send(&weir, "up/m;hold", t)));
    weir.wait_queue_depth("up", 3).await;

    // Workers busy and queue full: the flood is refused at once, while the upstream still holds.
    let flood: Vec<_> = (5..12).map(|i| send(&weir, "up/m;hold", &format!("r{i}"))).collect();
    let rejected = join(flood).await;
    for r in &rejected {
        assert_eq!(r.status, 429, "{}", r.text);
        assert_eq!(r.error_code(), "queue_full");
        assert_eq!(r.json()["error"]["type"], "rate_limit_error");
        let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
        assert!(retry >= 1);
    }
    up.release();
    assert_ok_echo(&join(admitted).await, &["r0", "r1", "r2", "r3", "r4"]);

    let mut prompts: Vec<String> = up.chats().iter().map(|s| s.prompt()).collect();
    prompts.sort();
    assert_eq!(prompts, ["r0", "r1", "r2", "r3", "r4"], "rejected requests must never reach the upstream");
    let m = weir.metrics().await;
    assert_eq!(metric(&m, "weir_pool_rejected_total", &[("provider", "up")]), 7.0);
    assert_eq!(
        metric(&m, "weir_requests_total", &[("provider", "up"), ("outcome", "rejected"), ("status", "429")]),
        7.0
    );
    assert_eq!(metric(&m, "weir_requests_total", &[("provider", "up"), ("outcome", "ok")]), 5.0);
}

#[tokio::test]
async fn block_waits_for_space_then_answers_503_queue_timeout() {
    let up = MockUpstream::start().await;
    let pool = "workers = 1\nqueue = 2\noverflow = \"block\"\nqueue_timeout = \"1s\"";
    let weir = Weir::start(&up.provider_toml("up", "", pool)).await;

    // Blocking instead of refusing: 5 quick requests through 1 worker and 2 queue slots all succeed.
    let burst: Vec<_> = (0..5).map(|i| send(&weir, "up/m;latency=50", &format!("b{i}"))).collect();
    assert_ok_echo(&join(burst).await, &["b0", "b1", "b2", "b3", "b4"]);

    // Held upstream: one in flight, two queued, four blocked for space; all but the first time out.
    let first = send(&weir, "up/m;hold", "h0");
    up.wait_until("h0 in flight", |s| s.iter().any(|r| r.prompt() == "h0")).await;
    let mut waiting: Vec<_> = ["h1", "h2"].iter().map(|t| send(&weir, "up/m;hold", t)).collect();
    weir.wait_queue_depth("up", 2).await;
    waiting.extend(["h3", "h4", "h5", "h6"].iter().map(|t| send(&weir, "up/m;hold", t)));
    let timed_out = join(waiting).await;
    for r in &timed_out {
        assert_eq!(r.status, 503, "{}", r.text);
        assert_eq!(r.error_code(), "queue_timeout");
        assert!(r.header("retry-after").is_some());
    }
    up.release();
    assert_ok_echo(&[first.await.unwrap()], &["h0"]);

    let held: Vec<String> = up.chats().iter().map(|s| s.prompt()).filter(|p| p.starts_with('h')).collect();
    assert_eq!(held, ["h0"], "timed-out requests must never reach the upstream");
    let m = weir.metrics().await;
    assert_eq!(metric(&m, "weir_pool_queue_timeouts_total", &[("provider", "up")]), 6.0);
    assert_eq!(metric(&m, "weir_requests_total", &[("provider", "up"), ("outcome", "ok")]), 6.0);
}

#[tokio::test]
async fn drop_oldest_evicts_the_oldest_waiting_request_with_503() {
    let up = MockUpstream::start().await;
    let pool = "workers = 1\nqueue = 2\noverflow = \"drop-oldest\"\nqueue_timeout = \"10s\"";
    let weir = Weir::start(&up.provider_toml("up", "", pool)).await;

    let d0 = send(&weir, "up/m;hold", "d0");
    up.wait_until("d0 in flight", |s| s.iter().any(|r| r.prompt() == "d0")).await;
    let d1 = send(&weir, "up/m;hold", "d1");
    weir.wait_queue_depth("up", 1).await;
    let d2 = send(&weir, "up/m;hold", "d2");
    weir.wait_queue_depth("up", 2).await;

    // Each newcomer evicts the oldest waiter: d3 evicts d1, d4 evicts d2.
    let d3 = send(&weir, "up/m;hold", "d3");
    let evicted1 = d1.await.unwrap();
    let d4 = send(&weir, "up/m;hold", "d4");
    let evicted2 = d2.await.unwrap();
    for r in [&evicted1, &evicted2] {
        assert_eq!(r.status, 503, "{}", r.text);
        assert_eq!(r.error_code(), "dropped_from_queue");
    }
    up.release();
    assert_ok_echo(&join(vec![d0, d3, d4]).await, &["d0", "d3", "d4"]);

    let prompts: Vec<String> = up.chats().iter().map(|s| s.prompt()).collect();
    assert_eq!(prompts, ["d0", "d3", "d4"], "evicted requests must never reach the upstream; order is FIFO");
    let m = weir.metrics().await;
    assert_eq!(metric(&m, "weir_pool_dropped_total", &[("provider", "up")]), 2.0);
    assert_eq!(
        metric(&m, "weir_requests_total", &[("provider", "up"), ("outcome", "dropped"), ("status", "503")]),
        2.0
    );
}

#[tokio::test]
async fn a_slow_provider_does_not_slow_another_provider() {
    let slow = MockUpstream::start().await;
    let fast = MockUpstream::start().await;
    let config = format!(
        "{}{}",
        slow.provider_toml("slow", "", "workers = 1\nqueue = 4\nqueue_timeout = \"20s\""),
        fast.provider_toml("fast", "", "workers = 2\nqueue = 4"),
    );
    let weir = Weir::start(&config).await;

    // Fill the slow provider completely: one held in flight, four queued.
    let stuck: Vec<_> = (0..5).map(|i| send(&weir, "slow/m;hold", &format!("s{i}"))).collect();
    weir.wait_queue_depth("slow", 4).await;

    for round in 0..3 {
        let tags: Vec<String> = (0..4).map(|i| format!("f{round}-{i}")).collect();
        let replies = join(tags.iter().map(|t| send(&weir, "fast/m", t)).collect()).await;
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        assert_ok_echo(&replies, &tags);
    }
    assert!(stuck.iter().all(|h| !h.is_finished()), "slow requests finished before release");
    assert_eq!(fast.chats().len(), 12);

    slow.release();
    assert_ok_echo(&join(stuck).await, &["s0", "s1", "s2", "s3", "s4"]);
}
