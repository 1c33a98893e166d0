//! What an event carries: the per-request record (built once, by `finish`) or an audit or
//! debug fact, and its JSON line.

use std::time::SystemTime;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::config::Priority;

/// One request, as `finish` saw it: emitted once, at the end (at stream end for streams).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestRecord {
    /// The request id (`x-request-id`).
    pub id: String,
    /// When the request arrived (RFC 3339, UTC, milliseconds).
    #[serde(serialize_with = "rfc3339")]
    pub time: Option<SystemTime>,
    /// The front door: API format and operation, e.g. `openai.chat`.
    pub front_door: &'static str,
    /// The virtual key's name, when the request used one.
    pub key: Option<String>,
    /// The model the client asked for.
    pub model: String,
    /// The model that answered (the provider's name for it).
    pub served_model: Option<String>,
    /// The provider that answered (or was tried last).
    pub provider: Option<String>,
    /// Upstream attempts (retries and fallbacks included).
    pub attempts: u32,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The HTTP status the client got (499: the client left).
    pub status: u16,
    /// `ok`, or the error's class (the `outcome` metrics label).
    pub outcome: &'static str,
    /// The error's `code`, when the request failed.
    pub error_code: Option<String>,
    /// Prompt tokens the provider reported.
    pub tokens_in: Option<u64>,
    /// Completion tokens the provider reported.
    pub tokens_out: Option<u64>,
    /// What the request cost, when prices are known.
    pub cost_usd: Option<f64>,
    /// Time from arrival to the last byte handed to the client, in milliseconds.
    pub latency_ms: f64,
    /// Weir's own time (all but the upstream wait), in microseconds.
    pub overhead_us: u64,
    /// Streams: time from arrival to the first chunk handed to the client, in milliseconds.
    pub ttft_ms: Option<f64>,
    /// The response cache: `hit` or `miss` (none when no cache applies).
    pub cache: Option<&'static str>,
    /// Plugins that saw the request and what the chain decided.
    pub plugins: PluginOutcomes,
    /// The W3C trace id the request belongs to, when it has one.
    pub trace_id: Option<String>,
}

/// The plugin chain's part in a request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PluginOutcomes {
    /// Plugins that saw the request, in chain order.
    pub seen: Vec<String>,
    /// `continue` (the request went on), `respond` (a plugin answered it), `reject` (a plugin
    /// refused it) or `fail` (a plugin failed closed); `none` without plugins.
    pub outcome: &'static str,
}

/// An event on the bus.
#[derive(Debug, Clone)]
pub struct Event {
    /// Its queue.
    pub priority: Priority,
    /// When it happened.
    pub time: SystemTime,
    /// What happened.
    pub body: Body,
}

/// What an event says.
#[derive(Debug, Clone)]
pub enum Body {
    /// One finished request.
    Request(Box<RequestRecord>),
    /// An audit, error or debug fact: its kind (`reload`, `breaker`, `admin`...) and details.
    Fact {
        /// Short name of what happened.
        kind: &'static str,
        /// Its details.
        detail: serde_json::Value,
    },
}

impl Event {
    /// A finished request: medium priority, high when it failed on the server's side (5xx),
    /// so errors survive a flood of records.
    pub fn request(record: RequestRecord) -> Self {
        let priority = if record.status >= 500 { Priority::High } else { Priority::Medium };
        Self { priority, time: SystemTime::now(), body: Body::Request(Box::new(record)) }
    }

    /// A fact of `kind` at `priority`.
    pub fn fact(priority: Priority, kind: &'static str, detail: serde_json::Value) -> Self {
        Self { priority, time: SystemTime::now(), body: Body::Fact { kind, detail } }
    }

    /// The request record, if this is one.
    pub fn record(&self) -> Option<&RequestRecord> {
        match &self.body {
            Body::Request(r) => Some(r),
            Body::Fact { .. } => None,
        }
    }

    /// Appends the event as one JSON line (`{"event": kind, "priority": ..., ...}\n`).
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        // Serialising plain data into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, self);
        out.push(b'\n');
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.body {
            Body::Request(r) => {
                #[derive(Serialize)]
                struct Line<'a> {
                    event: &'static str,
                    priority: &'static str,
                    #[serde(flatten)]
                    record: &'a RequestRecord,
                }
                Line { event: "request", priority: self.priority.name(), record: r }.serialize(s)
            }
            Body::Fact { kind, detail } => {
                let mut m = s.serialize_map(Some(4))?;
                m.serialize_entry("event", kind)?;
                m.serialize_entry("priority", self.priority.name())?;
                m.serialize_entry("time", &Rfc3339(self.time))?;
                m.serialize_entry("detail", detail)?;
                m.end()
            }
        }
    }
}

fn rfc3339<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(&Rfc3339(*t)),
        None => s.serialize_none(),
    }
}

/// A time written as RFC 3339 in UTC with milliseconds: `2026-12-05T23:07:20.123Z`.
pub struct Rfc3339(pub SystemTime);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, day) = civil(days as i64);
        write!(
            f,
            "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            d.subsec_millis()
        )
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Year, month, day of `days` since 1970-01-01 (the proleptic Gregorian calendar's
/// days-to-civil conversion, in 400-year eras).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_512_040_123);
        assert_eq!(Rfc3339(t).to_string(), "2026-12-05T23:07:20.123Z");
        assert_eq!(Rfc3339(SystemTime::UNIX_EPOCH).to_string(), "1970-01-01T00:00:00.000Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(Rfc3339(leap).to_string(), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn a_request_line_has_the_record_fields_and_failures_are_high() {
        let rec = RequestRecord { id: "req_1".into(), status: 502, model: "m".into(), ..Default::default() };
        let ev = Event::request(rec);
        assert_eq!(ev.priority, Priority::High);
        let mut line = Vec::new();
        ev.write_json_line(&mut line);
        assert_eq!(line.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["event"], "request");
        assert_eq!(v["id"], "req_1");
        assert_eq!(v["status"], 502);
        assert!(v["key"].is_null() && v["cost_usd"].is_null() && v["cache"].is_null());
    }
}
