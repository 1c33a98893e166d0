// Shared by stamp-v1 and stamp-v2 (included with `include!`, each defining `VERSION`).
//
// `on-request` appends ` [<tag>:<version>]` to the last message (the mock provider echoes it
// back in the reply) and `on-response` sets `x-stamp: <tag>:<version>`. A request handled by
// one consistent plugin version and config shows the same stamp in both places; a request
// that saw a mix of versions would not.

use weir_plugin_sdk::{Hooks, Plugin, Request, RequestAction, Response, ResponseAction, export};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    tag: String,
    /// Make `init` fail (to test that a reload with a failing plugin is refused).
    #[serde(default)]
    fail_init: bool,
}

struct Stamp {
    stamp: String,
}

impl Plugin for Stamp {
    const HOOKS: Hooks = Hooks::ON_REQUEST.union(Hooks::ON_RESPONSE);

    fn init(config: &str) -> Result<Self, String> {
        let c: Config = weir_plugin_sdk::parse_config(config)?;
        if c.fail_init {
            return Err("init refused on purpose (fail_init = true)".into());
        }
        Ok(Stamp { stamp: format!("{}:{}", c.tag, VERSION) })
    }

    fn on_request(&mut self, req: &Request) -> RequestAction {
        let Some(mut messages) = weir_plugin_sdk::get_json::<Vec<serde_json::Value>>(req, "/messages") else {
            return RequestAction::Continue;
        };
        if let Some(last) = messages.last_mut()
            && let Some(text) = last.get("content").and_then(|c| c.as_str())
        {
            last["content"] = format!("{text} [{}]", self.stamp).into();
            let _ = weir_plugin_sdk::set_json(req, "/messages", &messages);
        }
        RequestAction::Continue
    }

    fn on_response(&mut self, _req: &Request, resp: &Response) -> ResponseAction {
        let _ = resp.set_header("x-stamp", &self.stamp);
        ResponseAction::Pass
    }
}

export!(Stamp);
