//! The request-level series `finish` records per provider (`weir_requests_total`,
//! `weir_tokens_total`, `weir_overhead_seconds`): handles registered once per pool, with the
//! `model` label bounded by the provider's configured models and aliases.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use metrics::{Counter, Histogram, SharedString, counter, histogram};

use crate::format::Endpoint;
use crate::providers::usage::Usage;

/// The `model` label for requests that reached no provider.
const NO_MODEL: &str = "none";
/// The `model` label for a model that is neither configured nor an alias: one value for all of
/// them keeps the label's values bounded by the config, whatever names clients send.
const OTHER_MODEL: &str = "other";

/// What `finish` records about one provider's requests: handles registered once, when the
/// provider's pool starts, so a successful request bumps a few atomics instead of building,
/// hashing and looking up a label set (and allocating the provider label) every time.
pub struct RequestMetrics {
    provider: SharedString,
    /// Index into `models` of each configured model and alias; `other` is the last entry.
    labels: HashMap<Box<str>, usize, BuildHasherDefault<Fnv>>,
    models: Vec<ModelMetrics>,
    overhead: Histogram,
}

/// The handles of one `(provider, model)` label pair.
struct ModelMetrics {
    model: SharedString,
    /// `weir_requests_total{outcome="ok",status="200"}` per endpoint, by [`Endpoint::index`].
    ok: [Counter; Endpoint::COUNT],
    /// `weir_tokens_total` by kind: prompt, completion, cached.
    tokens: [Counter; 3],
}

impl ModelMetrics {
    fn new(provider: &SharedString, model: SharedString) -> Self {
        let ok = |e: Endpoint| {
            counter!(
                "weir_requests_total",
                "provider" => provider.clone(),
                "model" => model.clone(),
                "endpoint" => e.label(),
                "outcome" => "ok",
                "status" => "200"
            )
        };
        let tokens = |kind: &'static str| counter!("weir_tokens_total", "provider" => provider.clone(), "model" => model.clone(), "kind" => kind);
        Self { ok: Endpoint::ALL.map(ok), tokens: [tokens("prompt"), tokens("completion"), tokens("cached")], model }
    }
}

/// FNV-1a, for the model-label map: its keys are the configured names, so a client's name
/// cannot make lookups collide, and a short name hashes in a few instructions (SipHash's
/// resistance to chosen keys buys nothing here and costs ~100 per request).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Which `model` label of a provider a request counts under ([`RequestMetrics::model`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelLabel(usize);

impl RequestMetrics {
    /// Registers the handles of `provider`, with a `model` label value for each of `models`
    /// (its configured models and aliases) and `other`.
    pub fn new<'a>(provider: &str, models: impl IntoIterator<Item = &'a str>) -> Self {
        let p: SharedString = provider.to_owned().into();
        let mut labels = HashMap::default();
        let mut handles = Vec::new();
        for m in models {
            if !labels.contains_key(m) && m != OTHER_MODEL {
                labels.insert(Box::from(m), handles.len());
                handles.push(ModelMetrics::new(&p, m.to_owned().into()));
            }
        }
        handles.push(ModelMetrics::new(&p, OTHER_MODEL.into()));
        Self {
            overhead: histogram!("weir_overhead_seconds", "provider" => p.clone()),
            provider: p,
            labels,
            models: handles,
        }
    }

    /// The label of a request naming `model`: its own when it is one of the provider's
    /// configured models or aliases (also as `provider/model`), else `other`.
    pub fn model(&self, model: &str) -> ModelLabel {
        let bare = model.strip_prefix(&*self.provider).and_then(|m| m.strip_prefix('/'));
        let found = self.labels.get(model).or_else(|| bare.and_then(|m| self.labels.get(m)));
        ModelLabel(found.copied().unwrap_or(self.models.len() - 1))
    }

    /// Records one finished request.
    pub fn record(
        &self,
        model: ModelLabel,
        endpoint: Endpoint,
        outcome: &'static str,
        status: u16,
        overhead: Duration,
    ) {
        let m = &self.models[model.0];
        if outcome == "ok" && status == 200 {
            m.ok[endpoint.index()].increment(1);
        } else {
            record_request(self.provider.clone(), m.model.clone(), endpoint, outcome, status);
        }
        self.overhead.record(overhead.as_secs_f64());
    }

    /// Records one finished request of an endpoint Weir relays without modelling it
    /// (`endpoint` is its label, e.g. `files`); `model` when the body named one.
    pub fn record_relayed(
        &self,
        model: Option<ModelLabel>,
        endpoint: &'static str,
        outcome: &'static str,
        status: u16,
        overhead: Duration,
    ) {
        let model = model.map_or_else(|| NO_MODEL.into(), |m| self.models[m.0].model.clone());
        counter!(
            "weir_requests_total",
            "provider" => self.provider.clone(),
            "model" => model,
            "endpoint" => endpoint,
            "outcome" => outcome,
            "status" => status_label(status)
        )
        .increment(1);
        self.overhead.record(overhead.as_secs_f64());
    }

    /// Counts the tokens an upstream answer reported.
    pub fn tokens(&self, model: ModelLabel, usage: &Usage) {
        let t = &self.models[model.0].tokens;
        t[0].increment(usage.prompt);
        t[1].increment(usage.completion);
        t[2].increment(usage.cached);
    }
}

/// Records one request that reached no provider: refused before one was chosen (unreadable or
/// invalid body, a model no provider serves). `provider` and `model` are both `none`.
pub fn record_unrouted(endpoint: Endpoint, outcome: &'static str, status: u16, overhead: Duration) {
    record_request(NO_MODEL.into(), NO_MODEL.into(), endpoint, outcome, status);
    histogram!("weir_overhead_seconds", "provider" => NO_MODEL).record(overhead.as_secs_f64());
}

/// Records one finished request by label set (the rare outcomes [`RequestMetrics`] keeps no
/// handle for).
fn record_request(provider: SharedString, model: SharedString, endpoint: Endpoint, outcome: &'static str, status: u16) {
    counter!(
        "weir_requests_total",
        "provider" => provider,
        "model" => model,
        "endpoint" => endpoint.label(),
        "outcome" => outcome,
        "status" => status_label(status)
    )
    .increment(1);
}

/// A status code as a `&'static str` label without allocating for common codes.
pub fn status_label(status: u16) -> metrics::SharedString {
    match status {
        200 => "200".into(),
        400 => "400".into(),
        401 => "401".into(),
        404 => "404".into(),
        413 => "413".into(),
        429 => "429".into(),
        500 => "500".into(),
        502 => "502".into(),
        503 => "503".into(),
        504 => "504".into(),
        other => other.to_string().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_models_and_aliases_get_a_model_label_of_their_own() {
        let m = RequestMetrics::new("up", ["gpt-a", "fast", "gpt-a"]);
        let label = |name: &str| m.models[m.model(name).0].model.to_string();
        assert_eq!(label("gpt-a"), "gpt-a");
        assert_eq!(label("up/gpt-a"), "gpt-a");
        assert_eq!(label("fast"), "fast");
        for other in ["gpt-b", "elsewhere/gpt-a", "upx/gpt-a", "up/", "", "other"] {
            assert_eq!(label(other), "other", "{other:?}");
        }
        assert_eq!(m.models.len(), 3, "one handle set per distinct name, and other");
    }
}
