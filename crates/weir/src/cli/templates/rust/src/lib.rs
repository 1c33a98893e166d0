//! {{name}}: a Weir plugin on the Rust plugin SDK (`vendor/weir-plugin-sdk`), a prompt guard.
//! It rejects a prompt that matches one of its rules (case-insensitive regular expressions from
//! the config) with a 400 naming the rule, adds the header `x-{{name}}: checked` to every
//! response it sees, and logs through the host.

use std::collections::BTreeMap;

use regex_lite::{Regex, RegexBuilder};
use weir_plugin_sdk::{Hooks, Plugin, Rejection, Request, RequestAction, Response, ResponseAction, export, log};

const NAME: &str = "{{name}}";

/// The plugin's `config` table: `{"rules": {"<name>": "<regex>", ...}}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_rules")]
    rules: BTreeMap<String, String>,
}

fn default_rules() -> BTreeMap<String, String> {
    BTreeMap::from([("injection".to_owned(), "ignore (all )?previous instructions".to_owned())])
}

/// One value per instance; instances are reused across requests, so rules compile once.
struct Guard {
    rules: Vec<(String, Regex)>,
}

impl Plugin for Guard {
    const HOOKS: Hooks = Hooks::ON_REQUEST.union(Hooks::ON_RESPONSE);

    fn init(config: &str) -> Result<Self, String> {
        let config: Config = weir_plugin_sdk::parse_config(config)?;
        let mut rules = Vec::new();
        for (name, pattern) in config.rules {
            let re = RegexBuilder::new(&pattern).case_insensitive(true).build();
            let re = re.map_err(|e| format!("invalid config: rule `{name}`: {e}"))?;
            rules.push((name, re));
        }
        log::info(&format!("{NAME} ready with {} rule(s)", rules.len()));
        Ok(Guard { rules })
    }

    fn on_request(&mut self, req: &Request) -> RequestAction {
        // The host walks the body: every message's text, no JSON to parse here.
        let texts = req.prompt_texts();
        let Some((rule, _)) = self.rules.iter().find(|(_, re)| texts.iter().any(|t| re.is_match(t))) else {
            return RequestAction::Continue;
        };
        log::warn(&format!("{NAME} rejected request {}: rule `{rule}` matched", req.id()));
        RequestAction::Reject(Rejection {
            status: 400,
            message: format!("prompt rejected by {NAME}: it matches rule `{rule}`"),
            code: Some("prompt_rejected".to_owned()),
        })
    }

    fn on_response(&mut self, _req: &Request, resp: &Response) -> ResponseAction {
        // Fails only on an invalid header name or value; ours are valid.
        let _ = resp.set_header(&format!("x-{NAME}"), "checked");
        ResponseAction::Pass
    }
}

export!(Guard);
