//! What the admin API does with keys: create (the secret is returned this once and stored
//! only as its hash), list, revoke, and usage. With Redis every instance sees a change at its
//! next admission.

use std::io::Read;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::keys::{KeyHash, KeySpec, Source};
use crate::{Governance, Usage, redis};

/// `POST /admin/keys` body: the key's name and limits (as in `[[keys]]`, without `value`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// Unique name.
    pub name: String,
    /// Allowed model globs.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Requests per minute.
    #[serde(default)]
    pub rpm: Option<u64>,
    /// Tokens per minute.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// `{ "usd": 25.0, "period": "30d" }`.
    #[serde(default)]
    pub budget: Option<NewBudget>,
    /// Requests in flight at once.
    #[serde(default)]
    pub max_concurrent: Option<u64>,
}

/// A budget in a `POST /admin/keys` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBudget {
    /// Dollars per period.
    pub usd: f64,
    /// A duration such as `"30d"`.
    pub period: String,
}

/// A key made: its name and the secret (shown once).
#[derive(Debug, Serialize)]
pub struct Created {
    /// The key's name.
    pub name: String,
    /// The secret; Weir keeps only its hash.
    pub key: String,
}

/// A key as the admin API lists it (never its secret).
#[derive(Debug, Serialize)]
pub struct KeyView {
    /// Name and limits.
    #[serde(flatten)]
    pub spec: KeySpec,
    /// The first 8 hex digits of the secret's SHA-256, to tell keys apart.
    pub hash_prefix: String,
}

/// Why an admin key operation failed.
#[derive(Debug)]
pub enum AdminError {
    /// A bad name or limit (400).
    Invalid(String),
    /// The name is taken (409).
    Exists,
    /// No such key (404).
    NotFound,
    /// Redis did not answer (503).
    Unavailable,
}

impl Governance {
    /// Makes a key.
    ///
    /// # Errors
    /// [`AdminError`] for a bad spec, a taken name, or Redis not answering.
    pub async fn create(&self, new: NewKey) -> Result<Created, AdminError> {
        let spec = spec_of(new)?;
        let secret = fresh_secret().map_err(|e| AdminError::Invalid(format!("no randomness for the key: {e}")))?;
        let hash = KeyHash::of(&secret);
        if self.shared.store.by_name(&spec.name).is_some() {
            return Err(AdminError::Exists);
        }
        if let Some(redis) = &self.redis {
            match redis::create(redis, &hash, &spec).await {
                Ok(true) => {}
                Ok(false) => return Err(AdminError::Exists),
                Err(_) => return Err(AdminError::Unavailable),
            }
        }
        let name = spec.name.clone();
        self.shared.store.put(hash, spec);
        self.shared.made.store(true, Ordering::Relaxed);
        self.shared.active.store(true, Ordering::Relaxed);
        tracing::info!(key = %name, "virtual key created");
        Ok(Created { name, key: secret })
    }

    /// Every key: the config's and those made through the admin API (with Redis, on any
    /// instance).
    ///
    /// # Errors
    /// [`AdminError::Unavailable`] when Redis does not answer.
    pub async fn list(&self) -> Result<Vec<KeyView>, AdminError> {
        let mut out: Vec<KeyView> = Vec::new();
        if let Some(redis) = &self.redis {
            let stored = redis::list(redis).await.map_err(|_| AdminError::Unavailable)?;
            out.extend(stored.into_iter().map(|(hex, spec)| KeyView { spec, hash_prefix: hex[..8].to_owned() }));
        }
        for e in self.shared.store.all() {
            if !out.iter().any(|v| v.spec.name == e.spec.name)
                && (self.redis.is_none() || e.spec.source == Source::Config)
            {
                out.push(KeyView { spec: e.spec.clone(), hash_prefix: e.hex[..8].to_owned() });
            }
        }
        out.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        Ok(out)
    }

    /// Revokes the key named `name`: with Redis, every instance refuses it from its next
    /// request on.
    ///
    /// # Errors
    /// [`AdminError::NotFound`], or [`AdminError::Unavailable`] when Redis does not answer.
    pub async fn revoke(&self, name: &str) -> Result<(), AdminError> {
        let local = self.shared.store.by_name(name);
        let mut found = false;
        if let Some(redis) = &self.redis {
            found = redis::revoke(redis, name).await.map_err(|_| AdminError::Unavailable)?.is_some();
        }
        if let Some(e) = local {
            found = true;
            self.shared.store.remove(&e.hash);
            if e.spec.source == Source::Config {
                self.shared.revoked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(e.hash);
            }
        }
        if !found {
            return Err(AdminError::NotFound);
        }
        tracing::info!(key = %name, "virtual key revoked");
        Ok(())
    }

    /// The key's current windows and totals (with Redis: across every instance).
    ///
    /// # Errors
    /// [`AdminError::NotFound`], or [`AdminError::Unavailable`] when Redis does not answer.
    pub async fn usage(&self, name: &str) -> Result<(KeySpec, Usage), AdminError> {
        let entry = match self.shared.store.by_name(name) {
            Some(e) => e,
            None => {
                let redis = self.redis.as_ref().ok_or(AdminError::NotFound)?;
                let listed = redis::list(redis).await.map_err(|_| AdminError::Unavailable)?;
                let (hex, spec) = listed.into_iter().find(|(_, s)| s.name == name).ok_or(AdminError::NotFound)?;
                let mut hash = [0u8; 32];
                for (i, b) in hash.iter_mut().enumerate() {
                    *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0);
                }
                self.shared.store.put(KeyHash(hash), spec)
            }
        };
        let usage = match &self.redis {
            Some(redis) => redis::usage(redis, &entry).await.map_err(|_| AdminError::Unavailable)?,
            None => {
                let period_s = entry.spec.budget_period_s.unwrap_or(1);
                let (rpm, tpm, spend, in_flight) = entry
                    .local
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .snapshot(crate::now_ms(), period_s);
                let t = &entry.totals;
                Usage {
                    requests_last_minute: rpm,
                    tokens_this_minute: tpm,
                    spend_this_period_nano: spend,
                    in_flight,
                    requests: t.requests.load(Ordering::Relaxed),
                    prompt_tokens: t.prompt.load(Ordering::Relaxed),
                    completion_tokens: t.completion.load(Ordering::Relaxed),
                    cost_nano: t.cost_nano.load(Ordering::Relaxed),
                }
            }
        };
        Ok((entry.spec.clone(), usage))
    }
}

fn spec_of(new: NewKey) -> Result<KeySpec, AdminError> {
    if !weir_config::valid_key_name(&new.name) {
        return Err(AdminError::Invalid("name: use 1-64 of [A-Za-z0-9._-]".into()));
    }
    for (field, v) in [("rpm", new.rpm), ("tpm", new.tpm), ("max_concurrent", new.max_concurrent)] {
        if v == Some(0) {
            return Err(AdminError::Invalid(format!("{field}: must be at least 1 (leave it out for no limit)")));
        }
    }
    let budget = match new.budget {
        Some(b) => {
            let period = weir_config::parse_duration(&b.period)
                .map_err(|e| AdminError::Invalid(format!("budget.period: {e}")))?
                .as_secs();
            if !(b.usd.is_finite() && b.usd > 0.0) || period == 0 {
                return Err(AdminError::Invalid("budget: usd must be above 0 and period at least 1s".into()));
            }
            Some((b.usd, period))
        }
        None => None,
    };
    Ok(KeySpec {
        name: new.name,
        models: new.models,
        rpm: new.rpm,
        tpm: new.tpm,
        budget_usd: budget.map(|b| b.0),
        budget_period_s: budget.map(|b| b.1),
        max_concurrent: new.max_concurrent,
        source: Source::Admin,
    })
}

/// `sk-weir-` and 32 bytes from the operating system's random source, in hex.
fn fresh_secret() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let mut s = String::from("sk-weir-");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    Ok(s)
}
