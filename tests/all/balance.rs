//! Load balancing (`[[routes]]`): one model served by several providers, spread by weight, by
//! least outstanding requests or by latency, skipping a target whose breaker is open and
//! failing over to the route's other targets.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::{MockUpstream, Weir, chat, metric, post};

/// Providers `a` and `b` in front of `up` (`a_extra` after `a`'s pool table), then a route
/// `gpt` with `route` lines.
async fn start(up: &MockUpstream, a_extra: &str, route: &str) -> Weir {
    let a =
        up.provider_toml("a", "discover_models = false", &format!("\n[providers.retry]\nmax_retries = 0\n{a_extra}"));
    let b = up.provider_toml("b", "discover_models = false", "");
    Weir::start(&format!("{a}\n{b}\n[[routes]]\nmodel = \"gpt\"\n{route}\n")).await
}

/// Sends `n` requests for `gpt` one after another; counts the answering provider of each.
async fn spread(weir: &Weir, n: usize) -> HashMap<String, usize> {
    let mut by = HashMap::new();
    for _ in 0..n {
        let reply = post(&weir.url("/v1/chat/completions"), &chat("gpt", "hi")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        *by.entry(reply.header("x-weir-provider").unwrap().to_owned()).or_default() += 1;
    }
    by
}

#[tokio::test]
async fn a_weighted_route_spreads_requests_by_weight_with_each_targets_model() {
    let up = MockUpstream::start().await;
    let route = "targets = [{ provider = \"a\", model = \"ma\", weight = 3 }, { provider = \"b\", model = \"mb\" }]";
    let weir = start(&up, "", route).await;
    let by = spread(&weir, 200).await;
    let a = by.get("a").copied().unwrap_or_default();
    // Expected 150 (sd ~6): far outside a 1:1 or an all-to-one split.
    assert!((120..=180).contains(&a), "a answered {a} of 200: {by:?}");
    let models: Vec<String> = up.chats().iter().map(|s| s.model().to_owned()).collect();
    assert_eq!(models.iter().filter(|m| *m == "ma").count(), a, "a was asked its own model");
    assert_eq!(models.iter().filter(|m| *m == "mb").count(), 200 - a);
}

#[tokio::test]
async fn a_route_fails_over_to_its_other_target_and_skips_one_whose_breaker_is_open() {
    let up = MockUpstream::start().await;
    let breaker = "[providers.breaker]\nconsecutive_failures = 2\ncooldown = \"60s\"";
    let route = "targets = [{ provider = \"a\", model = \"m;status=503\" }, { provider = \"b\", model = \"m\" }]";
    let weir = start(&up, breaker, route).await;
    let by = spread(&weir, 40).await;
    assert_eq!(by.get("b"), Some(&40), "every request answered by b: {by:?}");
    let failed = up.chats().iter().filter(|s| s.model() == "m;status=503").count();
    assert_eq!(failed, 2, "a was tried until its breaker opened, then skipped");
    let metrics = weir.metrics().await;
    assert_eq!(metric(&metrics, "weir_breaker_state", &[("provider", "a")]), 2.0);
}

#[tokio::test]
async fn least_outstanding_sends_requests_away_from_a_busy_target() {
    let up = MockUpstream::start().await;
    let route = "strategy = \"least_outstanding\"\n\
                 targets = [{ provider = \"a\", model = \"m;latency=1500\" }, { provider = \"b\", model = \"m\" }]";
    let weir = start(&up, "", route).await;
    let url = weir.url("/v1/chat/completions");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move { post(&url, &chat("gpt", "hi")).await }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut slow = 0;
    for t in tasks {
        let reply = t.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text);
        slow += usize::from(reply.header("x-weir-provider") == Some("a"));
    }
    // a is busy for 1.5s after its first request: the others go to b (weighted: ~10).
    assert!(slow <= 2, "the busy target got {slow} of 20");
}

#[tokio::test]
async fn the_latency_strategy_prefers_the_faster_target_once_both_are_measured() {
    let up = MockUpstream::start().await;
    let route = "strategy = \"latency\"\n\
                 targets = [{ provider = \"a\", model = \"m;latency=150\" }, { provider = \"b\", model = \"m\" }]";
    let weir = start(&up, "", route).await;
    let by = spread(&weir, 30).await;
    // Each target is measured once (unmeasured goes first), then the faster one serves.
    assert_eq!(by.get("a"), Some(&1), "{by:?}");
    assert_eq!(by.get("b"), Some(&29), "{by:?}");
}
