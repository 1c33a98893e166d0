//! API keys configured through `${ENV}` reach the upstream but never a log line, an error body
//! or a response header, even when the upstream quotes them back.

use std::time::Duration;

use serde_json::json;

use crate::support::plugins::{plugin_toml, runtime_toml};
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

/// A key with no 5-byte run in common with anything else a test prints.
const KEY: &str = "zq9-Q7hZ2xW9pLm4vR8tKdY3";
/// A provider header value with a secret-looking name, written in the file.
const HEADER_SECRET: &str = "hdr-Jc6wN1bT5yUe8Gs0";
/// A provider header value with a plain name, from the environment.
const ENV_HEADER_SECRET: &str = "org-Vf3kP8mQ2rXn7Ld4";

/// Fails if `text` holds any 5-byte piece of `secret` (a cut key leaks its pieces).
fn assert_no_piece(text: &str, secret: &str, what: &str) {
    for piece in secret.as_bytes().windows(5) {
        let piece = std::str::from_utf8(piece).unwrap();
        assert!(!text.contains(piece), "{what} holds {piece:?} of a secret:\n{text}");
    }
}

fn assert_reply_clean(r: &Reply, secrets: &[&str]) {
    for s in secrets {
        assert_no_piece(&r.text, s, "body");
        for (name, value) in &r.headers {
            assert_no_piece(value.to_str().unwrap_or_default(), s, &format!("header {name}"));
        }
    }
}

async fn leaky_weir(up: &MockUpstream) -> Weir {
    let config = format!(
        "[[providers]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
         keys = [{{ value = \"${{WEIR_E2E_KEY}}\" }}]\n\
         headers = {{ x-custom-auth = \"{HEADER_SECRET}\", x-org = \"${{WEIR_E2E_ORG}}\", x-team = \"blue-team-alpha\" }}\n",
        up.base_url()
    );
    Weir::builder(&config).env("WEIR_E2E_KEY", KEY).env("WEIR_E2E_ORG", ENV_HEADER_SECRET).start().await
}

async fn stop_and_check_logs(mut weir: Weir, secrets: &[&str]) -> String {
    weir.sigterm();
    assert!(weir.wait_exit(Duration::from_secs(20)).await.success());
    let logs = weir.logs();
    for s in secrets {
        assert_no_piece(&logs, s, "the log");
    }
    logs
}

#[tokio::test]
async fn upstream_error_param_never_carries_the_key() {
    let up = MockUpstream::start().await;
    let weir = leaky_weir(&up).await;
    let r = post(&weir.url("/v1/chat/completions"), &chat("up/m;status=400;echo_param", "x")).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(up.chats()[0].authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()));
    assert_reply_clean(&r, &[KEY]);
    assert_eq!(r.error_param().as_deref(), Some("<redacted>"), "{}", r.text);
    stop_and_check_logs(weir, &[KEY]).await;
}

#[tokio::test]
async fn key_straddling_the_message_cut_leaks_no_piece_to_client_or_warn_log() {
    let up = MockUpstream::start().await;
    let weir = leaky_weir(&up).await;
    // Plain-text error bodies are relayed cut short; put the key across that cut, and on
    // either side of it.
    for at in [150, 185, 190, 195, 199, 200, 260] {
        let r = post(&weir.url("/v1/chat/completions"), &chat(&format!("up/m;status=500;key_at={at}"), "x")).await;
        assert_eq!(r.status, 502, "{}", r.text);
        assert_reply_clean(&r, &[KEY]);
        assert!(r.error_message().contains("xxxx"), "the upstream text is still relayed: {}", r.text);
    }
    let logs = stop_and_check_logs(weir, &[KEY]).await;
    assert!(logs.contains("WARN") && logs.contains("request failed"), "no WARN line:\n{logs}");
}

#[tokio::test]
async fn secret_provider_headers_echoed_back_are_scrubbed() {
    let up = MockUpstream::start().await;
    let weir = leaky_weir(&up).await;
    let url = weir.url("/v1/chat/completions");
    let named = post(&url, &chat("up/m;status=400;echo_header=x-custom-auth", "x")).await;
    let from_env = post(&url, &chat("up/m;status=500;echo_header=x-org", "x")).await;
    let plain = post(&url, &chat("up/m;status=400;echo_header=x-team", "x")).await;
    for r in [&named, &from_env] {
        assert!(r.status >= 400, "{}", r.text);
        assert_reply_clean(r, &[KEY, HEADER_SECRET, ENV_HEADER_SECRET]);
        assert!(r.error_message().contains("<redacted>"), "{}", r.text);
    }
    // A header with a plain name written in the file is not a secret.
    assert!(plain.error_message().contains("blue-team-alpha"), "{}", plain.text);
    stop_and_check_logs(weir, &[KEY, HEADER_SECRET, ENV_HEADER_SECRET]).await;
}

#[tokio::test]
async fn key_echoed_in_a_stream_chunk_or_an_answer_is_scrubbed() {
    let up = MockUpstream::start().await;
    let weir = leaky_weir(&up).await;
    let url = weir.url("/v1/chat/completions");
    let mut body = chat("up/m;echo_auth", "hello there");
    body["stream"] = json!(true);
    let stream = Reply::read(client().post(&url).json(&body).send().await.unwrap()).await;
    assert_eq!(stream.status, 200, "{}", stream.text);
    assert!(stream.text.contains("you sent Bearer <redacted>"), "{}", stream.text);
    assert!(stream.text.contains("hello ") && stream.text.ends_with("data: [DONE]\n\n"), "{}", stream.text);
    assert_reply_clean(&stream, &[KEY]);

    let whole = post(&url, &chat("up/m;echo_auth", "x")).await;
    assert_eq!(whole.status, 200, "{}", whole.text);
    assert_eq!(whole.json()["choices"][0]["message"]["content"], "you sent Bearer <redacted>");
    assert_reply_clean(&whole, &[KEY]);
    stop_and_check_logs(weir, &[KEY]).await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn admin_config_redacts_plugin_config_values_from_the_environment() {
    let port = free_port();
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"${{WEIR_E2E_ADMIN}}\"\nwatch = false\n{}\
         [[providers]]\nname = \"mock\"\nkind = \"mock\"\nmodels = [\"m\"]\n{}",
        runtime_toml(),
        plugin_toml(
            "noop",
            "noop",
            "config = { api_key = \"${WEIR_E2E_PLUGIN_KEY}\", bearer = \"Bearer ${WEIR_E2E_PLUGIN_KEY}\", \
             level = \"info\", nested = { list = [\"${WEIR_E2E_PLUGIN_KEY}\", \"plain\"] } }",
        )
    );
    let weir =
        Weir::builder(&config).env("WEIR_E2E_ADMIN", "Wz4Rt8-qP3mK7nB2").env("WEIR_E2E_PLUGIN_KEY", KEY).start().await;
    let r = Reply::read(
        client()
            .get(format!("http://127.0.0.1:{port}/admin/config"))
            .header("authorization", "Bearer Wz4Rt8-qP3mK7nB2")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_reply_clean(&r, &[KEY, "Wz4Rt8-qP3mK7nB2"]);
    let plugin = &r.json()["plugins"][0]["config"];
    assert_eq!(plugin["api_key"], "<redacted>", "{}", r.text);
    assert_eq!(plugin["bearer"], "<redacted>", "{}", r.text);
    assert_eq!(plugin["nested"]["list"], json!(["<redacted>", "plain"]), "{}", r.text);
    assert_eq!(plugin["level"], "info", "values written in the file stay visible: {}", r.text);
    stop_and_check_logs(weir, &[KEY, "Wz4Rt8-qP3mK7nB2"]).await;
}

/// Credential-looking headers a client may send, none of which a plugin may see.
const CREDENTIALS: &[(&str, &str)] = &[
    ("authorization", "Bearer cred-a"),
    ("authentication", "cred-b"),
    ("x-access-token", "cred-c"),
    ("x-amz-security-token", "cred-d"),
    ("x-auth-token", "cred-e"),
    ("x-forwarded-authorization", "Bearer cred-f"),
    ("cookie", "sid=cred-g"),
    ("x-api-key", "cred-h"),
    ("x-client-secret", "cred-i"),
    ("x-session-id", "cred-j"),
    ("x-hub-signature", "cred-k"),
    ("proxy-authorization", "cred-l"),
];

/// The headers the `misbehave` plugin in `headers` mode reports, checking that no credential
/// value outside `exposed` reached it under any name.
async fn headers_seen_by_plugin(runtime_extra: &str, exposed: &[&str]) -> serde_json::Map<String, serde_json::Value> {
    let config = format!(
        "[[providers]]\nname = \"mock\"\nkind = \"mock\"\nmodels = [\"m\"]\n{}{runtime_extra}\n{}",
        runtime_toml(),
        plugin_toml("spy", "misbehave", "config = { mode = \"headers\", always = true }")
    );
    let weir = Weir::start(&config).await;
    let mut req = client().post(weir.url("/v1/chat/completions")).json(&chat("m", "hi"));
    for (name, value) in CREDENTIALS {
        req = req.header(*name, *value);
    }
    req = req.header("x-trace-id", "trace-1").header("x-tenant", "acme");
    let r = Reply::read(req.send().await.unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    for (name, value) in CREDENTIALS.iter().filter(|(name, _)| !exposed.contains(name)) {
        assert!(!r.text.contains(value), "a plugin saw {name}: {}", r.text);
    }
    r.json()["headers"].as_object().cloned().unwrap_or_else(|| panic!("no headers in {}", r.text))
}

#[tokio::test]
async fn credential_looking_headers_are_withheld_from_plugins() {
    let seen = headers_seen_by_plugin("", &[]).await;
    for (name, _) in CREDENTIALS {
        assert!(!seen.contains_key(*name), "{name} reached the plugin: {seen:?}");
    }
    assert_eq!(seen["x-trace-id"], "trace-1", "{seen:?}");
    assert_eq!(seen["x-tenant"], "acme", "{seen:?}");
}

#[tokio::test]
async fn withheld_plugin_headers_are_configurable() {
    let runtime = "expose_headers = [\"X-Session-Id\"]\nwithhold_headers = [\"x-tenant\"]\n";
    let seen = headers_seen_by_plugin(runtime, &["x-session-id"]).await;
    assert_eq!(seen["x-session-id"], "cred-j", "an exposed header reaches plugins: {seen:?}");
    assert!(!seen.contains_key("x-tenant"), "{seen:?}");
    assert_eq!(seen["x-trace-id"], "trace-1", "{seen:?}");
}

#[tokio::test]
async fn plugin_config_secrets_never_reach_the_log_through_the_plugin() {
    let config = format!(
        "[[providers]]\nname = \"mock\"\nkind = \"mock\"\nmodels = [\"m\"]\n{}\n{}",
        runtime_toml(),
        plugin_toml(
            "chatty",
            "misbehave",
            "config = { mode = \"log\", always = true, note = \"${WEIR_E2E_PLUGIN_KEY}\" }"
        )
    );
    let weir = Weir::builder(&config).env("WEIR_E2E_PLUGIN_KEY", KEY).start().await;
    let r = post(&weir.url("/v1/chat/completions"), &chat("m", "hi")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    weir.wait_for_log("note on stdout is").await;
    let logs = stop_and_check_logs(weir, &[KEY]).await;
    assert!(logs.contains("note is <redacted>") && logs.contains("note on stdout is <redacted>"), "{logs}");
}
