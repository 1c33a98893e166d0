//! Metric handles of one plugin, registered at load so a hook call only bumps atomics. Per-hook
//! series exist only for the hooks the plugin's `init` returned: a hook it does not implement
//! is never called, and a series that can only be 0 would say otherwise.
//! `weir_plugin_calls_total{plugin,hook,outcome}`, `weir_plugin_call_seconds{plugin,hook}`,
//! `weir_plugin_fuel_used{plugin,hook}`, `weir_plugin_instances{plugin}`,
//! `weir_plugin_instances_idle{plugin}`, `weir_plugin_instances_replaced_total{plugin,reason}`,
//! `weir_plugin_skipped_total{plugin,hook}` (fail-open); described here, registered where
//! they are kept: `weir_plugin_replace_failures_total{plugin}`, `weir_plugin_degraded{plugin}`
//! (`plugin/refill.rs`), `weir_plugin_log_dropped_total{plugin}` (`host/log.rs`).

use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use super::bindings::Hooks;

/// Which hook a call was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `on-request`.
    Request = 0,
    /// `on-response`.
    Response = 1,
    /// `on-stream-chunk`.
    StreamChunk = 2,
}

impl Hook {
    /// Label value.
    pub fn label(self) -> &'static str {
        match self {
            Hook::Request => "on_request",
            Hook::Response => "on_response",
            Hook::StreamChunk => "on_stream_chunk",
        }
    }

    /// The hook's flag in what `init` returns.
    pub fn flag(self) -> Hooks {
        match self {
            Hook::Request => Hooks::ON_REQUEST,
            Hook::Response => Hooks::ON_RESPONSE,
            Hook::StreamChunk => Hooks::ON_STREAM_CHUNK,
        }
    }
}

const HOOKS: [Hook; 3] = [Hook::Request, Hook::Response, Hook::StreamChunk];

/// Call outcomes (`outcome` label).
pub const OUTCOMES: [&str; 10] =
    ["ok", "rejected", "short_circuit", "trap", "fuel", "deadline", "memory", "output", "invalid", "busy"];

/// Why an instance was replaced (`reason` label).
pub const REASONS: [&str; 6] = ["trap", "fuel", "deadline", "memory", "recycled", "cancelled"];

/// Every metric of one plugin.
pub struct PluginMetrics {
    calls: Vec<[Counter; OUTCOMES.len()]>,
    duration: Vec<Histogram>,
    fuel: Vec<Histogram>,
    skipped: Vec<Counter>,
    /// Live instances (idle + busy).
    pub instances: Gauge,
    /// Idle instances.
    pub idle: Gauge,
    replaced: [Counter; REASONS.len()],
    /// Calls still running at their first yield, moved off their serving thread.
    pub moved: Counter,
    /// Call times since start as a number the admin API reads: bucket `i` counts calls under
    /// `2^i` microseconds.
    times: [AtomicU64; TIME_BUCKETS],
}

/// Buckets of [`PluginMetrics::times`]: up to 2^31 us (~36 min).
const TIME_BUCKETS: usize = 32;

impl PluginMetrics {
    /// Registers the handles of `plugin`; the per-hook ones only for hooks it `implements`
    /// (the others are no-op handles, never exported).
    pub fn new(plugin: &str, implements: impl Fn(Hook) -> bool) -> Self {
        let p = plugin.to_owned();
        let calls = HOOKS
            .iter()
            .map(|&h| {
                OUTCOMES.map(|o| {
                    if !implements(h) {
                        return Counter::noop();
                    }
                    counter!("weir_plugin_calls_total", "plugin" => p.clone(), "hook" => h.label(), "outcome" => o)
                })
            })
            .collect();
        let per_hook = |name: &'static str| -> Vec<Histogram> {
            HOOKS
                .iter()
                .map(|&h| {
                    if implements(h) {
                        histogram!(name, "plugin" => p.clone(), "hook" => h.label())
                    } else {
                        Histogram::noop()
                    }
                })
                .collect()
        };
        Self {
            calls,
            duration: per_hook("weir_plugin_call_seconds"),
            fuel: per_hook("weir_plugin_fuel_used"),
            skipped: HOOKS
                .iter()
                .map(|&h| {
                    if implements(h) {
                        counter!("weir_plugin_skipped_total", "plugin" => p.clone(), "hook" => h.label())
                    } else {
                        Counter::noop()
                    }
                })
                .collect(),
            instances: gauge!("weir_plugin_instances", "plugin" => p.clone()),
            idle: gauge!("weir_plugin_instances_idle", "plugin" => p.clone()),
            replaced: REASONS
                .map(|r| counter!("weir_plugin_instances_replaced_total", "plugin" => p.clone(), "reason" => r)),
            moved: counter!("weir_plugin_calls_moved_total", "plugin" => p.clone()),
            times: Default::default(),
        }
    }

    /// The `q` quantiles of call times since start, in microseconds (a bucket's upper bound).
    pub fn time_quantiles(&self, qs: [f64; 2]) -> [Option<u64>; 2] {
        let counts: Vec<u64> = self.times.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        qs.map(|q| {
            let rank = ((q * total as f64).ceil() as u64).max(1);
            let mut seen = 0;
            (total > 0).then(|| {
                let i = counts.iter().position(|&n| {
                    seen += n;
                    seen >= rank
                });
                1u64 << i.unwrap_or(TIME_BUCKETS - 1)
            })
        })
    }

    /// Records one call.
    pub fn call(&self, hook: Hook, outcome: &str, took: Duration, fuel: u64) {
        let h = hook as usize;
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.calls[h][i].increment(1);
        }
        self.duration[h].record(took.as_secs_f64());
        let us = took.as_micros() as u64;
        let bucket = (u64::BITS - us.leading_zeros()) as usize;
        self.times[bucket.min(TIME_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
        if fuel > 0 {
            self.fuel[h].record(fuel as f64);
        }
    }

    /// A fail-open plugin was skipped.
    pub fn skipped(&self, hook: Hook) {
        self.skipped[hook as usize].increment(1);
    }

    /// An instance was discarded for `reason`.
    pub fn replaced(&self, reason: &str) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            self.replaced[i].increment(1);
        }
    }
}

/// Describes the plugin metrics to the exporter (once, from `crate::metrics::install`).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!("weir_plugin_calls_total", "Plugin hook calls by plugin, hook and outcome");
    describe_histogram!("weir_plugin_call_seconds", Unit::Seconds, "Plugin hook call time, checkout included");
    describe_histogram!(
        "weir_plugin_fuel_used",
        "Fuel a plugin hook call used (calls that used none are not recorded)"
    );
    describe_gauge!("weir_plugin_instances", "Live plugin instances (idle + busy)");
    describe_gauge!("weir_plugin_instances_idle", "Idle plugin instances ready for a call");
    describe_counter!("weir_plugin_instances_replaced_total", "Plugin instances discarded and replaced, by reason");
    describe_counter!(
        "weir_plugin_skipped_total",
        "Fail-open plugin calls that failed; the plugin is skipped for the rest of that request"
    );
    describe_counter!(
        "weir_plugin_replace_failures_total",
        "Attempts to replace a discarded plugin instance that failed (instantiation or init)"
    );
    describe_gauge!("weir_plugin_degraded", "1 while a plugin's instance replacements are failing");
    describe_counter!(
        "weir_plugin_log_dropped_total",
        "Plugin log lines (log calls, stdout, stderr) over its rate limit"
    );
    describe_counter!(
        "weir_plugin_calls_moved_total",
        "Hook calls still running at their first yield, moved off their serving thread to the plugin runtime"
    );
}
