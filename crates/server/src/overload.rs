//! The overload manager, in the spirit of Envoy's: a memory monitor on the control thread
//! samples the resident set size (`/proc/self/statm`); past `[server.overload]`'s warning
//! threshold freed heap goes back to the OS, past the critical one new API requests are shed
//! with 503 `overloaded` + `Retry-After`. Connections past `server.max_connections` are
//! answered the same way by the acceptor and closed. Every shed is counted in
//! `weir_overload_shed_total{reason}`, and `/ready` shows the state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, counter, gauge};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, ErrorKind};
use crate::gateway::AppState;
use crate::respond::error_http1_bytes;

/// File descriptors kept out of the automatic `max_connections`: upstream connections, plugin
/// and config files, the runtimes' own descriptors, refusals in progress.
const FD_RESERVE: u64 = 256;
/// Ceiling of the automatic `max_connections` (set it explicitly to go higher).
const AUTO_MAX_CONNECTIONS: u64 = 8192;
/// Refusals being written at once; past that a refused connection is just closed, so a flood
/// of connections cannot hold descriptors through the refusals themselves.
const MAX_REFUSING: usize = 64;
/// How long a refusal may take to write its answer and see the client close.
const REFUSE_LINGER: Duration = Duration::from_secs(1);
/// Growth of the resident set over its low point that makes the monitor trim, below the
/// warning threshold, once connections start closing: a burst of large bodies that has ended
/// leaves its freed heap in glibc's arenas, resident, until it is trimmed.
const TRIM_GROWTH: u64 = 16 * 1024 * 1024;
/// Least time between two such trims (a trim walks every arena, taking its lock).
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Shared overload state: written by the monitor and the acceptor, read per request.
pub struct Overload {
    critical: AtomicBool,
    warning: AtomicBool,
    rss: AtomicU64,
    refusing: AtomicUsize,
    shed_memory: Counter,
    shed_connections: Counter,
    rss_gauge: Gauge,
}

impl Overload {
    /// A monitor in the normal state, its metrics registered.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            critical: AtomicBool::new(false),
            warning: AtomicBool::new(false),
            rss: AtomicU64::new(rss_bytes().unwrap_or(0)),
            refusing: AtomicUsize::new(0),
            shed_memory: counter!("weir_overload_shed_total", "reason" => "memory"),
            shed_connections: counter!("weir_overload_shed_total", "reason" => "connections"),
            rss_gauge: gauge!("weir_memory_resident_bytes"),
        })
    }

    /// The error for a new request while memory is past the critical threshold, counted;
    /// `None` when the request may go ahead.
    pub fn shed(&self, retry_after: u64) -> Option<Error> {
        if !self.critical.load(Ordering::Relaxed) {
            return None;
        }
        self.shed_memory.increment(1);
        Some(overloaded("Weir is over its memory threshold; retry later", retry_after))
    }

    /// Whether new requests are being shed.
    pub fn shedding(&self) -> bool {
        self.critical.load(Ordering::Relaxed)
    }

    /// The `overload` object of `/ready`.
    pub fn status(&self, state: &AppState) -> Value {
        let cfg = &state.gateway.load().config.server.overload;
        let level = if self.critical.load(Ordering::Relaxed) {
            "critical"
        } else if self.warning.load(Ordering::Relaxed) {
            "warning"
        } else {
            "normal"
        };
        json!({
            "memory": level,
            "rss_bytes": self.rss.load(Ordering::Relaxed),
            "memory_warning_bytes": cfg.memory_warning_bytes,
            "memory_critical_bytes": cfg.memory_critical_bytes,
        })
    }

    /// Samples memory until the task is dropped, at the current config's interval (so a
    /// reload changes thresholds and interval). `open` counts the open client connections:
    /// when it is below its peak since the last trim while memory is well above its low
    /// point, load is subsiding and the freed heap is returned to the OS.
    pub async fn monitor(self: Arc<Self>, state: Arc<AppState>, open: impl Fn() -> usize) {
        let mut next_trim = Instant::now();
        let mut low = self.rss.load(Ordering::Relaxed);
        // The most connections open since the last trim: fewer now means some closed since,
        // and what they held is freed.
        let mut peak_open = open();
        loop {
            let cfg = state.gateway.load().config.server.overload.clone();
            tokio::time::sleep(cfg.sample_interval).await;
            let Some(mut rss) = rss_bytes() else { continue };
            let now_open = open();
            let warning = cfg.memory_warning_bytes > 0 && rss >= cfg.memory_warning_bytes;
            peak_open = peak_open.max(now_open);
            let subsiding =
                now_open < peak_open && rss >= low.saturating_add(TRIM_GROWTH) && Instant::now() >= next_trim;
            if warning || subsiding {
                crate::plugins::release_freed_heap();
                let before = rss;
                rss = rss_bytes().unwrap_or(rss);
                next_trim = Instant::now() + TRIM_EVERY;
                peak_open = now_open;
                tracing::debug!(before, after = rss, "returned freed heap to the OS");
            }
            low = low.min(rss);
            let critical = cfg.memory_critical_bytes > 0 && rss >= cfg.memory_critical_bytes;
            if critical != self.critical.swap(critical, Ordering::Relaxed) {
                if critical {
                    tracing::warn!(
                        rss,
                        threshold = cfg.memory_critical_bytes,
                        "memory past critical: shedding new requests"
                    );
                } else {
                    tracing::info!(rss, "memory back under critical: taking new requests");
                }
            }
            self.warning.store(cfg.memory_warning_bytes > 0 && rss >= cfg.memory_warning_bytes, Ordering::Relaxed);
            self.rss.store(rss, Ordering::Relaxed);
            self.rss_gauge.set(rss as f64);
        }
    }

    /// Answers a connection past `max_connections` with 503 and closes it. Runs on the
    /// acceptor's runtime; past [`MAX_REFUSING`] refusals at once the socket is just closed.
    pub fn refuse(self: &Arc<Self>, mut stream: TcpStream, retry_after: u64) {
        self.shed_connections.increment(1);
        if self.refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING {
            self.refusing.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let answer = error_http1_bytes(&overloaded("too many open connections; retry later", retry_after));
            let _ = tokio::time::timeout(REFUSE_LINGER, async {
                stream.write_all(&answer).await?;
                stream.shutdown().await?;
                // Read what the client sent until it closes: closing with unread bytes would
                // reset the connection and could destroy the answer before it is read.
                let mut sink = [0u8; 4096];
                while stream.read(&mut sink).await? > 0 {}
                Ok::<_, std::io::Error>(())
            })
            .await;
            this.refusing.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

fn overloaded(message: &'static str, retry_after: u64) -> Error {
    Error::new(ErrorKind::Overloaded, message).with_retry_after(retry_after)
}

/// The process's resident set size, from `VmRSS` in `/proc/self/status` (Linux). Read in kB
/// rather than pages: asking for the page size reads the aux vector, which valgrind fakes.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kb: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kb * 1024)
}

/// Raises the soft open-file limit to the hard one (as nginx's `worker_rlimit_nofile` does)
/// and returns the soft limit in force.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // "Unlimited" is still bounded by the kernel's nr_open (1,048,576 by default).
    let hard = limit.maximum.unwrap_or(1 << 20);
    let soft = limit.current.unwrap_or(hard);
    if soft < hard {
        let raised = rustix::process::Rlimit { current: Some(hard), maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => return hard,
            Err(e) => tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit"),
        }
    }
    soft
}

/// The connection cap used when `server.max_connections` is 0: three quarters of the
/// descriptors left after [`FD_RESERVE`], at most [`AUTO_MAX_CONNECTIONS`].
pub fn auto_max_connections(fd_limit: u64) -> usize {
    (fd_limit.saturating_sub(FD_RESERVE) * 3 / 4).clamp(16, AUTO_MAX_CONNECTIONS) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_automatic_cap_stays_below_the_fd_limit() {
        assert_eq!(auto_max_connections(1024), 576);
        assert_eq!(auto_max_connections(1 << 20), AUTO_MAX_CONNECTIONS as usize);
        assert_eq!(auto_max_connections(100), 16);
    }

    #[test]
    fn resident_memory_is_read() {
        assert!(rss_bytes().is_some_and(|b| b > 1024 * 1024));
    }

    #[test]
    fn the_soft_fd_limit_is_raised_to_the_hard_one() {
        let limit = raise_fd_limit();
        let now = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(now.current.unwrap_or(u64::MAX).min(1 << 20), limit.min(1 << 20));
        assert_eq!(now.current, now.maximum);
    }
}
