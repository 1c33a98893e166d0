//! Headers that cross Weir between client and provider. [`RelayHeaders`]: the few response
//! headers of the provider's answer (or error) that clients rely on, relayed to the client.
//! [`TraceHeaders`]: the request's id and trace context, sent upstream with every attempt.
//! [`AskedHeaders`]: the client's headers that ask something of Weir, read in one pass.
//! Both are small allow-lists: nothing else crosses, so cookies, credentials and hop-by-hop
//! headers never do.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Most headers relayed from one answer: a bound on what an upstream can make Weir copy.
const MAX_RELAYED: usize = 16;
/// Longest header value relayed: rate-limit figures and request ids are short.
const MAX_RELAYED_VALUE: usize = 256;

/// The provider's own `x-request-id`, relayed under this name: the client's response already
/// carries Weir's `x-request-id` (the client's, or one Weir made), which Weir also sent upstream.
pub const X_UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-upstream-request-id");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// The request header that sets its total timeout, in milliseconds.
pub const X_WEIR_TIMEOUT_MS: HeaderName = HeaderName::from_static("x-weir-timeout-ms");
/// The request header that lists its own fallbacks.
pub const X_WEIR_FALLBACKS: HeaderName = HeaderName::from_static("x-weir-fallbacks");

/// The client's request headers that Weir acts on (its trace context, its own fallbacks and
/// timeout), picked in one pass over a request's few headers: each `HeaderMap::get` of a name
/// that is not a standard header hashes it (~180 instructions a lookup). The first value
/// counts, as with `HeaderMap::get`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AskedHeaders<'a> {
    /// `traceparent`.
    pub traceparent: Option<&'a HeaderValue>,
    /// `tracestate`.
    pub tracestate: Option<&'a HeaderValue>,
    /// `x-weir-fallbacks`.
    pub fallbacks: Option<&'a HeaderValue>,
    /// `x-weir-timeout-ms`.
    pub timeout_ms: Option<&'a HeaderValue>,
}

impl<'a> AskedHeaders<'a> {
    /// Picks them out of a request's `headers`.
    pub fn read(headers: &'a HeaderMap) -> Self {
        let mut out = Self::default();
        // Names compared as `HeaderName`s: a standard header (most of a request's) differs at
        // once, without its text.
        for (name, value) in headers {
            let slot = if *name == TRACEPARENT {
                &mut out.traceparent
            } else if *name == TRACESTATE {
                &mut out.tracestate
            } else if *name == X_WEIR_FALLBACKS {
                &mut out.fallbacks
            } else if *name == X_WEIR_TIMEOUT_MS {
                &mut out.timeout_ms
            } else {
                continue;
            };
            slot.get_or_insert(value);
        }
        out
    }
}

/// Response headers taken from an upstream answer for the client: `x-ratelimit-*`,
/// `anthropic-ratelimit-*`, `retry-after`, `retry-after-ms`, `openai-processing-ms`,
/// `request-id`, and `x-request-id` (as `x-upstream-request-id`). Empty costs no allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayHeaders(Vec<(HeaderName, HeaderValue)>);

impl RelayHeaders {
    /// No headers to relay.
    pub const NONE: Self = Self(Vec::new());

    /// The allow-listed headers of an upstream response head, at most [`MAX_RELAYED`] of them.
    pub fn from_upstream(headers: &HeaderMap) -> Self {
        let mut out = Vec::new();
        for (name, value) in headers {
            if out.len() == MAX_RELAYED {
                break;
            }
            if value.len() <= MAX_RELAYED_VALUE
                && let Some(name) = relayed_as(name)
            {
                out.push((name, value.clone()));
            }
        }
        Self(out)
    }

    /// Whether there is nothing to relay.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The headers, in upstream order.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.0.iter().map(|(n, v)| (n, v))
    }

    /// Adds the headers to a client response, leaving any name it already has (Weir's own
    /// `retry-after`, a plugin's header) as it is.
    pub fn write_to(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.0 {
            if !headers.contains_key(name) {
                headers.append(name.clone(), value.clone());
            }
        }
    }
}

/// The name an upstream header is relayed under, `None` when it is not relayed.
fn relayed_as(name: &HeaderName) -> Option<HeaderName> {
    let s = name.as_str();
    if *name == X_REQUEST_ID {
        return Some(X_UPSTREAM_REQUEST_ID);
    }
    let relayed = s.starts_with("x-ratelimit-")
        || s.starts_with("anthropic-ratelimit-")
        || matches!(s, "retry-after" | "retry-after-ms" | "openai-processing-ms" | "request-id");
    relayed.then(|| name.clone())
}

/// Headers sent upstream with each attempt: Weir's request id (the client's `x-request-id`,
/// or the one Weir made) and the client's W3C trace context, so the provider's logs and the
/// client's traces line up with Weir's.
#[derive(Debug, Clone, Default)]
pub struct TraceHeaders {
    /// `x-request-id`.
    pub request_id: Option<HeaderValue>,
    /// `traceparent` as the client sent it.
    pub traceparent: Option<HeaderValue>,
    /// `tracestate` as the client sent it (only with a `traceparent`).
    pub tracestate: Option<HeaderValue>,
    /// The request's span when it is traced: each upstream attempt is a child span of it, and
    /// the `traceparent` sent names that attempt's span instead of the client's.
    pub span: crate::trace::SpanCx,
}

impl TraceHeaders {
    /// The request id and the trace context the client `asked` for.
    pub fn new(request_id: Option<HeaderValue>, asked: &AskedHeaders<'_>) -> Self {
        let traceparent = asked.traceparent.filter(|v| v.len() <= MAX_RELAYED_VALUE).cloned();
        let tracestate = traceparent.as_ref().and(asked.tracestate).filter(|v| v.len() <= 512).cloned();
        Self { request_id, traceparent, tracestate, span: crate::trace::SpanCx::NONE }
    }

    /// How many headers [`TraceHeaders::write_to`] adds, to size a header map once.
    pub fn len(&self) -> usize {
        usize::from(self.request_id.is_some())
            + usize::from(self.traceparent.is_some())
            + usize::from(self.tracestate.is_some())
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds the headers to an upstream request.
    pub fn write_to(&self, headers: &mut HeaderMap) {
        if let Some(v) = &self.request_id {
            headers.insert(X_REQUEST_ID, v.clone());
        }
        if let Some(v) = &self.traceparent {
            headers.insert(TRACEPARENT, v.clone());
        }
        if let Some(v) = &self.tracestate {
            headers.insert(TRACESTATE, v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_allow_listed_headers_are_relayed_and_the_upstream_request_id_is_renamed() {
        let upstream = map(&[
            ("x-ratelimit-remaining-requests", "59"),
            ("anthropic-ratelimit-tokens-remaining", "1000"),
            ("retry-after", "3"),
            ("openai-processing-ms", "120"),
            ("x-request-id", "req_up"),
            ("request-id", "req_anthropic"),
            ("set-cookie", "session=1"),
            ("authorization", "Bearer sk"),
            ("connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("content-type", "application/json"),
        ]);
        let relay = RelayHeaders::from_upstream(&upstream);
        let names: Vec<&str> = relay.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "x-ratelimit-remaining-requests",
                "anthropic-ratelimit-tokens-remaining",
                "retry-after",
                "openai-processing-ms",
                "x-upstream-request-id",
                "request-id"
            ]
        );
        let mut client = map(&[("retry-after", "9"), ("x-request-id", "weir-id")]);
        relay.write_to(&mut client);
        assert_eq!(client["retry-after"], "9", "Weir's own value stays");
        assert_eq!(client["x-request-id"], "weir-id");
        assert_eq!(client["x-upstream-request-id"], "req_up");
        assert!(!client.contains_key("set-cookie"));
    }

    #[test]
    fn relayed_headers_are_bounded_in_number_and_length() {
        let mut upstream = HeaderMap::new();
        for i in 0..40 {
            upstream.insert(
                HeaderName::from_bytes(format!("x-ratelimit-h{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("1"),
            );
        }
        assert_eq!(RelayHeaders::from_upstream(&upstream).iter().count(), MAX_RELAYED);
        let long = map(&[("x-ratelimit-long", &"9".repeat(MAX_RELAYED_VALUE + 1))]);
        assert!(RelayHeaders::from_upstream(&long).is_empty());
        assert!(RelayHeaders::from_upstream(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn an_answer_without_relayed_headers_costs_no_allocation() {
        let typical = map(&[
            ("content-type", "application/json"),
            ("content-length", "512"),
            ("date", "Sat, 05 Dec 2026 20:00:00 GMT"),
            ("server", "uvicorn"),
        ]);
        let relay = RelayHeaders::from_upstream(&typical);
        assert_eq!(relay.0.capacity(), 0, "nothing allocated");
        let mut client = HeaderMap::new();
        relay.write_to(&mut client);
        assert!(client.is_empty());
    }

    #[test]
    fn trace_context_goes_upstream_with_the_request_id() {
        let client = map(&[
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("cookie", "x=1"),
        ]);
        let trace = TraceHeaders::new(Some(HeaderValue::from_static("req_1")), &AskedHeaders::read(&client));
        let mut up = HeaderMap::new();
        trace.write_to(&mut up);
        assert_eq!(up.len(), 3);
        assert_eq!(trace.len(), 3);
        assert_eq!(up["x-request-id"], "req_1");
        assert_eq!(up["traceparent"], "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        let lone_state = TraceHeaders::new(None, &AskedHeaders::read(&map(&[("tracestate", "a=b")])));
        assert!(lone_state.is_empty(), "tracestate means nothing without traceparent");
    }

    #[test]
    fn the_asked_headers_are_found_in_one_pass_and_the_first_value_counts() {
        let headers = map(&[
            ("content-type", "application/json"),
            (X_WEIR_FALLBACKS.as_str(), "a/b"),
            ("x-request-id", "r"),
            (X_WEIR_TIMEOUT_MS.as_str(), "250"),
            (X_WEIR_TIMEOUT_MS.as_str(), "900"),
            (TRACESTATE.as_str(), "s"),
            (TRACEPARENT.as_str(), "p"),
        ]);
        let asked = AskedHeaders::read(&headers);
        let value = |v: Option<&HeaderValue>| v.map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(value(asked.fallbacks).as_deref(), Some("a/b"));
        assert_eq!(value(asked.timeout_ms).as_deref(), Some("250"), "as HeaderMap::get: the first");
        assert_eq!(value(asked.tracestate).as_deref(), Some("s"));
        assert_eq!(value(asked.traceparent).as_deref(), Some("p"));
        let others = map(&[("x-weir-fallback", "a"), ("traceparents", "p")]);
        let none = AskedHeaders::read(&others);
        assert!(none.fallbacks.is_none() && none.traceparent.is_none());
    }
}
