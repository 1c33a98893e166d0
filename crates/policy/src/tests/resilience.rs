//! Retries, budgets, fallbacks and breakers in `Policy::execute`, against the scripted provider
//! (`fail:N` fails its first N calls with 503) under paused time.

use super::*;

fn calls(t: &Target) -> usize {
    let Provider::Scripted(s) = &*t.provider else { unreachable!() };
    s.calls.load(Ordering::SeqCst)
}

async fn run(policy: &Policy, targets: &[Target], fallbacks: &[Step], script: &str) -> (Result<Reply, Error>, Served) {
    let mut served = Served::new(0);
    let r = policy.execute(targets, &Plan::new(0, fallbacks), req(script), &mut served).await;
    (r, served)
}

#[tokio::test(start_paused = true)]
async fn a_503_is_retried_and_the_second_attempt_answers() {
    let targets = [scripted_with("a", "")];
    let (r, served) = run(&Policy::default(), &targets, &[], "fail:1").await;
    assert!(r.is_ok(), "{:?}", r.err());
    assert_eq!((served.attempts, calls(&targets[0])), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn a_400_is_never_retried_and_a_persistent_503_stops_after_max_retries() {
    let targets = [scripted_with("a", "")];
    let (r, served) = run(&Policy::default(), &targets, &[], "error:400").await;
    assert_eq!(r.err().unwrap().status(), 400);
    assert_eq!(served.attempts, 1);
    let (r, served) = run(&Policy::default(), &targets, &[], "error:503").await;
    assert_eq!(r.err().unwrap().status(), 503);
    assert_eq!(served.attempts, 3, "1 + max_retries (2)");
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_stops_retries() {
    let retry = "[providers.retry]\nbase_backoff = \"1ms\"\nmax_backoff = \"1ms\"\nbudget_ratio = 0.0\nbudget_min_per_second = 0.2\nbudget_window = \"10s\"\n";
    let targets = [scripted_with("a", retry)];
    // The reserve is 0.2/s × 10 s = 2 retries; then no more, whatever the failures.
    let mut attempts = 0;
    for _ in 0..5 {
        let (r, served) = run(&Policy::default(), &targets, &[], "error:503").await;
        assert_eq!(r.err().unwrap().status(), 503);
        attempts += served.attempts;
    }
    assert_eq!(attempts, 5 + 2);
}

#[tokio::test(start_paused = true)]
async fn a_failing_provider_falls_back_to_the_next_step() {
    let targets = [scripted_with("a", "[providers.retry]\nmax_retries = 0\n"), scripted_with("b", "")];
    let fallbacks = [Step { provider: 1, model: "m2".into() }];
    let (r, served) = run(&Policy::default(), &targets, &fallbacks, "error:503").await;
    // b fails too (same script): its own attempts follow a's one.
    assert_eq!(r.err().unwrap().status(), 503);
    assert_eq!((served.target, served.attempts), (1, 1 + 3));
    // Fresh providers: a's first call fails (no retries there), b's first fails and its
    // retry answers.
    let targets = [scripted_with("a", "[providers.retry]\nmax_retries = 0\n"), scripted_with("b", "")];
    let (r, served) = run(&Policy::default(), &targets, &fallbacks, "fail:1").await;
    assert!(r.is_ok(), "{:?}", r.err());
    assert_eq!((served.target, served.attempts, calls(&targets[0]), calls(&targets[1])), (1, 3, 1, 2));
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_fails_fast_and_a_probe_after_the_cooldown_closes_it() {
    let extra =
        "[providers.retry]\nmax_retries = 0\n[providers.breaker]\nconsecutive_failures = 2\ncooldown = \"1s\"\n";
    let targets = [scripted_with("a", extra)];
    let policy = Policy::default();
    for _ in 0..2 {
        assert_eq!(run(&policy, &targets, &[], "error:500").await.0.err().unwrap().status(), 502);
    }
    let (r, served) = run(&policy, &targets, &[], "ok").await;
    let e = r.err().unwrap();
    assert_eq!((e.status().as_u16(), e.code_str(), e.retry_after), (503, "circuit_open", Some(1)));
    assert_eq!((served.attempts, calls(&targets[0])), (0, 2), "refused without a call");
    assert_eq!(targets[0].pool.health().state(0.0), pool::HealthState::Failed);

    tokio::time::advance(Duration::from_secs(1)).await;
    let (r, served) = run(&policy, &targets, &[], "ok").await;
    assert!(r.is_ok());
    assert_eq!(served.attempts, 1, "the probe went through");
    assert_eq!(targets[0].guard.breaker.as_ref().unwrap().state(), breaker::State::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_skipped_for_the_fallback() {
    let extra =
        "[providers.retry]\nmax_retries = 0\n[providers.breaker]\nconsecutive_failures = 1\ncooldown = \"1m\"\n";
    let targets = [scripted_with("a", extra), scripted_with("b", "")];
    let fallbacks = [Step { provider: 1, model: "m".into() }];
    let policy = Policy::default();
    let _ = run(&policy, &targets, &[], "error:500").await;
    let (r, served) = run(&policy, &targets, &fallbacks, "ok").await;
    assert!(r.is_ok());
    assert_eq!((served.target, served.attempts, calls(&targets[0])), (1, 1, 1));
}

#[test]
fn the_fallback_header_names_configured_providers_only() {
    let cfg = crate::config::Config::from_toml(
        "[[providers]]\nname = \"a\"\nkind = \"mock\"\nmodels = [\"m\"]\n[[providers]]\nname = \"b\"\nkind = \"mock\"\nmodels = [\"n\"]\n[fallbacks]\nm = [\"b/n\"]\n",
    )
    .unwrap();
    let policy = Policy::new(&cfg);
    assert_eq!(&*policy.fallbacks("m", None).unwrap(), &[Step { provider: 1, model: "n".into() }]);
    assert!(policy.fallbacks("other", None).unwrap().is_empty());
    let steps = policy.fallbacks("m", Some(b"a/x, b/y")).unwrap();
    assert_eq!(steps.iter().map(|s| s.provider).collect::<Vec<_>>(), [0, 1]);
    for bad in [&b"c/x"[..], b"a", b"a/", b"a/1,a/2,a/3,a/4,a/5"] {
        let e = policy.fallbacks("m", Some(bad)).unwrap_err();
        assert_eq!((e.status().as_u16(), e.param.as_deref()), (400, Some("x-weir-fallbacks")), "{bad:?}");
    }
}

/// What the happy path pays for the policy stage: one answered request through `execute`
/// (default retries: the request is copied to keep for a resend, a budget deposit) against
/// the bare `attempt`. Run: `cargo test --release -p weir-policy -- --ignored --nocapture
/// happy_path_cost`.
#[test]
#[ignore = "a measurement, not a check"]
fn happy_path_cost() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let targets = [rt.block_on(async { scripted_with("a", "") })];
    // No retries: nothing is kept to resend.
    let once = [rt.block_on(async { scripted_with("b", "[providers.retry]\nmax_retries = 0\n") })];
    let policy = Policy::default();
    let n = 200_000u32;
    for round in 0..5 {
        let started = std::time::Instant::now();
        for _ in 0..n {
            let mut up = Duration::ZERO;
            rt.block_on(attempt(&targets[0], req("hi"), &mut up, None)).ok().unwrap();
        }
        let bare = started.elapsed() / n;
        let started = std::time::Instant::now();
        for _ in 0..n {
            let mut served = Served::new(0);
            rt.block_on(policy.execute(&targets, &Plan::new(0, &[]), req("hi"), &mut served)).ok().unwrap();
        }
        let policed = started.elapsed() / n;
        let started = std::time::Instant::now();
        for _ in 0..n {
            let mut served = Served::new(0);
            rt.block_on(policy.execute(&once, &Plan::new(0, &[]), req("hi"), &mut served)).ok().unwrap();
        }
        let no_copy = started.elapsed() / n;
        // The client's bytes, as most requests carry them (no plugin edited the body): the
        // copy shares them. The provider parses them, in both columns.
        let raw = JsonBody::from_raw(br#"{"messages":[{"role":"user","content":"hi"}]}"#[..].into());
        let with_raw = |r: &mut ProviderRequest| r.body = raw.clone();
        let started = std::time::Instant::now();
        for _ in 0..n {
            let mut r = req("");
            with_raw(&mut r);
            let mut up = Duration::ZERO;
            rt.block_on(attempt(&targets[0], r, &mut up, None)).ok().unwrap();
        }
        let bare_raw = started.elapsed() / n;
        let started = std::time::Instant::now();
        for _ in 0..n {
            let mut r = req("");
            with_raw(&mut r);
            let mut served = Served::new(0);
            rt.block_on(policy.execute(&targets, &Plan::new(0, &[]), r, &mut served)).ok().unwrap();
        }
        let policed_raw = started.elapsed() / n;
        println!(
            "round {round}: tree body: attempt {bare:?}, execute {policed:?}, execute without retries {no_copy:?}; \
             raw body: attempt {bare_raw:?}, execute {policed_raw:?} (per request)"
        );
    }
}
