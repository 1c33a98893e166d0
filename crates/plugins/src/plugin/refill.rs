//! Refilling a plugin's pool after an instance is discarded (trap, fuel, deadline, memory,
//! recycled, cancelled). One refill task per plugin makes one instance at a time until the
//! pool is back to its configured size. A replacement whose instantiation or `init` fails or
//! spins is retried with exponential backoff, and never sooner than four times what the failed
//! attempt took, so a plugin whose `init` spins to its deadline costs at most a fifth of one
//! plugin-runtime thread, however many instances it lost. While attempts fail the plugin is
//! *degraded*: counted in `weir_plugin_replace_failures_total{plugin}`, flagged in
//! `weir_plugin_degraded{plugin}` and `/ready`, logged once when it starts and once when it
//! ends. The instances that did not fail keep serving meanwhile.

use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, counter, gauge};

use super::Plugin;
use crate::affinity::Affinity;
use crate::plugins::offload;

/// Wait after the first failed attempt; doubles per failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between attempts (a broken plugin is retried at least this often).
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A failed attempt is followed by a wait of at least this many times its own duration.
const SPIN_FACTOR: u32 = 4;

/// Refill state of one plugin.
pub(super) struct Refill {
    running: AtomicBool,
    degraded: AtomicBool,
    failures: AtomicU64,
    failures_total: Counter,
    degraded_gauge: Gauge,
}

impl Refill {
    pub(super) fn new(plugin: &str) -> Self {
        let degraded_gauge = gauge!("weir_plugin_degraded", "plugin" => plugin.to_owned());
        degraded_gauge.set(0.0);
        Self {
            running: AtomicBool::new(false),
            degraded: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            failures_total: counter!("weir_plugin_replace_failures_total", "plugin" => plugin.to_owned()),
            degraded_gauge,
        }
    }

    /// Whether the latest replacement attempt failed.
    pub(super) fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Failed replacement attempts so far.
    pub(super) fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn failed(&self, plugin: &str, error: &str, retry_in: Duration) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.failures_total.increment(1);
        if !self.degraded.swap(true, Ordering::Relaxed) {
            self.degraded_gauge.set(1.0);
            tracing::error!(
                plugin,
                error,
                retry_in_ms = retry_in.as_millis() as u64,
                "cannot replace a plugin instance; plugin degraded, retrying with backoff (logged once until it recovers)"
            );
        } else {
            tracing::debug!(
                plugin,
                error,
                retry_in_ms = retry_in.as_millis() as u64,
                "plugin instance replacement failed again"
            );
        }
    }

    fn succeeded(&self, plugin: &str) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            self.degraded_gauge.set(0.0);
            tracing::info!(plugin, "plugin instances are being replaced again; plugin recovered");
        }
    }
}

impl Plugin {
    /// An instance was discarded for `reason`: counts it and starts the refill task unless one
    /// is running (off the serving thread `here`). The pool is one short until the refill
    /// makes a new instance.
    pub(super) fn replace(&self, reason: &'static str, here: Affinity) {
        self.metrics.replaced(reason);
        self.metrics.instances.decrement(1.0);
        self.live.fetch_sub(1, Ordering::Relaxed);
        self.replaced.fetch_add(1, Ordering::Relaxed);
        self.start_refill(here);
    }

    fn start_refill(&self, here: Affinity) {
        if self.refill.running.swap(true, Ordering::AcqRel) {
            return;
        }
        // Off the serving threads: instantiating and `init` may take milliseconds. Outside a
        // runtime (a lease dropped while the process winds down) nobody is left to serve.
        if !offload::spawn(refill(self.weak.clone()), here) {
            self.refill.running.store(false, Ordering::Release);
        }
    }

    /// Whether the pool is short of its configured size.
    fn short(&self) -> bool {
        self.live.load(Ordering::Relaxed) < self.target
    }
}

/// Makes instances one at a time until the pool is full, backing off while attempts fail.
async fn refill(weak: Weak<Plugin>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(plugin) = weak.upgrade() else { return };
        if !plugin.short() {
            plugin.refill.running.store(false, Ordering::Release);
            // An instance lost between the check and the store found the task still running
            // and did not start one: take the job back if nobody else has.
            if !plugin.short() || plugin.refill.running.swap(true, Ordering::AcqRel) {
                return;
            }
            continue;
        }
        let started = Instant::now();
        match plugin.factory.make().await {
            Ok((inst, _)) => {
                plugin.live.fetch_add(1, Ordering::Relaxed);
                plugin.metrics.instances.increment(1.0);
                plugin.metrics.idle.increment(1.0);
                plugin.pool.put(inst);
                plugin.refill.succeeded(&plugin.name);
                backoff = FIRST_BACKOFF;
            }
            Err(e) => {
                let wait = backoff.max(started.elapsed() * SPIN_FACTOR);
                plugin.refill.failed(&plugin.name, &e, wait);
                drop(plugin);
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
