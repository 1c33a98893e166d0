//! Virtual keys across instances: a real `redis-server` on 127.0.0.1 and three Weir processes
//! sharing it. Limits and budgets hold exactly across them, admin changes reach every instance
//! at once, and with Redis killed and restarted every request still gets one well-formed
//! answer within its bound (fail-open serves, fail-closed answers 503) and shared state resumes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;

use crate::keys::{PRICES, admin, admin_toml, free_port, reported_tokens, send, sized_chat};
use crate::support::redis::RedisServer;
use crate::support::{MockUpstream, Reply, Weir};

/// Longest any request may take while Redis is away (its bound is 100 ms per round trip).
const BOUND: Duration = Duration::from_secs(2);

fn state_toml(redis: &RedisServer, mode: &str) -> String {
    format!("[state]\nredis_url = \"{}\"\non_unavailable = \"{mode}\"\nredis_timeout = \"100ms\"\n", redis.url())
}

/// Three instances with the same config (the first one's admin API on `admin_port`).
async fn three(cfg: &str, admin_port: u16) -> Vec<Weir> {
    let mut out = Vec::new();
    for i in 0..3 {
        let port = if i == 0 { admin_port } else { free_port() };
        out.push(Weir::start(&format!("{}{cfg}", admin_toml(port))).await);
    }
    out
}

/// Sends `n` requests spread evenly over `weirs`, 10 at a time per instance (30 in flight);
/// the statuses.
async fn spread(weirs: &[Weir], key: &str, body: &str, n: usize) -> Vec<u16> {
    let per_instance = n / weirs.len();
    let runs = weirs.iter().map(|w| async move {
        let mut statuses = Vec::new();
        for chunk in 0..per_instance.div_ceil(10) {
            let batch = (chunk * 10..((chunk + 1) * 10).min(per_instance)).map(|_| send(w, Some(key), body));
            statuses.extend(join_all(batch).await.into_iter().map(|r| r.status));
        }
        statuses
    });
    join_all(runs).await.into_iter().flatten().collect()
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// Waits until the current minute has at least `secs` seconds left, so a fixed one-minute
/// window does not turn over mid-test.
async fn with_minute_left(secs: u64) {
    let into = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() % 60;
    if 60 - into < secs {
        tokio::time::sleep(Duration::from_secs(60 - into + 1)).await;
    }
}

#[tokio::test]
async fn rpm_tpm_and_budget_hold_exactly_across_three_instances() {
    let redis = RedisServer::start().await;
    let up = MockUpstream::start().await;
    let tokens = reported_tokens();
    let cfg = format!(
        "{}{PRICES}\
         [[keys]]\nname = \"rpm\"\nvalue = \"sk-rpm-SECRET-0001\"\nrpm = 120\n\
         [[keys]]\nname = \"tpm\"\nvalue = \"sk-tpm-SECRET-0001\"\ntpm = {}\n\
         [[keys]]\nname = \"budget\"\nvalue = \"sk-bud-SECRET-0001\"\nbudget = {{ usd = 0.85, period = \"30d\" }}\n{}",
        state_toml(&redis, "fail-open"),
        tokens * 60,
        up.provider_toml("up", "", "workers = 64\nqueue = 512\n")
    );
    let weirs = three(&cfg, free_port()).await;
    // The estimate (bytes / 4) equals the reported usage: admission is exact, not timing-bound.
    let body = sized_chat("up/m", tokens);
    with_minute_left(20).await;

    let rpm = spread(&weirs, "sk-rpm-SECRET-0001", &body, 300).await;
    assert_eq!(count(&rpm, 200), 120, "rpm = 120 across three instances");
    assert_eq!(count(&rpm, 429), 180);

    let tpm = spread(&weirs, "sk-tpm-SECRET-0001", &body, 150).await;
    assert_eq!(count(&tpm, 200), 60, "tpm = 60 answers' tokens across three instances");
    assert_eq!(count(&tpm, 429), 90);

    // $0.85 is 50 answers of 17 tokens at $1000 per million.
    let budget = spread(&weirs, "sk-bud-SECRET-0001", &body, 150).await;
    assert_eq!(count(&budget, 200), 50, "the budget across three instances");
    assert_eq!(count(&budget, 429), 100);
}

/// Sends `n` requests to `weir`, `in_flight` at a time (a new one as soon as one is answered);
/// the statuses.
async fn burst(weir: &Weir, key: &str, body: &str, n: usize, in_flight: usize) -> Vec<u16> {
    use futures_util::StreamExt;
    futures_util::stream::iter((0..n).map(|_| send(weir, Some(key), body)))
        .buffer_unordered(in_flight)
        .map(|r| r.status)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_spare_redis_round_trips_far_from_the_limit_and_stay_exact_near_it() {
    let redis = RedisServer::start().await;
    let up = MockUpstream::start().await;
    let cfg = format!(
        "{}[[keys]]\nname = \"burst\"\nvalue = \"sk-burst-SECRET-0001\"\nrpm = 600\n{}",
        state_toml(&redis, "fail-open"),
        up.provider_toml("up", "", "workers = 64\nqueue = 512\n")
    );
    let weir = Weir::start(&format!("{}{cfg}", admin_toml(free_port()))).await;
    let body = sized_chat("up/m", 20);
    with_minute_left(20).await;
    // Only the admission script asks Redis for the time: its calls are admission round trips.
    let before = redis.calls("time").await;
    let far = burst(&weir, "sk-burst-SECRET-0001", &body, 400, 16).await;
    assert_eq!(count(&far, 200), 400, "far from the limit every request passes");
    let round_trips = redis.calls("time").await - before;
    assert!(round_trips * 4 <= 400, "400 admissions took {round_trips} admission scripts");
    // The rest of the minute's 600, with grants shrinking to one request near the end.
    let near = burst(&weir, "sk-burst-SECRET-0001", &body, 300, 16).await;
    assert_eq!(count(&near, 200), 200, "exactly the limit passes");
    assert_eq!(count(&near, 429), 100);
}

#[tokio::test]
async fn max_concurrent_holds_across_three_instances_and_slots_come_back() {
    let redis = RedisServer::start().await;
    let up = MockUpstream::start().await;
    let cfg = format!(
        "{}[[keys]]\nname = \"conc\"\nvalue = \"sk-conc-SECRET-0001\"\nmax_concurrent = 4\n{}",
        state_toml(&redis, "fail-open"),
        up.provider_toml("up", "", "workers = 64\nqueue = 512\n")
    );
    let weirs = three(&cfg, free_port()).await;
    // Two held requests per instance: four of the six get a slot, the others are refused.
    let held = sized_chat("up/m;hold", 20);
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let (url, body) = (weirs[i % 3].url("/v1/chat/completions"), held.clone());
            tokio::spawn(async move {
                let rb = crate::support::client().post(url).header("authorization", "Bearer sk-conc-SECRET-0001");
                Reply::read(rb.header("content-type", "application/json").body(body).send().await.unwrap()).await
            })
        })
        .collect();
    let chats =
        |seen: &[crate::support::upstream::Seen]| seen.iter().filter(|s| s.path.ends_with("/chat/completions")).count();
    up.wait_until("four held requests", |seen| chats(seen) == 4).await;
    let body = sized_chat("up/m", 20);
    for w in &weirs {
        let r = send(w, Some("sk-conc-SECRET-0001"), &body).await;
        assert_eq!((r.status, r.error_code().as_str()), (429, "concurrency_limit_exceeded"), "{}", r.text);
    }
    up.release();
    let statuses: Vec<u16> = join_all(tasks).await.into_iter().map(|r| r.unwrap().status).collect();
    assert_eq!((count(&statuses, 200), count(&statuses, 429)), (4, 2), "{statuses:?}");
    // Every slot comes back: four at once fit again, spread over the instances.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let again = join_all((0..4).map(|i| send(&weirs[i % 3], Some("sk-conc-SECRET-0001"), &body))).await;
        if again.iter().all(|r| r.status == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slots never came back: {:?}",
            again.iter().map(|r| &r.text).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn admin_changes_reach_every_instance_at_once() {
    let redis = RedisServer::start().await;
    let up = MockUpstream::start().await;
    let port = free_port();
    let cfg = format!("{}{}", state_toml(&redis, "fail-open"), up.provider_toml("up", "", ""));
    let weirs = three(&cfg, port).await;
    let made = admin(port, reqwest::Method::POST, "/admin/keys", Some(json!({"name": "shared", "rpm": 1000}))).await;
    assert_eq!(made.status, 201, "{}", made.text);
    let secret = made.json()["key"].as_str().unwrap().to_owned();
    let body = sized_chat("up/m", 20);
    for w in &weirs {
        let r = send(w, Some(&secret), &body).await;
        assert_eq!(r.status, 200, "a key made on one instance works on every one: {}", r.text);
    }
    // Keys turn on everywhere within the poll (1 s): then a request without one is refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    for w in &weirs {
        while send(w, None, &body).await.status != 401 {
            assert!(Instant::now() < deadline, "an instance still serves without a key");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(admin(port, reqwest::Method::DELETE, "/admin/keys/shared", None).await.status, 200);
    for w in &weirs {
        let r = send(w, Some(&secret), &body).await;
        assert_eq!(r.status, 401, "revoked on one instance, refused on every one at once: {}", r.text);
    }
    let usage = admin(port, reqwest::Method::GET, "/admin/keys", None).await;
    for text in [usage.text, weirs.iter().map(Weir::logs).collect::<String>()] {
        assert!(!text.contains(&secret), "the secret leaked: {text}");
    }
}

/// Sends `n` requests to each instance, one at a time, checking each is answered once,
/// well-formed, within [`BOUND`]; the statuses.
async fn bounded_round(weirs: &[Weir], key: &str, body: &str, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..n {
        for w in weirs {
            let started = Instant::now();
            let r = send(w, Some(key), body).await;
            assert!(started.elapsed() < BOUND, "answered in {:?}: {}", started.elapsed(), r.text);
            if r.status == 200 {
                assert_eq!(r.json()["object"], "chat.completion", "{}", r.text);
            } else {
                r.error_code();
                if r.status == 503 {
                    assert_eq!(r.error_code(), "state_unavailable", "{}", r.text);
                    assert!(r.header("retry-after").is_some(), "{}", r.text);
                }
            }
            statuses.push(r.status);
        }
    }
    statuses
}

/// Requests sent without pause to every instance until `stop`, each checked as it comes
/// back: one well-formed answer (an answer, or an error body naming its code) within
/// [`BOUND`]. The statuses.
fn background_load(urls: Vec<String>, body: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<u16>> {
    tokio::spawn(async move {
        let client = crate::support::client();
        let mut statuses = Vec::new();
        // Bounded: at most this many rounds, whatever `stop` says.
        for _ in 0..5000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            for url in &urls {
                let started = Instant::now();
                let rb = client.post(url).header("authorization", "Bearer sk-k-SECRET-0001");
                let r =
                    Reply::read(rb.header("content-type", "application/json").body(body.clone()).send().await.unwrap())
                        .await;
                assert!(started.elapsed() < BOUND, "answered in {:?}: {}", started.elapsed(), r.text);
                if r.status == 200 {
                    assert_eq!(r.json()["object"], "chat.completion", "{}", r.text);
                } else {
                    assert_eq!((r.status, r.error_code().as_str()), (503, "state_unavailable"), "{}", r.text);
                }
                statuses.push(r.status);
            }
        }
        statuses
    })
}

/// Waits until every instance's `/ready` shows Redis `up`.
async fn wait_redis_up(weirs: &[Weir]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ready = join_all(weirs.iter().map(Weir::ready)).await;
        if ready.iter().all(|(_, r)| r["state"]["state"] == "up") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Redis never came back: {:?}",
            ready.iter().map(|r| &r.1).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn redis_outage(mode: &str) {
    let mut redis = RedisServer::start().await;
    let up = MockUpstream::start().await;
    let port = free_port();
    let cfg = format!(
        "{}[[keys]]\nname = \"k\"\nvalue = \"sk-k-SECRET-0001\"\nrpm = 100000\n{}",
        state_toml(&redis, mode),
        up.provider_toml("up", "", "")
    );
    let weirs = three(&cfg, port).await;
    let body = sized_chat("up/m", 20);
    let want = if mode == "fail-open" { 200 } else { 503 };
    assert!(bounded_round(&weirs, "sk-k-SECRET-0001", &body, 2).await.iter().all(|s| *s == 200));
    wait_redis_up(&weirs).await;

    // Load runs through everything below: a hung Redis, a killed one, its restart.
    let stop = Arc::new(AtomicBool::new(false));
    let urls = weirs.iter().map(|w| w.url("/v1/chat/completions")).collect();
    let load = background_load(urls, body.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Hung: it accepts and never answers; nobody waits past redis_timeout.
    redis.signal("STOP");
    let hung = bounded_round(&weirs, "sk-k-SECRET-0001", &body, 3).await;
    assert!(hung.iter().all(|s| *s == want), "{mode} while Redis hangs: {hung:?}");
    // Admissions mostly ride on grants and per-thread connections; each instance notes the
    // outage through its availability poll (1 s), which the log assertion below counts.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !join_all(weirs.iter().map(Weir::ready)).await.iter().all(|(_, r)| r["state"]["state"] == "unavailable") {
        assert!(Instant::now() < deadline, "every instance notices the hung Redis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis.signal("CONT");
    wait_redis_up(&weirs).await;

    redis.kill();
    let down = bounded_round(&weirs, "sk-k-SECRET-0001", &body, 5).await;
    assert!(down.iter().all(|s| *s == want), "{mode} while Redis is away: {down:?}");
    // /ready follows within the availability poll (1 s).
    let deadline = Instant::now() + Duration::from_secs(5);
    let (status, ready) = loop {
        let (status, ready) = weirs[1].ready().await;
        if ready["state"]["state"] == "unavailable" || Instant::now() > deadline {
            break (status, ready);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ready["state"]["state"], "unavailable", "{ready}");
    assert_eq!(status, if mode == "fail-open" { 200 } else { 503 }, "{ready}");

    redis.restart().await;
    // Shared state resumes without a restart of Weir (the connection comes back by itself).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let statuses = bounded_round(&weirs, "sk-k-SECRET-0001", &body, 1).await;
        let ready = join_all(weirs.iter().map(Weir::ready)).await;
        if statuses.iter().all(|s| *s == 200) && ready.iter().all(|(_, r)| r["state"]["state"] == "up") {
            break;
        }
        assert!(Instant::now() < deadline, "shared state never resumed: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let during = load.await.unwrap();
    assert!(during.len() >= 30, "the load ran through the outages ({} answers)", during.len());
    if mode == "fail-open" {
        assert!(during.iter().all(|s| *s == 200), "fail-open served every request: {during:?}");
    } else {
        assert!(during.contains(&503), "fail-closed refused while Redis was away");
    }

    // Counted in Redis again, from every instance (the config key was written there again).
    let before = admin(port, reqwest::Method::GET, "/admin/keys/k/usage", None).await;
    assert_eq!(before.status, 200, "{}", before.text);
    let n = before.json()["window"]["requests_last_minute"].as_u64().unwrap();
    bounded_round(&weirs, "sk-k-SECRET-0001", &body, 2).await;
    let after = admin(port, reqwest::Method::GET, "/admin/keys/k/usage", None).await;
    assert_eq!(after.json()["window"]["requests_last_minute"].as_u64().unwrap(), n + 6, "{}", after.text);

    for w in &weirs {
        let logs = w.logs();
        assert_eq!(logs.matches("shared state: Redis unavailable").count(), 2, "logged once per outage:\n{logs}");
        assert!(!logs.contains("sk-k-SECRET-0001"));
    }
}

#[tokio::test]
async fn fail_open_serves_through_a_redis_outage_and_resumes_shared_state() {
    redis_outage("fail-open").await;
}

#[tokio::test]
async fn fail_closed_answers_503_through_a_redis_outage_and_resumes() {
    redis_outage("fail-closed").await;
}
