//! What a plugin writes (a reply, a rejection, a replaced answer, a rewritten stream chunk,
//! headers on its answer, an edited request body) leaves Weir scrubbed of every secret Weir
//! holds, the plugin's own `config` values from `${ENV}` among them.

use serde_json::json;

use crate::support::plugins::{plugin_toml, runtime_toml};
use crate::support::{MockUpstream, Reply, Weir, chat, client};

/// The plugin's secret, from the environment (no 5-byte run in common with test output).
const NOTE: &str = "pk-Hq7Rm2Wz9xLc4Vb8Nt3J";

fn echo_plugin(name: &str, mode: &str, hook: &str) -> String {
    plugin_toml(
        name,
        "misbehave",
        &format!(
            "config = {{ mode = \"{mode}\", hook = \"{hook}\", trigger_header = \"x-{name}\", \
             note = \"${{WEIR_E2E_PLUGIN_NOTE}}\" }}"
        ),
    )
}

fn assert_clean(r: &Reply, what: &str) {
    for piece in NOTE.as_bytes().windows(5) {
        let piece = std::str::from_utf8(piece).unwrap();
        assert!(!r.text.contains(piece), "{what}: body holds {piece:?} of the secret:\n{}", r.text);
        for (name, value) in &r.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            assert!(!value.contains(piece), "{what}: header {name} holds {piece:?} of the secret: {value}");
        }
    }
}

async fn send(weir: &Weir, trigger: &str, stream: bool) -> Reply {
    let mut body = chat("up/m", "hello there");
    if stream {
        body["stream"] = json!(true);
    }
    let req = client().post(weir.url("/v1/chat/completions")).header(format!("x-{trigger}"), "1").json(&body);
    Reply::read(req.send().await.unwrap()).await
}

#[tokio::test]
async fn secrets_a_plugin_writes_into_replies_answers_chunks_and_requests_are_scrubbed() {
    let up = MockUpstream::start().await;
    let config = format!(
        "{}{}{}{}{}{}{}",
        up.provider_toml("up", "", ""),
        runtime_toml(),
        echo_plugin("replier", "echo-note", "request"),
        echo_plugin("rejecter", "reject-note", "request"),
        echo_plugin("replacer", "echo-note", "response"),
        echo_plugin("rewriter", "echo-note", "chunk"),
        echo_plugin("editor", "set-note", "request"),
    );
    let mut weir = Weir::builder(&config).env("WEIR_E2E_PLUGIN_NOTE", NOTE).start().await;

    let reply = send(&weir, "replier", false).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["note"], "<redacted>", "{}", reply.text);
    assert_eq!(reply.header("x-note"), Some("note=<redacted>"));
    assert_clean(&reply, "reply");

    let rejection = send(&weir, "rejecter", false).await;
    assert_eq!(rejection.status, 403, "{}", rejection.text);
    assert_eq!(rejection.error_message(), "refused, note <redacted>");
    assert_clean(&rejection, "rejection");

    let replaced = send(&weir, "replacer", false).await;
    assert_eq!(replaced.status, 200, "{}", replaced.text);
    assert_eq!(replaced.json()["note"], "<redacted>", "{}", replaced.text);
    assert_eq!(replaced.header("x-note"), Some("note=<redacted>"));
    assert_clean(&replaced, "replaced answer");

    let rewritten = send(&weir, "rewriter", true).await;
    assert_eq!(rewritten.status, 200, "{}", rewritten.text);
    assert!(rewritten.text.contains(r#"data: {"note":"<redacted>","object":"echo"}"#), "{}", rewritten.text);
    assert!(rewritten.text.ends_with("data: [DONE]\n\n"), "{}", rewritten.text);
    assert_clean(&rewritten, "rewritten stream");

    let edited = send(&weir, "editor", false).await;
    assert_eq!(edited.status, 200, "{}", edited.text);
    assert_clean(&edited, "answer to an edited request");
    let sent = up.chats().last().map(|c| c.prompt()).unwrap_or_default();
    assert_eq!(sent, "note <redacted>", "the edited request went upstream with the secret");

    weir.sigterm();
    assert!(weir.wait_exit(std::time::Duration::from_secs(20)).await.success());
    assert!(!weir.logs().contains(&NOTE[3..11]), "{}", weir.logs());
}
