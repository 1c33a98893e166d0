//! What an Anthropic client reads: error bodies `{"type":"error","error":{"type","message"}}`
//! with Anthropic's error types, and stream events framed as `event: <type>` + `data: <json>`
//! (the type is the payload's own `type`; there is no `[DONE]`).

use bytes::Bytes;

use crate::error::Error;

/// Anthropic's error `type` for the status Weir answers with (the status is the error kind's).
fn error_type(e: &Error) -> &'static str {
    match e.status().as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// `{"type":"error","error":{"type","message"}}`.
pub(super) fn error_body(e: &Error) -> Bytes {
    let body = serde_json::json!({
        "type": "error",
        "error": { "type": error_type(e), "message": e.message },
    });
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// The error as the stream's last event.
pub(super) fn error_event(e: &Error) -> Bytes {
    frame_as("error", &error_body(e))
}

/// One event payload framed with its own `type` as the SSE event name.
pub(super) fn frame(payload: &[u8]) -> Bytes {
    frame_as(event_type(payload).unwrap_or("message"), payload)
}

/// `payload` framed as the SSE event `name` (`event:` line, then `data:` lines).
pub(crate) fn frame_as(name: &str, payload: &[u8]) -> Bytes {
    let data = crate::sse::frame(payload);
    let mut out = Vec::with_capacity(name.len() + 8 + data.len());
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&data);
    Bytes::from(out)
}

/// The `type` of an Anthropic event payload. Anthropic writes it as the first key, which is
/// read without parsing the rest; any other layout is parsed (only `type` is kept).
pub fn event_type(payload: &[u8]) -> Option<&str> {
    fn skip_ws(b: &[u8]) -> &[u8] {
        let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
        &b[n..]
    }
    let first = (|| {
        let rest = skip_ws(payload).strip_prefix(b"{")?;
        let rest = skip_ws(rest).strip_prefix(b"\"type\"")?;
        let rest = skip_ws(skip_ws(rest).strip_prefix(b":")?).strip_prefix(b"\"")?;
        let end = memchr::memchr2(b'"', b'\\', rest)?;
        (rest[end] == b'"').then(|| std::str::from_utf8(&rest[..end]).ok()).flatten()
    })();
    if first.is_some() {
        return first;
    }
    #[derive(serde::Deserialize)]
    struct Typed<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<&'a str>,
    }
    serde_json::from_slice::<Typed<'_>>(payload).ok()?.kind
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn error_bodies_have_anthropics_shape_and_types() {
        let cases = [
            (Error::invalid_param("max_tokens", "max_tokens: Field required"), "invalid_request_error"),
            (Error::new(ErrorKind::ModelNotFound, "no"), "not_found_error"),
            (Error::new(ErrorKind::Upstream { status: 429 }, "slow down"), "rate_limit_error"),
            (Error::new(ErrorKind::Upstream { status: 503 }, "busy"), "overloaded_error"),
            (Error::new(ErrorKind::Unauthorized, "who"), "authentication_error"),
            (Error::new(ErrorKind::OriginNotAllowed, "no"), "permission_error"),
            (Error::new(ErrorKind::UpstreamUnavailable, "down"), "api_error"),
        ];
        for (e, want) in cases {
            let v: serde_json::Value = serde_json::from_slice(&error_body(&e)).unwrap();
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["type"], want, "{e}");
            assert_eq!(v["error"]["message"], *e.message);
        }
    }

    #[test]
    fn events_are_framed_with_their_type_and_errors_as_error_events() {
        assert_eq!(
            &frame(br#"{"type":"message_stop"}"#)[..],
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
        assert_eq!(&frame(br#"{"index":0, "type" : "ping"}"#)[..8 + 4], b"event: ping\n");
        let e = Error::new(ErrorKind::UpstreamInvalid, "cut");
        assert!(error_event(&e).starts_with(b"event: error\ndata: {"));
    }

    #[test]
    fn the_event_type_is_read_from_the_first_key_or_parsed() {
        assert_eq!(event_type(br#" { "type" : "content_block_delta","index":0}"#), Some("content_block_delta"));
        assert_eq!(event_type(br#"{"index":0,"type":"content_block_stop"}"#), Some("content_block_stop"));
        assert_eq!(event_type(br#"{"index":0}"#), None);
        assert_eq!(event_type(b"not json"), None);
    }
}
