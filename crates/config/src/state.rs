//! `[state]`: where state shared between Weir instances lives (rate limits, budgets, the
//! response cache, plugin kv). Without `redis_url` it stays in this process.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, values};

/// What a request gets when Redis cannot answer within `redis_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnUnavailable {
    /// Keep serving with this instance's own state (limits then hold per instance).
    #[default]
    FailOpen,
    /// Answer 503 until Redis answers again.
    FailClosed,
}

/// `[state]`.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// `redis://[user:password@]host:port/db` (or `rediss://`); may hold a password, so it is
    /// never logged. Absent: state is per instance.
    pub redis_url: Option<String>,
    /// What happens when Redis does not answer in time.
    pub on_unavailable: OnUnavailable,
    /// Longest a request waits on one Redis round trip before Redis counts as unavailable.
    #[serde(with = "values::duration")]
    pub redis_timeout: Duration,
    /// Prefix of every key Weir writes, so instances of different deployments can share a Redis.
    pub key_prefix: String,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            on_unavailable: OnUnavailable::FailOpen,
            redis_timeout: Duration::from_millis(100),
            key_prefix: "weir:".to_owned(),
        }
    }
}

impl StateConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.redis_url {
            let scheme_ok = ["redis://", "rediss://", "redis+unix://", "unix://"].iter().any(|s| url.starts_with(s));
            if !scheme_ok {
                // The value may hold a password: the error names the key, not the value.
                return Err(ConfigError::invalid("state.redis_url", "must start with redis://, rediss:// or unix://"));
            }
        }
        if self.redis_timeout.is_zero() || self.redis_timeout > Duration::from_secs(5) {
            return Err(ConfigError::invalid("state.redis_timeout", "must be above 0 and at most 5s"));
        }
        Ok(())
    }

    /// The password in `redis_url`, if any (a secret to scrub like a provider key).
    pub fn redis_password(&self) -> Option<&str> {
        let url = self.redis_url.as_deref()?;
        let userinfo = &url[url.find("://")? + 3..url.rfind('@')?];
        let pass = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
        (!pass.is_empty()).then_some(pass)
    }

    /// The URL with any password replaced, for logs and the admin API.
    pub fn redis_url_redacted(&self) -> Option<String> {
        let url = self.redis_url.as_deref()?;
        Some(match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}<redacted>@{}", &url[..s + 3], &url[at + 1..]),
            _ => url.to_owned(),
        })
    }
}

impl std::fmt::Debug for StateConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateConfig")
            .field("redis_url", &self.redis_url_redacted())
            .field("on_unavailable", &self.on_unavailable)
            .field("redis_timeout", &self.redis_timeout)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_password_never_shows_in_debug_or_the_redacted_url() {
        let c = StateConfig { redis_url: Some("redis://u:s3cret@127.0.0.1:6379/0".into()), ..Default::default() };
        assert_eq!(c.redis_url_redacted().unwrap(), "redis://<redacted>@127.0.0.1:6379/0");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.redis_password(), Some("s3cret"));
        let bad = StateConfig { redis_url: Some("http://s3cret@x".into()), ..Default::default() };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("state.redis_url") && !e.contains("s3cret"), "{e}");
    }
}
