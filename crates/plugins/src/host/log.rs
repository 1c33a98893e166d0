//! Capability `log`: plugin log lines go to the gateway's tracing output (target
//! `weir::plugin`), tagged with the plugin name. Granted to every plugin; scrubbed of the
//! plugin's secrets (its config values from `${ENV}`, which a plugin may print by mistake),
//! bounded per line, rate-limited per plugin (with stdout/stderr, which share the budget) and
//! escaped so a line cannot pose as the gateway's own.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use wasmtime::component::{HasSelf, Linker};

use super::StoreData;
use crate::plugins::bindings::log::{self, Level};
use crate::secrets::Secrets;

/// Longest message kept; the rest is cut (a plugin cannot flood the log with one line).
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Log bytes a plugin may write per second, across its instances, once its burst is spent.
pub const BYTES_PER_SEC: f64 = 64.0 * 1024.0;
/// Log bytes a plugin may write at once after a quiet spell.
pub const BURST_BYTES: f64 = 256.0 * 1024.0;
/// Log lines per second (short lines cost the log's reader too), once the burst is spent.
pub const LINES_PER_SEC: f64 = 200.0;
/// Log lines at once after a quiet spell.
pub const BURST_LINES: f64 = 1000.0;
/// Least time between two "dropping lines" warnings of one plugin.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// One plugin's log budget, shared by its instances and its stdout/stderr: a token bucket of
/// bytes and one of lines. A line either fits both or is dropped and counted in
/// `weir_plugin_log_dropped_total{plugin}`; a plugin logging in a loop thus costs the log a
/// bounded rate instead of megabytes per request.
pub struct LogBudget {
    plugin: Arc<str>,
    secrets: Arc<Secrets>,
    bucket: Mutex<Bucket>,
    dropped: metrics::Counter,
}

struct Bucket {
    bytes: f64,
    lines: f64,
    refilled: Instant,
    warned: Option<Instant>,
}

impl LogBudget {
    /// A full budget for `plugin`, whose lines are scrubbed of `secrets`.
    pub fn new(plugin: Arc<str>, secrets: Arc<Secrets>) -> Self {
        let dropped = metrics::counter!("weir_plugin_log_dropped_total", "plugin" => plugin.to_string());
        let bucket = Bucket { bytes: BURST_BYTES, lines: BURST_LINES, refilled: Instant::now(), warned: None };
        Self { plugin, secrets, bucket: Mutex::new(bucket), dropped }
    }

    /// Takes one line of `len` bytes from the budget; false (and counted) when it does not fit.
    pub fn admit(&self, len: usize) -> bool {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let secs = now.duration_since(b.refilled).as_secs_f64();
        b.refilled = now;
        b.bytes = (b.bytes + secs * BYTES_PER_SEC).min(BURST_BYTES);
        b.lines = (b.lines + secs * LINES_PER_SEC).min(BURST_LINES);
        let cost = len.max(1) as f64;
        if b.bytes >= cost && b.lines >= 1.0 {
            b.bytes -= cost;
            b.lines -= 1.0;
            return true;
        }
        self.dropped.increment(1);
        if b.warned.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) {
            b.warned = Some(now);
            tracing::warn!(
                plugin = %self.plugin,
                "plugin log rate limit reached; dropping its lines (counted in weir_plugin_log_dropped_total)"
            );
        }
        false
    }

    /// Emits one plugin line at `level` if the budget allows: scrubbed of the plugin's secrets
    /// before it is cut to [`MAX_MESSAGE_BYTES`] (so no piece of one survives the cut),
    /// control characters escaped.
    pub fn emit(&self, level: Level, message: &str) {
        let message = if message.len() > MAX_MESSAGE_BYTES {
            Cow::Owned(self.secrets.scrub_cut(message, MAX_MESSAGE_BYTES))
        } else {
            self.secrets.scrub(message)
        };
        if !self.admit(message.len()) {
            return;
        }
        let message = escape(&message);
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(target: "weir::plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "weir::plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "weir::plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "weir::plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "weir::plugin", plugin, "{message}"),
        }
    }
}

/// Per-instance state: the plugin's log budget.
pub struct LogState {
    budget: Arc<LogBudget>,
}

impl LogState {
    /// Logging through `budget`.
    pub fn new(budget: Arc<LogBudget>) -> Self {
        Self { budget }
    }
}

/// Cuts `s` to at most `max` bytes on a char boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Escapes what could break a log line or a terminal: `\n`, `\r`, `\t` as such, other
/// control characters (ESC, DEL, C1) and the Unicode line separators as `\u{..}`. Without
/// it a plugin's newline starts a line that reads like the gateway's own.
pub fn escape(s: &str) -> Cow<'_, str> {
    let needs = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    if !s.chars().any(needs) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

impl log::Host for LogState {
    fn log(&mut self, level: Level, message: String) {
        self.budget.emit(level, &message);
    }
}

/// Adds `weir:plugin/log` to the linker.
///
/// # Errors
/// Only on a linker conflict (a bug).
pub fn add_to_linker(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    log::add_to_linker::<StoreData, HasSelf<LogState>>(linker, |d| &mut d.log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_on_a_char_boundary() {
        let s = "é".repeat(MAX_MESSAGE_BYTES);
        let cut = truncate(&s, MAX_MESSAGE_BYTES);
        assert!(cut.len() <= MAX_MESSAGE_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(truncate("short", 10), "short");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert!(matches!(escape("plain text é"), Cow::Borrowed(_)));
        assert_eq!(escape("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(escape("x\u{1b}[2J\u{7f}\u{2028}"), "x\\u{1b}[2J\\u{7f}\\u{2028}");
        assert!(!escape("one\ntwo\r\n").contains(['\n', '\r']));
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_is_cut_to_the_burst_then_the_rate() {
        let budget = LogBudget::new("flood".into(), Default::default());
        let mut admitted = 0usize;
        for _ in 0..1000 {
            if budget.admit(MAX_MESSAGE_BYTES) {
                admitted += 1;
            }
        }
        assert_eq!(admitted as f64, BURST_BYTES / MAX_MESSAGE_BYTES as f64, "the burst, then nothing");
        tokio::time::advance(Duration::from_secs(1)).await;
        let again = (0..1000).filter(|_| budget.admit(MAX_MESSAGE_BYTES)).count();
        assert_eq!(again as f64, BYTES_PER_SEC / MAX_MESSAGE_BYTES as f64, "one second's worth");
    }

    #[tokio::test(start_paused = true)]
    async fn short_lines_are_bounded_by_the_line_rate() {
        let budget = LogBudget::new("chatty".into(), Default::default());
        let admitted = (0..10_000).filter(|_| budget.admit(1)).count();
        assert_eq!(admitted as f64, BURST_LINES);
        tokio::time::advance(Duration::from_millis(500)).await;
        let again = (0..10_000).filter(|_| budget.admit(1)).count();
        assert_eq!(again as f64, LINES_PER_SEC / 2.0);
    }

    #[tokio::test(start_paused = true)]
    async fn host_log_accepts_any_level_within_its_budget() {
        let budget = Arc::new(LogBudget::new("p".into(), Default::default()));
        let mut state = LogState::new(budget.clone());
        for level in [Level::Trace, Level::Debug, Level::Info, Level::Warn, Level::Error] {
            log::Host::log(&mut state, level, "x".repeat(10_000));
        }
        // Each line was cut to MAX_MESSAGE_BYTES before it was charged.
        let left = BURST_BYTES - 5.0 * MAX_MESSAGE_BYTES as f64;
        assert_eq!(budget.bucket.lock().unwrap().bytes, left);
    }
}
