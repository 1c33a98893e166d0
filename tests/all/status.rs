//! Operational endpoints: `/health`, `/ready` (per-provider states with reasons), `/metrics`.

use crate::support::{MockUpstream, Reply, Weir, chat, client, metric, post};

#[tokio::test]
async fn health_answers_ok() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&up.provider_toml("up", "", "")).await;
    let reply = Reply::read(client().get(weir.url("/health")).send().await.unwrap()).await;
    assert_eq!((reply.status, reply.json()["status"].as_str()), (200, Some("ok")));
}

#[tokio::test]
async fn ready_reports_a_failing_provider_with_a_reason() {
    let up = MockUpstream::start().await;
    let down = MockUpstream::failing(500).await;
    // One attempt per request: the states count attempts.
    let once = "[providers.retry]\nmax_retries = 0";
    let config =
        format!("{}{}", up.provider_toml("up", "", ""), down.provider_toml("down", r#"models = ["down-m"]"#, once));
    let weir = Weir::start(&config).await;
    let (status, ready) = weir.ready().await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")), "{ready}");
    assert_eq!(ready["providers"]["down"]["state"], "healthy", "{ready}");

    let url = weir.url("/v1/chat/completions");
    let mut states = Vec::new();
    for _ in 0..10 {
        let reply = post(&url, &chat("down-m", "x")).await;
        assert_eq!(reply.status, 502, "{}", reply.text);
        states.push(weir.ready().await.1["providers"]["down"]["state"].as_str().unwrap().to_owned());
    }
    assert_eq!(states[0], "degraded");
    assert_eq!(states[2], "failing");
    assert_eq!(states[9], "failed");
    let (status, ready) = weir.ready().await;
    let reason = ready["providers"]["down"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("10 consecutive failures") && reason.contains("500"), "{ready}");
    // The other provider still serves, so the gateway as a whole is ready.
    assert_eq!((status, ready["providers"]["up"]["state"].as_str()), (200, Some("healthy")), "{ready}");
    assert_eq!(post(&url, &chat("up/m", "still fine")).await.status, 200);

    // With its only provider failed, the gateway is not ready.
    let lonely = Weir::start(&down.provider_toml("down", r#"models = ["down-m"]"#, once)).await;
    for _ in 0..10 {
        assert_eq!(post(&lonely.url("/v1/chat/completions"), &chat("down-m", "x")).await.status, 502);
    }
    let (status, ready) = lonely.ready().await;
    assert_eq!((status, ready["status"].as_str()), (503, Some("not_ready")), "{ready}");
}

#[tokio::test]
async fn metrics_have_per_provider_series_that_count() {
    let up = MockUpstream::start().await;
    let config = format!(
        "{}[[providers]]\nname = \"mock\"\nkind = \"mock\"\nmodels = [\"mock-1\"]\n",
        // One attempt per request: the upstream series count attempts.
        up.provider_toml("up", "", "[providers.retry]\nmax_retries = 0")
    );
    let weir = Weir::start(&config).await;
    let url = weir.url("/v1/chat/completions");
    for _ in 0..3 {
        assert_eq!(post(&url, &chat("up/m", "x")).await.status, 200);
    }
    assert_eq!(post(&url, &chat("up/m;status=500", "x")).await.status, 502);
    assert_eq!(post(&url, &chat("mock-1", "x")).await.status, 200);

    let resp = client().get(weir.url("/metrics")).send().await.unwrap();
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let m = resp.text().await.unwrap();
    let up_ok = [("provider", "up"), ("endpoint", "chat"), ("outcome", "ok"), ("status", "200")];
    assert_eq!(metric(&m, "weir_requests_total", &up_ok), 3.0, "{m}");
    let up_err = [("provider", "up"), ("outcome", "upstream_error"), ("status", "502")];
    assert_eq!(metric(&m, "weir_requests_total", &up_err), 1.0);
    assert_eq!(metric(&m, "weir_requests_total", &[("provider", "mock"), ("outcome", "ok")]), 1.0);
    assert_eq!(metric(&m, "weir_upstream_latency_seconds_count", &[("provider", "up")]), 4.0);
    assert_eq!(metric(&m, "weir_upstream_latency_seconds_count", &[("provider", "mock")]), 1.0);
    assert_eq!(metric(&m, "weir_overhead_seconds_count", &[("provider", "up")]), 4.0);
    assert_eq!(metric(&m, "weir_pool_queue_wait_seconds_count", &[("provider", "up")]), 4.0);
    for series in ["weir_pool_queue_depth", "weir_pool_workers_busy", "weir_pool_workers_idle"] {
        for provider in ["up", "mock"] {
            assert!(m.contains(&format!("{series}{{provider=\"{provider}\"}}")), "{series} for {provider} missing");
        }
    }
}
