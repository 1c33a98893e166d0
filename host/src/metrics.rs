//! Prometheus export (`GET /metrics`) and the request-level metrics recorded by `finish`.
//! Pool, plugin and provider metrics register their own handles where they live.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram, SharedString, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::format::Endpoint;
use crate::providers::usage::Usage;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets (seconds) for upstream and queue timings.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Buckets (seconds) for Weir's own overhead and plugin calls: microseconds matter here.
const OVERHEAD_BUCKETS: &[f64] =
    &[0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1];
/// Buckets of `weir_plugin_fuel_used`, 1k to 1G (the default `fuel` is 50M). A histogram, not
/// the exporter's default summary: a summary's quantiles decay to 0 between calls and are not
/// bounded by the largest value seen.
const FUEL_BUCKETS: &[f64] = &[1e3, 1e4, 1e5, 2.5e5, 5e5, 1e6, 2.5e6, 5e6, 1e7, 2.5e7, 5e7, 1e8, 2.5e8, 5e8, 1e9];

/// Installs the global recorder once; later calls return the same handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full("weir_overhead_seconds".into()), OVERHEAD_BUCKETS))
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("weir_plugin_call_seconds".into()), OVERHEAD_BUCKETS)
                })
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full("weir_plugin_fuel_used".into()), FUEL_BUCKETS))
                .expect("static bucket lists are non-empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // A second recorder (tests in one process) is harmless: keep the first.
            let _ = metrics::set_global_recorder(recorder);
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("weir-metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .ok();
            describe();
            crate::plugins::describe_metrics();
            gauge!(
                "weir_build_info",
                "version" => env!("CARGO_PKG_VERSION"),
                "arch" => std::env::consts::ARCH,
                "os" => std::env::consts::OS
            )
            .set(1.0);
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("weir_build_info", "Always 1; the labels say which Weir build this is");
    describe_counter!(
        "weir_requests_total",
        "Requests finished, by provider, model (configured models and aliases; any other: other), endpoint, outcome and status"
    );
    describe_counter!(
        "weir_tokens_total",
        "Tokens upstream answers reported, by provider, model and kind (prompt, completion, cached: prompt tokens served from the provider's cache)"
    );
    describe_histogram!("weir_overhead_seconds", Unit::Seconds, "Time spent in Weir excluding the upstream wait");
    describe_gauge!("weir_connections_open", "Client connections open, by serving thread");
    describe_counter!(
        "weir_overload_shed_total",
        "Work refused by the overload manager: requests past the memory threshold (memory), connections past max_connections (connections)"
    );
    describe_gauge!("weir_memory_resident_bytes", "Resident memory of the process at the last overload sample");
    describe_gauge!("weir_pool_queue_depth", "Requests waiting for a worker");
    describe_histogram!(
        "weir_pool_queue_wait_seconds",
        Unit::Seconds,
        "Time from admission to a worker taking the request"
    );
    describe_gauge!("weir_pool_workers_busy", "Workers running a request");
    describe_gauge!("weir_pool_workers_idle", "Workers waiting for a request");
    describe_counter!("weir_pool_rejected_total", "Requests refused because the queue was full (reject)");
    describe_counter!("weir_pool_dropped_total", "Queued requests evicted by newer ones (drop-oldest)");
    describe_counter!("weir_pool_queue_timeouts_total", "Requests that waited past queue_timeout");
    describe_counter!("weir_pool_request_timeouts_total", "Upstream calls that exceeded request_timeout");
    describe_counter!("weir_pool_panics_total", "Panics caught in provider code");
    describe_counter!("weir_pool_cancelled_total", "Jobs cancelled because the client went away");
    describe_gauge!("weir_pool_buffered_bytes", "Bytes of whole (non-stream) upstream answers being read right now");
    describe_counter!("weir_reloads_total", "Config reloads, by result and trigger");
    describe_histogram!("weir_reload_duration_seconds", Unit::Seconds, "Time a reload took, failed ones included");
    describe_histogram!(
        "weir_upstream_latency_seconds",
        Unit::Seconds,
        "Upstream call time (to the response head for streams)"
    );
}

/// Renders the exposition text.
pub fn render() -> String {
    HANDLE.get().map(PrometheusHandle::render).unwrap_or_default()
}

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
    /// `weir_requests_total{outcome="ok",status="200"}` per endpoint (chat, embeddings).
    ok: [Counter; 2],
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
        Self {
            ok: [ok(Endpoint::ChatCompletions), ok(Endpoint::Embeddings)],
            tokens: [tokens("prompt"), tokens("completion"), tokens("cached")],
            model,
        }
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
            let i = match endpoint {
                Endpoint::ChatCompletions => 0,
                Endpoint::Embeddings => 1,
            };
            m.ok[i].increment(1);
        } else {
            record_request(self.provider.clone(), m.model.clone(), endpoint, outcome, status);
        }
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
