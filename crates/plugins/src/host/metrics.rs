//! Capability `metrics`: plugin-defined counters and histograms, exported as
//! `weir_plugin_custom_<name>{plugin="..."}`. Granted to every plugin with bounded names and
//! a bounded number of series, so a plugin cannot blow up the metrics cardinality, and with
//! names that cannot clash: the prefix keeps them apart from the gateway's own, a name is one
//! kind process-wide, and the suffixes a histogram's series use are refused. A name holding
//! one of the plugin's secrets (its config values from `${ENV}`) is refused, and a refused
//! name is logged scrubbed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use wasmtime::component::{HasSelf, Linker};

use super::StoreData;
use crate::plugins::bindings::metrics;
use crate::secrets::Secrets;

/// Longest metric name.
pub const MAX_NAME_BYTES: usize = 64;
/// Most distinct names (counters + histograms) per plugin.
pub const MAX_NAMES: usize = 32;
/// Prefix of every custom metric; no built-in metric starts with it.
pub const PREFIX: &str = "weir_plugin_custom_";
/// Suffixes the exporter gives a histogram's own series (`_bucket`, or a summary's
/// `_sum`/`_count`); a counter named so would clash with a histogram's series.
const RESERVED_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

/// A custom metric's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Histogram,
}

/// The kind of every custom name registered in this process, across plugins and reloads (the
/// exporter keeps a series for the process's life). The exposition has one `# TYPE` per name,
/// so a name used as a counter by one plugin and a histogram by another made it invalid.
static KINDS: LazyLock<Mutex<HashMap<String, Kind>>> = LazyLock::new(Mutex::default);

/// Claims `name` as `kind` for the process; false when it is already the other kind.
fn claim(name: &str, kind: Kind) -> bool {
    let mut kinds = KINDS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(claimed) = kinds.get(name) {
        return *claimed == kind;
    }
    kinds.insert(name.to_owned(), kind);
    // Every exported series has a `# HELP`, a plugin's own too.
    let full = format!("{PREFIX}{name}");
    match kind {
        Kind::Counter => ::metrics::describe_counter!(full, "Counter defined by a plugin (metrics.counter)"),
        Kind::Histogram => ::metrics::describe_histogram!(full, "Histogram defined by a plugin (metrics.histogram)"),
    }
    true
}

/// One plugin's metric handles, shared by its instances.
pub struct CustomMetrics {
    plugin: Arc<str>,
    counters: Mutex<HashMap<String, ::metrics::Counter>>,
    histograms: Mutex<HashMap<String, ::metrics::Histogram>>,
    warned: AtomicBool,
    secrets: Arc<Secrets>,
}

impl CustomMetrics {
    /// No metrics yet for `plugin`, whose names must not hold `secrets`.
    pub fn new(plugin: Arc<str>, secrets: Arc<Secrets>) -> Self {
        Self {
            plugin,
            counters: Mutex::default(),
            histograms: Mutex::default(),
            warned: AtomicBool::new(false),
            secrets,
        }
    }

    /// Checked once per name, when it is registered (a registered name passed it).
    fn holds_secret(&self, name: &str) -> bool {
        matches!(self.secrets.scrub(name), std::borrow::Cow::Owned(_))
    }

    fn valid(name: &str) -> bool {
        name.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
            && name.len() <= MAX_NAME_BYTES
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !RESERVED_SUFFIXES.iter().any(|s| name.ends_with(s))
    }

    fn refuse(&self, name: &str, why: &str) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            let name = self.secrets.scrub_cut(name, MAX_NAME_BYTES);
            let name = name.as_str();
            tracing::warn!(plugin = %self.plugin, metric = name, "plugin metric ignored: {why} (logged once)");
        }
    }

    fn total(&self) -> usize {
        let c = self.counters.lock().map_or(0, |m| m.len());
        let h = self.histograms.lock().map_or(0, |m| m.len());
        c + h
    }

    /// Adds to a counter, registering it on first use.
    pub fn counter(&self, name: &str, value: u64) {
        if !Self::valid(name) {
            return self.refuse(name, "invalid name");
        }
        if let Some(c) = self.counters.lock().ok().and_then(|m| m.get(name).cloned()) {
            return c.increment(value);
        }
        if self.holds_secret(name) {
            return self.refuse(name, "the name holds a secret");
        }
        if self.total() >= MAX_NAMES {
            return self.refuse(name, "too many metric names");
        }
        if !claim(name, Kind::Counter) {
            return self.refuse(name, "the name is a histogram");
        }
        let c = ::metrics::counter!(format!("{PREFIX}{name}"), "plugin" => self.plugin.to_string());
        c.increment(value);
        if let Ok(mut m) = self.counters.lock() {
            m.insert(name.to_owned(), c);
        }
    }

    /// Records a histogram observation, registering it on first use.
    pub fn histogram(&self, name: &str, value: f64) {
        if !Self::valid(name) {
            return self.refuse(name, "invalid name");
        }
        if !value.is_finite() {
            return self.refuse(name, "non-finite value");
        }
        if let Some(h) = self.histograms.lock().ok().and_then(|m| m.get(name).cloned()) {
            return h.record(value);
        }
        if self.holds_secret(name) {
            return self.refuse(name, "the name holds a secret");
        }
        if self.total() >= MAX_NAMES {
            return self.refuse(name, "too many metric names");
        }
        if !claim(name, Kind::Histogram) {
            return self.refuse(name, "the name is a counter");
        }
        let h = ::metrics::histogram!(format!("{PREFIX}{name}"), "plugin" => self.plugin.to_string());
        h.record(value);
        if let Ok(mut m) = self.histograms.lock() {
            m.insert(name.to_owned(), h);
        }
    }

    /// Distinct names registered so far.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.total()
    }

    /// Whether no metric was registered yet.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }
}

/// Per-instance state: the plugin's shared handles.
pub struct MetricsState {
    shared: Arc<CustomMetrics>,
}

impl MetricsState {
    /// Access to `shared`.
    pub fn new(shared: Arc<CustomMetrics>) -> Self {
        Self { shared }
    }
}

impl metrics::Host for MetricsState {
    fn counter(&mut self, name: String, value: u64) {
        self.shared.counter(&name, value);
    }

    fn histogram(&mut self, name: String, value: f64) {
        self.shared.histogram(&name, value);
    }
}

/// Adds `weir:plugin/metrics` to the linker.
///
/// # Errors
/// Only on a linker conflict (a bug).
pub fn add_to_linker(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    metrics::add_to_linker::<StoreData, HasSelf<MetricsState>>(linker, |d| &mut d.metrics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::bindings::metrics::Host as _;

    #[test]
    fn names_are_validated() {
        let shared = Arc::new(CustomMetrics::new("p".into(), Default::default()));
        let mut m = MetricsState::new(shared.clone());
        m.counter("Bad-Name".into(), 1);
        m.counter(String::new(), 1);
        m.counter("x".repeat(MAX_NAME_BYTES + 1), 1);
        m.histogram("nan".into(), f64::NAN);
        assert!(shared.is_empty());
        m.counter("hits".into(), 1);
        m.counter("hits".into(), 1);
        m.histogram("size".into(), 3.0);
        assert_eq!(shared.len(), 2);
    }

    #[test]
    fn a_name_is_one_kind_across_plugins() {
        let a = Arc::new(CustomMetrics::new("a".into(), Default::default()));
        let b = Arc::new(CustomMetrics::new("b".into(), Default::default()));
        MetricsState::new(a.clone()).counter("kind_clash_x".into(), 1);
        MetricsState::new(b.clone()).histogram("kind_clash_x".into(), 1.0);
        MetricsState::new(a.clone()).histogram("kind_clash_x".into(), 1.0);
        assert_eq!((a.len(), b.len()), (1, 0), "the histogram of the counter's name is refused");
        MetricsState::new(b.clone()).counter("kind_clash_x".into(), 1);
        assert_eq!(b.len(), 1, "another plugin may share the name as the same kind");
    }

    #[test]
    fn names_that_pose_as_a_histograms_series_are_refused() {
        let shared = Arc::new(CustomMetrics::new("p".into(), Default::default()));
        let mut m = MetricsState::new(shared.clone());
        for name in ["lat_count", "lat_sum", "lat_bucket", "9lives", "_x"] {
            m.counter(name.into(), 1);
        }
        assert!(shared.is_empty());
        m.counter("lat_counted".into(), 1);
        assert_eq!(shared.len(), 1);
    }

    #[test]
    fn names_holding_a_secret_are_refused() {
        let shared = Arc::new(CustomMetrics::new("p".into(), Arc::new(Secrets::new(["tok12345abcd"]))));
        let mut m = MetricsState::new(shared.clone());
        m.counter("hits_tok12345abcd".into(), 1);
        m.histogram("tok12345abcd".into(), 1.0);
        assert!(shared.is_empty());
        m.counter("hits".into(), 1);
        assert_eq!(shared.len(), 1);
    }

    #[test]
    fn cardinality_is_bounded() {
        let shared = Arc::new(CustomMetrics::new("p".into(), Default::default()));
        let mut m = MetricsState::new(shared.clone());
        for i in 0..(MAX_NAMES * 2) {
            m.counter(format!("c{i}"), 1);
        }
        assert_eq!(shared.len(), MAX_NAMES);
    }
}
