//! `[[routes]]`: a model served by several providers (or deployments), each request sent to
//! one of them by a strategy, the others its fallbacks; optionally hedged.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, values};

/// Most targets of one route.
pub const MAX_ROUTE_TARGETS: usize = 8;

/// How a route picks the target of a request's first attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// At random, in proportion to the targets' weights.
    #[default]
    Weighted,
    /// The target with the fewest requests in flight or waiting, per unit of weight.
    LeastOutstanding,
    /// The target with the lowest moving average of time to answer (a stream: to its first
    /// event); one not measured yet first.
    Latency,
}

/// One `[[routes]]` table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The model name clients send; it routes here before any provider's `models`.
    pub model: String,
    /// How the first attempt's target is picked.
    #[serde(default)]
    pub strategy: Strategy,
    /// Where the model is served.
    pub targets: Vec<RouteTarget>,
    /// Opt-in hedging: when the first attempt has not answered (a stream: sent its first
    /// event) after this long, the same request goes to the next target too; the first to
    /// answer wins and the other is cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "values::duration::option")]
    pub hedge_after: Option<Duration>,
    /// What a stream cut after its first byte becomes: the front door's error event (`off`), or
    /// the rest of the answer from the next fallback, asked with the text so far as prefill.
    #[serde(default, skip_serializing_if = "StreamResume::is_off")]
    pub stream_resume: StreamResume,
}

/// `[[routes]] stream_resume`: what happens to a stream that fails after bytes reached the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamResume {
    /// The stream ends with the front door's error event.
    #[default]
    Off,
    /// The next fallback continues it (assistant prefill); its refusal ends it as `off` does.
    Continue,
}

impl StreamResume {
    fn is_off(&self) -> bool {
        *self == Self::Off
    }
}

/// One target of a route.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTarget {
    /// A configured provider's name.
    pub provider: String,
    /// The model asked of it (default: the route's `model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Relative share of requests (`weighted`), or of load (`least_outstanding`); 0: only as a
    /// fallback.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// Checks `[[routes]]`: models named once, targets of configured providers, some weight.
/// `fallbacks` names the models `[fallbacks]` lists.
pub(super) fn validate_routes(
    routes: &[RouteConfig],
    providers: &HashSet<&str>,
    fallbacks: &HashSet<&str>,
) -> Result<(), ConfigError> {
    let mut models = HashSet::new();
    for (i, r) in routes.iter().enumerate() {
        let key = |field: &str| format!("routes[{i}].{field}");
        if r.model.is_empty() || !models.insert(r.model.as_str()) {
            return Err(ConfigError::invalid(key("model"), format!("{:?}: empty or routed twice", r.model)));
        }
        if r.targets.is_empty() || r.targets.len() > MAX_ROUTE_TARGETS {
            return Err(ConfigError::invalid(key("targets"), format!("1 to {MAX_ROUTE_TARGETS} targets")));
        }
        if r.targets.iter().all(|t| t.weight == 0) {
            return Err(ConfigError::invalid(key("targets"), "at least one target needs a weight above 0"));
        }
        for (j, t) in r.targets.iter().enumerate() {
            if !providers.contains(t.provider.as_str()) {
                return Err(ConfigError::invalid(
                    key(&format!("targets[{j}].provider")),
                    format!("{:?} is not a configured provider", t.provider),
                ));
            }
            if t.model.as_ref().is_some_and(String::is_empty) {
                return Err(ConfigError::invalid(key(&format!("targets[{j}].model")), "is empty"));
            }
        }
        if r.hedge_after.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::invalid(key("hedge_after"), "must be above 0"));
        }
        if r.hedge_after.is_some() && r.targets.len() < 2 {
            return Err(ConfigError::invalid(key("hedge_after"), "hedging needs a second target"));
        }
        if r.stream_resume == StreamResume::Continue && r.targets.len() < 2 && !fallbacks.contains(r.model.as_str()) {
            return Err(ConfigError::invalid(
                key("stream_resume"),
                "\"continue\" needs a second target or [fallbacks] for the model to continue on",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::{Config, ConfigError, Strategy};

    const TWO: &str = "[[providers]]\nname = \"a\"\nkind = \"mock\"\nmodels = [\"m\"]\n\
                       [[providers]]\nname = \"b\"\nkind = \"mock\"\nmodels = [\"m\"]\n";

    fn refused_key(extra: &str) -> String {
        match Config::from_toml(&format!("{TWO}{extra}")) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{extra}: {other:?}"),
        }
    }

    #[test]
    fn a_route_names_its_targets_strategy_and_hedge() {
        let cfg = Config::from_toml(&format!(
            "{TWO}[[routes]]\nmodel = \"gpt\"\nstrategy = \"least_outstanding\"\nhedge_after = \"300ms\"\n\
             targets = [{{ provider = \"a\", weight = 3 }}, {{ provider = \"b\", model = \"m2\" }}]\n"
        ))
        .unwrap();
        let r = &cfg.routes[0];
        assert_eq!((r.strategy, r.targets[0].weight, r.targets[1].weight), (Strategy::LeastOutstanding, 3, 1));
        assert_eq!(r.targets[1].model.as_deref(), Some("m2"));
        assert_eq!(r.stream_resume, crate::StreamResume::Off, "off unless opted in");
    }

    #[test]
    fn a_route_opts_in_to_continuing_cut_streams() {
        let route = "[[routes]]\nmodel = \"gpt\"\nstream_resume = \"continue\"\n";
        let two =
            Config::from_toml(&format!("{TWO}{route}targets = [{{ provider = \"a\" }}, {{ provider = \"b\" }}]\n"));
        assert_eq!(two.unwrap().routes[0].stream_resume, crate::StreamResume::Continue);
        // One target is enough when [fallbacks] lists where the model goes next.
        let one = format!("{TWO}[fallbacks]\ngpt = [\"b/m\"]\n{route}targets = [{{ provider = \"a\" }}]\n");
        assert!(Config::from_toml(&one).is_ok());
        let bad = format!(
            "{TWO}[[routes]]\nmodel = \"gpt\"\nstream_resume = \"restart\"\ntargets = [{{ provider = \"a\" }}]\n"
        );
        let e = Config::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("stream_resume"), "{e}");
    }

    #[test]
    fn bad_routes_are_refused_by_key() {
        let route = |body: &str| format!("[[routes]]\nmodel = \"gpt\"\n{body}\n");
        assert_eq!(refused_key(&route("targets = [{ provider = \"nowhere\" }]")), "routes[0].targets[0].provider");
        assert_eq!(refused_key(&route("targets = []")), "routes[0].targets");
        assert_eq!(refused_key(&route("targets = [{ provider = \"a\", weight = 0 }]")), "routes[0].targets");
        assert_eq!(
            refused_key(&route("hedge_after = \"1s\"\ntargets = [{ provider = \"a\" }]")),
            "routes[0].hedge_after"
        );
        assert_eq!(
            refused_key(&route("stream_resume = \"continue\"\ntargets = [{ provider = \"a\" }]")),
            "routes[0].stream_resume"
        );
        let twice =
            format!("{}{}", route("targets = [{ provider = \"a\" }]"), route("targets = [{ provider = \"b\" }]"));
        assert_eq!(refused_key(&twice), "routes[1].model");
    }
}
