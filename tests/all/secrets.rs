//! API keys configured through `${ENV}` reach the upstream but never a log line, an error body
//! or a response header, even when the upstream quotes them back.

use std::time::Duration;

use serde_json::json;

use crate::support::{MockUpstream, Reply, Weir, chat, client, post};

const SECRET: &str = "sk-test-SECRET123";

#[tokio::test]
async fn api_keys_never_appear_in_logs_or_error_bodies() {
    let up = MockUpstream::start().await;
    let config = format!(
        "[[providers]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
         keys = [{{ value = \"${{WEIR_E2E_KEY}}\", weight = 1 }}]\nheaders = {{ x-extra = \"${{WEIR_E2E_KEY}}\" }}\n\
         [providers.pool]\nrequest_timeout = \"300ms\"\n",
        up.base_url()
    );
    let mut weir = Weir::builder(&config).env("WEIR_E2E_KEY", SECRET).start().await;
    let url = weir.url("/v1/chat/completions");

    let mut replies: Vec<Reply> = Vec::new();
    replies.push(post(&url, &chat("up/m", "fine")).await);
    for model in [
        "up/m;status=401",
        "up/m;status=403;echo_auth",
        "up/m;status=400;echo_auth",
        "up/m;status=429;echo_auth",
        "up/m;status=500;echo_auth",
        "up/m;malformed",
        "up/m;latency=2000",
    ] {
        replies.push(post(&url, &chat(model, "x")).await);
    }
    let mut stream = chat("up/m;status=500;echo_auth", "x");
    stream["stream"] = json!(true);
    replies.push(Reply::read(client().post(&url).json(&stream).send().await.unwrap()).await);
    replies.push(post(&weir.url("/v1/embeddings"), &json!({"model": "up/e;status=422;echo_auth", "input": "x"})).await);

    // The key was really used, and the upstream really quoted it back.
    assert_eq!(up.chats()[0].authorization.as_deref(), Some(format!("Bearer {SECRET}").as_str()));
    assert_eq!(replies[0].status, 200);
    for r in &replies[1..] {
        assert!(r.status >= 400, "{}", r.text);
        assert!(!r.text.contains("SECRET123"), "key leaked in body: {}", r.text);
        for (name, value) in &r.headers {
            assert!(!value.to_str().unwrap_or_default().contains("SECRET123"), "key leaked in header {name}");
        }
    }
    let scrubbed = replies.iter().find(|r| r.status == 400).unwrap();
    assert!(scrubbed.error_message().contains("<redacted>"), "{}", scrubbed.text);

    weir.sigterm();
    assert!(weir.wait_exit(Duration::from_secs(20)).await.success());
    let logs = weir.logs();
    assert!(logs.contains("request failed") && logs.contains("upstream"), "logs miss the failures:\n{logs}");
    assert!(!logs.contains("SECRET123"), "key leaked in logs:\n{logs}");
}
