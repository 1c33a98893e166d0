//! The span queue (the request path's side: one lock per finished request, bounded, spans
//! dropped and counted when full) and the export thread (a single-thread tokio runtime of its
//! own that sends a batch every `export_interval`, or sooner when `max_batch_spans` wait, as
//! one OTLP/HTTP protobuf request).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::Counter;
use tokio::sync::Notify;
use weir_config::TracingConfig;
use weir_types::trace::{SpanRecord, SpanSink};

/// Spans waiting for the export thread.
pub(crate) struct Queue {
    spans: Mutex<Vec<SpanRecord>>,
    max: usize,
    batch: usize,
    wake: Notify,
    closed: AtomicBool,
    /// The export thread holds spans it took from the queue and has not sent yet.
    busy: AtomicBool,
    dropped_full: Counter,
}

impl Queue {
    pub(crate) fn new(max: usize, batch: usize) -> Self {
        Self {
            spans: Mutex::new(Vec::new()),
            max,
            batch,
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            dropped_full: metrics::counter!("weir_trace_spans_dropped_total", "reason" => "queue_full"),
        }
    }

    /// The queued spans; the queue starts again with a batch's room, so requests do not grow
    /// it step by step.
    fn take(&self) -> Vec<SpanRecord> {
        let room = Vec::with_capacity(self.batch.min(self.max));
        std::mem::replace(&mut *self.spans.lock().unwrap_or_else(std::sync::PoisonError::into_inner), room)
    }

    /// Whether every span handed over so far has been sent (or given up on).
    fn idle(&self) -> bool {
        !self.busy.load(Ordering::Acquire)
            && self.spans.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty()
    }

    /// Has the export thread send what is queued now, and waits until it did, at most
    /// `timeout`.
    pub(crate) async fn flush(&self, timeout: Duration) {
        self.wake.notify_one();
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.idle() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl SpanSink for Queue {
    fn submit(&self, spans: Vec<SpanRecord>) {
        let mut q = self.spans.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if q.len() + spans.len() > self.max {
            drop(q);
            self.dropped_full.increment(spans.len() as u64);
            return;
        }
        q.extend(spans);
        let full = q.len() >= self.batch;
        drop(q);
        // Only a full batch wakes the thread early: a wake-up per request would cost a futex
        // call on the request's thread.
        if full {
            self.wake.notify_one();
        }
    }
}

/// The export thread's handle: dropping it (the last snapshot using this `[tracing]` went)
/// sends what is queued and ends the thread, without waiting for it.
pub(crate) struct Exporter {
    queue: Arc<Queue>,
}

impl Exporter {
    pub(crate) fn start(cfg: &TracingConfig, queue: Arc<Queue>) -> Result<Self, String> {
        let headers: Vec<(String, String)> = cfg.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let client = crate::client::Client::new(&cfg.endpoint, &headers, cfg.export_timeout)
            .map_err(|e| format!("tracing: cannot build the OTLP exporter: {e}"))?;
        let service = cfg.service_name.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tracing: cannot start the export runtime: {e}"))?;
        let (q, interval, batch) = (queue.clone(), cfg.export_interval, cfg.max_batch_spans);
        std::thread::Builder::new()
            .name("weir-otel".into())
            .spawn(move || runtime.block_on(run(client, service, q, interval, batch)))
            .map_err(|e| format!("tracing: cannot start the export thread: {e}"))?;
        Ok(Self { queue })
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::Release);
        self.queue.wake.notify_one();
    }
}

async fn run(client: crate::client::Client, service: String, queue: Arc<Queue>, interval: Duration, batch: usize) {
    let exported = metrics::counter!("weir_trace_spans_exported_total");
    let failed = metrics::counter!("weir_trace_spans_dropped_total", "reason" => "export_failed");
    let mut encoder = crate::encode::Encoder::default();
    loop {
        let closing = queue.closed.load(Ordering::Acquire);
        if !closing {
            tokio::select! {
                () = queue.wake.notified() => {}
                () = tokio::time::sleep(interval) => {}
            }
        }
        // Busy before the take: a flush sees either queued spans or a busy thread.
        queue.busy.store(true, Ordering::Release);
        let mut spans = queue.take();
        while !spans.is_empty() {
            let rest = spans.split_off(spans.len().min(batch));
            let n = spans.len() as u64;
            let body = encoder.request(&service, &spans);
            drop(spans);
            match client.send(body).await {
                Ok(()) => exported.increment(n),
                Err(e) => {
                    failed.increment(n);
                    tracing::warn!(spans = n, error = %e, "trace export failed");
                }
            }
            spans = rest;
        }
        queue.busy.store(false, Ordering::Release);
        if closing {
            return;
        }
    }
}

/// Describes the trace export metrics.
pub fn describe_metrics() {
    use metrics::describe_counter;
    describe_counter!("weir_trace_spans_exported_total", "Spans the OTLP collector accepted");
    describe_counter!(
        "weir_trace_spans_dropped_total",
        "Spans not exported, by reason: queue_full (the export queue was at tracing.max_queue_spans) or export_failed"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_types::trace::{RootSpec, Span};

    #[test]
    fn a_full_queue_drops_whole_requests_instead_of_growing() {
        let queue = Arc::new(Queue::new(3, 3));
        let request = || {
            let spec = RootSpec { trace_id: 1, parent_id: 0, sampled: true, tracestate: None, name: "weir.request" };
            let root = Span::root(spec, queue.clone() as Arc<dyn SpanSink>);
            root.cx().child("weir.parse", weir_types::trace::SpanKind::Internal).end();
            root.end();
        };
        request();
        assert!(!queue.idle(), "two spans wait");
        request();
        assert_eq!(queue.take().len(), 2, "the second request's two spans did not fit in 3");
        assert!(queue.idle());
    }
}
