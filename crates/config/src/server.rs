//! `[server]`: the client-facing listener, the limits that keep slow or abusive clients from
//! holding connections and memory, `[server.overload]`, when Weir stops taking new work, and
//! `[server.browser]`, which browser pages may call it.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Most serving threads `server.threads` accepts: each is an OS thread with its own event loop,
/// so a typo (`threads = 10000`) would otherwise start thousands of them.
pub const MAX_THREADS: usize = 256;

/// `[server]`: the client-facing listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on for the OpenAI-compatible API.
    #[serde(deserialize_with = "super::values::listen")]
    pub listen: SocketAddr,
    /// Largest accepted request body; larger bodies get 413 while being read (stops memory abuse).
    pub max_body_bytes: usize,
    /// On SIGTERM/SIGINT, how long in-flight and queued requests may take to finish.
    #[serde(with = "super::values::duration")]
    pub shutdown_timeout: Duration,
    /// Longest a write to a client may make no progress (nginx's `send_timeout`): then the
    /// connection is closed, and a stream ends as 499 `client_stalled` and frees its pool
    /// worker. Stops a client that does not read from holding a worker or a connection.
    #[serde(with = "super::values::duration")]
    pub send_timeout: Duration,
    /// Serving threads, each with its own event loop; a connection stays on one for its life.
    /// 0 (the default) means one per CPU core. Takes effect on restart.
    pub threads: usize,
    /// How long a request head may take to arrive whole, and how long an HTTP/1 connection
    /// waits for its next head (stops slowloris: half-sent heads holding sockets). Restart to change.
    #[serde(with = "super::values::duration")]
    pub header_read_timeout: Duration,
    /// How long a whole request body may take to arrive; later, 408 (stops bodies that never end).
    #[serde(with = "super::values::duration")]
    pub body_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed, HTTP/1 and HTTP/2
    /// alike (stops idle sockets piling up). Restart to change.
    #[serde(with = "super::values::duration")]
    pub idle_timeout: Duration,
    /// Most client connections open at once; past it a new connection is answered 503
    /// `overloaded` and closed (stops fd exhaustion). 0: sized from the open-file limit.
    pub max_connections: usize,
    /// When Weir sheds new work because of its memory use.
    pub overload: OverloadConfig,
    /// Which web pages may call Weir from a browser (CORS) and which `Host` names it answers.
    pub browser: BrowserConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 10 * 1024 * 1024,
            shutdown_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
            threads: 0,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_connections: 0,
            overload: OverloadConfig::default(),
            browser: BrowserConfig::default(),
        }
    }
}

/// `[server.overload]`: a memory monitor in the spirit of Envoy's overload manager. The
/// resident set size is sampled on the control thread; past `memory_warning_bytes` freed heap
/// is handed back to the OS, past `memory_critical_bytes` new API requests get 503
/// `overloaded` with `Retry-After` until it falls back below.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverloadConfig {
    /// Resident memory at which freed heap is returned to the OS at every sample (0: off).
    pub memory_warning_bytes: u64,
    /// Resident memory at which new API requests are shed with 503 (0: off).
    pub memory_critical_bytes: u64,
    /// How often the resident memory is sampled.
    #[serde(with = "super::values::duration")]
    pub sample_interval: Duration,
    /// `Retry-After` sent with shed requests and refused connections (whole seconds, at least 1).
    #[serde(with = "super::values::duration")]
    pub retry_after: Duration,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        Self {
            memory_warning_bytes: 512 * 1024 * 1024,
            memory_critical_bytes: 1024 * 1024 * 1024,
            sample_interval: Duration::from_secs(1),
            retry_after: Duration::from_secs(1),
        }
    }
}

impl OverloadConfig {
    /// `retry_after` in whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs_f64().ceil().max(1.0) as u64
    }
}

/// `[server.browser]`: without client auth, any web page could make a visitor's browser post
/// to Weir and spend the provider keys. So a request carrying an `Origin` not listed here is
/// refused (403 `origin_not_allowed`), and on a loopback listener a `Host` that is neither an
/// IP literal, `localhost` nor listed here is refused (403 `host_not_allowed`: DNS rebinding).
/// Both apply to the admin listener too.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrowserConfig {
    /// Origins (`https://app.example`, exact match) whose pages may call the API; they get
    /// CORS headers and preflight answers. `"*"` allows every origin. Empty: none.
    pub allowed_origins: Vec<String>,
    /// Extra `Host` names (no port) Weir answers to besides IP literals and `localhost`.
    /// Checked on a loopback listener always, on other addresses only when not empty.
    pub allowed_hosts: Vec<String>,
}

impl BrowserConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for origin in &self.allowed_origins {
            let ok = origin == "*"
                || origin.split_once("://").is_some_and(|(scheme, rest)| {
                    matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains(['/', '?', '#', ' '])
                });
            if !ok {
                return Err(ConfigError::invalid(
                    "server.browser.allowed_origins",
                    format!(
                        "{origin:?} is not an origin like \"https://app.example\" (no path, no trailing /) or \"*\""
                    ),
                ));
            }
        }
        for host in &self.allowed_hosts {
            if host.is_empty() || host.contains([':', '/', ' ', '*']) {
                return Err(ConfigError::invalid(
                    "server.browser.allowed_hosts",
                    format!("{host:?} is not a host name (no port, scheme or wildcard)"),
                ));
            }
        }
        Ok(())
    }
}

impl ServerConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes == 0 {
            return Err(ConfigError::invalid("server.max_body_bytes", "must be at least 1"));
        }
        if self.threads > MAX_THREADS {
            return Err(ConfigError::invalid(
                "server.threads",
                format!("at most {MAX_THREADS} (0 means one per CPU core)"),
            ));
        }
        for (key, value) in [
            ("server.send_timeout", self.send_timeout),
            ("server.header_read_timeout", self.header_read_timeout),
            ("server.body_read_timeout", self.body_read_timeout),
            ("server.idle_timeout", self.idle_timeout),
            ("server.overload.sample_interval", self.overload.sample_interval),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(key, "must be above 0"));
            }
        }
        let o = &self.overload;
        if o.memory_warning_bytes > 0 && o.memory_critical_bytes > 0 && o.memory_warning_bytes > o.memory_critical_bytes
        {
            return Err(ConfigError::invalid(
                "server.overload.memory_warning_bytes",
                "must not be above memory_critical_bytes",
            ));
        }
        self.browser.validate()
    }
}
