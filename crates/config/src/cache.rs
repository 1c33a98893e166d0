//! `[cache]`: the exact-match response cache. Off unless `enabled`; in this process (bounded by
//! `max_entries`) and, with `[state] redis_url`, in Redis too, so instances share it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, values};

/// Most entries one instance may hold; stops a cache sized past any machine's memory.
pub const MAX_CACHE_ENTRIES: u64 = 10_000_000;

/// `[cache]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Answer a repeated request from the cache.
    pub enabled: bool,
    /// How long an answer stays cached (in process and in Redis).
    #[serde(with = "values::duration")]
    pub ttl: Duration,
    /// Most answers kept in this process; the least recently used goes first.
    pub max_entries: u64,
    /// Most bytes of answers kept in this process (with `max_entries`, whichever is reached
    /// first): stops a cache of large answers from growing to `max_entries` times their size.
    pub max_bytes: u64,
    /// Largest answer cached, in bytes (a bigger one is served but not kept).
    pub max_entry_bytes: u64,
    /// Separate entries per virtual key: two keys asking the same never share an answer.
    pub per_key: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            ttl: Duration::from_secs(600),
            max_entries: 10_000,
            max_bytes: 256 * 1024 * 1024,
            max_entry_bytes: 1024 * 1024,
            per_key: false,
        }
    }
}

impl CacheConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.ttl < Duration::from_millis(1) || self.ttl > Duration::from_secs(30 * 86_400) {
            return Err(ConfigError::invalid("cache.ttl", "must be at least 1ms and at most 30 days"));
        }
        if self.max_entries == 0 || self.max_entries > MAX_CACHE_ENTRIES {
            return Err(ConfigError::invalid("cache.max_entries", format!("must be 1..={MAX_CACHE_ENTRIES}")));
        }
        if self.max_entry_bytes == 0 || self.max_entry_bytes > 64 * 1024 * 1024 {
            return Err(ConfigError::invalid("cache.max_entry_bytes", "must be above 0 and at most 64 MiB"));
        }
        if self.max_bytes < self.max_entry_bytes {
            return Err(ConfigError::invalid("cache.max_bytes", "must be at least cache.max_entry_bytes"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_off_ten_minutes_ten_thousand() {
        let c = CacheConfig::default();
        assert!(!c.enabled && !c.per_key);
        assert_eq!((c.ttl, c.max_entries), (Duration::from_secs(600), 10_000));
        assert!(c.validate().is_ok());
        let e = CacheConfig { max_entries: 0, ..c }.validate().unwrap_err().to_string();
        assert!(e.contains("cache.max_entries"), "{e}");
    }
}
