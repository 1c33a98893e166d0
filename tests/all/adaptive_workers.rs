//! Adaptive workers (`max_workers`): a pool whose line fills grows its workers, requests then
//! run side by side; once idle it shrinks back to `min_workers`. Visible in `/ready` and the
//! metrics.

use std::time::{Duration, Instant};

use crate::support::{MockUpstream, Weir, chat, metric, post};

#[tokio::test]
async fn a_crowded_pool_grows_its_workers_and_shrinks_back_when_idle() {
    let up = MockUpstream::start().await;
    let pool = "workers = 1\nmin_workers = 1\nmax_workers = 8\nqueue = 100\nqueue_timeout = \"10s\"\n\
                scale_up_queue_fill = 0.01\nscale_cooldown = \"200ms\"";
    let weir = Weir::start(&up.provider_toml("up", "discover_models = false", pool)).await;
    let (_, ready) = weir.ready().await;
    assert_eq!(ready["providers"]["up"]["workers"], 1, "{ready}");

    let started = Instant::now();
    let url = weir.url("/v1/chat/completions");
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move { post(&url, &chat("up/m;latency=400", &format!("r{i}"))).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().status, 200);
    }
    let took = started.elapsed();
    // One worker would take 8 x 400ms.
    assert!(took < Duration::from_millis(2400), "8 requests took {took:?}");
    let m = weir.metrics().await;
    assert!(metric(&m, "weir_pool_scaled_total", &[("provider", "up"), ("direction", "up")]) >= 2.0, "{m}");

    // Idle: back to min_workers, a step per cool-down.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, ready) = weir.ready().await;
        if ready["providers"]["up"]["workers"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "never shrank back: {ready}\n{}", weir.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = weir.metrics().await;
    assert_eq!(metric(&m, "weir_pool_workers", &[("provider", "up")]), 1.0, "{m}");
    assert!(metric(&m, "weir_pool_scaled_total", &[("provider", "up"), ("direction", "down")]) >= 1.0);
    assert_eq!(post(&url, &chat("up/m", "after")).await.status, 200, "the pool still serves");
}

#[tokio::test]
async fn a_pool_without_max_workers_keeps_its_workers() {
    let up = MockUpstream::start().await;
    let weir =
        Weir::start(&up.provider_toml("up", "discover_models = false", "workers = 1\nqueue_timeout = \"10s\"")).await;
    let url = weir.url("/v1/chat/completions");
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move { post(&url, &chat("up/m;latency=300", &format!("r{i}"))).await })
        })
        .collect();
    let started = Instant::now();
    for t in tasks {
        assert_eq!(t.await.unwrap().status, 200);
    }
    assert!(started.elapsed() >= Duration::from_millis(850), "one at a time: {:?}", started.elapsed());
    let (_, ready) = weir.ready().await;
    assert_eq!(ready["providers"]["up"]["workers"], 1, "{ready}");
}
