use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::time::{Instant, sleep};

use super::*;
use crate::config::{Overflow, PoolConfig, ProviderConfig};
use crate::providers::scripted::{Scripted, counting_upstream, open_connections};
use weir_types::affinity::Affinity;
use weir_types::exchange::JsonBody;
use weir_types::format::Endpoint;
use weir_types::relay::AskedHeaders;

/// Sets its flag when dropped: shows that a losing future was cancelled.
struct Dropped(Arc<AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

async fn after(ms: u64, r: Result<u32, &'static str>, flag: Option<Arc<AtomicBool>>) -> Result<u32, &'static str> {
    let _guard = flag.map(Dropped);
    sleep(Duration::from_millis(ms)).await;
    r
}

#[tokio::test(start_paused = true)]
async fn first_ok_takes_the_first_success_and_drops_the_loser() {
    let dropped = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let r = first_ok(after(100, Ok(1), None), after(1000, Ok(2), Some(dropped.clone()))).await;
    assert_eq!(r, Ok(1));
    assert_eq!(started.elapsed(), Duration::from_millis(100), "did not wait for the loser");
    assert!(dropped.load(Ordering::SeqCst), "the loser was cancelled");
}

#[tokio::test(start_paused = true)]
async fn first_ok_waits_for_the_other_after_a_failure() {
    let started = Instant::now();
    let r = first_ok(after(10, Err("a failed"), None), after(300, Ok(2), None)).await;
    assert_eq!(r, Ok(2));
    assert_eq!(started.elapsed(), Duration::from_millis(300));
    let r = first_ok(after(300, Ok(1), None), after(10, Err("b failed"), None)).await;
    assert_eq!(r, Ok(1));
}

#[tokio::test(start_paused = true)]
async fn first_ok_fails_with_the_last_error_when_both_fail() {
    let r = first_ok(after(10, Err("a"), None), after(20, Err::<u32, _>("b"), None)).await;
    assert_eq!(r, Err("b"));
    let r = first_ok(after(30, Err("a"), None), after(20, Err::<u32, _>("b"), None)).await;
    assert_eq!(r, Err("a"));
}

fn req(script: &str) -> ProviderRequest {
    let body = json!({"messages": [{"role": "user", "content": script}]});
    ProviderRequest {
        endpoint: Endpoint::OPENAI_CHAT,
        model: "m".into(),
        body: JsonBody::from_map(body.as_object().cloned().unwrap()),
        stream: false,
        secrets: Arc::default(),
        affinity: Affinity::NONE,
        trace: Default::default(),
    }
}

fn one_slot() -> PoolConfig {
    PoolConfig {
        workers: 1,
        queue: 4,
        overflow: Overflow::Block,
        queue_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        ..PoolConfig::default()
    }
}

/// A provider config named `name` with `extra` TOML lines (retry and breaker tables).
fn provider_config(name: &str, extra: &str) -> ProviderConfig {
    let toml = format!("[[providers]]\nname = \"{name}\"\nkind = \"mock\"\nmodels = [\"m\"]\n{extra}");
    crate::config::Config::from_toml(&toml).unwrap().providers.remove(0)
}

fn scripted() -> Target {
    scripted_with("fast", "")
}

/// A scripted provider whose retry and breaker settings are `extra` (backoff 1ms by default).
fn scripted_with(name: &str, extra: &str) -> Target {
    let extra = if extra.contains("[providers.retry]") {
        extra.to_owned()
    } else {
        format!("[providers.retry]\nbase_backoff = \"1ms\"\nmax_backoff = \"1ms\"\n{extra}")
    };
    let cfg = provider_config(name, &extra);
    Target::new(Pool::start(name, &[], one_slot()), Arc::new(Provider::Scripted(Scripted::default())), &cfg)
}

/// An openai provider at `addr` behind a one-slot pool.
fn upstream(addr: std::net::SocketAddr) -> Target {
    let toml = format!(
        "[[providers]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"http://{addr}/v1\"\nmodels = [\"m\"]\ndiscover_models = false\n"
    );
    let config = crate::config::Config::from_toml(&toml).unwrap();
    let provider = Provider::from_config(&config.providers[0], 1).unwrap();
    Target::new(Pool::start("up", &[], one_slot()), Arc::new(provider), &config.providers[0])
}

#[tokio::test(start_paused = true)]
async fn execute_makes_one_attempt_on_the_routed_target() {
    let policy = Policy::default();
    let targets = [scripted(), scripted()];
    let mut served = Served::new(1);
    let reply = policy.execute(&targets, &Plan::new(1, &[]), req("sleep:50"), &mut served).await;
    assert!(matches!(reply, Ok(Reply::Full { .. })));
    // Measured on the wall clock (std time), which paused tokio time does not move.
    assert!(served.upstream > Duration::ZERO, "the call's time is reported");
    assert_eq!((served.target, served.attempts), (1, 1));
    let Provider::Scripted(s) = &*targets[1].provider else { unreachable!() };
    assert_eq!(s.calls.load(Ordering::SeqCst), 1);
    let Provider::Scripted(s) = &*targets[0].provider else { unreachable!() };
    assert_eq!(s.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_losing_attempt_frees_its_slot_and_closes_its_connection() {
    let (addr, open) = counting_upstream(Duration::from_secs(1)).await;
    let slow = upstream(addr);
    let fast = scripted();
    let (mut t_slow, mut t_fast) = (Duration::ZERO, Duration::ZERO);
    let won = first_ok(attempt(&slow, req("hi"), &mut t_slow, None), async {
        // Let the slow attempt take its slot and reach the upstream first.
        sleep(Duration::from_millis(100)).await;
        attempt(&fast, req("ok"), &mut t_fast, None).await
    })
    .await;
    assert!(matches!(won, Ok(Reply::Full { .. })));
    assert_eq!(open_connections(&open, 0).await, 0, "the loser's connection was closed, not kept");
    // The loser's only slot is free again: admission is immediate.
    let permit = tokio::time::timeout(Duration::from_millis(1), slow.pool.admit()).await;
    assert!(matches!(permit, Ok(Ok(_))), "the loser's slot was not released");
}

mod resilience;

#[tokio::test]
async fn a_routes_plan_tries_its_pick_then_its_other_targets_then_the_models_fallbacks() {
    let toml = "[[providers]]\nname = \"a\"\nkind = \"mock\"\nmodels = [\"m\"]\n\
                [[providers]]\nname = \"b\"\nkind = \"mock\"\nmodels = [\"m\"]\n\
                [providers.pool]\ntotal_timeout = \"3s\"\n\
                [fallbacks]\ngpt = [\"a/spare\"]\n\
                [[routes]]\nmodel = \"gpt\"\nhedge_after = \"1s\"\n\
                targets = [{ provider = \"a\", weight = 0 }, { provider = \"b\", model = \"mb\" }]\n";
    let config = crate::config::Config::from_toml(toml).unwrap();
    let policy = Policy::new(&config);
    let targets: Vec<Target> = (config.providers.iter())
        .map(|p| {
            Target::new(Pool::start(&p.name, &[], p.pool.clone()), Arc::new(Provider::Scripted(Scripted::default())), p)
        })
        .collect();
    let mut headers = http::HeaderMap::new();
    let plan = policy.plan(&targets, "gpt", 0, &AskedHeaders::read(&headers)).unwrap();
    assert_eq!((plan.routed, plan.model.as_deref(), plan.hedge), (1, Some("mb"), Some(Duration::from_secs(1))));
    let steps: Vec<(usize, &str)> = plan.fallbacks.iter().map(|s| (s.provider, s.model.as_str())).collect();
    assert_eq!(steps, [(0, "gpt"), (0, "spare")], "weight 0: a fallback only");
    assert_eq!(plan.timeout, Some(Duration::from_secs(3)), "the pick's total_timeout");

    headers.insert("x-weir-fallbacks", http::HeaderValue::from_static("a/other"));
    headers.insert("x-weir-timeout-ms", http::HeaderValue::from_static("250"));
    let plan = policy.plan(&targets, "gpt", 0, &AskedHeaders::read(&headers)).unwrap();
    let steps: Vec<&str> = plan.fallbacks.iter().map(|s| s.model.as_str()).collect();
    assert_eq!(steps, ["other"], "the request's own list replaces the route's and the model's");
    assert_eq!(plan.timeout, Some(Duration::from_millis(250)));

    let plan = policy.plan(&targets, "m", 0, &AskedHeaders::default()).unwrap();
    assert_eq!((plan.routed, plan.model, plan.fallbacks.len(), plan.latency), (0, None, 0, false));
}
