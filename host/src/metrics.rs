//! Prometheus export (`GET /metrics`) and the request-level metrics recorded by `finish`.
//! Pool, plugin and provider metrics register their own handles where they live.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram, SharedString, counter, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::format::Endpoint;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets (seconds) for upstream and queue timings.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Buckets (seconds) for Weir's own overhead and plugin calls: microseconds matter here.
const OVERHEAD_BUCKETS: &[f64] =
    &[0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1];

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
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!("weir_requests_total", "Requests finished, by provider, endpoint, outcome and status");
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

/// What `finish` records about one provider's requests: handles registered once, when the
/// provider's pool starts, so a successful request bumps two atomics instead of building,
/// hashing and looking up a label set (and allocating the provider label) every time.
pub struct RequestMetrics {
    provider: SharedString,
    /// `weir_requests_total{outcome="ok",status="200"}` per endpoint (chat, embeddings).
    ok: [Counter; 2],
    overhead: Histogram,
}

impl RequestMetrics {
    /// Registers the handles of `provider`.
    pub fn new(provider: &str) -> Self {
        let p: SharedString = provider.to_owned().into();
        let ok = |e: Endpoint| {
            counter!(
                "weir_requests_total",
                "provider" => p.clone(),
                "endpoint" => e.label(),
                "outcome" => "ok",
                "status" => "200"
            )
        };
        Self {
            ok: [ok(Endpoint::ChatCompletions), ok(Endpoint::Embeddings)],
            overhead: histogram!("weir_overhead_seconds", "provider" => p.clone()),
            provider: p,
        }
    }

    /// Records one finished request.
    pub fn record(&self, endpoint: Endpoint, outcome: &'static str, status: u16, overhead: Duration) {
        if outcome == "ok" && status == 200 {
            let i = match endpoint {
                Endpoint::ChatCompletions => 0,
                Endpoint::Embeddings => 1,
            };
            self.ok[i].increment(1);
        } else {
            record_request(self.provider.clone(), endpoint, outcome, status);
        }
        self.overhead.record(overhead.as_secs_f64());
    }
}

/// Records one finished request by label set (requests with no provider, and the rare
/// outcomes [`RequestMetrics`] keeps no handle for).
pub fn record_request(provider: SharedString, endpoint: Endpoint, outcome: &'static str, status: u16) {
    counter!(
        "weir_requests_total",
        "provider" => provider,
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
