//! Generated WIT types → gateway types, validating what a plugin hands back (statuses,
//! JSON, header syntax, the `max_output_bytes` cap). Generated types stop here. A
//! `weir:plugin@0.1.0` component's values are first mapped to their 0.2 twins (the records are
//! the same), so everything past this file knows one contract.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::bindings::{ChunkAction, Hooks, Rejection, Reply, RequestAction, ResponseAction, log, v0_1};
use super::guard::Failure;
use super::host::exchange::{MAX_HEADER_BYTES, MAX_HEADERS};
use crate::error::{Error, ErrorKind};
use crate::exchange::GatewayResponse;

/// What `on-request` decided, in gateway terms.
pub enum RequestDecision {
    /// Go on (edits, if any, are already applied to the request).
    Continue,
    /// Answer with this response.
    Respond(GatewayResponse),
    /// Refuse with this error.
    Reject(Error),
}

/// What `on-response` decided.
pub enum ResponseDecision {
    /// Keep the (possibly edited) response.
    Pass,
    /// Replace it.
    Replace(GatewayResponse),
}

/// What `on-stream-chunk` decided.
pub enum ChunkDecision {
    /// Send the chunk unchanged.
    Pass,
    /// Send these bytes instead.
    Rewrite(Bytes),
    /// Send nothing.
    Drop,
    /// End the stream with this error.
    Abort(Error),
}

/// Converts and checks an `on-request` result.
///
/// # Errors
/// [`Failure::Invalid`] or [`Failure::Output`].
pub fn request_action(action: RequestAction, max: usize) -> Result<RequestDecision, Failure> {
    Ok(match action {
        RequestAction::Continue => RequestDecision::Continue,
        RequestAction::Respond(r) => RequestDecision::Respond(reply(r, max)?),
        RequestAction::Reject(r) => RequestDecision::Reject(rejection(r, max)?),
    })
}

/// Converts and checks an `on-response` result.
///
/// # Errors
/// [`Failure::Invalid`] or [`Failure::Output`].
pub fn response_action(action: ResponseAction, max: usize) -> Result<ResponseDecision, Failure> {
    Ok(match action {
        ResponseAction::Pass => ResponseDecision::Pass,
        ResponseAction::Replace(r) => ResponseDecision::Replace(reply(r, max)?),
    })
}

/// Converts and checks an `on-stream-chunk` result.
///
/// # Errors
/// [`Failure::Invalid`] or [`Failure::Output`].
pub fn chunk_action(action: ChunkAction, max: usize) -> Result<ChunkDecision, Failure> {
    Ok(match action {
        ChunkAction::Pass => ChunkDecision::Pass,
        ChunkAction::Drop => ChunkDecision::Drop,
        ChunkAction::Rewrite(bytes) => {
            if bytes.len() > max {
                return Err(Failure::Output);
            }
            ChunkDecision::Rewrite(Bytes::from(bytes))
        }
        ChunkAction::Abort(r) => ChunkDecision::Abort(rejection(r, max)?),
    })
}

impl From<v0_1::Hooks> for Hooks {
    fn from(h: v0_1::Hooks) -> Self {
        let mut out = Hooks::empty();
        for (old, new) in [
            (v0_1::Hooks::ON_REQUEST, Hooks::ON_REQUEST),
            (v0_1::Hooks::ON_RESPONSE, Hooks::ON_RESPONSE),
            (v0_1::Hooks::ON_STREAM_CHUNK, Hooks::ON_STREAM_CHUNK),
        ] {
            if h.contains(old) {
                out |= new;
            }
        }
        out
    }
}

impl From<v0_1::Reply> for Reply {
    fn from(r: v0_1::Reply) -> Self {
        Reply { status: r.status, headers: r.headers, body: r.body }
    }
}

impl From<v0_1::Rejection> for Rejection {
    fn from(r: v0_1::Rejection) -> Self {
        Rejection { status: r.status, message: r.message, code: r.code }
    }
}

impl From<v0_1::RequestAction> for RequestAction {
    fn from(a: v0_1::RequestAction) -> Self {
        match a {
            v0_1::RequestAction::Continue => RequestAction::Continue,
            v0_1::RequestAction::Respond(r) => RequestAction::Respond(r.into()),
            v0_1::RequestAction::Reject(r) => RequestAction::Reject(r.into()),
        }
    }
}

impl From<v0_1::ResponseAction> for ResponseAction {
    fn from(a: v0_1::ResponseAction) -> Self {
        match a {
            v0_1::ResponseAction::Pass => ResponseAction::Pass,
            v0_1::ResponseAction::Replace(r) => ResponseAction::Replace(r.into()),
        }
    }
}

impl From<v0_1::ChunkAction> for ChunkAction {
    fn from(a: v0_1::ChunkAction) -> Self {
        match a {
            v0_1::ChunkAction::Pass => ChunkAction::Pass,
            v0_1::ChunkAction::Rewrite(b) => ChunkAction::Rewrite(b),
            v0_1::ChunkAction::Drop => ChunkAction::Drop,
            v0_1::ChunkAction::Abort(r) => ChunkAction::Abort(r.into()),
        }
    }
}

impl From<v0_1::log::Level> for log::Level {
    fn from(l: v0_1::log::Level) -> Self {
        match l {
            v0_1::log::Level::Trace => log::Level::Trace,
            v0_1::log::Level::Debug => log::Level::Debug,
            v0_1::log::Level::Info => log::Level::Info,
            v0_1::log::Level::Warn => log::Level::Warn,
            v0_1::log::Level::Error => log::Level::Error,
        }
    }
}

/// The 0.1 `endpoint` enum for an operation: 0.1 components only ever see OpenAI-format
/// requests, whose operations it names.
pub fn legacy_endpoint(op: crate::format::Operation) -> v0_1::Endpoint {
    match op {
        crate::format::Operation::Chat => v0_1::Endpoint::ChatCompletions,
        crate::format::Operation::Embeddings => v0_1::Endpoint::Embeddings,
    }
}

fn reply(r: Reply, max: usize) -> Result<GatewayResponse, Failure> {
    let header_bytes = r.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    if r.body.len() + header_bytes > max {
        return Err(Failure::Output);
    }
    // A 1xx is not a final answer: 100 left the client waiting and 101 was sent as one.
    if !(200..=599).contains(&r.status) {
        return Err(Failure::Invalid(format!("reply status {} is not 200..=599", r.status)));
    }
    // Checked before the header map is sized: it panics past 32,768 entries.
    if r.headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return Err(Failure::Invalid(format!(
            "a reply may carry at most {MAX_HEADERS} headers of {MAX_HEADER_BYTES} bytes in all"
        )));
    }
    if serde_json::from_str::<serde::de::IgnoredAny>(&r.body).is_err() {
        return Err(Failure::Invalid("reply body is not JSON".into()));
    }
    let mut headers = HeaderMap::with_capacity(r.headers.len());
    for (k, v) in r.headers {
        let name =
            HeaderName::from_bytes(k.as_bytes()).map_err(|_| Failure::Invalid(format!("bad header name {k:?}")))?;
        if matches!(name.as_str(), "content-length" | "transfer-encoding" | "connection" | "content-type") {
            return Err(Failure::Invalid(format!("header {name} is managed by the gateway")));
        }
        let value = HeaderValue::from_str(&v).map_err(|_| Failure::Invalid(format!("bad value for header {name}")))?;
        headers.try_append(name, value).map_err(|_| Failure::Invalid("too many reply headers".into()))?;
    }
    Ok(GatewayResponse { status: r.status, headers, body: Bytes::from(r.body), growth: None })
}

fn rejection(r: Rejection, max: usize) -> Result<Error, Failure> {
    if r.message.len() + r.code.as_ref().map_or(0, String::len) > max {
        return Err(Failure::Output);
    }
    if !(400..=599).contains(&r.status) {
        return Err(Failure::Invalid(format!("rejection status {} is not 400..=599", r.status)));
    }
    let mut err = Error::new(ErrorKind::PluginRejected { status: r.status }, r.message);
    if let Some(code) = r.code {
        let ok = !code.is_empty()
            && code.len() <= 64
            && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            return Err(Failure::Invalid("rejection code must be 1-64 chars of [a-z0-9_]".into()));
        }
        err = err.with_code(code);
    }
    Ok(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rej(status: u16, code: Option<&str>) -> RequestAction {
        RequestAction::Reject(Rejection { status, message: "no".into(), code: code.map(Into::into) })
    }

    #[test]
    fn rejection_becomes_plugin_rejected_error() {
        let Ok(RequestDecision::Reject(e)) = request_action(rej(403, Some("blocked")), 1024) else { panic!() };
        assert_eq!(e.status(), 403);
        assert_eq!(e.code_str(), "blocked");
        assert_eq!(e.message, "no");
    }

    #[test]
    fn invalid_decisions_are_refused() {
        assert!(matches!(request_action(rej(200, None), 1024), Err(Failure::Invalid(_))));
        assert!(matches!(request_action(rej(400, Some("Bad Code")), 1024), Err(Failure::Invalid(_))));
        let bad_body = RequestAction::Respond(Reply { status: 200, headers: vec![], body: "{".into() });
        assert!(matches!(request_action(bad_body, 1024), Err(Failure::Invalid(_))));
        let bad_status = RequestAction::Respond(Reply { status: 99, headers: vec![], body: "{}".into() });
        assert!(matches!(request_action(bad_status, 1024), Err(Failure::Invalid(_))));
        let bad_header = RequestAction::Respond(Reply {
            status: 200,
            headers: vec![("content-length".into(), "1".into())],
            body: "{}".into(),
        });
        assert!(matches!(request_action(bad_header, 1024), Err(Failure::Invalid(_))));
    }

    fn reply_with(status: u16, headers: usize) -> RequestAction {
        let headers = (0..headers).map(|i| (format!("x-{i}"), String::new())).collect();
        RequestAction::Respond(Reply { status, headers, body: "{}".into() })
    }

    #[test]
    fn informational_reply_statuses_are_refused() {
        for status in [100, 101, 103, 199] {
            assert!(matches!(request_action(reply_with(status, 0), 1024), Err(Failure::Invalid(_))), "{status}");
        }
        assert!(matches!(request_action(reply_with(200, 0), 1024), Ok(RequestDecision::Respond(_))));
        assert!(matches!(request_action(reply_with(599, 0), 1024), Ok(RequestDecision::Respond(_))));
    }

    #[test]
    fn replies_with_too_many_headers_are_refused_not_a_panic() {
        // 30,000 headers of ~7 bytes each fit a 1 MiB output cap.
        let r = request_action(reply_with(200, 30_000), 1 << 20);
        assert!(matches!(r, Err(Failure::Invalid(_))));
        let r = response_action(
            ResponseAction::Replace(Reply {
                status: 200,
                headers: (0..MAX_HEADERS + 1).map(|i| (format!("x-{i}"), String::new())).collect(),
                body: "{}".into(),
            }),
            1 << 20,
        );
        assert!(matches!(r, Err(Failure::Invalid(_))));
        let big = vec![("x-big".to_owned(), "v".repeat(MAX_HEADER_BYTES))];
        let r = request_action(RequestAction::Respond(Reply { status: 200, headers: big, body: "{}".into() }), 1 << 20);
        assert!(matches!(r, Err(Failure::Invalid(_))));
        let Ok(RequestDecision::Respond(resp)) = request_action(reply_with(200, MAX_HEADERS), 1 << 20) else {
            panic!()
        };
        assert_eq!(resp.headers.len(), MAX_HEADERS);
    }

    #[test]
    fn oversized_output_is_refused() {
        let big =
            RequestAction::Respond(Reply { status: 200, headers: vec![], body: format!("\"{}\"", "a".repeat(100)) });
        assert_eq!(request_action(big, 64).err(), Some(Failure::Output));
        assert_eq!(chunk_action(ChunkAction::Rewrite(vec![0; 65]), 64).err(), Some(Failure::Output));
        assert!(matches!(chunk_action(ChunkAction::Rewrite(vec![0; 64]), 64), Ok(ChunkDecision::Rewrite(_))));
    }

    #[test]
    fn legacy_actions_map_to_their_twins() {
        let old = v0_1::RequestAction::Reject(v0_1::Rejection { status: 451, message: "m".into(), code: None });
        let Ok(RequestDecision::Reject(e)) = request_action(old.into(), 1024) else { panic!() };
        assert_eq!((e.status().as_u16(), &*e.message), (451, "m"));
        let old = v0_1::ChunkAction::Rewrite(b"x".to_vec());
        assert!(matches!(ChunkAction::from(old), ChunkAction::Rewrite(b) if b == b"x"));
        let hooks = Hooks::from(v0_1::Hooks::ON_REQUEST | v0_1::Hooks::ON_STREAM_CHUNK);
        assert_eq!(hooks, Hooks::ON_REQUEST | Hooks::ON_STREAM_CHUNK);
        assert!(matches!(legacy_endpoint(crate::format::Operation::Embeddings), v0_1::Endpoint::Embeddings));
    }

    #[test]
    fn reply_keeps_status_headers_and_body() {
        let r = Reply { status: 200, headers: vec![("x-cache".into(), "hit".into())], body: "{\"a\":1}".into() };
        let Ok(ResponseDecision::Replace(resp)) = response_action(ResponseAction::Replace(r), 1024) else { panic!() };
        assert_eq!(resp.status, 200);
        assert_eq!(resp.headers["x-cache"], "hit");
        assert_eq!(&resp.body[..], b"{\"a\":1}");
    }
}
