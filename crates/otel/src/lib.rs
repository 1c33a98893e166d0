//! OpenTelemetry traces of requests (`[tracing]`). The request path only decides whether a
//! request is recorded ([`Tracer::root`]) and times its spans as plain values
//! (`weir_types::trace`); a finished request's spans join a bounded queue, and one thread of
//! its own ([`export`]) writes them as OTLP's protobuf ([`encode`]) and posts them to the
//! collector (OTLP/HTTP). Export never runs on a serving thread.

mod client;
#[cfg(test)]
mod convert;
mod encode;
mod export;
pub mod logs;

use std::sync::Arc;

use http::{HeaderMap, HeaderName};
use weir_config::TracingConfig;
use weir_types::trace::{RootSpec, Span, SpanSink, Traceparent};

pub use export::describe_metrics;
use export::{Exporter, Queue};

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// Longest client `tracestate` kept (the W3C limit is 32 members; 512 bytes is what the
/// spec says a vendor must at least propagate).
const MAX_TRACESTATE: usize = 512;

/// The trace settings of one config snapshot and the queue to the export thread. A reload
/// with the same `[tracing]` keeps it (and its thread).
pub struct Tracer {
    config: TracingConfig,
    /// `sample_ratio` as a bound on the trace id's low 63 bits.
    threshold: u64,
    queue: Arc<Queue>,
    _exporter: Exporter,
}

impl Tracer {
    /// Starts the export thread for `config`.
    ///
    /// # Errors
    /// The exporter could not be built (a message without header values).
    pub fn start(config: &TracingConfig) -> Result<Arc<Self>, String> {
        let queue = Arc::new(Queue::new(config.max_queue_spans, config.max_batch_spans));
        let exporter = Exporter::start(config, queue.clone())?;
        // Trace-id ratio sampling as OpenTelemetry's `TraceIdRatioBased`: the same trace id and
        // ratio give the same decision in every service.
        let threshold =
            if config.sample_ratio >= 1.0 { u64::MAX } else { (config.sample_ratio * (1u64 << 63) as f64) as u64 };
        Ok(Arc::new(Self { config: config.clone(), threshold, queue, _exporter: exporter }))
    }

    /// The settings it runs with.
    pub fn config(&self) -> &TracingConfig {
        &self.config
    }

    /// Sends the spans of requests that have ended, waiting at most `export_timeout` (and
    /// never more than 5 s): at shutdown, after the last request.
    pub async fn flush(&self) {
        self.queue.flush(self.config.export_timeout.min(std::time::Duration::from_secs(5))).await;
    }

    /// The root span of a request with client `headers`, named `name`: a child of the client's
    /// `traceparent` when it sent a valid one, else the first span of a new trace.
    /// [`Span::NONE`] when the request is not recorded (left out by `sample_ratio` and no
    /// `always_on_error`).
    pub fn root(&self, headers: &HeaderMap, name: &'static str) -> Span {
        let parent = headers.get(&TRACEPARENT).and_then(|v| Traceparent::parse(v.as_bytes()));
        let trace_id = parent.map_or_else(new_trace_id, |p| p.trace_id);
        let sampled = self.threshold == u64::MAX || ((trace_id as u64) & (u64::MAX >> 1)) < self.threshold;
        if !sampled && !self.config.always_on_error {
            return Span::NONE;
        }
        let tracestate = parent
            .and_then(|_| headers.get(&TRACESTATE))
            .filter(|v| v.len() <= MAX_TRACESTATE && !v.is_empty())
            .cloned();
        let spec = RootSpec { trace_id, parent_id: parent.map_or(0, |p| p.parent_id), sampled, tracestate, name };
        Span::root(spec, self.queue.clone() as Arc<dyn SpanSink>)
    }
}

/// A random, non-zero trace id.
fn new_trace_id() -> u128 {
    (u128::from(fastrand::u64(..)) << 64) | u128::from(fastrand::u64(1..))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracer(ratio: f64, on_error: bool) -> Arc<Tracer> {
        let cfg = TracingConfig {
            endpoint: "http://127.0.0.1:9/v1/traces".into(),
            sample_ratio: ratio,
            always_on_error: on_error,
            ..TracingConfig::default()
        };
        Tracer::start(&cfg).unwrap()
    }

    #[test]
    fn the_clients_trace_is_continued_and_the_ratio_decides_who_is_recorded() {
        let t = tracer(1.0, false);
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".parse().unwrap());
        let root = t.root(&h, "weir.request");
        let tp = root.cx().traceparent().unwrap();
        let tp = tp.to_str().unwrap();
        assert!(tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-") && tp.ends_with("-01"), "{tp}");
        assert!(!tp.contains("b7ad6b7169203331"), "names Weir's span, not the client's");

        assert!(!tracer(0.0, false).root(&h, "weir.request").is_recording());
        let kept = tracer(0.0, true).root(&h, "weir.request");
        assert!(kept.cx().traceparent().unwrap().to_str().unwrap().ends_with("-00"), "recorded, not sampled");
        let half = tracer(0.5, false);
        let recorded = (0..2000).filter(|_| half.root(&HeaderMap::new(), "r").is_recording()).count();
        assert!((800..1200).contains(&recorded), "{recorded} of 2000 at 0.5");
    }
}
