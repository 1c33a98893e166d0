//! A plugin built against `weir:plugin@0.2.0` (a copy of that contract in `wit/`), as a
//! component compiled before 0.2.1 added `max-tokens` would be. Its imports name
//! `weir:plugin/types@0.2.0` and its export `weir:plugin/handler@0.2.0`: the gateway must
//! resolve both to its 0.2.1 definitions and run it.
//!
//! `on-request` refuses a request whose prompt mentions `contract-reject` (403,
//! `contract_rejected`) and otherwise tags the answer with `x-contract: <api-format>
//! <model>`.
#![allow(missing_docs)]
// wit-bindgen's generated ABI glue is unsafe.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "wit",
    world: "plugin",
});

use exports::weir::plugin::handler::Guest;
use weir::plugin::types::{ChunkAction, Hooks, Rejection, Request, RequestAction, Response, ResponseAction};

struct Contract;

impl Guest for Contract {
    fn init(_config: String) -> Result<Hooks, String> {
        Ok(Hooks::ON_REQUEST | Hooks::ON_RESPONSE)
    }

    fn on_request(req: &Request) -> RequestAction {
        if req.prompt_texts().iter().any(|t| t.contains("contract-reject")) {
            return RequestAction::Reject(Rejection {
                status: 403,
                message: "refused by a 0.2.0 plugin".into(),
                code: Some("contract_rejected".into()),
            });
        }
        RequestAction::Continue
    }

    fn on_response(req: &Request, resp: &Response) -> ResponseAction {
        let _ = resp.set_header("x-contract", &format!("{} {}", req.api_format(), req.model()));
        ResponseAction::Pass
    }

    fn on_stream_chunk(_req: &Request, _chunk: Vec<u8>) -> ChunkAction {
        ChunkAction::Pass
    }
}

export!(Contract);
