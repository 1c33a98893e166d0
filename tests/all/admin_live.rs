//! The admin API's live view: recent request records with filters, one record by id, the
//! stats snapshot, the SSE stream, the dashboard's sign-in (session cookie), audit events of
//! reloads, and nothing of it without the admin token.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{MockUpstream, Reply, Weir, chat, client, post};

const TOKEN: &str = "admin-token-for-live";

struct Admin {
    weir: Weir,
    port: u16,
}

impl Admin {
    async fn start(up: &MockUpstream, extra: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = format!(
            "[admin]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"${{WEIR_TEST_ADMIN_TOKEN}}\"\n{extra}\n{}",
            up.provider_toml("up", "", "")
        );
        let weir = Weir::builder(&config).env("WEIR_TEST_ADMIN_TOKEN", TOKEN).start().await;
        Self { weir, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn get(&self, path: &str) -> Reply {
        let r = client().get(self.url(path)).bearer_auth(TOKEN).send().await.unwrap();
        Reply::read(r).await
    }

    /// Waits (at most 10 s) until `GET path` answers JSON for which `done` holds.
    async fn wait_json(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.get(path).await.json();
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{path} never got there: {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn recent_requests_are_listed_filtered_and_found_by_id() {
    let up = MockUpstream::start().await;
    let admin = Admin::start(&up, "").await;
    let url = admin.weir.url("/v1/chat/completions");
    let ok = post(&url, &chat("up/m", "hello")).await;
    let failed = post(&url, &chat("up/m;status=500", "x")).await;
    assert_eq!((ok.status, failed.status), (200, 502));
    let all = admin.wait_json("/admin/requests", |v| v["requests"].as_array().is_some_and(|a| a.len() == 2)).await;
    let ids: Vec<&str> = all["requests"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    let failed_id = failed.header("x-request-id").unwrap();
    assert_eq!(ids, [failed_id, ok.header("x-request-id").unwrap()], "newest first");
    let errors = admin.get("/admin/requests?status=5xx").await.json();
    assert_eq!(errors["requests"].as_array().unwrap().len(), 1);
    assert_eq!(errors["requests"][0]["id"], failed_id);
    let none = admin.get("/admin/requests?model=other&status=").await.json();
    assert_eq!(none["requests"].as_array().unwrap().len(), 0);
    let one = admin.get(&format!("/admin/requests/{failed_id}")).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["status"], 502);
    assert_eq!(admin.get("/admin/requests/nope").await.status, 404);

    let stats = admin.wait_json("/admin/stats", |v| v["series"]["last_10s"]["requests"] == 2).await;
    assert_eq!(stats["providers"][0]["name"], "up");
    assert_eq!(stats["providers"][0]["workers"], 64);
    assert_eq!(stats["series"]["last_10s"]["errors"], 1);
    assert!(stats["events"]["sinks"][0]["written"].as_u64().unwrap() >= 2, "{stats}");

    // Without the token: nothing.
    for path in ["/admin/requests", "/admin/stats", "/admin/live", &format!("/admin/requests/{failed_id}")] {
        let r = client().get(admin.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert!(!r.text().await.unwrap().contains(failed_id));
    }
}

#[tokio::test]
async fn the_live_stream_sends_each_request_as_it_finishes() {
    let up = MockUpstream::start().await;
    let admin = Admin::start(&up, "").await;
    let mut live = client().get(admin.url("/admin/live")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(live.headers()["content-type"], "text/event-stream");
    let ok = post(&admin.weir.url("/v1/chat/completions"), &chat("up/m", "streamed to the dashboard")).await;
    let id = ok.header("x-request-id").unwrap().to_owned();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(seen.contains("event: request") && seen.contains(&id) && seen.contains("event: stats")) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, live.chunk()).await.expect("no live event in 10 s").unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk.expect("the stream ended")));
    }
}

#[tokio::test]
async fn the_dashboard_signs_in_with_the_token_and_a_session_cookie() {
    let up = MockUpstream::start().await;
    let admin = Admin::start(&up, "").await;
    let http = client();
    let page = http.get(admin.url("/admin/dashboard")).send().await.unwrap();
    assert_eq!(page.status(), 401, "signed out: the page shows its sign-in only");
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let wrong = http.post(admin.url("/admin/login")).json(&serde_json::json!({"token": "nope"})).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    // The page's own origin is the admin listener's: accepted.
    let origin = format!("http://127.0.0.1:{}", admin.port);
    let ok = http
        .post(admin.url("/admin/login"))
        .header("origin", &origin)
        .json(&serde_json::json!({"token": TOKEN}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 204);
    let set = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && !set.contains(TOKEN), "{set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    let stats = http.get(admin.url("/admin/stats")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(stats.status(), 200);
    let page = http.get(admin.url("/admin/dashboard")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(page.status(), 200);
    // A foreign page cannot use it.
    let foreign =
        http.get(admin.url("/admin/stats")).header("cookie", &cookie).header("origin", "http://evil.example").send();
    assert_eq!(foreign.await.unwrap().status(), 403);
    let out = http.post(admin.url("/admin/logout")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(out.status(), 204);
    let after = http.get(admin.url("/admin/stats")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(after.status(), 401);
}

#[tokio::test]
async fn a_reload_is_an_audit_event_on_the_bus() {
    let up = MockUpstream::start().await;
    let admin = Admin::start(&up, "[[events.sinks]]\nkind = \"stdout\"\nmin_priority = \"high\"\n").await;
    let r = client().post(admin.url("/admin/reload")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    admin.weir.wait_for_log("{\"event\":\"reload\",\"priority\":\"high\"").await;
    // A high-only sink takes no request records of successful requests.
    assert_eq!(post(&admin.weir.url("/v1/chat/completions"), &chat("up/m", "x")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!admin.weir.logs().contains("{\"event\":\"request\""));
    let line = admin.weir.logs().lines().find(|l| l.starts_with("{\"event\":\"reload\"")).unwrap().to_owned();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!((v["detail"]["trigger"].as_str(), v["detail"]["result"].as_str()), (Some("admin"), Some("ok")));
    // A refused dashboard sign-in is an audit event too, without the token tried.
    let r = client().post(admin.url("/admin/login")).json(&serde_json::json!({"token": "guess-123"})).send().await;
    assert_eq!(r.unwrap().status(), 401);
    admin.weir.wait_for_log("\"action\":\"dashboard_sign_in\",\"result\":\"refused\"").await;
    assert!(!admin.weir.logs().contains("guess-123"));
}
