//! `prompt-guard`: refuses requests by keyword, regex, prompt size, message count or
//! `max_tokens`, with a clear OpenAI-style error (the matched text is never echoed).
//!
//! ```toml
//! [[plugins]]
//! name = "prompt-guard"
//! path = "plugins/prompt_guard.wasm"
//! config = { deny_keywords = ["ignore previous instructions"], max_prompt_chars = 20000, max_tokens = 4096 }
//! ```

mod guard;
mod keywords;

use weir_plugin_sdk::{
    Hooks, Plugin, Rejection, Request, RequestAction, api_format, export, get_json, operation, parse_config,
};

use crate::guard::{Config, Guard};

struct PromptGuard {
    guard: Guard,
}

impl Plugin for PromptGuard {
    const HOOKS: Hooks = Hooks::ON_REQUEST;

    fn init(config: &str) -> Result<Self, String> {
        let cfg: Config = parse_config(config)?;
        Ok(Self { guard: Guard::new(cfg)? })
    }

    fn on_request(&mut self, req: &Request) -> RequestAction {
        // The host hands over the prompt texts as plain strings: no JSON crosses or is parsed
        // here unless a message limit is configured.
        let texts = req.prompt_texts();
        // The message count is read where OpenAI and Anthropic keep the messages.
        let messages = if self.guard.counts_messages()
            && req.operation() == operation::CHAT
            && matches!(req.api_format().as_str(), api_format::OPENAI | api_format::ANTHROPIC)
        {
            get_json::<Vec<serde::de::IgnoredAny>>(req, "/messages").map_or(0, |m| m.len())
        } else {
            0
        };
        // A call into the host, skipped when no limit is set. The host reads the limit wherever
        // the request's format keeps it (and the larger of OpenAI's two names).
        let max_tokens = if self.guard.limits_tokens() { req.max_tokens() } else { None };
        match self.guard.check(&texts, messages, max_tokens) {
            Ok(()) => RequestAction::Continue,
            Err(v) => {
                weir_plugin_sdk::log::info(&format!("prompt-guard refused request {}: {}", req.id(), v.code));
                RequestAction::Reject(Rejection {
                    status: self.guard.status(),
                    message: v.message,
                    code: Some(v.code.to_owned()),
                })
            }
        }
    }
}

export!(PromptGuard);
