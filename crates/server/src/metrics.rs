//! Prometheus export (`GET /metrics`); the request-level series live with the pools
//! (`weir_pool::requests`). Pool, plugin and provider metrics register their own handles where they live.

use std::sync::OnceLock;

use metrics::gauge;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use weir_pool::requests::{ModelLabel, RequestMetrics, record_unrouted, status_label};

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
            crate::governance::describe_metrics();
            crate::state::describe_metrics();
            weir_otel::describe_metrics();
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
    describe_counter!(
        "weir_stream_resumes_total",
        "Streams cut after their first byte that a fallback was asked to continue, by the cut provider and outcome"
    );
    describe_counter!("weir_retries_total", "Upstream attempts retried on the same provider, by the failure's reason");
    describe_counter!(
        "weir_retry_budget_exhausted_total",
        "Retries refused because the provider's retry budget was spent"
    );
    describe_counter!("weir_fallbacks_total", "Requests that fell back to this provider");
    describe_gauge!("weir_breaker_state", "The provider's circuit breaker: 0 closed, 1 half-open, 2 open");
    describe_counter!(
        "weir_timeouts_total",
        "Upstream calls that missed a bound, by phase (response, first_token, idle, total)"
    );
    describe_counter!(
        "weir_hedges_total",
        "Hedged attempts: sent to and won by this provider, and its attempts cancelled by a race"
    );
    describe_counter!("weir_health_checks_total", "Active health probes of the provider's model list, by result");
    describe_gauge!("weir_pool_workers", "The provider's workers now (adaptive pools grow and shrink it)");
    describe_counter!("weir_pool_scaled_total", "Workers added (up) or retired (down) by adaptive scaling");
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
