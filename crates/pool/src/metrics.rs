//! Metric handles of one pool, registered once at start so the hot path only bumps atomics.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

/// Every per-provider pool metric (`provider` label).
pub(super) struct PoolMetrics {
    pub queue_depth: Gauge,
    pub queue_wait: Histogram,
    busy: Gauge,
    idle: Gauge,
    pub rejected: Counter,
    pub dropped: Counter,
    pub queue_timeouts: Counter,
    pub request_timeouts: Counter,
    /// `weir_timeouts_total{provider,phase}`, in [`Phase`](crate::stream::Phase) order.
    pub timeouts: [Counter; 4],
    pub panics: Counter,
    pub cancelled: Counter,
    pub upstream_latency: Histogram,
    /// Workers busy now, as a number the admin API reads (the gauges are write-only).
    pub busy_now: AtomicI64,
    /// Admissions that waited in the line, and their total wait in microseconds.
    pub waits: AtomicU64,
    pub wait_us: AtomicU64,
    /// `weir_pool_workers{provider}`: slots now.
    workers: Gauge,
    /// `weir_pool_scaled_total{provider,direction}`: slots added (`up`) and retired (`down`).
    scaled: [Counter; 2],
}

impl PoolMetrics {
    pub fn new(provider: &str, workers: usize) -> Self {
        let p = provider.to_owned();
        let m = Self {
            queue_depth: gauge!("weir_pool_queue_depth", "provider" => p.clone()),
            queue_wait: histogram!("weir_pool_queue_wait_seconds", "provider" => p.clone()),
            busy: gauge!("weir_pool_workers_busy", "provider" => p.clone()),
            idle: gauge!("weir_pool_workers_idle", "provider" => p.clone()),
            rejected: counter!("weir_pool_rejected_total", "provider" => p.clone()),
            dropped: counter!("weir_pool_dropped_total", "provider" => p.clone()),
            queue_timeouts: counter!("weir_pool_queue_timeouts_total", "provider" => p.clone()),
            request_timeouts: counter!("weir_pool_request_timeouts_total", "provider" => p.clone()),
            timeouts: crate::stream::Phase::ALL.map(|phase| {
                let c = counter!("weir_timeouts_total", "provider" => p.clone(), "phase" => phase.as_str());
                c.increment(0);
                c
            }),
            panics: counter!("weir_pool_panics_total", "provider" => p.clone()),
            cancelled: counter!("weir_pool_cancelled_total", "provider" => p.clone()),
            upstream_latency: histogram!("weir_upstream_latency_seconds", "provider" => p.clone()),
            workers: gauge!("weir_pool_workers", "provider" => p.clone()),
            scaled: ["up", "down"]
                .map(|d| counter!("weir_pool_scaled_total", "provider" => p.clone(), "direction" => d)),
            busy_now: AtomicI64::new(0),
            waits: AtomicU64::new(0),
            wait_us: AtomicU64::new(0),
        };
        m.workers.increment(workers as f64);
        // Increments, not sets: during a reload an old and a new pool of the same provider
        // coexist until the old one drains, and their counts add up.
        m.idle.increment(workers as f64);
        m
    }

    /// A request waited `wait` in the line before a worker took it.
    pub fn waited(&self, wait: std::time::Duration) {
        self.queue_wait.record(wait.as_secs_f64());
        self.waits.fetch_add(1, Ordering::Relaxed);
        self.wait_us.fetch_add(wait.as_micros() as u64, Ordering::Relaxed);
    }

    /// The pool's `workers` are gone (the pool was dropped after a reload or at exit).
    pub fn workers_gone(&self, workers: usize) {
        self.idle.decrement(workers as f64);
        self.workers.decrement(workers as f64);
    }

    /// Adaptive scaling added (`n > 0`) or retired idle slots.
    pub fn scaled(&self, n: f64) {
        self.idle.increment(n);
        self.workers.increment(n);
        self.scaled[usize::from(n < 0.0)].increment(n.abs() as u64);
    }

    /// A worker became busy (`+1`) or idle (`-1`).
    pub fn busy(&self, delta: f64) {
        self.busy_now.fetch_add(delta as i64, Ordering::Relaxed);
        self.busy.increment(delta);
        self.idle.decrement(delta);
    }
}
