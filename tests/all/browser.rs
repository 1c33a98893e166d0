//! Browser-originated requests: a web page must not be able to spend the provider keys, by a
//! cross-site form-like POST, a foreign `Origin`, or DNS rebinding (a foreign `Host`). Origins
//! listed in `[server.browser]` get CORS headers and preflight answers.

use serde_json::json;

use crate::support::{MockUpstream, Reply, Weir, chat, client, metric};

const ALLOWED: &str = "https://app.example";

async fn start(up: &MockUpstream, admin_port: Option<u16>) -> Weir {
    let admin = admin_port.map_or(String::new(), |p| {
        format!("[admin]\nlisten = \"127.0.0.1:{p}\"\ntoken = \"admin-token\"\nwatch = false\n")
    });
    let config = format!(
        "[server.browser]\nallowed_origins = [\"{ALLOWED}\"]\nallowed_hosts = [\"gateway.internal\"]\n{admin}{}",
        up.provider_toml("up", r#"models = ["gpt-up"]"#, "")
    );
    Weir::start(&config).await
}

fn body() -> String {
    chat("gpt-up", "hi").to_string()
}

#[tokio::test]
async fn a_text_plain_post_is_refused_with_415() {
    let up = MockUpstream::start().await;
    let weir = start(&up, None).await;
    for ct in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let req = client().post(weir.url("/v1/chat/completions")).header("content-type", ct).body(body());
        let reply = Reply::read(req.send().await.unwrap()).await;
        assert_eq!(reply.status, 415, "{ct}: {}", reply.text);
        assert_eq!(reply.error_code(), "unsupported_media_type", "{ct}");
    }
    assert!(up.chats().is_empty(), "the upstream saw a refused request");
}

#[tokio::test]
async fn a_cross_site_origin_is_refused_and_never_reaches_the_provider() {
    let up = MockUpstream::start().await;
    let weir = start(&up, None).await;
    for origin in ["https://evil.example", "null", "https://app.example.evil.example"] {
        let req = client()
            .post(weir.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .header("origin", origin)
            .body(body());
        let reply = Reply::read(req.send().await.unwrap()).await;
        assert_eq!(reply.status, 403, "{origin}: {}", reply.text);
        assert_eq!(reply.error_code(), "origin_not_allowed", "{origin}");
        assert!(reply.header("access-control-allow-origin").is_none(), "{origin}");
        // A preflight from it gets no CORS grant either.
        let pre = client()
            .request(reqwest::Method::OPTIONS, weir.url("/v1/chat/completions"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert_eq!(pre.status(), 403, "{origin}");
        assert!(pre.headers().get("access-control-allow-origin").is_none());
    }
    assert!(up.chats().is_empty(), "the upstream saw a refused request");
}

#[tokio::test]
async fn a_rebinding_host_is_refused_on_a_loopback_listener() {
    let up = MockUpstream::start().await;
    let admin_port = free_port();
    let weir = start(&up, Some(admin_port)).await;
    let port = weir.addr().port();
    // reqwest sets Host from the URL; a rebinding page's request names its own domain instead.
    for host in ["evil.example", &format!("evil.example:{port}"), "localhost.evil.example"] {
        let req = client()
            .post(weir.url("/v1/chat/completions"))
            .header("host", host)
            .header("content-type", "application/json")
            .body(body());
        let reply = Reply::read(req.send().await.unwrap()).await;
        assert_eq!(reply.status, 403, "{host}: {}", reply.text);
        assert_eq!(reply.error_code(), "host_not_allowed", "{host}");
        let admin = client()
            .get(format!("http://127.0.0.1:{admin_port}/admin/config"))
            .header("host", host)
            .header("authorization", "Bearer admin-token")
            .send()
            .await
            .unwrap();
        let admin = Reply::read(admin).await;
        assert_eq!(admin.status, 403, "admin {host}: {}", admin.text);
        assert_eq!(admin.error_code(), "host_not_allowed");
    }
    assert!(up.chats().is_empty(), "the upstream saw a refused request");
    // A foreign Origin on the admin listener is refused too, token or not.
    let admin = client()
        .get(format!("http://127.0.0.1:{admin_port}/admin/config"))
        .header("origin", "https://evil.example")
        .header("authorization", "Bearer admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(Reply::read(admin).await.error_code(), "origin_not_allowed");
    // Loopback names, IP literals and the configured host still work.
    for host in [format!("localhost:{port}"), "127.0.0.1".to_owned(), "GATEWAY.internal:1".to_owned()] {
        let req = client()
            .post(weir.url("/v1/chat/completions"))
            .header("host", &host)
            .header("content-type", "application/json")
            .body(body());
        let reply = Reply::read(req.send().await.unwrap()).await;
        assert_eq!(reply.status, 200, "{host}: {}", reply.text);
    }
}

#[tokio::test]
async fn an_allowed_origin_gets_cors_headers_and_a_preflight_204() {
    let up = MockUpstream::start().await;
    let weir = start(&up, None).await;
    let pre = client()
        .request(reqwest::Method::OPTIONS, weir.url("/v1/chat/completions"))
        .header("origin", ALLOWED)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    let pre = Reply::read(pre).await;
    assert_eq!(pre.status, 204, "{}", pre.text);
    assert_eq!(pre.header("access-control-allow-origin"), Some(ALLOWED));
    assert!(pre.header("access-control-allow-methods").is_some_and(|m| m.contains("POST")));
    let headers = pre.header("access-control-allow-headers").unwrap_or_default().to_ascii_lowercase();
    assert!(headers.contains("authorization") && headers.contains("content-type"), "{headers}");
    assert!(pre.header("access-control-max-age").is_some_and(|a| a.parse::<u64>().is_ok()));
    assert!(pre.header("vary").is_some_and(|v| v.to_ascii_lowercase().contains("origin")));
    assert!(up.chats().is_empty(), "a preflight reached the provider");

    let req = client()
        .post(weir.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("origin", ALLOWED)
        .body(body());
    let reply = Reply::read(req.send().await.unwrap()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("access-control-allow-origin"), Some(ALLOWED));
    assert!(reply.header("vary").is_some_and(|v| v.to_ascii_lowercase().contains("origin")));
    // Errors carry the grant too, so the page can read why it failed.
    let req = client()
        .post(weir.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("origin", ALLOWED)
        .body(json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}).to_string());
    let reply = Reply::read(req.send().await.unwrap()).await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    assert_eq!(reply.header("access-control-allow-origin"), Some(ALLOWED));
}

#[tokio::test]
async fn sdk_like_requests_without_origin_work() {
    let up = MockUpstream::start().await;
    let weir = start(&up, None).await;
    // What the OpenAI SDKs send, what `curl -H 'content-type: application/json'` sends, and
    // a client that sends no content type at all.
    for ct in [Some("application/json"), Some("application/json; charset=utf-8"), Some("Application/JSON"), None] {
        let mut req = client()
            .post(weir.url("/v1/chat/completions"))
            .header("authorization", "Bearer sk-whatever")
            .header("user-agent", "OpenAI/Python 1.0")
            .body(body());
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let reply = Reply::read(req.send().await.unwrap()).await;
        assert_eq!(reply.status, 200, "{ct:?}: {}", reply.text);
        assert!(reply.header("access-control-allow-origin").is_none());
    }
    let emb = client()
        .post(weir.url("/v1/embeddings"))
        .header("content-type", "application/json")
        .body(json!({"model": "gpt-up", "input": "x"}).to_string());
    assert_eq!(Reply::read(emb.send().await.unwrap()).await.status, 200);
    assert_eq!(up.chats().len(), 4);
}

#[tokio::test]
async fn browser_guard_refusals_are_counted_in_requests_total() {
    let up = MockUpstream::start().await;
    let weir = start(&up, None).await;
    let url = weir.url("/v1/chat/completions");
    let refused = [
        client().post(&url).header("content-type", "text/plain").body(body()),
        client()
            .post(&url)
            .header("content-type", "application/json")
            .header("origin", "https://evil.example")
            .body(body()),
        client().post(&url).header("content-type", "application/json").header("host", "evil.example").body(body()),
        client().post(weir.url("/v1/embeddings")).header("origin", "null").body(body()),
    ];
    for req in refused {
        let reply = Reply::read(req.send().await.unwrap()).await;
        assert!(reply.status == 403 || reply.status == 415, "{}", reply.text);
    }
    let m = weir.metrics().await;
    let refusals = |status, outcome| {
        let labels = [("provider", "none"), ("model", "none"), ("status", status), ("outcome", outcome)];
        metric(&m, "weir_requests_total", &labels)
    };
    assert_eq!(refusals("415", "bad_request"), 1.0, "{m}");
    assert_eq!(refusals("403", "forbidden"), 3.0, "{m}");
    let embeddings = [("provider", "none"), ("status", "403"), ("endpoint", "embeddings")];
    assert_eq!(metric(&m, "weir_requests_total", &embeddings), 1.0, "{m}");
    assert!(up.chats().is_empty(), "the upstream saw a refused request");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
