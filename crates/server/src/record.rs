//! The per-request record `finish` publishes on the event bus: the facts the pipeline gathers
//! only when the bus is on (nothing is built or copied for it otherwise).

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use crate::error::{Error, ErrorKind};
use crate::events::{Event, PluginOutcomes, RequestRecord};
use crate::format::Endpoint;
use crate::gateway::Gateway;
use crate::plugins::Seen;
use crate::providers::usage::Usage;

/// What the record needs beyond what `finish` already has; gathered along the phases.
#[derive(Default)]
pub struct Facts {
    /// The model the client asked for.
    pub model: String,
    /// The model the provider was asked for (the fallback's when one answered).
    pub served_model: Option<String>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Plugins that saw the request.
    pub seen: Seen,
    /// A plugin answered the request itself.
    pub responded: bool,
    /// Time to the first chunk handed to the client (streams).
    pub ttft: Option<Duration>,
    /// The client's W3C trace id, from its `traceparent`.
    pub trace_id: Option<String>,
    /// Streams: Weir's overhead when the response head went out (`x-weir-overhead-us`); the
    /// rest of a stream is mostly the wait for the provider's chunks.
    pub head_overhead: Option<Duration>,
}

impl Facts {
    /// The facts known when the request arrives.
    pub fn new(headers: &HeaderMap) -> Box<Self> {
        Box::new(Self { trace_id: trace_id(headers), ..Self::default() })
    }
}

/// What `finish` knows of the request.
pub struct Finished<'a> {
    /// The request id.
    pub id: &'a str,
    /// Its front door.
    pub endpoint: Endpoint,
    /// The provider that answered or was tried last.
    pub provider: Option<&'a str>,
    /// Upstream attempts.
    pub attempts: u32,
    /// The client's status.
    pub status: u16,
    /// `ok` or the error's class.
    pub outcome: &'static str,
    /// The error, when it failed.
    pub error: Option<&'a Error>,
    /// Tokens reported.
    pub usage: Option<&'a Usage>,
    /// Time since arrival.
    pub elapsed: Duration,
    /// Weir's own part of it.
    pub overhead: Duration,
    /// The virtual key's name (never its secret).
    pub key: Option<&'a str>,
    /// The answer's cost in nano-USD, when its price and usage are known.
    pub cost_nano_usd: Option<u64>,
    /// `hit` or `miss` when the response cache applied.
    pub cache: Option<&'static str>,
}

/// Builds the record and publishes it (called once, by `finish`, when the bus is on).
pub fn publish(gw: &Gateway, facts: &Facts, f: &Finished<'_>) {
    let Some(bus) = &gw.events else { return };
    let outcome = match f.error.map(|e| &e.kind) {
        Some(ErrorKind::PluginRejected { .. }) => "reject",
        Some(ErrorKind::PluginFailed) => "fail",
        _ if facts.responded => "respond",
        _ if gw.plugins.is_empty() => "none",
        _ => "continue",
    };
    let record = RequestRecord {
        id: f.id.to_owned(),
        time: SystemTime::now().checked_sub(f.elapsed),
        front_door: front_door(f.endpoint),
        key: f.key.map(str::to_owned),
        model: facts.model.clone(),
        served_model: facts.served_model.clone(),
        provider: f.provider.map(str::to_owned),
        attempts: f.attempts,
        stream: facts.stream,
        status: f.status,
        outcome: f.outcome,
        error_code: f.error.map(|e| e.code_str().to_owned()),
        tokens_in: f.usage.map(|u| u.prompt),
        tokens_out: f.usage.map(|u| u.completion),
        cost_usd: f.cost_nano_usd.map(|n| n as f64 / 1e9),
        latency_ms: millis(f.elapsed),
        overhead_us: facts.head_overhead.unwrap_or(f.overhead).as_micros() as u64,
        ttft_ms: facts.ttft.map(millis),
        cache: f.cache,
        plugins: PluginOutcomes { seen: gw.plugins.seen_names(facts.seen), outcome },
        trace_id: facts.trace_id.clone(),
    };
    bus.publish(Event::request(record));
}

/// Milliseconds with microsecond precision (no float noise in the JSON).
fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

fn front_door(e: Endpoint) -> &'static str {
    match e {
        Endpoint::OPENAI_EMBEDDINGS => "openai.embeddings",
        Endpoint::ANTHROPIC_MESSAGES => "anthropic.messages",
        Endpoint::OPENAI_RESPONSES => "openai.responses",
        _ => "openai.chat",
    }
}

/// The trace id of a well-formed `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
fn trace_id(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = v.split('-');
    let (_, trace, span) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(trace, 32) && hex(span, 16) && trace.bytes().any(|b| b != b'0')).then(|| trace.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_id_comes_from_a_valid_traceparent_only() {
        let mut h = HeaderMap::new();
        assert_eq!(trace_id(&h), None);
        h.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
        assert_eq!(trace_id(&h).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        h.insert("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01".parse().unwrap());
        assert_eq!(trace_id(&h), None);
        h.insert("traceparent", "garbage".parse().unwrap());
        assert_eq!(trace_id(&h), None);
    }
}
