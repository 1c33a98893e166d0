//! `model-alias`: maps friendly model names to real ones and routes by rules (client header,
//! prompt size). The gateway routes the request by the new name.
//!
//! ```toml
//! [[plugins]]
//! name = "model-alias"
//! path = "plugins/model_alias.wasm"
//! [plugins.config.aliases]
//! fast = "mock-1"
//! [[plugins.config.rules]]
//! header = "x-tier=premium"
//! target = "openai/gpt-4o"
//! ```

mod rules;

use weir_plugin_sdk::{Hooks, Plugin, Request, RequestAction, export, parse_config};

use crate::rules::Config;

struct ModelAlias {
    cfg: Config,
}

impl Plugin for ModelAlias {
    const HOOKS: Hooks = Hooks::ON_REQUEST;

    fn init(config: &str) -> Result<Self, String> {
        let cfg: Config = parse_config(config)?;
        cfg.validate()?;
        Ok(Self { cfg })
    }

    fn on_request(&mut self, req: &Request) -> RequestAction {
        let model = req.model();
        let prompt_chars =
            if self.cfg.needs_prompt() { req.prompt_texts().iter().map(|t| t.chars().count()).sum() } else { 0 };
        if let Some(target) = self.cfg.resolve(&model, &|name| req.header(name), prompt_chars) {
            weir_plugin_sdk::log::debug(&format!("model-alias: {model} -> {target}"));
            req.set_model(&target);
        }
        RequestAction::Continue
    }
}

export!(ModelAlias);
