//! Virtual keys as Weir holds them: the SHA-256 of the secret (never the secret), the key's
//! name and limits, and this instance's own counters for it (the only ones without Redis, the
//! fallback under fail-open).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use weir_config::VirtualKeyConfig;

use crate::lease::Lease;
use crate::local::Counters;
use crate::prices::glob;

/// The SHA-256 of a key's secret: how a key is found, stored and named in Redis.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// The hash of `secret`.
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// Lower-case hex, for Redis key names.
    pub fn hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[usize::from(b >> 4)] as char);
            s.push(HEX[usize::from(b & 0xf)] as char);
        }
        s
    }
}

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyHash({}..)", &self.hex()[..8])
    }
}

/// Where a key was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `[[keys]]` in the config file.
    Config,
    /// `POST /admin/keys`.
    Admin,
}

/// A key's name and limits (what Redis stores beside the hash, as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeySpec {
    /// The key's name.
    pub name: String,
    /// Allowed model globs; `None`: every model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Requests per sliding minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Tokens per minute window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Budget per period in US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// Budget period in seconds (periods aligned to the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_period_s: Option<u64>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
    /// Where it was made.
    pub source: Source,
}

impl KeySpec {
    /// The spec of a config key.
    pub fn from_config(k: &VirtualKeyConfig) -> Self {
        Self {
            name: k.name.clone(),
            models: k.models.clone(),
            rpm: k.rpm,
            tpm: k.tpm,
            budget_usd: k.budget.as_ref().map(|b| b.usd),
            budget_period_s: k.budget.as_ref().map(|b| b.period.as_secs()),
            max_concurrent: k.max_concurrent,
            source: Source::Config,
        }
    }

    /// Whether the key may call `model` (the client's name for it).
    pub fn allows(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|list| list.iter().any(|p| glob(p, model)))
    }
}

/// One key as this instance holds it.
#[derive(Debug)]
pub struct KeyEntry {
    /// Its hash.
    pub hash: KeyHash,
    /// `hash` in hex (Redis key names), made once.
    pub hex: String,
    /// Name and limits.
    pub spec: KeySpec,
    /// This instance's counters (all of them without Redis; the fallback under fail-open).
    pub local: Mutex<Counters>,
    /// This instance's grant from Redis (with Redis).
    pub lease: Mutex<Lease>,
    /// Woken when a grant call for the key ends (admissions wait for it).
    pub granted: tokio::sync::Notify,
    /// What this instance served under the key (totals, for the admin API without Redis).
    pub totals: Totals,
    /// This key's metric handles, registered once.
    pub metrics: KeyMetrics,
    /// Its Redis names, made at first use.
    pub(crate) names: Mutex<Option<Arc<crate::redis::Names>>>,
}

/// A key's metric handles (labelled by its name, never its secret).
#[derive(Debug)]
pub struct KeyMetrics {
    /// `weir_key_requests_total`: requests settled.
    pub requests: metrics::Counter,
    /// `weir_key_tokens_total{kind="prompt"}`.
    pub prompt: metrics::Counter,
    /// `weir_key_tokens_total{kind="completion"}`.
    pub completion: metrics::Counter,
    /// `weir_key_cost_nano_usd_total`: cost in nano-dollars (an integer counter adds exactly).
    pub cost: metrics::Counter,
    /// `weir_keys_admissions_total{path="lease"}`: admitted from this instance's grant.
    pub from_lease: metrics::Counter,
    /// `weir_keys_admissions_total{path="redis"}`: admitted by a script call.
    pub from_redis: metrics::Counter,
    /// `weir_keys_grants_total`: grants taken from Redis.
    pub grants: metrics::Counter,
}

impl KeyEntry {
    /// A key with fresh counters.
    pub fn new(hash: KeyHash, spec: KeySpec) -> Arc<Self> {
        let key = spec.name.clone();
        let metrics = KeyMetrics {
            requests: metrics::counter!("weir_key_requests_total", "key" => key.clone()),
            prompt: metrics::counter!("weir_key_tokens_total", "key" => key.clone(), "kind" => "prompt"),
            completion: metrics::counter!("weir_key_tokens_total", "key" => key.clone(), "kind" => "completion"),
            cost: metrics::counter!("weir_key_cost_nano_usd_total", "key" => key.clone()),
            from_lease: metrics::counter!("weir_keys_admissions_total", "key" => key.clone(), "path" => "lease"),
            from_redis: metrics::counter!("weir_keys_admissions_total", "key" => key.clone(), "path" => "redis"),
            grants: metrics::counter!("weir_keys_grants_total", "key" => key),
        };
        Arc::new(Self {
            hash,
            hex: hash.hex(),
            spec,
            local: Mutex::new(Counters::default()),
            lease: Mutex::new(Lease::default()),
            granted: tokio::sync::Notify::new(),
            totals: Totals::default(),
            metrics,
            names: Mutex::new(None),
        })
    }
}

/// Running totals of one key on this instance.
#[derive(Debug, Default)]
pub struct Totals {
    /// Requests admitted.
    pub requests: AtomicU64,
    /// Prompt tokens reported.
    pub prompt: AtomicU64,
    /// Completion tokens reported.
    pub completion: AtomicU64,
    /// Cost in nano-dollars.
    pub cost_nano: AtomicU64,
}

impl Totals {
    pub(crate) fn add(&self, prompt: u64, completion: u64, cost: u64) {
        self.prompt.fetch_add(prompt, Ordering::Relaxed);
        self.completion.fetch_add(completion, Ordering::Relaxed);
        self.cost_nano.fetch_add(cost, Ordering::Relaxed);
    }
}

/// The keys this instance knows, by hash: the config's, and those made through the admin API
/// (with Redis: every instance's, cached at first use).
#[derive(Debug, Default)]
pub struct Store {
    by_hash: RwLock<HashMap<KeyHash, Arc<KeyEntry>>>,
}

impl Store {
    /// The key with this hash.
    pub fn get(&self, hash: &KeyHash) -> Option<Arc<KeyEntry>> {
        self.by_hash.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(hash).cloned()
    }

    /// Adds or replaces a key; an unchanged spec keeps its entry (and counters).
    pub fn put(&self, hash: KeyHash, spec: KeySpec) -> Arc<KeyEntry> {
        let mut map = self.by_hash.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(e) = map.get(&hash).filter(|e| e.spec == spec) {
            return e.clone();
        }
        let entry = KeyEntry::new(hash, spec);
        map.insert(hash, entry.clone());
        entry
    }

    /// Forgets a key.
    pub fn remove(&self, hash: &KeyHash) -> Option<Arc<KeyEntry>> {
        self.by_hash.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(hash)
    }

    /// The key named `name`.
    pub fn by_name(&self, name: &str) -> Option<Arc<KeyEntry>> {
        let map = self.by_hash.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.values().find(|e| e.spec.name == name).cloned()
    }

    /// Every key, by name.
    pub fn all(&self) -> Vec<Arc<KeyEntry>> {
        let map = self.by_hash.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut v: Vec<_> = map.values().cloned().collect();
        v.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        v
    }

    /// Keeps only the config keys in `keep` and every admin key.
    pub fn retain_config(&self, keep: &[KeyHash]) {
        let mut map = self.by_hash.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|h, e| e.spec.source == Source::Admin || keep.contains(h));
    }

    /// Whether any key exists.
    pub fn is_empty(&self) -> bool {
        self.by_hash.read().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty()
    }
}

/// The secret a request carries: `Authorization: Bearer <key>` or `x-api-key: <key>`.
pub fn presented(headers: &http::HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Some(key) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
            return Some(key.trim()).filter(|k| !k.is_empty());
        }
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim).filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_comes_from_bearer_or_x_api_key() {
        let mut h = http::HeaderMap::new();
        assert_eq!(presented(&h), None);
        h.insert("x-api-key", "sk-a".parse().unwrap());
        assert_eq!(presented(&h), Some("sk-a"));
        h.insert(http::header::AUTHORIZATION, "Bearer sk-b".parse().unwrap());
        assert_eq!(presented(&h), Some("sk-b"));
        assert_eq!(KeyHash::of("x").hex().len(), 64);
        assert!(!format!("{:?}", KeyHash::of("x")).contains(&KeyHash::of("x").hex()));
    }
}
