//! A finished span as OpenTelemetry's `SpanData`, made on the export thread.

use std::borrow::Cow;

use opentelemetry::trace::{Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use weir_types::trace::{AttrValue, SpanKind as Kind, SpanRecord};

/// The instrumentation scope of every span: Weir itself.
pub(crate) fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("weir").with_version(env!("CARGO_PKG_VERSION")).build()
}

pub(crate) fn span_data(s: SpanRecord, scope: &InstrumentationScope) -> SpanData {
    let flags = if s.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
    let state = s.tracestate.as_ref().and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<TraceState>().ok());
    let mut attributes: Vec<KeyValue> = s.attrs.into_iter().map(|(k, v)| KeyValue::new(k, value(v))).collect();
    let status = match s.error {
        Some(e) => {
            attributes.push(KeyValue::new("error.type", e.clone()));
            Status::error(e)
        }
        None => Status::Unset,
    };
    // `SpanEvents` is non-exhaustive: made by default, then filled.
    let mut events = SpanEvents::default();
    events.events = s.events.into_iter().map(|(name, at)| Event::new(name, at, Vec::new(), 0)).collect();
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(s.trace_id),
            SpanId::from(s.span_id),
            flags,
            false,
            state.unwrap_or_default(),
        ),
        parent_span_id: if s.parent_id == 0 { SpanId::INVALID } else { SpanId::from(s.parent_id) },
        parent_span_is_remote: s.parent_remote,
        span_kind: match s.kind {
            Kind::Server => SpanKind::Server,
            Kind::Client => SpanKind::Client,
            Kind::Internal => SpanKind::Internal,
        },
        name: Cow::Borrowed(s.name),
        start_time: s.start,
        end_time: s.end,
        attributes,
        dropped_attributes_count: 0,
        events,
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

fn value(v: AttrValue) -> Value {
    match v {
        AttrValue::Static(s) => Value::from(s),
        AttrValue::Str(s) => Value::from(s.to_string()),
        AttrValue::Int(i) => Value::I64(i),
        AttrValue::Bool(b) => Value::Bool(b),
    }
}
