//! The event bus: events (request records, audit and error facts, debug detail) go into one
//! of three bounded priority queues; a fixed number of dispatch workers move them, highest
//! priority first, into each sink's own bounded queues; each sink has its own thread. So a
//! publisher never blocks and never allocates past the capacities, drops are counted per queue
//! and reason, and a sink that stalls or panics loses only its own events.
//!
//! ```text
//! publish ─▶ [high|medium|low] ─▶ workers ─▶ sink A [high|medium|low] ─▶ thread A ─▶ write
//!                                        └─▶ sink B [high|medium|low] ─▶ thread B ─▶ write
//! ```

pub use weir_config as config;

mod queue;
mod record;
pub mod sinks;
mod stage;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use metrics::{Counter, counter};
use serde::Serialize;

pub use queue::{Dropped, Reason, Rings};
pub use record::{Body, Event, PluginOutcomes, RequestRecord, Rfc3339};
pub use stage::BATCH;

use config::{EventsConfig, Priority, QueueCapacities};
use stage::Stage;

/// A destination for events. Runs on its own thread: it may block (a file, a socket) without
/// holding up the bus or the other sinks.
pub trait Sink: Send + 'static {
    /// Writes one event. An error is counted and the event is lost.
    ///
    /// # Errors
    /// The sink could not write it.
    fn write(&mut self, event: &Event) -> std::io::Result<()>;

    /// Called when the sink's queue is empty: write out what is buffered.
    ///
    /// # Errors
    /// The sink could not write it.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A sink with its place on the bus.
pub struct SinkSpec {
    /// Its name in metrics (`sink` label).
    pub name: String,
    /// The lowest priority it takes.
    pub min_priority: Priority,
    /// Capacity of its queue per priority.
    pub queue: usize,
    /// The sink.
    pub sink: Box<dyn Sink>,
}

/// Drop counters of one stage: per queue and reason, counted here and in Prometheus.
struct Drops {
    counts: [[AtomicU64; 5]; 3],
    metrics: [[Counter; 5]; 3],
}

impl Drops {
    fn new(sink: Option<&str>) -> Self {
        let metrics = Priority::ALL.map(|p| {
            Reason::ALL.map(|r| match sink {
                None => counter!("weir_events_dropped_total", "queue" => p.name(), "reason" => r.name()),
                Some(s) => counter!(
                    "weir_events_sink_dropped_total", "sink" => s.to_owned(), "queue" => p.name(), "reason" => r.name()
                ),
            })
        });
        Self { counts: Default::default(), metrics }
    }

    fn count(&self, d: Dropped) {
        let (q, r) = (d.queue.index(), d.reason.index());
        self.counts[q][r].fetch_add(1, Ordering::Relaxed);
        self.metrics[q][r].increment(1);
    }

    fn snapshot(&self) -> Vec<DropCount> {
        let mut out = Vec::new();
        for p in Priority::ALL {
            for r in Reason::ALL {
                let n = self.counts[p.index()][r.index()].load(Ordering::Relaxed);
                if n > 0 {
                    out.push(DropCount { queue: p.name(), reason: r.name(), count: n });
                }
            }
        }
        out
    }

    fn total(&self) -> u64 {
        self.counts.iter().flatten().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

struct SinkSlot {
    name: String,
    min: Priority,
    stage: Stage,
    drops: Drops,
    written: AtomicU64,
    written_metric: Counter,
}

struct Shared {
    queue: Stage,
    drops: Drops,
    published: [Counter; 3],
    sinks: Vec<SinkSlot>,
}

/// The bus. Dropping it closes it: queued events are still written, then the threads end.
pub struct Bus {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    sink_threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Drops of one queue for one reason.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DropCount {
    /// `high`, `medium` or `low`.
    pub queue: &'static str,
    /// `drop-oldest`, `drop-newest`, `drop-low-priority`, `panic` or `error`.
    pub reason: &'static str,
    /// How many.
    pub count: u64,
}

/// What the bus holds and has lost.
#[derive(Debug, Clone, Serialize)]
pub struct BusStats {
    /// Events waiting in the bus's queues: high, medium, low.
    pub queued: [usize; 3],
    /// Events the bus's queues dropped.
    pub dropped: Vec<DropCount>,
    /// Each sink.
    pub sinks: Vec<SinkStats>,
}

/// One sink's counters.
#[derive(Debug, Clone, Serialize)]
pub struct SinkStats {
    /// Its name.
    pub name: String,
    /// Events waiting in its queues: high, medium, low.
    pub queued: [usize; 3],
    /// Events written.
    pub written: u64,
    /// Events lost on the way to it or in it.
    pub dropped: Vec<DropCount>,
    /// All of `dropped`.
    pub dropped_total: u64,
}

impl Bus {
    /// Starts the workers and one thread per sink.
    ///
    /// # Errors
    /// A thread could not be started.
    pub fn start(cfg: &EventsConfig, sinks: Vec<SinkSpec>) -> std::io::Result<Arc<Self>> {
        let slots = (sinks.iter())
            .map(|s| SinkSlot {
                stage: Stage::new(&QueueCapacities { high: s.queue, medium: s.queue, low: s.queue }, cfg.policies()),
                drops: Drops::new(Some(&s.name)),
                written: AtomicU64::new(0),
                written_metric: counter!("weir_events_written_total", "sink" => s.name.clone()),
                name: s.name.clone(),
                min: s.min_priority,
            })
            .collect();
        let shared = Arc::new(Shared {
            queue: Stage::new(&cfg.queues, cfg.policies()),
            drops: Drops::new(None),
            published: Priority::ALL.map(|p| counter!("weir_events_published_total", "queue" => p.name())),
            sinks: slots,
        });
        let bus = Arc::new(Self { shared: shared.clone(), workers: Mutex::default(), sink_threads: Mutex::default() });
        for (i, spec) in sinks.into_iter().enumerate() {
            let shared = shared.clone();
            let t = std::thread::Builder::new()
                .name(format!("weir-sink-{}", spec.name))
                .spawn(move || run_sink(&shared.sinks[i], spec.sink))?;
            bus.sink_threads.lock().unwrap_or_else(PoisonError::into_inner).push(t);
        }
        for i in 0..cfg.workers.max(1) {
            let shared = shared.clone();
            let t = std::thread::Builder::new().name(format!("weir-events-{i}")).spawn(move || dispatch(&shared))?;
            bus.workers.lock().unwrap_or_else(PoisonError::into_inner).push(t);
        }
        Ok(bus)
    }

    /// Queues an event. Never blocks on a sink; a full queue drops under the policy.
    pub fn publish(&self, event: Event) {
        self.shared.published[event.priority.index()].increment(1);
        self.shared.queue.push_one(event, |d| self.shared.drops.count(d));
    }

    /// Counters and queue depths.
    pub fn stats(&self) -> BusStats {
        BusStats {
            queued: self.shared.queue.lens(),
            dropped: self.shared.drops.snapshot(),
            sinks: (self.shared.sinks.iter())
                .map(|s| SinkStats {
                    name: s.name.clone(),
                    queued: s.stage.lens(),
                    written: s.written.load(Ordering::Relaxed),
                    dropped: s.drops.snapshot(),
                    dropped_total: s.drops.total(),
                })
                .collect(),
        }
    }

    /// Stops taking events, lets the workers hand what is queued to the sinks, and waits up
    /// to `timeout` for the sinks to write it (a stalled sink is left behind).
    pub fn shutdown(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        self.shared.queue.close();
        for t in std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner)) {
            let _ = t.join();
        }
        for s in &self.shared.sinks {
            s.stage.close();
        }
        let threads = std::mem::take(&mut *self.sink_threads.lock().unwrap_or_else(PoisonError::into_inner));
        while Instant::now() < deadline && !threads.iter().all(JoinHandle::is_finished) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        // Workers end once the queue is empty, and then the sinks once theirs are.
        self.shared.queue.close();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
        let shared = self.shared.clone();
        // Closing the sinks waits for the workers' last hand-off, off the dropping thread.
        let _ = std::thread::Builder::new().name("weir-events-close".into()).spawn(move || {
            for t in workers {
                let _ = t.join();
            }
            for s in &shared.sinks {
                s.stage.close();
            }
        });
    }
}

/// A dispatch worker: moves batches from the bus's queues into each sink's.
fn dispatch(shared: &Shared) {
    let mut batch = Vec::with_capacity(BATCH);
    while shared.queue.pop_batch(&mut batch) {
        for s in &shared.sinks {
            let wanted = batch.iter().filter(|ev| stage::accepts(s.min, ev.priority));
            s.stage.push(wanted, |d| s.drops.count(d));
        }
        batch.clear();
    }
}

/// A sink's thread: writes each event, isolating a panic to the event it happened on.
fn run_sink(slot: &SinkSlot, mut sink: Box<dyn Sink>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut last_warning: Option<Instant> = None;
    let mut warn = |what: &str| {
        // At most one line per 10 s: a broken sink must not flood the log.
        if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            last_warning = Some(Instant::now());
            tracing::warn!(sink = %slot.name, "event sink failed: {what}; its events are dropped and counted");
        }
    };
    while slot.stage.pop_batch(&mut batch) {
        for ev in batch.drain(..) {
            match catch_unwind(AssertUnwindSafe(|| sink.write(&ev))) {
                Ok(Ok(())) => {
                    slot.written.fetch_add(1, Ordering::Relaxed);
                    slot.written_metric.increment(1);
                }
                Ok(Err(e)) => {
                    slot.drops.count(Dropped { queue: ev.priority, reason: Reason::Error });
                    warn(&e.to_string());
                }
                Err(_) => {
                    slot.drops.count(Dropped { queue: ev.priority, reason: Reason::Panic });
                    warn("it panicked");
                }
            }
        }
        if slot.stage.is_empty()
            && let Ok(Err(e)) = catch_unwind(AssertUnwindSafe(|| sink.flush()))
        {
            warn(&e.to_string());
        }
    }
    let _ = catch_unwind(AssertUnwindSafe(|| sink.flush()));
}

/// Registers the bus's metric descriptions.
pub fn describe_metrics() {
    use metrics::describe_counter;
    describe_counter!("weir_events_published_total", "Events published on the bus, by queue (priority)");
    describe_counter!(
        "weir_events_dropped_total",
        "Events the bus's queues dropped, by queue and reason (the backpressure policy)"
    );
    describe_counter!(
        "weir_events_sink_dropped_total",
        "Events lost on the way to a sink or in it, by sink, queue and reason (policy, panic, error)"
    );
    describe_counter!("weir_events_written_total", "Events a sink wrote");
}

#[cfg(test)]
mod tests;
