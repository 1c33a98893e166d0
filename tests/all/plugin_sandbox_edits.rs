//! Hostile plugins against the host's limits on edits and replies (`plugins/testing/misbehave`,
//! `sandbox_edits` modes): JSON nested past the depth cap across `set` calls, header floods,
//! 1xx replies, and bodies or headers grown by many calls each under the per-call cap. Each
//! bad request gets one well-formed JSON answer through the plugin's `on_error`, weir stays
//! up, and a clean request after it is served.

use crate::support::plugins::{plugin_toml, runtime_toml};
use crate::support::{MockUpstream, Reply, Weir, chat, client};

/// One misbehave plugin per `(name, mode, hook, on_error)`, triggered by header `x-<name>`.
fn chain(plugins: &[(&str, &str, &str, &str)]) -> String {
    plugins
        .iter()
        .map(|(name, mode, hook, on_error)| {
            plugin_toml(
                name,
                "misbehave",
                &format!(
                    "instances = 1\ntimeout = \"2s\"\non_error = \"{on_error}\"\n\
                     config = {{ mode = \"{mode}\", hook = \"{hook}\", trigger_header = \"x-{name}\" }}"
                ),
            )
        })
        .collect()
}

async fn start(plugins: &[(&str, &str, &str, &str)]) -> (MockUpstream, Weir) {
    let up = MockUpstream::start().await;
    let config = up.provider_toml("up", r#"models = ["gpt-up"]"#, "") + &chain(plugins) + &runtime_toml();
    let weir = Weir::start(&config).await;
    (up, weir)
}

/// Sends one request carrying `x-<name>` (none for `None`); fails the test, with weir's logs,
/// if no response comes back (weir died or dropped the connection).
async fn send(weir: &Weir, name: Option<&str>) -> Reply {
    let mut req = client().post(weir.url("/v1/chat/completions")).json(&chat("gpt-up", "hello"));
    if let Some(name) = name {
        req = req.header(format!("x-{name}"), "1");
    }
    match req.send().await {
        Ok(resp) => Reply::read(resp).await,
        Err(e) => panic!("{name:?}: no response ({e}); weir logs:\n{}", tail(&weir.logs())),
    }
}

fn tail(logs: &str) -> &str {
    &logs[logs.len().saturating_sub(4000)..]
}

/// Each plugin's bad request ends in its `on_error` path (500 `plugin_error` naming it, or
/// for fail-open the provider's 200), and a clean request right after is served.
async fn each_fails_alone(weir: &Weir, plugins: &[(&str, &str, &str, &str)]) {
    for (name, mode, hook, on_error) in plugins {
        let reply = send(weir, Some(name)).await;
        if *on_error == "fail-open" {
            assert_eq!(reply.status, 200, "{mode} in {hook}: {}", reply.text);
            assert!(reply.json()["choices"].is_array(), "{}", reply.text);
        } else {
            assert_eq!(reply.status, 500, "{mode} in {hook}: {}", reply.text);
            assert_eq!(reply.error_code(), "plugin_error", "{mode} in {hook}");
            assert!(reply.error_message().contains(&format!("`{name}`")), "{}", reply.text);
        }
        let clean = send(weir, None).await;
        assert_eq!(clean.status, 200, "clean request after {mode} in {hook}: {}", clean.text);
    }
}

#[tokio::test]
async fn json_nested_past_the_depth_cap_is_refused_and_weir_stays_up() {
    let plugins = [
        ("deep-req", "deep-json", "request", "fail-closed"),
        ("deep-req-body", "deep-json-body", "request", "fail-closed"),
        ("deep-resp", "deep-json", "response", "fail-closed"),
        ("deep-resp-body", "deep-json-body", "response", "fail-closed"),
    ];
    let (up, weir) = start(&plugins).await;
    each_fails_alone(&weir, &plugins).await;
    // The host refused the nesting (the plugin panics quoting the setter's error).
    assert!(weir.logs().contains("deeper than 127 levels"), "{}", tail(&weir.logs()));
    // The failing request hooks kept their requests from the provider; the rest got there.
    assert_eq!(up.chats().len(), 2 + plugins.len(), "clean requests and the two response-hook ones");
}

#[tokio::test]
async fn header_floods_and_informational_replies_get_a_plugin_error() {
    let plugins = [
        ("many-headers", "many-headers", "response", "fail-closed"),
        ("reply-headers", "reply-many-headers", "request", "fail-closed"),
        ("reply-headers-resp", "reply-many-headers", "response", "fail-closed"),
        ("reply-100", "reply-status-100", "request", "fail-closed"),
        ("reply-101", "reply-status-101", "request", "fail-closed"),
        ("reply-101-resp", "reply-status-101", "response", "fail-closed"),
        ("reply-100-open", "reply-status-100", "request", "fail-open"),
    ];
    let (_up, weir) = start(&plugins).await;
    each_fails_alone(&weir, &plugins).await;
    assert!(weir.logs().contains("at most 100 plugin headers"), "{}", tail(&weir.logs()));
}

#[tokio::test]
async fn edits_adding_up_past_the_caps_are_refused() {
    let plugins = [
        ("grow-req", "accumulate-body", "request", "fail-closed"),
        ("grow-resp", "accumulate-body", "response", "fail-closed"),
        ("grow-headers", "accumulate-headers", "response", "fail-closed"),
    ];
    let (up, weir) = start(&plugins).await;
    each_fails_alone(&weir, &plugins).await;
    let logs = weir.logs();
    assert!(logs.contains("grow a body by at most"), "{}", tail(&logs));
    assert!(logs.contains("headers may total at most"), "{}", tail(&logs));
    // Nothing oversized went upstream.
    let largest = up.chats().iter().map(|s| s.body.to_string().len()).max().unwrap_or(0);
    assert!(largest < 1 << 20, "a {largest}-byte request reached the provider");
}
