//! The `error_response` phase: the one place an [`Error`] becomes an HTTP response, through
//! hyper ([`error_response`]) or as raw bytes on a socket hyper does not own
//! ([`error_http1_bytes`]). What the status, `type` and `code` are is decided in `error.rs`;
//! the body is spelled by the request's front door (`api::error_body`).

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response};

use crate::api::GATEWAY_FORMAT;
use crate::body::ResponseBody;
use crate::error::{Error, ErrorKind};
use crate::format::ApiFormat;

/// Who failed: `client`, `provider`, `plugin` or `gateway` (a constant: a `&str` name is
/// parsed on every insert).
const X_WEIR_ERROR_SOURCE: HeaderName = HeaderName::from_static("x-weir-error-source");

/// The full HTTP response for `err`: its status, the JSON body in `format` (the API format
/// of the request's route), `Retry-After` when it has one, and who failed.
pub fn error_response(format: ApiFormat, err: &Error) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(crate::api::error_body(format, err)));
    *resp.status_mut() = err.status();
    let headers = resp.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(secs) = err.retry_after {
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    headers.insert(X_WEIR_ERROR_SOURCE, HeaderValue::from_static(err.origin_str()));
    if matches!(
        err.kind,
        ErrorKind::BodyTooLarge
            | ErrorKind::BodyTimeout
            | ErrorKind::UnsupportedMediaType
            | ErrorKind::OriginNotAllowed
            | ErrorKind::HostNotAllowed
    ) {
        // The rest of the body was not read: the connection cannot carry another request.
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The same response as raw HTTP/1.1 bytes, ending the connection: for answers written
/// straight to a socket, outside hyper (refused connections, hyper's own parse errors). No
/// route was read, so the body is in the gateway's format.
pub fn error_http1_bytes(err: &Error) -> Bytes {
    let body = crate::api::error_body(GATEWAY_FORMAT, err);
    let status = err.status();
    let mut out = Vec::with_capacity(body.len() + 200);
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .as_bytes(),
    );
    if let Some(secs) = err.retry_after {
        out.extend_from_slice(format!("retry-after: {secs}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("x-weir-error-source: {}\r\n", err.origin_str()).as_bytes());
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(&body);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_full_is_429_with_retry_after() {
        let err = Error::new(ErrorKind::QueueFull, "queue full").with_retry_after(2);
        let resp = error_response(GATEWAY_FORMAT, &err);
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "2");
        assert_eq!(resp.headers()["x-weir-error-source"], "gateway");
        assert!(err.retryable());
    }

    #[test]
    fn raw_answer_matches_the_hyper_one() {
        let err = Error::new(ErrorKind::Overloaded, "busy").with_retry_after(1);
        let raw = error_http1_bytes(&err);
        let text = std::str::from_utf8(&raw).unwrap();
        assert!(text.starts_with(&format!("HTTP/1.1 {} ", err.status().as_u16())), "{text}");
        assert!(text.contains("retry-after: 1\r\n") && text.contains("connection: close\r\n\r\n"), "{text}");
        assert!(raw.ends_with(&crate::api::error_body(GATEWAY_FORMAT, &err)));
    }
}
