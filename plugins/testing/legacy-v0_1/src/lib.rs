//! A plugin built against the frozen `weir:plugin@0.1.0` (`crates/plugins/wit-legacy/0.1.0/`), as a
//! component compiled before 0.2 would be: the gateway must still load and run it, on
//! OpenAI-format requests. It touches every 0.1 import so each delegation is exercised.
//!
//! `on-request` appends ` [legacy:<endpoint>]` to the last chat message, counts calls in kv
//! and as the custom metric `legacy_calls`, and refuses a request carrying
//! `x-legacy-reject` (403, `legacy_rejected`). `on-response` sets
//! `x-legacy: <endpoint>` on the answer.
#![allow(missing_docs)]
// wit-bindgen's generated ABI glue is unsafe.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "../../../crates/plugins/wit-legacy/0.1.0",
    world: "plugin",
});

use exports::weir::plugin::handler::Guest;
use weir::plugin::types::{ChunkAction, Endpoint, Hooks, Rejection, Request, RequestAction, Response, ResponseAction};
use weir::plugin::{clock, kv, log, metrics};

struct Legacy;

fn name(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions => "chat-completions",
        Endpoint::Embeddings => "embeddings",
    }
}

impl Guest for Legacy {
    fn init(_config: String) -> Result<Hooks, String> {
        Ok(Hooks::ON_REQUEST | Hooks::ON_RESPONSE)
    }

    fn on_request(req: &Request) -> RequestAction {
        if req.header("x-legacy-reject").is_some() {
            return RequestAction::Reject(Rejection {
                status: 403,
                message: "refused by a 0.1 plugin".into(),
                code: Some("legacy_rejected".into()),
            });
        }
        let endpoint = name(req.endpoint());
        let calls = kv::incr("calls", 1, 0).unwrap_or(0);
        metrics::counter("legacy_calls", 1);
        log::log(log::Level::Info, &format!("legacy plugin saw {endpoint} call {calls} at {}", clock::now()));
        if req.endpoint() == Endpoint::ChatCompletions
            && let Some(text) = req.get("/messages/0/content")
            && let Some(text) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"'))
        {
            let _ = req.set("/messages/0/content", &format!("\"{text} [legacy:{endpoint}]\""));
        }
        RequestAction::Continue
    }

    fn on_response(req: &Request, resp: &Response) -> ResponseAction {
        let _ = resp.set_header("x-legacy", name(req.endpoint()));
        ResponseAction::Pass
    }

    fn on_stream_chunk(_req: &Request, _chunk: Vec<u8>) -> ChunkAction {
        ChunkAction::Pass
    }
}

export!(Legacy);
