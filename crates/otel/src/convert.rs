//! Finished spans as `opentelemetry-proto`'s message structs: the reference [`crate::encode`] is
//! checked against (its tests decode the encoder's bytes and compare).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span, status};
use weir_types::trace::{AttrValue, SpanKind, SpanRecord};

/// `SpanFlags`: the W3C trace flags in the low byte, then whether the parent's remoteness is
/// known and whether it is remote.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// The export request for `spans` from service `service`.
pub(crate) fn request(service: &str, spans: Vec<SpanRecord>) -> ExportTraceServiceRequest {
    let resource = Resource { attributes: vec![kv("service.name", string(service.to_owned()))], ..Default::default() };
    let scope =
        InstrumentationScope { name: "weir".into(), version: env!("CARGO_PKG_VERSION").into(), ..Default::default() };
    let spans = spans.into_iter().map(span).collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans { scope: Some(scope), spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn span(s: SpanRecord) -> Span {
    let mut attributes: Vec<KeyValue> = s.attrs.into_iter().map(|(k, v)| kv(k, value(v))).collect();
    let status = s.error.map(|e| {
        attributes.push(kv("error.type", string(e.to_string())));
        Status { message: e.into_owned(), code: status::StatusCode::Error as i32 }
    });
    let flags = u32::from(s.sampled) | HAS_IS_REMOTE | if s.parent_remote { IS_REMOTE } else { 0 };
    Span {
        trace_id: s.trace_id.to_be_bytes().to_vec(),
        span_id: s.span_id.to_be_bytes().to_vec(),
        trace_state: s.tracestate.as_ref().and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned(),
        parent_span_id: if s.parent_id == 0 { Vec::new() } else { s.parent_id.to_be_bytes().to_vec() },
        flags,
        name: s.name.to_owned(),
        kind: match s.kind {
            SpanKind::Server => span::SpanKind::Server,
            SpanKind::Client => span::SpanKind::Client,
            SpanKind::Internal => span::SpanKind::Internal,
        } as i32,
        start_time_unix_nano: nanos(s.start),
        end_time_unix_nano: nanos(s.end),
        attributes,
        events: (s.events.into_iter())
            .map(|(name, at)| span::Event { time_unix_nano: nanos(at), name: name.to_owned(), ..Default::default() })
            .collect(),
        status,
        ..Default::default()
    }
}

fn nanos(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }) }
}

fn string(s: String) -> any_value::Value {
    any_value::Value::StringValue(s)
}

fn value(v: AttrValue) -> any_value::Value {
    match v {
        AttrValue::Static(s) => string(s.to_owned()),
        AttrValue::Str(s) => string(s.to_string()),
        AttrValue::Int(i) => any_value::Value::IntValue(i),
        AttrValue::Bool(b) => any_value::Value::BoolValue(b),
    }
}
