//! `pii-redact`: masks email addresses, phone numbers and payment card numbers in prompts
//! before they leave the gateway; optionally in answers (`responses`) and stream chunks
//! (`streams`).
//!
//! ```toml
//! [[plugins]]
//! name = "pii-redact"
//! path = "plugins/pii_redact.wasm"
//! config = { email = true, phone = true, card = true, responses = false, streams = false, mask = "[{kind}]" }
//! ```

mod redact;

use serde_json::Value;
use weir_plugin_sdk::chat::rewrite_texts;
use weir_plugin_sdk::{
    ChunkAction, Hooks, Plugin, Request, RequestAction, Response, ResponseAction, api_format, export, get_json,
    operation, parse_config,
};

use crate::redact::{Config, Redactor};

struct PiiRedact {
    redactor: Redactor,
    responses: bool,
    streams: bool,
}

impl PiiRedact {
    fn rewrite(&self, value: &mut Value) -> bool {
        rewrite_texts(value, &mut |s| self.redactor.redact(s))
    }

    /// Redacts `choices[*].<field>.content` (message for responses, delta for chunks).
    fn rewrite_choices(&self, doc: &mut Value, field: &str) -> bool {
        let mut changed = false;
        if let Some(choices) = doc.get_mut("choices").and_then(Value::as_array_mut) {
            for choice in choices {
                if let Some(content) = choice.get_mut(field).and_then(|m| m.get_mut("content")) {
                    changed |= self.rewrite(content);
                }
            }
        }
        changed
    }
}

impl Plugin for PiiRedact {
    const HOOKS: Hooks = Hooks::all();

    fn init(config: &str) -> Result<Self, String> {
        let cfg: Config = parse_config(config)?;
        Ok(Self { redactor: Redactor::new(&cfg), responses: cfg.responses, streams: cfg.streams })
    }

    fn hooks(&self) -> Hooks {
        let mut h = Hooks::ON_REQUEST;
        if self.responses {
            h |= Hooks::ON_RESPONSE;
        }
        if self.streams {
            h |= Hooks::ON_STREAM_CHUNK;
        }
        h
    }

    fn on_request(&mut self, req: &Request) -> RequestAction {
        // Fast path: scan the plain prompt texts the host hands over (on any format);
        // ask for anything else, and fetch and parse the JSON, only when one of them may hold
        // something to mask. Each call into the host costs about as much as the scan.
        if !req.prompt_texts().iter().any(|t| self.redactor.may_redact(t)) {
            return RequestAction::Continue;
        }
        let (format, op) = (req.api_format(), req.operation());
        let pointers: &[&str] = match (format.as_str(), op.as_str()) {
            (api_format::OPENAI, operation::CHAT) => &["/messages"],
            (api_format::OPENAI, operation::EMBEDDINGS) => &["/input"],
            // Anthropic keeps the instructions beside the messages, in `system`.
            (api_format::ANTHROPIC, operation::CHAT) => &["/system", "/messages"],
            (api_format::OPENAI_RESPONSES, operation::CHAT) => &["/instructions", "/input"],
            // A body this plugin cannot rewrite: refuse rather than let the text through.
            _ => return weir_plugin_sdk::reject(400, format!("pii-redact cannot redact {format} {op} requests")),
        };
        for pointer in pointers {
            if let Some(mut value) = get_json::<Value>(req, pointer)
                && self.rewrite(&mut value)
                && let Err(e) = req.set(pointer, &value.to_string())
            {
                // Never let unredacted text through: refuse instead.
                return weir_plugin_sdk::reject(500, format!("pii-redact could not rewrite the request: {e}"));
            }
        }
        RequestAction::Continue
    }

    // Answers and chunks in OpenAI's shape (`choices`) or Anthropic's (`content` text blocks,
    // `text_delta` events); on another format nothing matches.
    fn on_response(&mut self, req: &Request, resp: &Response) -> ResponseAction {
        if req.api_format() == api_format::OPENAI_RESPONSES {
            if let Some(mut output) = resp.get("/output").and_then(|t| serde_json::from_str::<Value>(&t).ok())
                && self.rewrite(&mut output)
            {
                let _ = resp.set("/output", &output.to_string());
            }
            return ResponseAction::Pass;
        }
        if req.api_format() == api_format::ANTHROPIC {
            if let Some(mut content) = resp.get("/content").and_then(|t| serde_json::from_str::<Value>(&t).ok())
                && self.rewrite(&mut content)
            {
                let _ = resp.set("/content", &content.to_string());
            }
            return ResponseAction::Pass;
        }
        if let Some(mut choices) = resp.get("/choices").and_then(|t| serde_json::from_str::<Value>(&t).ok()) {
            let mut doc = serde_json::json!({ "choices": choices.take() });
            if self.rewrite_choices(&mut doc, "message") {
                let _ = resp.set("/choices", &doc["choices"].to_string());
            }
        }
        ResponseAction::Pass
    }

    fn on_stream_chunk(&mut self, req: &Request, chunk: &[u8]) -> ChunkAction {
        let Ok(mut doc) = serde_json::from_slice::<Value>(chunk) else { return ChunkAction::Pass };
        if req.api_format() == api_format::OPENAI_RESPONSES {
            // Text arrives in deltas, then again whole in the `*.done` events and the last one.
            let mut changed = false;
            for key in ["delta", "text"] {
                if let Some(text @ Value::String(_)) = doc.get_mut(key) {
                    changed |= self.rewrite(text);
                }
            }
            for key in ["part", "item"] {
                if let Some(v) = doc.get_mut(key) {
                    let mut one = Value::Array(vec![v.take()]);
                    changed |= self.rewrite(&mut one);
                    *v = one.as_array_mut().and_then(|a| a.pop()).unwrap_or_default();
                }
            }
            if let Some(output) = doc.get_mut("response").and_then(|r| r.get_mut("output")) {
                changed |= self.rewrite(output);
            }
            return if changed { ChunkAction::Rewrite(doc.to_string().into_bytes()) } else { ChunkAction::Pass };
        }
        let changed = match doc.get_mut("delta").and_then(|d| d.get_mut("text")) {
            // Anthropic's `content_block_delta` with a `text_delta`.
            Some(text @ Value::String(_)) => self.rewrite(text),
            _ => self.rewrite_choices(&mut doc, "delta"),
        };
        if changed {
            return ChunkAction::Rewrite(doc.to_string().into_bytes());
        }
        ChunkAction::Pass
    }
}

export!(PiiRedact);
