//! `[events]` (the event bus: its queues, workers and sinks) and `[log]` (the format of Weir's
//! own log lines). Plain data; `weir-events` builds the bus from it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Largest capacity of one queue: bounds the memory a flood of events can hold.
pub const MAX_QUEUE_CAPACITY: usize = 1 << 20;
/// Most dispatch workers.
pub const MAX_EVENT_WORKERS: usize = 16;
/// Most sinks.
pub const MAX_SINKS: usize = 16;

/// What a full queue does with one more event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backpressure {
    /// The queue's oldest event is dropped to make room.
    DropOldest,
    /// The new event is dropped.
    DropNewest,
    /// The oldest event of the lowest non-empty lower-priority queue is dropped to make room;
    /// when there is none, the queue's own oldest.
    DropLowPriority,
}

/// An event's priority: which queue it waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Errors and audit (admin actions, reloads, breaker transitions).
    High,
    /// Per-request records.
    Medium,
    /// Debug and sampled detail.
    Low,
}

impl Priority {
    /// Every priority, highest first (the order workers serve queues in).
    pub const ALL: [Self; 3] = [Self::High, Self::Medium, Self::Low];

    /// The queue's index: 0 high, 1 medium, 2 low.
    pub const fn index(self) -> usize {
        match self {
            Self::High => 0,
            Self::Medium => 1,
            Self::Low => 2,
        }
    }

    /// The name in config, metrics and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Medium => "medium",
            Self::Low => "low",
        }
    }
}

/// Capacity of each priority's queue.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueCapacities {
    /// Errors and audit.
    pub high: usize,
    /// Per-request records.
    pub medium: usize,
    /// Debug and sampled detail.
    pub low: usize,
}

impl Default for QueueCapacities {
    fn default() -> Self {
        Self { high: 1024, medium: 8192, low: 1024 }
    }
}

impl QueueCapacities {
    /// The capacity of `p`'s queue.
    pub const fn of(&self, p: Priority) -> usize {
        match p {
            Priority::High => self.high,
            Priority::Medium => self.medium,
            Priority::Low => self.low,
        }
    }
}

/// `[events.queue_policy]`: a priority's own backpressure policy (default: `events.policy`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueuePolicies {
    /// Errors and audit.
    pub high: Option<Backpressure>,
    /// Per-request records.
    pub medium: Option<Backpressure>,
    /// Debug and sampled detail.
    pub low: Option<Backpressure>,
}

/// `[events]`: the bus every event goes through on its way to the sinks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Dispatch workers: threads that move events from the bus's queues to each sink's queue.
    pub workers: usize,
    /// Capacity of the bus's queue per priority.
    pub queues: QueueCapacities,
    /// What a full queue (the bus's or a sink's) drops.
    pub policy: Backpressure,
    /// Per priority, a policy other than `policy`.
    pub queue_policy: QueuePolicies,
    /// Records kept for the admin API's recent requests and the dashboard (0: none). Only
    /// with the admin API on.
    pub recent: usize,
    /// Where events go (`[[events.sinks]]`).
    pub sinks: Vec<SinkConfig>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            workers: 1,
            queues: QueueCapacities::default(),
            policy: Backpressure::DropOldest,
            queue_policy: QueuePolicies::default(),
            recent: 500,
            sinks: Vec::new(),
        }
    }
}

/// Where a sink writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// JSON lines on standard output.
    Stdout,
    /// JSON lines in a file, rotated by size.
    File,
    /// OpenTelemetry log records, over OTLP/HTTP (protobuf) to a collector.
    Otlp,
}

/// `[[events.sinks]]`: one destination with its own bounded queue and thread, so a slow or
/// failing sink loses only its own events.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// `stdout`, `file` or `otlp`.
    pub kind: SinkKind,
    /// Name in metrics and logs (default: the kind).
    #[serde(default)]
    pub name: Option<String>,
    /// Lowest priority the sink takes: `low` (all events, the default), `medium` (request
    /// records, errors and audit), `high` (errors and audit only).
    #[serde(default = "default_min_priority")]
    pub min_priority: Priority,
    /// Capacity of the sink's own queue per priority.
    #[serde(default = "default_sink_queue")]
    pub queue: usize,
    /// `file`: the file written; rotated files get `.1`, `.2`, ... (`.1` the newest).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `file`: size at which the file is rotated.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// `file`: rotated files kept besides the current one.
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// `otlp`: the collector's OTLP/HTTP logs URL, path included
    /// (`http://127.0.0.1:4318/v1/logs`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `otlp`: headers sent with each export (e.g. an API key as `${ENV}`): secrets, never
    /// logged.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `otlp`: the resource's `service.name` (default `weir`).
    #[serde(default)]
    pub service_name: Option<String>,
}

impl std::fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkConfig")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("min_priority", &self.min_priority)
            .field("queue", &self.queue)
            .field("path", &self.path)
            .field("max_bytes", &self.max_bytes)
            .field("keep", &self.keep)
            .field("endpoint", &self.endpoint)
            .field("headers", &self.headers.keys().map(|k| (k, "<redacted>")).collect::<BTreeMap<_, _>>())
            .field("service_name", &self.service_name)
            .finish()
    }
}

fn default_min_priority() -> Priority {
    Priority::Low
}
fn default_sink_queue() -> usize {
    4096
}
fn default_max_bytes() -> u64 {
    100 * 1024 * 1024
}
fn default_keep() -> usize {
    5
}

impl SinkConfig {
    /// The sink's name in metrics and logs.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(match self.kind {
            SinkKind::Stdout => "stdout",
            SinkKind::File => "file",
            SinkKind::Otlp => "otlp",
        })
    }
}

impl EventsConfig {
    /// Replaces the sinks' header values by `<redacted>`.
    pub(crate) fn redact(&mut self) {
        for s in &mut self.sinks {
            for v in s.headers.values_mut() {
                *v = "<redacted>".into();
            }
        }
    }

    /// The policy of each priority's queue: high, medium, low.
    pub fn policies(&self) -> [Backpressure; 3] {
        let q = &self.queue_policy;
        [q.high, q.medium, q.low].map(|p| p.unwrap_or(self.policy))
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_EVENT_WORKERS).contains(&self.workers) {
            return Err(ConfigError::invalid("events.workers", format!("between 1 and {MAX_EVENT_WORKERS}")));
        }
        for p in Priority::ALL {
            check_capacity(&format!("events.queues.{}", p.name()), self.queues.of(p))?;
        }
        if self.recent > 100_000 {
            return Err(ConfigError::invalid("events.recent", "at most 100000 records"));
        }
        if self.sinks.len() > MAX_SINKS {
            return Err(ConfigError::invalid("events.sinks", format!("at most {MAX_SINKS} sinks")));
        }
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.sinks.iter().enumerate() {
            let key = |k: &str| format!("events.sinks[{i}].{k}");
            check_capacity(&key("queue"), s.queue)?;
            let name = s.display_name();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(ConfigError::invalid(key("name"), "use only [A-Za-z0-9_-]"));
            }
            if !names.insert(name.to_owned()) {
                return Err(ConfigError::invalid(
                    key("name"),
                    format!("another sink is named {name:?}: name each one"),
                ));
            }
            match s.kind {
                SinkKind::File => {
                    if s.path.as_ref().is_none_or(|p| p.as_os_str().is_empty()) {
                        return Err(ConfigError::invalid(key("path"), "a file sink needs the file's path"));
                    }
                    if s.max_bytes < 1024 {
                        return Err(ConfigError::invalid(key("max_bytes"), "at least 1024 bytes"));
                    }
                    if s.keep > 1000 {
                        return Err(ConfigError::invalid(key("keep"), "at most 1000 rotated files"));
                    }
                }
                SinkKind::Stdout | SinkKind::Otlp if s.path.is_some() => {
                    return Err(ConfigError::invalid(key("path"), "only a `file` sink has a path"));
                }
                SinkKind::Stdout => {}
                SinkKind::Otlp => {
                    let endpoint = s.endpoint.as_deref().unwrap_or_default();
                    if endpoint.is_empty() {
                        return Err(ConfigError::invalid(
                            key("endpoint"),
                            "an otlp sink needs the collector's OTLP/HTTP logs URL, e.g. http://127.0.0.1:4318/v1/logs",
                        ));
                    }
                    let uri: http::Uri =
                        endpoint.parse().map_err(|_| ConfigError::invalid(key("endpoint"), "not a URL"))?;
                    crate::url::check_base_url(&uri).map_err(|why| ConfigError::invalid(key("endpoint"), why))?;
                    if s.service_name.as_deref() == Some("") {
                        return Err(ConfigError::invalid(key("service_name"), "must not be empty"));
                    }
                }
            }
            if s.kind != SinkKind::Otlp && (s.endpoint.is_some() || !s.headers.is_empty()) {
                return Err(ConfigError::invalid(key("endpoint"), "only an `otlp` sink has an endpoint and headers"));
            }
            for (name, value) in &s.headers {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(ConfigError::invalid(key(&format!("headers.{name}")), "not a valid header name"));
                }
                if http::HeaderValue::from_str(value).is_err() {
                    return Err(ConfigError::invalid(key(&format!("headers.{name}")), "not a valid header value"));
                }
            }
        }
        Ok(())
    }
}

fn check_capacity(key: &str, n: usize) -> Result<(), ConfigError> {
    if (1..=MAX_QUEUE_CAPACITY).contains(&n) {
        Ok(())
    } else {
        Err(ConfigError::invalid(key, format!("between 1 and {MAX_QUEUE_CAPACITY} events")))
    }
}

/// The format of Weir's own log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`.
    Json,
}

/// `[log]`: Weir's own log lines (on standard error). `WEIR_LOG` sets the filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
}
