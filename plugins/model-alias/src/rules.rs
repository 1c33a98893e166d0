//! Alias and routing rules, independent of the plugin ABI (unit-tested natively).

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[plugins.config]` of `model-alias`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Friendly name → model (applied first, exact match).
    pub aliases: BTreeMap<String, String>,
    /// Routing rules, tried in order after aliasing; the first match sets the model.
    pub rules: Vec<Rule>,
}

/// One routing rule: every condition given must hold.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The model (after aliasing) must be this; `*` matches any.
    #[serde(default)]
    pub model: Option<String>,
    /// A client header must have this value: `"name=value"` (or just `"name"` for presence).
    #[serde(default)]
    pub header: Option<String>,
    /// The prompt must have at least this many characters.
    #[serde(default)]
    pub min_prompt_chars: Option<usize>,
    /// The model to use.
    pub target: String,
}

impl Config {
    /// Checks the rules make sense.
    ///
    /// # Errors
    /// Which rule is wrong.
    pub fn validate(&self) -> Result<(), String> {
        for (i, r) in self.rules.iter().enumerate() {
            if r.target.is_empty() {
                return Err(format!("rules[{i}].target is empty"));
            }
            if r.model.is_none() && r.header.is_none() && r.min_prompt_chars.is_none() {
                return Err(format!("rules[{i}] has no condition"));
            }
        }
        Ok(())
    }

    /// Whether any rule needs the prompt size (so the plugin only measures it then).
    pub fn needs_prompt(&self) -> bool {
        self.rules.iter().any(|r| r.min_prompt_chars.is_some())
    }

    /// The model to use instead of `model`, if any.
    pub fn resolve(&self, model: &str, header: &dyn Fn(&str) -> Option<String>, prompt_chars: usize) -> Option<String> {
        let aliased = self.aliases.get(model).map(String::as_str);
        let current = aliased.unwrap_or(model);
        for r in &self.rules {
            let model_ok = r.model.as_deref().is_none_or(|m| m == "*" || m == current);
            let header_ok = r.header.as_deref().is_none_or(|h| match h.split_once('=') {
                Some((name, value)) => header(name).is_some_and(|v| v == value),
                None => header(h).is_some(),
            });
            let size_ok = r.min_prompt_chars.is_none_or(|n| prompt_chars >= n);
            if model_ok && header_ok && size_ok {
                return (r.target != model).then(|| r.target.clone());
            }
        }
        aliased.filter(|a| *a != model).map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        serde_json::from_str(
            r#"{
                "aliases": {"fast": "mock-1", "smart": "openai/gpt-4o"},
                "rules": [
                    {"model": "mock-1", "header": "x-tier=premium", "target": "openai/gpt-4o"},
                    {"model": "*", "min_prompt_chars": 100, "target": "big-context"}
                ]
            }"#,
        )
        .unwrap()
    }

    fn no_headers(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn aliases_map_friendly_names() {
        assert_eq!(cfg().resolve("fast", &no_headers, 5).as_deref(), Some("mock-1"));
        assert_eq!(cfg().resolve("smart", &no_headers, 5).as_deref(), Some("openai/gpt-4o"));
        assert_eq!(cfg().resolve("other", &no_headers, 5), None);
    }

    #[test]
    fn rules_route_by_header_and_prompt_size() {
        let premium = |h: &str| (h == "x-tier").then(|| "premium".to_owned());
        assert_eq!(cfg().resolve("fast", &premium, 5).as_deref(), Some("openai/gpt-4o"));
        assert_eq!(cfg().resolve("other", &no_headers, 500).as_deref(), Some("big-context"));
        assert_eq!(cfg().resolve("big-context", &no_headers, 500), None);
    }

    #[test]
    fn rules_without_conditions_are_refused() {
        let bad: Config = serde_json::from_str(r#"{"rules": [{"target": "x"}]}"#).unwrap();
        assert!(bad.validate().is_err());
        assert!(serde_json::from_str::<Config>(r#"{"rulez": []}"#).is_err());
    }
}
