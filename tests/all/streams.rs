//! Streams relayed to clients: events reach the client re-framed per the SSE rules.

use serde_json::json;

use crate::support::{MockUpstream, Weir, chat, client};

#[tokio::test]
async fn events_are_reframed_per_the_sse_rules() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&up.provider_toml("up", "", "")).await;
    let cases = [
        // JSON spread over two `data:` lines (LF, CRLF and CR line ends): each line reaches the
        // client as its own `data:` line, so it joins them back with `\n`.
        ("multiline", "data: {\"id\":\"m\",\ndata: \"choices\":[]}\n\ndata: {\"a\":\ndata: 1}\n\ndata: [DONE]\n\n"),
        // CR CR ends an event and a lone CR ends a line, as the client's parser reads them:
        // Weir relays the events its plugins saw, with no raw CR left to split them otherwise.
        ("lone_cr", "data: {\"n\":1}\n\ndata: {\"n\":2}\ndata: {\"x\":3}\n\ndata: [DONE]\n\n"),
    ];
    for (fixture, want) in cases {
        let mut body = chat(&format!("up/m;sse={fixture}"), "x");
        body["stream"] = json!(true);
        let resp = client().post(weir.url("/v1/chat/completions")).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{fixture}");
        assert_eq!(resp.text().await.unwrap(), want, "{fixture}");
    }
}
