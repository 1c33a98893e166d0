//! Virtual keys on one instance (no Redis): missing, wrong and revoked keys on both front
//! doors, model globs, rpm, tpm, budget and in-flight limits with `Retry-After` and a message
//! naming the limit, the cost header, streams settling their usage, the admin API, and secrets
//! absent from logs, metrics and admin answers.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::upstream::USAGE;
use crate::support::{MockUpstream, Reply, Weir, client, metric};

/// The config key's secret.
pub const TEAM_KEY: &str = "sk-team-a-SECRET-0001";
/// The admin token.
pub const ADMIN_TOKEN: &str = "admin-SECRET-token-42";

/// Tokens the mock reports per answer (prompt + completion).
pub fn reported_tokens() -> u64 {
    USAGE.0 + USAGE.1
}

/// A chat body of exactly `4 * tokens` bytes, so Weir's estimate (bytes / 4) is `tokens`.
pub fn sized_chat(model: &str, tokens: u64) -> String {
    let bare = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":""}}]}}"#);
    let want = usize::try_from(tokens * 4).unwrap();
    assert!(want >= bare.len(), "{tokens} tokens is too few for a body with model {model}");
    format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"{}"}}]}}"#, "x".repeat(want - bare.len()))
}

/// POSTs a raw chat body with `key` as a bearer token (none: no header).
pub async fn send(weir: &Weir, key: Option<&str>, body: &str) -> Reply {
    let mut rb = client().post(weir.url("/v1/chat/completions")).header("content-type", "application/json");
    if let Some(k) = key {
        rb = rb.header("authorization", format!("Bearer {k}"));
    }
    Reply::read(rb.body(body.to_owned()).send().await.unwrap()).await
}

/// A `[admin]` table on `port` with the test token.
pub fn admin_toml(port: u16) -> String {
    format!("[admin]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{ADMIN_TOKEN}\"\n")
}

/// One admin request; JSON in and out.
pub async fn admin(port: u16, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
    let mut rb = client()
        .request(method, format!("http://127.0.0.1:{port}{path}"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"));
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    Reply::read(rb.send().await.unwrap()).await
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Price of model `m` and `m;directives` (what the mock is asked for) in the tests: $1000 per million tokens of
/// every kind, so one answer costs exactly `reported_tokens() * 0.001` dollars.
pub const PRICES: &str = "[prices]\n\"m*\" = { input = 1000.0, output = 1000.0, cached = 1000.0 }\n";

fn key_toml(name: &str, value: &str, extra: &str) -> String {
    format!("[[keys]]\nname = \"{name}\"\nvalue = \"{value}\"\n{extra}\n")
}

#[tokio::test]
async fn requests_need_a_valid_key_on_both_front_doors() {
    let up = MockUpstream::start().await;
    let cfg = format!(
        "{}{}{}",
        key_toml("team-a", "${TEAM_A_KEY}", "models = [\"up/m*\"]"),
        PRICES,
        up.provider_toml("up", "", "")
    );
    let weir = Weir::builder(&cfg).env("TEAM_A_KEY", TEAM_KEY).start().await;
    let body = sized_chat("up/m", 20);

    let none = send(&weir, None, &body).await;
    assert_eq!((none.status, none.error_code().as_str()), (401, "invalid_api_key"), "{}", none.text);
    assert!(none.error_message().contains("Authorization: Bearer"), "{}", none.text);
    let wrong = send(&weir, Some("sk-not-a-key-000"), &body).await;
    assert_eq!((wrong.status, wrong.error_code().as_str()), (401, "invalid_api_key"), "{}", wrong.text);
    // The key is checked before the body is read: a bad body with a wrong key is a 401.
    let unread = send(&weir, Some("sk-not-a-key-000"), "{not json").await;
    assert_eq!(unread.status, 401, "{}", unread.text);
    assert_eq!(send(&weir, Some(TEAM_KEY), "{not json").await.status, 400);

    let ok = send(&weir, Some(TEAM_KEY), &body).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    // 17 tokens at $1000 per million.
    assert_eq!(ok.header("x-weir-cost-usd"), Some("0.017"));

    let other = send(&weir, Some(TEAM_KEY), &sized_chat("up/other", 20)).await;
    assert_eq!((other.status, other.error_code().as_str()), (403, "model_not_allowed"), "{}", other.text);
    assert!(other.error_message().contains("team-a"), "{}", other.text);

    // The Anthropic front door: x-api-key, and errors in Anthropic's shape.
    let messages = json!({"model": "up/m", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]});
    let post = |key: Option<&str>| {
        let mut rb = client().post(weir.url("/v1/messages")).header("anthropic-version", "2023-06-01");
        if let Some(k) = key {
            rb = rb.header("x-api-key", k);
        }
        rb.json(&messages).send()
    };
    let missing = Reply::read(post(None).await.unwrap()).await;
    assert_eq!(missing.status, 401, "{}", missing.text);
    assert_eq!(missing.json()["type"], "error", "{}", missing.text);
    assert_eq!(missing.json()["error"]["type"], "authentication_error", "{}", missing.text);
    let ok = Reply::read(post(Some(TEAM_KEY)).await.unwrap()).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.json()["type"], "message", "{}", ok.text);

    let logs = weir.logs();
    let metrics = weir.metrics().await;
    assert!(!logs.contains(TEAM_KEY) && !metrics.contains(TEAM_KEY), "the key leaked:\n{logs}");
    assert!(
        logs.lines()
            .any(|l| l.contains("request finished") && l.contains("team-a") && l.contains("cost_nano_usd=17000000")),
        "the access log names the key and the cost:\n{logs}"
    );
}

#[tokio::test]
async fn each_limit_refuses_with_retry_after_and_names_itself() {
    let up = MockUpstream::start().await;
    let tokens = reported_tokens();
    let cfg = format!(
        "{}{}{}{}{}",
        key_toml("rpm-key", "sk-rpm-SECRET-0001", "rpm = 3"),
        key_toml("tpm-key", "sk-tpm-SECRET-0001", &format!("tpm = {}", tokens * 3)),
        // Three answers' cost exactly.
        key_toml("budget-key", "sk-bud-SECRET-0001", "budget = { usd = 0.051, period = \"30d\" }"),
        PRICES,
        up.provider_toml("up", "", "")
    );
    let weir = Weir::start(&cfg).await;
    // The estimate equals what the mock reports, so each limit admits exactly three.
    let body = sized_chat("up/m", tokens);
    for (key, limit, code) in [
        ("sk-rpm-SECRET-0001", "rpm", "rpm_limit_exceeded"),
        ("sk-tpm-SECRET-0001", "tpm", "tpm_limit_exceeded"),
        ("sk-bud-SECRET-0001", "budget", "budget_exceeded"),
    ] {
        for i in 0..3 {
            let r = send(&weir, Some(key), &body).await;
            assert_eq!(r.status, 200, "{limit} request {i}: {}", r.text);
        }
        let r = send(&weir, Some(key), &body).await;
        assert_eq!((r.status, r.error_code().as_str()), (429, code), "{limit}: {}", r.text);
        assert!(r.error_message().contains(limit), "{limit}: {}", r.text);
        let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
        assert!(retry >= 1, "{limit}: Retry-After {retry}");
    }
    let m = weir.metrics().await;
    assert_eq!(metric(&m, "weir_keys_refused_total", &[("limit", "rpm")]), 1.0, "{m}");
    assert_eq!(up.chats().len(), 9, "refused requests never reach the provider");
}

#[tokio::test]
async fn max_concurrent_counts_requests_in_flight_and_frees_them_once() {
    let up = MockUpstream::start().await;
    let cfg =
        format!("{}{}", key_toml("one", "sk-one-SECRET-0001", "max_concurrent = 1"), up.provider_toml("up", "", ""));
    let weir = Weir::start(&cfg).await;
    let held = {
        let body = sized_chat("up/m;hold", 20);
        let url = weir.url("/v1/chat/completions");
        tokio::spawn(async move {
            let rb = client().post(url).header("authorization", "Bearer sk-one-SECRET-0001");
            Reply::read(rb.header("content-type", "application/json").body(body).send().await.unwrap()).await
        })
    };
    up.wait_until("the held request", |seen| seen.iter().any(|s| s.path.ends_with("/chat/completions"))).await;
    let r = send(&weir, Some("sk-one-SECRET-0001"), &sized_chat("up/m", 20)).await;
    assert_eq!((r.status, r.error_code().as_str()), (429, "concurrency_limit_exceeded"), "{}", r.text);
    up.release();
    assert_eq!(held.await.unwrap().status, 200);
    // Freed once: one more fits, and only one (a stream the client abandons frees it too).
    let resp = client()
        .post(weir.url("/v1/chat/completions"))
        .header("authorization", "Bearer sk-one-SECRET-0001")
        .json(&json!({"model": "up/m;chunks=50;chunk_delay=20", "stream": true,
                      "messages": [{"role": "user", "content": "a b c"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = send(&weir, Some("sk-one-SECRET-0001"), &sized_chat("up/m", 20)).await;
        if r.status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the abandoned stream never freed its slot: {}", r.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn admin_makes_lists_and_revokes_keys_and_streams_settle_their_usage() {
    let up = MockUpstream::start().await;
    let port = free_port();
    let cfg = format!("{}{}{}", admin_toml(port), PRICES, up.provider_toml("up", "", ""));
    let weir = Weir::start(&cfg).await;
    // No key yet: requests pass without one.
    assert_eq!(send(&weir, None, &sized_chat("up/m", 20)).await.status, 200);

    let made = admin(port, reqwest::Method::POST, "/admin/keys", Some(json!({"name": "b", "rpm": 100}))).await;
    assert_eq!(made.status, 201, "{}", made.text);
    let secret = made.json()["key"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 40, "{secret}");
    let again = admin(port, reqwest::Method::POST, "/admin/keys", Some(json!({"name": "b"}))).await;
    assert_eq!(again.status, 409, "{}", again.text);

    // Now a key is needed.
    assert_eq!(send(&weir, None, &sized_chat("up/m", 20)).await.status, 401);
    assert_eq!(send(&weir, Some(&secret), &sized_chat("up/m", 20)).await.status, 200);
    let resp = client()
        .post(weir.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {secret}"))
        .json(&json!({"model": "up/m", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "a b"}]}))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("x-weir-cost-usd").is_none(), "a stream's cost is known only at its end");
    resp.text().await.unwrap();

    let list = admin(port, reqwest::Method::GET, "/admin/keys", None).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["keys"][0]["name"], "b", "{}", list.text);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let usage = loop {
        let u = admin(port, reqwest::Method::GET, "/admin/keys/b/usage", None).await;
        assert_eq!(u.status, 200, "{}", u.text);
        if u.json()["total"]["requests"] == 2 || tokio::time::Instant::now() > deadline {
            break u.json();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Both answers' reported usage (the stream's from its last chunk).
    assert_eq!(usage["total"]["prompt_tokens"], USAGE.0 * 2, "{usage}");
    assert_eq!(usage["total"]["completion_tokens"], USAGE.1 * 2, "{usage}");
    assert_eq!(usage["total"]["cost_usd"], "0.034", "{usage}");

    let revoked = admin(port, reqwest::Method::DELETE, "/admin/keys/b", None).await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    let r = send(&weir, Some(&secret), &sized_chat("up/m", 20)).await;
    assert_eq!(r.status, 401, "a revoked key is refused: {}", r.text);
    assert_eq!(admin(port, reqwest::Method::DELETE, "/admin/keys/b", None).await.status, 404);

    let m = weir.metrics().await;
    assert_eq!(metric(&m, "weir_key_requests_total", &[("key", "b")]), 2.0, "{m}");
    assert!(m.contains("# HELP weir_key_requests_total"), "{m}");
    assert_eq!(metric(&m, "weir_key_cost_nano_usd_total", &[("key", "b")]), 34_000_000.0, "{m}");
    for text in [list.text, usage.to_string(), weir.logs(), m] {
        assert!(!text.contains(&secret), "the secret leaked: {text}");
    }
}

#[tokio::test]
async fn a_retried_request_counts_once_against_the_keys_limits() {
    let up = MockUpstream::start().await;
    let retries = "[providers.retry]\nbase_backoff = \"5ms\"\nmax_backoff = \"20ms\"\n";
    let cfg = format!(
        "{}{}{PRICES}",
        key_toml("two", "sk-two-SECRET-0001", "rpm = 2\nbudget = { usd = 1.0, period = \"1d\" }"),
        up.provider_toml("up", "discover_models = false", retries)
    );
    let weir = Weir::start(&cfg).await;
    // Fails once upstream, answered by the retry: one request for the key, two attempts.
    let r = send(&weir, Some("sk-two-SECRET-0001"), &sized_chat("up/m;fail_times=1", 20)).await;
    assert_eq!((r.status, r.header("x-weir-attempts")), (200, Some("2")), "{}", r.text);
    assert_eq!(r.header("x-weir-cost-usd"), Some("0.017"), "only the answer's usage is charged");
    assert_eq!(send(&weir, Some("sk-two-SECRET-0001"), &sized_chat("up/m", 20)).await.status, 200);
    let third = send(&weir, Some("sk-two-SECRET-0001"), &sized_chat("up/m", 20)).await;
    assert_eq!(third.status, 429, "{}", third.text);
    assert_eq!(up.chats().len(), 3);
}
