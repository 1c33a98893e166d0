//! The spans of one request, carried with it as values: the pipeline holds the request's
//! span, passes a [`SpanCx`] (where children go) to the plugin chain and, inside
//! [`crate::relay::TraceHeaders`], to the policy stage, whose upstream attempts become child
//! spans. Nothing is asked of a thread-local, so a span survives any `.await`.
//!
//! Finished spans stay with the request ([`Recorder`]) until its root span ends; then the
//! whole request is handed to a [`SpanSink`] at once (one lock and no wake-up per span), or
//! dropped when it was recorded only in case it failed and it did not. With tracing off or a
//! request not recorded, every handle is `None`: no allocation, no clock read.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use http::HeaderValue;

/// Where the finished spans of a recorded request go (the exporter's queue).
pub trait SpanSink: Send + Sync {
    /// Takes the spans of one request; must not block.
    fn submit(&self, spans: Vec<SpanRecord>);
}

/// The role of a span, as OpenTelemetry's `SpanKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// The request as Weir serves it.
    Server,
    /// A call Weir makes (an upstream attempt).
    Client,
    /// A step inside Weir.
    Internal,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// A fixed string.
    Static(&'static str),
    /// A string made for this request.
    Str(Arc<str>),
    /// An integer.
    Int(i64),
    /// A flag.
    Bool(bool),
}

impl From<&'static str> for AttrValue {
    fn from(v: &'static str) -> Self {
        Self::Static(v)
    }
}
impl From<Arc<str>> for AttrValue {
    fn from(v: Arc<str>) -> Self {
        Self::Str(v)
    }
}
impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        Self::Str(v.into())
    }
}
impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<u32> for AttrValue {
    fn from(v: u32) -> Self {
        Self::Int(i64::from(v))
    }
}
impl From<u16> for AttrValue {
    fn from(v: u16) -> Self {
        Self::Int(i64::from(v))
    }
}
impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

/// A finished span, as the exporter receives it.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// The trace it belongs to.
    pub trace_id: u128,
    /// Its id (never 0).
    pub span_id: u64,
    /// Its parent's id, 0 for none.
    pub parent_id: u64,
    /// Whether the parent is the client's span (from its `traceparent`).
    pub parent_remote: bool,
    /// Whether the trace was sampled (else it is exported because the request failed).
    pub sampled: bool,
    /// The client's `tracestate`, kept on the trace.
    pub tracestate: Option<HeaderValue>,
    /// Its name.
    pub name: &'static str,
    /// Its kind.
    pub kind: SpanKind,
    /// When it started.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// Attributes, in the order set.
    pub attrs: Vec<(&'static str, AttrValue)>,
    /// Named points in time (e.g. the first token).
    pub events: Vec<(&'static str, SystemTime)>,
    /// Set when the span's work failed: the error's type.
    pub error: Option<Cow<'static, str>>,
}

/// A W3C `traceparent` as a client sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traceparent {
    /// The trace id (not 0).
    pub trace_id: u128,
    /// The client's span id (not 0).
    pub parent_id: u64,
    /// Its `sampled` flag.
    pub sampled: bool,
}

impl Traceparent {
    /// Parses `version-traceid-parentid-flags` (lower-case hex); `None` for anything the W3C
    /// Trace Context spec says to ignore (version `ff`, all-zero ids, wrong lengths).
    pub fn parse(v: &[u8]) -> Option<Self> {
        if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' || (v.len() > 55 && v[55] != b'-') {
            return None;
        }
        let version = hex(&v[0..2])?;
        // Version 00 has exactly 55 bytes; a later version may append fields.
        if version == 0xff || (version == 0 && v.len() != 55) {
            return None;
        }
        let trace_id = hex(&v[3..35])?;
        let parent_id = u64::try_from(hex(&v[36..52])?).ok()?;
        let flags = hex(&v[53..55])?;
        (trace_id != 0 && parent_id != 0).then_some(Self { trace_id, parent_id, sampled: flags & 1 == 1 })
    }
}

/// Lower-case hex digits as a number (at most 32 of them).
fn hex(digits: &[u8]) -> Option<u128> {
    let mut n: u128 = 0;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        n = (n << 4) | u128::from(v);
    }
    Some(n)
}

/// `00-{trace}-{span}-{flags}`, the `traceparent` naming span `span_id`.
pub fn traceparent(trace_id: u128, span_id: u64, sampled: bool) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    for i in 0..32 {
        out[3 + i] = HEX[((trace_id >> (124 - 4 * i)) & 0xf) as usize];
    }
    for i in 0..16 {
        out[36 + i] = HEX[((span_id >> (60 - 4 * i)) & 0xf) as usize];
    }
    if sampled {
        out[54] = b'1';
    }
    HeaderValue::from_bytes(&out).expect("hex digits and dashes are a valid header value")
}

/// The spans of one recorded request: those finished so far, and where they go.
pub struct Recorder {
    trace_id: u128,
    sampled: bool,
    tracestate: Option<HeaderValue>,
    /// Export this request only if it fails (it was recorded for `always_on_error`).
    failed: AtomicBool,
    done: Mutex<Vec<SpanRecord>>,
    sink: Arc<dyn SpanSink>,
}

/// How a request's root span is made.
pub struct RootSpec {
    /// The trace id (the client's, or a new one).
    pub trace_id: u128,
    /// The client's span, the root's parent (0 for none).
    pub parent_id: u64,
    /// Export whatever the outcome (else only if the request fails).
    pub sampled: bool,
    /// The client's `tracestate`.
    pub tracestate: Option<HeaderValue>,
    /// The root span's name.
    pub name: &'static str,
}

/// Where new spans go: a recorded request and the span they are children of. `Default` and
/// [`SpanCx::NONE`] record nothing.
#[derive(Clone, Default)]
pub struct SpanCx(Option<(Arc<Recorder>, u64)>);

impl std::fmt::Debug for SpanCx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some((r, id)) => write!(f, "SpanCx({:032x}/{id:016x})", r.trace_id),
            None => f.write_str("SpanCx(none)"),
        }
    }
}

impl SpanCx {
    /// Records nothing.
    pub const NONE: Self = Self(None);

    /// Whether spans made here are recorded.
    pub fn is_recording(&self) -> bool {
        self.0.is_some()
    }

    /// A child span of this one, started now.
    pub fn child(&self, name: &'static str, kind: SpanKind) -> Span {
        match &self.0 {
            None => Span(None),
            Some((rec, parent)) => Span::open(rec.clone(), name, kind, *parent, false),
        }
    }

    /// The `traceparent` naming this span (`None` when not recording).
    pub fn traceparent(&self) -> Option<HeaderValue> {
        self.0.as_ref().map(|(rec, id)| traceparent(rec.trace_id, *id, rec.sampled))
    }

    /// Marks the request failed: a request recorded for `always_on_error` is then exported.
    pub fn mark_failed(&self) {
        if let Some((rec, _)) = &self.0 {
            rec.failed.store(true, Ordering::Relaxed);
        }
    }
}

/// A span being timed. Ends when [`Span::end`] is called or when dropped (a cancelled attempt
/// still shows, ended where it stopped). A root span's end hands its request's spans to the
/// sink.
#[derive(Default)]
pub struct Span(Option<Box<Open>>);

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(o) => write!(f, "Span({} {:016x})", o.record.name, o.record.span_id),
            None => f.write_str("Span(none)"),
        }
    }
}

struct Open {
    rec: Arc<Recorder>,
    record: SpanRecord,
    root: bool,
}

impl Span {
    /// Records nothing.
    pub const NONE: Self = Self(None);

    /// The root span of a recorded request.
    pub fn root(spec: RootSpec, sink: Arc<dyn SpanSink>) -> Self {
        let rec = Arc::new(Recorder {
            trace_id: spec.trace_id,
            sampled: spec.sampled,
            tracestate: spec.tracestate,
            failed: AtomicBool::new(false),
            done: Mutex::new(Vec::with_capacity(8)),
            sink,
        });
        let mut span = Self::open(rec, spec.name, SpanKind::Server, spec.parent_id, true);
        if let Some(open) = &mut span.0 {
            open.record.parent_remote = spec.parent_id != 0;
        }
        span
    }

    fn open(rec: Arc<Recorder>, name: &'static str, kind: SpanKind, parent_id: u64, root: bool) -> Self {
        let record = SpanRecord {
            trace_id: rec.trace_id,
            span_id: fastrand::u64(1..),
            parent_id,
            parent_remote: false,
            sampled: rec.sampled,
            tracestate: rec.tracestate.clone(),
            name,
            kind,
            start: SystemTime::now(),
            end: SystemTime::UNIX_EPOCH,
            attrs: Vec::new(),
            events: Vec::new(),
            error: None,
        };
        Self(Some(Box::new(Open { rec, record, root })))
    }

    /// Whether this span is recorded (attributes worth computing).
    pub fn is_recording(&self) -> bool {
        self.0.is_some()
    }

    /// Where its children go.
    pub fn cx(&self) -> SpanCx {
        SpanCx(self.0.as_ref().map(|o| (o.rec.clone(), o.record.span_id)))
    }

    /// Sets an attribute.
    pub fn set(&mut self, key: &'static str, value: impl Into<AttrValue>) {
        if let Some(o) = &mut self.0 {
            o.record.attrs.push((key, value.into()));
        }
    }

    /// Sets an attribute whose value is made only when the span is recorded.
    pub fn set_with<V: Into<AttrValue>>(&mut self, key: &'static str, value: impl FnOnce() -> V) {
        if let Some(o) = &mut self.0 {
            o.record.attrs.push((key, value().into()));
        }
    }

    /// Notes a point in time now.
    pub fn event(&mut self, name: &'static str) {
        if let Some(o) = &mut self.0 {
            o.record.events.push((name, SystemTime::now()));
        }
    }

    /// Marks the span's work failed with `error_type` (its `error.type`). On the root span it
    /// marks the request failed (a failed attempt that a retry made good does not).
    pub fn fail(&mut self, error_type: impl Into<Cow<'static, str>>) {
        if let Some(o) = &mut self.0 {
            o.record.error = Some(error_type.into());
            if o.root {
                o.rec.failed.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Sets `key` to the milliseconds since the span started.
    pub fn set_elapsed_ms(&mut self, key: &'static str) {
        if let Some(o) = &mut self.0 {
            let ms = o.record.start.elapsed().map_or(0, |d| d.as_millis() as i64);
            o.record.attrs.push((key, AttrValue::Int(ms)));
        }
    }

    /// Ends the span now.
    pub fn end(self) {
        drop(self);
    }
}

impl Drop for Span {
    // Inlined: most spans of an untraced request are `NONE` (a dozen a request), and dropping
    // one is then a single test.
    #[inline]
    fn drop(&mut self) {
        if let Some(open) = self.0.take() {
            open.end();
        }
    }
}

impl Open {
    /// Ends the span: a child joins its trace's finished spans, a root hands them all over.
    #[inline(never)]
    fn end(self: Box<Self>) {
        let Open { rec, mut record, root } = *self;
        record.end = SystemTime::now();
        let mut done = rec.done.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !root {
            done.push(record);
            return;
        }
        let mut spans = std::mem::take(&mut *done);
        drop(done);
        if !rec.sampled && !rec.failed.load(Ordering::Relaxed) {
            return;
        }
        spans.push(record);
        rec.sink.submit(spans);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<SpanRecord>>);
    impl SpanSink for Collect {
        fn submit(&self, spans: Vec<SpanRecord>) {
            self.0.lock().unwrap().extend(spans);
        }
    }

    fn root(sink: &Arc<Collect>, sampled: bool) -> Span {
        let spec = RootSpec { trace_id: 7, parent_id: 9, sampled, tracestate: None, name: "weir.request" };
        Span::root(spec, sink.clone())
    }

    #[test]
    fn traceparent_round_trips_and_bad_ones_are_ignored() {
        let tp = traceparent(0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331, true);
        assert_eq!(tp, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        let parsed = Traceparent::parse(tp.as_bytes()).unwrap();
        assert_eq!(parsed.trace_id, 0x0af7651916cd43dd8448eb211c80319c);
        assert_eq!(parsed.parent_id, 0xb7ad6b7169203331);
        assert!(parsed.sampled);
        for bad in [
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333",
        ] {
            assert_eq!(Traceparent::parse(bad.as_bytes()), None, "{bad}");
        }
        assert!(Traceparent::parse(b"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-later").is_some());
    }

    #[test]
    fn a_sampled_request_hands_over_every_span_with_its_parent_when_the_root_ends() {
        let sink = Arc::new(Collect::default());
        let mut req = root(&sink, true);
        let cx = req.cx();
        let mut child = cx.child("weir.parse", SpanKind::Internal);
        child.set("k", 1i64);
        let grand = child.cx().child("weir.queue_wait", SpanKind::Internal);
        drop(grand);
        child.end();
        assert!(sink.0.lock().unwrap().is_empty(), "nothing leaves before the root ends");
        req.set("http.response.status_code", 200u16);
        req.end();
        let spans = sink.0.lock().unwrap();
        let by = |n: &str| spans.iter().find(|s| s.name == n).unwrap();
        let (r, c, g) = (by("weir.request"), by("weir.parse"), by("weir.queue_wait"));
        assert_eq!((r.parent_id, r.parent_remote), (9, true));
        assert_eq!(c.parent_id, r.span_id);
        assert_eq!(g.parent_id, c.span_id);
        assert!(spans.iter().all(|s| s.trace_id == 7 && s.end >= s.start));
    }

    #[test]
    fn an_unsampled_request_is_handed_over_only_when_it_failed() {
        let sink = Arc::new(Collect::default());
        root(&sink, false).end();
        assert!(sink.0.lock().unwrap().is_empty());
        let req = root(&sink, false);
        req.cx().child("weir.upstream_attempt", SpanKind::Client).fail("upstream_error");
        req.cx().child("weir.parse", SpanKind::Internal).end();
        req.end();
        assert!(sink.0.lock().unwrap().is_empty(), "a failed attempt alone is not a failed request");
        let mut req = root(&sink, false);
        req.cx().child("weir.upstream_attempt", SpanKind::Client).fail("upstream_error");
        req.fail("upstream_error");
        req.end();
        assert_eq!(sink.0.lock().unwrap().len(), 2);
    }

    #[test]
    fn handles_of_an_unrecorded_request_record_nothing() {
        let mut s = SpanCx::NONE.child("x", SpanKind::Internal);
        s.set_with("k", || -> i64 { unreachable!("not computed when off") });
        assert!(!s.is_recording() && s.cx().traceparent().is_none());
    }
}
