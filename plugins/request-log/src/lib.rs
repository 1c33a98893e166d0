//! `request-log`: one structured audit line per request (and per response) through the log
//! import: id, API format, operation, model, provider, sizes, token usage, allow-listed headers. Never
//! prompt text, answers or secrets.
//!
//! ```toml
//! [[plugins]]
//! name = "request-log"
//! path = "plugins/request_log.wasm"
//! config = { headers = ["user-agent"], level = "info", responses = true }
//! ```

mod line;

use serde::de::IgnoredAny;
use serde_json::Value;
use weir_plugin_sdk::log::Level;
use weir_plugin_sdk::{
    Hooks, Plugin, Request, RequestAction, Response, ResponseAction, api_format, export, get_json, operation,
    parse_config,
};

use crate::line::{Config, RequestFacts, request_line, response_line};

struct RequestLog {
    cfg: Config,
    level: Level,
}

impl Plugin for RequestLog {
    const HOOKS: Hooks = Hooks::ON_REQUEST.union(Hooks::ON_RESPONSE);

    fn init(config: &str) -> Result<Self, String> {
        let cfg: Config = parse_config(config)?;
        let level = match cfg.level.as_str() {
            "debug" => Level::Debug,
            "info" => Level::Info,
            "warn" => Level::Warn,
            other => return Err(format!("level must be debug, info or warn, not {other:?}")),
        };
        Ok(Self { cfg, level })
    }

    fn hooks(&self) -> Hooks {
        if self.cfg.responses { Self::HOOKS } else { Hooks::ON_REQUEST }
    }

    fn on_request(&mut self, req: &Request) -> RequestAction {
        let (format, op) = (req.api_format(), req.operation());
        let messages = if format == api_format::OPENAI && op == operation::CHAT {
            get_json::<Vec<IgnoredAny>>(req, "/messages").map_or(0, |m| m.len())
        } else {
            0
        };
        let prompt_chars = req.prompt_texts().iter().map(|t| t.chars().count()).sum();
        let headers = self.cfg.headers.iter().filter_map(|h| Some((h.clone(), req.header(h)?))).collect();
        let (id, model, provider) = (req.id(), req.model(), req.provider());
        let line = request_line(&RequestFacts {
            id: &id,
            api_format: &format,
            operation: &op,
            model: &model,
            provider: provider.as_deref(),
            stream: req.is_stream(),
            messages,
            prompt_chars,
            headers,
        });
        weir_plugin_sdk::log::at(self.level, &line);
        RequestAction::Continue
    }

    fn on_response(&mut self, req: &Request, resp: &Response) -> ResponseAction {
        let usage = resp.get("/usage").and_then(|t| serde_json::from_str::<Value>(&t).ok());
        let line = response_line(&req.id(), &req.model(), req.provider().as_deref(), resp.status(), usage.as_ref());
        weir_plugin_sdk::log::at(self.level, &line);
        ResponseAction::Pass
    }
}

export!(RequestLog);
