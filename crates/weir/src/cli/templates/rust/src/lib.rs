//! {{name}}: a Weir plugin, a prompt guard. It rejects a prompt that matches one of its rules
//! (case-insensitive regular expressions from the config) with a 400 naming the rule, adds the
//! header `x-{{name}}: checked` to every response it sees, and logs through the host.
//!
//! Config (the plugin's `config` table, as JSON): `{"rules": {"<name>": "<regex>", ...}}`.
//! Without `rules`, DEFAULT_RULES apply.

wit_bindgen::generate!({ path: "wit", world: "plugin" });

use std::cell::RefCell;

use exports::weir::plugin::handler::Guest;
use regex_lite::{Regex, RegexBuilder};
use weir::plugin::log::{Level, log};
use weir::plugin::types::{ChunkAction, Hooks, Rejection, Request, RequestAction, Response, ResponseAction};

const NAME: &str = "{{name}}";
const DEFAULT_RULES: &[(&str, &str)] = &[("injection", "ignore (all )?previous instructions")];

thread_local! {
    /// Compiled once per instance in `init`; instances are reused across calls.
    static RULES: RefCell<Vec<(String, Regex)>> = const { RefCell::new(Vec::new()) };
}

fn compile(name: &str, pattern: &str) -> Result<(String, Regex), String> {
    let re = RegexBuilder::new(pattern)
        .case_insensitive(true)
        .build()
        .map_err(|e| format!("invalid config: rule `{name}`: {e}"))?;
    Ok((name.to_owned(), re))
}

fn parse_rules(config: &str) -> Result<Vec<(String, Regex)>, String> {
    let config: serde_json::Value =
        serde_json::from_str(if config.trim().is_empty() { "{}" } else { config })
            .map_err(|e| format!("invalid config: {e}"))?;
    match config.get("rules") {
        None => DEFAULT_RULES.iter().map(|(name, pattern)| compile(name, pattern)).collect(),
        Some(serde_json::Value::Object(rules)) => rules
            .iter()
            .map(|(name, pattern)| match pattern.as_str() {
                Some(p) => compile(name, p),
                None => Err(format!("invalid config: rule `{name}` must be a string")),
            })
            .collect(),
        Some(_) => Err("invalid config: `rules` must be an object".to_owned()),
    }
}

/// The first rule matching any message's `content` (read through the host by JSON pointer).
fn matched_rule(req: &Request) -> Option<String> {
    RULES.with_borrow(|rules| {
        for i in 0.. {
            let raw = req.get(&format!("/messages/{i}/content"))?;
            // A string is matched as text; multi-part content as its JSON text.
            let text = serde_json::from_str::<String>(&raw).unwrap_or(raw);
            if let Some((name, _)) = rules.iter().find(|(_, re)| re.is_match(&text)) {
                return Some(name.clone());
            }
        }
        None
    })
}

struct Plugin;

impl Guest for Plugin {
    fn init(config: String) -> Result<Hooks, String> {
        let rules = parse_rules(&config)?;
        log(Level::Info, &format!("{NAME} ready with {} rule(s)", rules.len()));
        RULES.set(rules);
        Ok(Hooks::ON_REQUEST | Hooks::ON_RESPONSE)
    }

    fn on_request(req: &Request) -> RequestAction {
        let Some(rule) = matched_rule(req) else {
            return RequestAction::Continue;
        };
        log(Level::Warn, &format!("{NAME} rejected request {}: rule `{rule}` matched", req.id()));
        RequestAction::Reject(Rejection {
            status: 400,
            message: format!("prompt rejected by {NAME}: it matches rule `{rule}`"),
            code: Some("prompt_rejected".to_owned()),
        })
    }

    fn on_response(_req: &Request, resp: &Response) -> ResponseAction {
        // Fails only on an invalid header name or value; ours are valid.
        let _ = resp.set_header(&format!("x-{NAME}"), "checked");
        ResponseAction::Pass
    }

    fn on_stream_chunk(_req: &Request, _chunk: Vec<u8>) -> ChunkAction {
        ChunkAction::Pass // not declared in `init`, so never called
    }
}

export!(Plugin);
