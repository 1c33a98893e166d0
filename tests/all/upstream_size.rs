//! Whole upstream answers are bounded by the pool's `max_response_bytes`: an oversized one is a
//! clear 502 `upstream_response_too_large`, whether announced by Content-Length or found while
//! reading, and the bytes being buffered are accounted per provider.

use crate::support::{MockUpstream, Weir, chat, metric, post};

#[tokio::test]
async fn oversized_upstream_answer_is_502_upstream_response_too_large() {
    let up = MockUpstream::start().await;
    // One worker: every request after a refused answer reuses (or replaces) its connection.
    let weir = Weir::start(&up.provider_toml("up", "", "workers = 1\nmax_response_bytes = 65536")).await;
    let url = weir.url("/v1/chat/completions");
    for model in ["up/m;size=200000", "up/m;size=200000;no_length", "up/m;size=65537;no_length"] {
        let reply = post(&url, &chat(model, "x")).await;
        assert_eq!(
            (reply.status, reply.error_code().as_str()),
            (502, "upstream_response_too_large"),
            "{model}: {}",
            reply.text
        );
        assert!(reply.error_message().contains("65536"), "the limit is named: {}", reply.text);
    }
    // Answers within the limit still pass, on a healthy gateway.
    for model in ["up/m;size=65536", "up/m;size=60000;no_length", "up/m"] {
        let reply = post(&url, &chat(model, "x")).await;
        assert_eq!(reply.status, 200, "{model}: {}", reply.text);
    }
    assert_eq!(weir.ready().await.0, 200);
    let m = weir.metrics().await;
    assert!(m.contains("weir_pool_buffered_bytes{provider=\"up\"}"), "the gauge is exported");
    assert_eq!(metric(&m, "weir_pool_buffered_bytes", &[("provider", "up")]), 0.0, "nothing left accounted");
}
