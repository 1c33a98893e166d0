//! `[[keys]]` (virtual keys: who may call, which models, at what rate and spend) and `[prices]`
//! (what a model's tokens cost, over the bundled table). Once any key exists, every model call
//! needs one.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, values};

/// One virtual key.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualKeyConfig {
    /// Unique name: what logs, metrics and the admin API show instead of the secret.
    pub name: String,
    /// The secret clients send (usually `${ENV}`); held only as its SHA-256.
    pub value: String,
    /// Models the key may call (globs: `*` matches any run of characters); absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Requests per minute (sliding 60 s window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Tokens (prompt + completion) per minute (fixed one-minute windows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Spend allowed per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetConfig>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
}

impl std::fmt::Debug for VirtualKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualKeyConfig")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .field("models", &self.models)
            .field("rpm", &self.rpm)
            .field("tpm", &self.tpm)
            .field("budget", &self.budget)
            .field("max_concurrent", &self.max_concurrent)
            .finish()
    }
}

/// `budget = { usd = 25.0, period = "30d" }`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// US dollars the key may spend per period.
    pub usd: f64,
    /// Length of a period; periods are aligned to the Unix epoch.
    #[serde(with = "values::duration")]
    pub period: Duration,
}

/// A model's price in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// Per million prompt tokens not read from the provider's cache.
    pub input: f64,
    /// Per million completion tokens.
    pub output: f64,
    /// Per million prompt tokens read from the cache; absent: the `input` price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached: Option<f64>,
}

/// A duration as the config writes it (`"30d"`, `"1h 30m"`), for values that arrive
/// elsewhere (the admin API).
///
/// # Errors
/// The text is not a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(text).map_err(|e| e.to_string())
}

/// Name and value rules shared by config keys and keys made through the admin API.
pub fn valid_key_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

pub(crate) fn validate(keys: &[VirtualKeyConfig], prices: &BTreeMap<String, PriceConfig>) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    let mut values = HashSet::new();
    for (i, k) in keys.iter().enumerate() {
        let at = |field: &str| format!("keys[{i}].{field}");
        if !valid_key_name(&k.name) {
            return Err(ConfigError::invalid(at("name"), "use 1-64 of [A-Za-z0-9._-]"));
        }
        if !names.insert(k.name.as_str()) {
            return Err(ConfigError::invalid(at("name"), format!("{:?} is used twice", k.name)));
        }
        if k.value.len() < 8 {
            // The error never quotes the value.
            return Err(ConfigError::invalid(at("value"), "must be at least 8 characters"));
        }
        if !values.insert(k.value.as_str()) {
            return Err(ConfigError::invalid(at("value"), "is the value of another key"));
        }
        for (field, v) in [("rpm", k.rpm), ("tpm", k.tpm), ("max_concurrent", k.max_concurrent)] {
            if v == Some(0) {
                return Err(ConfigError::invalid(at(field), "must be at least 1 (leave it out for no limit)"));
            }
        }
        if let Some(b) = &k.budget {
            if !(b.usd.is_finite() && b.usd > 0.0) {
                return Err(ConfigError::invalid(at("budget.usd"), "must be above 0"));
            }
            if b.period < Duration::from_secs(1) {
                return Err(ConfigError::invalid(at("budget.period"), "must be at least 1s"));
            }
        }
        if k.models.as_ref().is_some_and(|m| m.iter().any(String::is_empty)) {
            return Err(ConfigError::invalid(at("models"), "holds an empty pattern"));
        }
    }
    for (model, p) in prices {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !(ok(p.input) && ok(p.output) && p.cached.is_none_or(ok)) {
            return Err(ConfigError::invalid(
                format!("prices.{model:?}"),
                "prices are dollars per million tokens, >= 0",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, value: &str) -> VirtualKeyConfig {
        VirtualKeyConfig {
            name: name.into(),
            value: value.into(),
            models: None,
            rpm: None,
            tpm: None,
            budget: None,
            max_concurrent: None,
        }
    }

    #[test]
    fn key_errors_name_the_field_and_never_the_value() {
        let short = validate(&[key("a", "s3cr")], &BTreeMap::new()).unwrap_err().to_string();
        assert!(short.contains("keys[0].value") && !short.contains("s3cr"), "{short}");
        let twice = validate(&[key("a", "s3cret-one"), key("b", "s3cret-one")], &BTreeMap::new()).unwrap_err();
        assert!(!twice.to_string().contains("s3cret-one"), "{twice}");
        let mut zero = key("a", "s3cret-one");
        zero.rpm = Some(0);
        assert!(validate(&[zero], &BTreeMap::new()).unwrap_err().to_string().contains("keys[0].rpm"));
        assert!(format!("{:?}", key("a", "s3cret-one")).contains("<redacted>"));
    }

    #[test]
    fn the_redacted_config_hides_key_values() {
        let text = "[[providers]]\nname = \"m\"\nkind = \"mock\"\nmodels = [\"m\"]\n\
                    [[keys]]\nname = \"a\"\nvalue = \"s3cret-value-1\"\nrpm = 5\n";
        let cfg = crate::Config::from_toml(text).unwrap();
        assert_eq!(cfg.keys[0].rpm, Some(5));
        let shown = serde_json::to_string(&cfg.redacted()).unwrap();
        assert!(!shown.contains("s3cret-value-1") && shown.contains("<redacted>"), "{shown}");
    }
}
