//! Finished spans written as OTLP's `ExportTraceServiceRequest` protobuf, straight from Weir's
//! span records into one buffer per batch. Building `opentelemetry-proto`'s message structs first
//! costs an allocation per id, name, attribute key and value (~20 per span) and was most of the
//! export thread's CPU; this writes the same bytes with `prost`'s wire-format primitives. The
//! `tests` below decode the output with the official definitions and compare it field by field
//! with those structs.

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use weir_types::trace::{AttrValue, SpanKind, SpanRecord};

/// `SpanFlags`: the W3C trace flags in the low byte, then whether the parent's remoteness is
/// known and whether it is remote.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;
/// `Status.StatusCode.STATUS_CODE_ERROR`.
const STATUS_ERROR: u64 = 2;

/// Writes export requests, keeping its scratch buffers between batches.
#[derive(Default)]
pub(crate) struct Encoder {
    /// One span's fields, before its length is known.
    span: Vec<u8>,
    /// The batch's spans, each as a length-delimited `ScopeSpans.spans` field.
    spans: Vec<u8>,
}

impl Encoder {
    /// The protobuf body of one export of `spans` from service `service`.
    pub(crate) fn request(&mut self, service: &str, spans: &[SpanRecord]) -> Vec<u8> {
        self.spans.clear();
        for s in spans {
            self.span.clear();
            span(&mut self.span, s);
            bytes_field(&mut self.spans, 2, &self.span);
        }
        let mut out = export_head(service, self.spans.len());
        out.extend_from_slice(&self.spans);
        out
    }
}

/// One `Span`'s fields (without its own tag and length).
fn span(buf: &mut Vec<u8>, s: &SpanRecord) {
    bytes_field(buf, 1, &s.trace_id.to_be_bytes());
    bytes_field(buf, 2, &s.span_id.to_be_bytes());
    if let Some(state) = s.tracestate.as_ref().and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()) {
        string_field(buf, 3, state);
    }
    if s.parent_id != 0 {
        bytes_field(buf, 4, &s.parent_id.to_be_bytes());
    }
    string_field(buf, 5, s.name);
    let kind = match s.kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
    };
    varint_field(buf, 6, kind);
    fixed64_field(buf, 7, nanos(s.start));
    fixed64_field(buf, 8, nanos(s.end));
    for (key, value) in &s.attrs {
        let value = match value {
            AttrValue::Static(v) => Value::Str(v),
            AttrValue::Str(v) => Value::Str(v),
            AttrValue::Int(i) => Value::Int(*i),
            AttrValue::Bool(b) => Value::Bool(*b),
        };
        kv(buf, 9, key, &value);
    }
    if let Some(e) = &s.error {
        kv(buf, 9, "error.type", &Value::Str(e));
    }
    for (name, at) in &s.events {
        let len = fixed64_len(1) + string_len(2, name);
        header(buf, 11, len);
        fixed64_field(buf, 1, nanos(*at));
        string_field(buf, 2, name);
    }
    if let Some(e) = &s.error {
        let len = string_len(2, e) + key_len(3) + encoded_len_varint(STATUS_ERROR);
        header(buf, 15, len);
        string_field(buf, 2, e);
        varint_field(buf, 3, STATUS_ERROR);
    }
    let flags = u32::from(s.sampled) | HAS_IS_REMOTE | if s.parent_remote { IS_REMOTE } else { 0 };
    fixed32_field(buf, 16, flags);
}

/// An `AnyValue` to write.
pub(crate) enum Value<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Double(f64),
    /// An `ArrayValue` of strings.
    Strs(&'a [String]),
}

/// The `AnyValue` message's length (a oneof member is written even when it is the default).
fn any_len(v: &Value) -> usize {
    match v {
        Value::Str(s) => key_len(1) + encoded_len_varint(s.len() as u64) + s.len(),
        Value::Bool(_) => key_len(2) + 1,
        Value::Int(i) => key_len(3) + encoded_len_varint(*i as u64),
        Value::Double(_) => fixed64_len(4),
        Value::Strs(items) => message_len(5, array_len(items)),
    }
}

/// An `ArrayValue`'s length: each item an `AnyValue` holding a string.
fn array_len(items: &[String]) -> usize {
    items.iter().map(|s| message_len(1, any_len(&Value::Str(s)))).sum()
}

fn kv_len(key: &str, v: &Value) -> usize {
    string_len(1, key) + message_len(2, any_len(v))
}

/// A `KeyValue` as field `tag` of the enclosing message.
pub(crate) fn kv(buf: &mut Vec<u8>, tag: u32, key: &str, v: &Value) {
    header(buf, tag, kv_len(key, v));
    string_field(buf, 1, key);
    any(buf, 2, v);
}

/// An `AnyValue` as field `tag` of the enclosing message.
pub(crate) fn any(buf: &mut Vec<u8>, tag: u32, v: &Value) {
    header(buf, tag, any_len(v));
    match v {
        Value::Str(s) => {
            encode_key(1, WireType::LengthDelimited, buf);
            encode_varint(s.len() as u64, buf);
            buf.extend_from_slice(s.as_bytes());
        }
        Value::Bool(b) => varint_field(buf, 2, u64::from(*b)),
        Value::Int(i) => varint_field(buf, 3, *i as u64),
        Value::Double(d) => fixed64_field(buf, 4, d.to_bits()),
        Value::Strs(items) => {
            header(buf, 5, array_len(items));
            for s in *items {
                any(buf, 1, &Value::Str(s));
            }
        }
    }
}

/// The tag and length of a length-delimited field whose body follows.
pub(crate) fn header(buf: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// A length-delimited field's whole size, body `len` included.
pub(crate) fn message_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// A proto3 string field: left out when empty, as the official encoder does.
pub(crate) fn string_len(tag: u32, s: &str) -> usize {
    if s.is_empty() { 0 } else { message_len(tag, s.len()) }
}

pub(crate) fn string_field(buf: &mut Vec<u8>, tag: u32, s: &str) {
    if !s.is_empty() {
        bytes_field(buf, tag, s.as_bytes());
    }
}

pub(crate) fn bytes_field(buf: &mut Vec<u8>, tag: u32, b: &[u8]) {
    header(buf, tag, b.len());
    buf.extend_from_slice(b);
}

pub(crate) fn varint_field(buf: &mut Vec<u8>, tag: u32, v: u64) {
    encode_key(tag, WireType::Varint, buf);
    encode_varint(v, buf);
}

fn fixed64_len(tag: u32) -> usize {
    key_len(tag) + 8
}

pub(crate) fn fixed64_field(buf: &mut Vec<u8>, tag: u32, v: u64) {
    encode_key(tag, WireType::SixtyFourBit, buf);
    buf.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn fixed32_field(buf: &mut Vec<u8>, tag: u32, v: u32) {
    encode_key(tag, WireType::ThirtyTwoBit, buf);
    buf.extend_from_slice(&v.to_le_bytes());
}

/// The head of an export request (`Export{Trace,Logs}ServiceRequest`, whose shapes match):
/// one resource (`service.name`) with one scope (`weir`) whose `body_len` bytes of records
/// (as field 2 of the scope message) follow.
pub(crate) fn export_head(service: &str, body_len: usize) -> Vec<u8> {
    let version = env!("CARGO_PKG_VERSION");
    let scope = string_len(1, "weir") + string_len(2, version);
    let scoped = message_len(1, scope) + body_len;
    let service_kv = kv_len("service.name", &Value::Str(service));
    let resource = message_len(1, service_kv);
    let outer = message_len(1, resource) + message_len(2, scoped);
    let mut out = Vec::with_capacity(message_len(1, outer));
    header(&mut out, 1, outer);
    header(&mut out, 1, resource);
    kv(&mut out, 1, "service.name", &Value::Str(service));
    header(&mut out, 2, scoped);
    header(&mut out, 1, scope);
    string_field(&mut out, 1, "weir");
    string_field(&mut out, 2, version);
    out
}

pub(crate) fn nanos(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use http::HeaderValue;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;

    use super::*;

    fn record(n: u64) -> SpanRecord {
        let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_733_000_000_123_456_789 + n);
        SpanRecord {
            trace_id: 0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c,
            span_id: 0xb7ad_6b71_6920_3331 + n,
            parent_id: if n == 0 { 0x1111_2222_3333_4444 } else { 0xb7ad_6b71_6920_3331 },
            parent_remote: n == 0,
            sampled: n != 2,
            tracestate: (n == 0).then(|| HeaderValue::from_static("vendor=abc,other=x")),
            name: ["weir.request", "weir.plugin", "weir.upstream"][n as usize % 3],
            kind: [SpanKind::Server, SpanKind::Internal, SpanKind::Client][n as usize % 3],
            start: at,
            end: at + Duration::from_micros(250 + n),
            attrs: vec![
                ("gen_ai.request.model", AttrValue::Str(Arc::from("gpt-4o-mini"))),
                ("http.response.status_code", AttrValue::Int(200)),
                ("weir.negative", AttrValue::Int(-3)),
                ("weir.zero", AttrValue::Int(0)),
                ("weir.empty", AttrValue::Static("")),
                ("weir.cached", AttrValue::Bool(n == 1)),
                ("weir.static", AttrValue::Static("openai")),
            ],
            events: if n == 2 { vec![("first_token", at + Duration::from_micros(90))] } else { Vec::new() },
            error: (n == 2).then_some(Cow::Borrowed("upstream_timeout")),
        }
    }

    #[test]
    fn the_bytes_decode_to_what_the_official_message_types_build() {
        let spans: Vec<SpanRecord> = (0..5).map(record).collect();
        let mut enc = Encoder::default();
        // Twice: the scratch buffers carry nothing from one batch into the next.
        for _ in 0..2 {
            let bytes = enc.request("weir-test", &spans);
            let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).expect("valid protobuf");
            assert_eq!(decoded, crate::convert::request("weir-test", spans.clone()));
        }
        let empty = enc.request("weir", &[]);
        let decoded = ExportTraceServiceRequest::decode(empty.as_slice()).unwrap();
        assert_eq!(decoded, crate::convert::request("weir", Vec::new()));
    }
}
