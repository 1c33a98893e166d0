//! Capability `log`: plugin log lines go to the gateway's tracing output (target
//! `weir::plugin`), tagged with the plugin name. Granted to every plugin; bounded per line;
//! scrubbed of the plugin's secrets (its config values from `${ENV}`), which a plugin may
//! print by mistake.

use std::borrow::Cow;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use super::StoreData;
use crate::plugins::bindings::log::{self, Level};
use crate::secrets::Secrets;

/// Longest message kept; the rest is cut (a plugin cannot flood the log with one line).
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Per-instance state: who is logging, and what must not be logged.
pub struct LogState {
    plugin: Arc<str>,
    secrets: Arc<Secrets>,
}

impl LogState {
    /// Logging for `plugin`, scrubbing `secrets`.
    pub fn new(plugin: Arc<str>, secrets: Arc<Secrets>) -> Self {
        Self { plugin, secrets }
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

/// Emits one plugin line at `level`, scrubbed of `secrets` before it is cut (shared with the
/// stdout/stderr capture).
pub fn emit(plugin: &str, level: Level, message: &str, secrets: &Secrets) {
    let message = if message.len() > MAX_MESSAGE_BYTES {
        Cow::Owned(secrets.scrub_cut(message, MAX_MESSAGE_BYTES))
    } else {
        secrets.scrub(message)
    };
    match level {
        Level::Trace => tracing::trace!(target: "weir::plugin", plugin, "{message}"),
        Level::Debug => tracing::debug!(target: "weir::plugin", plugin, "{message}"),
        Level::Info => tracing::info!(target: "weir::plugin", plugin, "{message}"),
        Level::Warn => tracing::warn!(target: "weir::plugin", plugin, "{message}"),
        Level::Error => tracing::error!(target: "weir::plugin", plugin, "{message}"),
    }
}

impl log::Host for LogState {
    fn log(&mut self, level: Level, message: String) {
        emit(&self.plugin, level, &message, &self.secrets);
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
    fn host_log_accepts_any_level() {
        let mut state = LogState::new("p".into(), Default::default());
        for level in [Level::Trace, Level::Debug, Level::Info, Level::Warn, Level::Error] {
            log::Host::log(&mut state, level, "x".repeat(10_000));
        }
    }
}
