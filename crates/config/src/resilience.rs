//! What the policy stage does when a provider fails: `[providers.retry]` (attempts, backoff,
//! the retry budget), `[providers.breaker]` (the circuit breaker) and the top-level
//! `[fallbacks]` (per model, where a request goes when its provider cannot answer).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, PoolConfig, values};

/// Most entries of one fallback list (config or `x-weir-fallbacks`): each may cost a full
/// round of attempts.
pub const MAX_FALLBACKS: usize = 4;

/// `[providers.retry]`: retries on the same provider, before any byte went to the client.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retries after the first attempt (on 429, 5xx, connection refused/reset, timeouts).
    pub max_retries: u32,
    /// First backoff's upper bound; each retry doubles it (full jitter: a random wait up to it).
    #[serde(with = "values::duration")]
    pub base_backoff: Duration,
    /// Largest backoff.
    #[serde(with = "values::duration")]
    pub max_backoff: Duration,
    /// Longest upstream `Retry-After` honoured; a longer one is not waited for here (the error,
    /// with its `Retry-After`, goes to a fallback or to the client).
    #[serde(with = "values::duration")]
    pub max_retry_after: Duration,
    /// Retries allowed as a fraction of recent requests to this provider (the retry budget).
    pub budget_ratio: f64,
    /// Retries allowed per second on top of the ratio, so a quiet provider can still retry.
    pub budget_min_per_second: f64,
    /// How long a request counts towards the budget (deposits older than 1-2 windows expire).
    #[serde(with = "values::duration")]
    pub budget_window: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 2,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(5),
            budget_ratio: 0.2,
            budget_min_per_second: 10.0,
            budget_window: Duration::from_secs(10),
        }
    }
}

/// `[providers.breaker]`: the provider's circuit breaker. Written, it is on; left out, off.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failed attempts that open the breaker (0: only the failure rate does).
    pub consecutive_failures: u32,
    /// Share of failed attempts within `window` that opens it (above 1.0: never).
    pub failure_rate: f64,
    /// Fewest attempts within `window` before `failure_rate` is judged.
    pub min_requests: u32,
    /// The window the failure rate is measured over.
    #[serde(with = "values::duration")]
    pub window: Duration,
    /// How long an open breaker refuses before it lets probes through (half-open).
    #[serde(with = "values::duration")]
    pub cooldown: Duration,
    /// Probe attempts let through at once while half-open; one success closes it, one failure
    /// opens it again.
    pub probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(10),
            probes: 1,
        }
    }
}

impl RetryConfig {
    pub(super) fn validate(&self, key: &impl Fn(&str) -> String) -> Result<(), ConfigError> {
        if self.max_retries > 10 {
            return Err(ConfigError::invalid(key("retry.max_retries"), "must be at most 10"));
        }
        if self.base_backoff > self.max_backoff {
            return Err(ConfigError::invalid(key("retry.base_backoff"), "must not be above retry.max_backoff"));
        }
        if !(0.0..=10.0).contains(&self.budget_ratio) {
            return Err(ConfigError::invalid(key("retry.budget_ratio"), "must be between 0 and 10"));
        }
        if !(0.0..=1e6).contains(&self.budget_min_per_second) {
            return Err(ConfigError::invalid(key("retry.budget_min_per_second"), "must be between 0 and 1000000"));
        }
        if self.budget_window < Duration::from_millis(100) {
            return Err(ConfigError::invalid(key("retry.budget_window"), "must be at least 100ms"));
        }
        Ok(())
    }
}

impl BreakerConfig {
    pub(super) fn validate(&self, key: &impl Fn(&str) -> String) -> Result<(), ConfigError> {
        if self.consecutive_failures == 0 && self.failure_rate > 1.0 {
            return Err(ConfigError::invalid(
                key("breaker"),
                "consecutive_failures = 0 and failure_rate above 1 would never open",
            ));
        }
        if self.failure_rate.is_nan() || self.failure_rate <= 0.0 {
            return Err(ConfigError::invalid(key("breaker.failure_rate"), "must be above 0"));
        }
        if self.window < Duration::from_millis(100) {
            return Err(ConfigError::invalid(key("breaker.window"), "must be at least 100ms"));
        }
        if self.cooldown.is_zero() {
            return Err(ConfigError::invalid(key("breaker.cooldown"), "must be above 0"));
        }
        if self.probes == 0 {
            return Err(ConfigError::invalid(key("breaker.probes"), "must be at least 1"));
        }
        Ok(())
    }
}

/// Checks the per-phase timeouts and health-check periods of `[providers.pool]`: none is zero.
pub(super) fn validate_timeouts(pool: &PoolConfig, key: &impl Fn(&str) -> String) -> Result<(), ConfigError> {
    let set = [
        ("pool.first_token_timeout", pool.first_token_timeout),
        ("pool.idle_timeout", pool.idle_timeout),
        ("pool.total_timeout", pool.total_timeout),
        ("pool.max_client_timeout", Some(pool.max_client_timeout)),
        ("pool.health_check_interval", pool.health_check_interval),
        ("pool.health_check_timeout", Some(pool.health_check_timeout)),
    ];
    if let Some((name, _)) = set.iter().find(|(_, d)| d.is_some_and(|d| d.is_zero())) {
        return Err(ConfigError::invalid(key(name), "must be above 0"));
    }
    if pool.min_workers.is_some() && pool.max_workers.is_none() {
        return Err(ConfigError::invalid(key("pool.min_workers"), "needs pool.max_workers (adaptive workers)"));
    }
    if let Some(max) = pool.max_workers {
        let min = pool.min_workers.unwrap_or(1);
        if min == 0 || max > 100_000 || min > max {
            return Err(ConfigError::invalid(
                key("pool.max_workers"),
                "need 1 <= min_workers <= max_workers <= 100000",
            ));
        }
        if !(min..=max).contains(&pool.workers) {
            return Err(ConfigError::invalid(
                key("pool.workers"),
                format!("the starting count must be within min_workers..=max_workers ({min}..={max})"),
            ));
        }
        if !(0.0..=1.0).contains(&pool.scale_up_queue_fill) {
            return Err(ConfigError::invalid(key("pool.scale_up_queue_fill"), "must be between 0 and 1"));
        }
    }
    Ok(())
}

/// Checks `[fallbacks]`: each entry is `provider/model` naming a configured provider, and no
/// list is longer than [`MAX_FALLBACKS`].
pub(super) fn validate_fallbacks(
    fallbacks: &BTreeMap<String, Vec<String>>,
    providers: &HashSet<&str>,
) -> Result<(), ConfigError> {
    for (model, list) in fallbacks {
        let key = format!("fallbacks.{model}");
        if list.len() > MAX_FALLBACKS {
            return Err(ConfigError::invalid(key, format!("at most {MAX_FALLBACKS} fallbacks")));
        }
        for (j, entry) in list.iter().enumerate() {
            match entry.split_once('/') {
                Some((p, m)) if providers.contains(p) && !m.is_empty() => {}
                _ => {
                    return Err(ConfigError::invalid(
                        format!("{key}[{j}]"),
                        format!("{entry:?} must be \"provider/model\" with a configured provider"),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{Config, ConfigError};

    fn load(extra: &str) -> Result<Config, ConfigError> {
        Config::from_toml(&format!("[[providers]]\nname = \"a\"\nkind = \"mock\"\nmodels = [\"m\"]\n{extra}"))
    }

    fn refused_key(extra: &str) -> String {
        match load(extra) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{extra}: {other:?}"),
        }
    }

    #[test]
    fn retries_are_on_by_default_and_the_breaker_only_when_written() {
        let cfg = load("").unwrap();
        assert_eq!(cfg.providers[0].retry.max_retries, 2);
        assert!(cfg.providers[0].breaker.is_none());
        let cfg = load("[providers.breaker]\ncooldown = \"3s\"").unwrap();
        assert_eq!(cfg.providers[0].breaker.as_ref().unwrap().consecutive_failures, 5);
    }

    #[test]
    fn bad_settings_are_refused_by_key() {
        assert_eq!(refused_key("[providers.retry]\nmax_retries = 11"), "providers[0].retry.max_retries");
        assert_eq!(
            refused_key("[providers.retry]\nbase_backoff = \"3s\"\nmax_backoff = \"1s\""),
            "providers[0].retry.base_backoff"
        );
        assert_eq!(refused_key("[providers.breaker]\nprobes = 0"), "providers[0].breaker.probes");
        assert_eq!(refused_key("[fallbacks]\nm = [\"nowhere/x\"]"), "fallbacks.m[0]");
        assert_eq!(refused_key("[fallbacks]\nm = [\"a\"]"), "fallbacks.m[0]");
        assert_eq!(refused_key("[fallbacks]\nm = [\"a/1\", \"a/2\", \"a/3\", \"a/4\", \"a/5\"]"), "fallbacks.m");
        assert!(load("[fallbacks]\nm = [\"a/other\"]").is_ok());
        assert_eq!(refused_key("[providers.pool]\nidle_timeout = \"0s\""), "providers[0].pool.idle_timeout");
        let cfg = load("[providers.pool]\nfirst_token_timeout = \"2s\"\ntotal_timeout = \"9s\"").unwrap();
        assert_eq!(cfg.providers[0].pool.first_token_timeout, Some(Duration::from_secs(2)));
        assert_eq!(cfg.providers[0].pool.idle_timeout, None);
        assert_eq!(refused_key("[providers.pool]\nmax_workers = 8"), "providers[0].pool.workers", "64 > 8");
        assert_eq!(refused_key("[providers.pool]\nmin_workers = 2"), "providers[0].pool.min_workers");
        assert!(load("[providers.pool]\nworkers = 2\nmin_workers = 1\nmax_workers = 8").is_ok());
    }
}
