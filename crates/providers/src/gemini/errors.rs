//! Google's error bodies (`{"error": {"code", "message", "status", "details"}}`) as Weir
//! errors: the HTTP status kept, the text scrubbed and cut, auth failures never relayed, and a
//! `google.rpc.RetryInfo` delay as `Retry-After`. Used for error statuses and for error events
//! inside a stream.

use serde_json::Value;

use crate::error::{Error, ErrorKind};
use crate::secrets::Secrets;
use crate::upstream_common::{credentials_rejected, relayed_text, says_context_length};

/// The error for an upstream error `status` whose body is `body` (a `Retry-After` header, if
/// any, in `retry_header`).
pub(super) fn status_error(
    name: &str,
    status: u16,
    retry_header: Option<u64>,
    body: &[u8],
    secrets: &Secrets,
) -> Error {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let upstream = parsed.as_ref().and_then(|v| v.get("error"));
    let google_status = upstream.and_then(|e| e.get("status")).and_then(Value::as_str);
    let message = if status == 401 || status == 403 {
        // Google's auth errors can quote the key or the project: never relay them.
        credentials_rejected(name, status)
    } else {
        let text = relayed_text(secrets, upstream.and_then(|e| e.get("message")).and_then(Value::as_str), body);
        match google_status {
            Some(s) => format!("provider {name} returned {status} {}: {text}", secrets.scrub_cut(s, 64)),
            None => format!("provider {name} returned {status}: {text}"),
        }
    };
    let mut err = Error::new(ErrorKind::Upstream { status }, message);
    // Google's statuses as the OpenAI-style codes clients and the policy act on.
    let upstream_message = upstream.and_then(|e| e.get("message")).and_then(Value::as_str).unwrap_or_default();
    match google_status {
        Some("INVALID_ARGUMENT") if says_context_length(upstream_message) => {
            err = err.with_upstream_code("context_length_exceeded");
        }
        Some("RESOURCE_EXHAUSTED") => err = err.with_upstream_code("rate_limit_exceeded"),
        _ => {}
    }
    let retry = retry_header.or_else(|| upstream.and_then(retry_delay));
    if let Some(secs) = retry {
        err = err.with_retry_after(secs);
    }
    err
}

/// Whole seconds (rounded up) of a `google.rpc.RetryInfo` detail's `retryDelay` ("37s",
/// "1.5s").
fn retry_delay(error: &Value) -> Option<u64> {
    let details = error.get("details")?.as_array()?;
    let info = details
        .iter()
        .find(|d| d.get("@type").and_then(Value::as_str).is_some_and(|t| t.ends_with("google.rpc.RetryInfo")))?;
    let delay = info.get("retryDelay")?.as_str()?.strip_suffix('s')?;
    let secs: f64 = delay.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| secs.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_429_keeps_googles_status_and_retry_delay() {
        let body = br#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED",
            "details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"36.2s"}]}}"#;
        let e = status_error("g", 429, None, body, &Secrets::default());
        assert_eq!(e.status(), 429);
        assert!(e.message.contains("RESOURCE_EXHAUSTED: Quota exceeded"), "{}", e.message);
        assert_eq!(e.retry_after, Some(37));
    }

    #[test]
    fn googles_statuses_become_the_codes_clients_and_the_policy_act_on() {
        let long = br#"{"error":{"code":400,"message":"The input token count (2551556) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#;
        let e = status_error("g", 400, None, long, &Secrets::default());
        assert_eq!((e.status().as_u16(), e.code.as_deref()), (400, Some("context_length_exceeded")));
        let other = br#"{"error":{"code":400,"message":"Invalid JSON payload received.","status":"INVALID_ARGUMENT"}}"#;
        assert_eq!(status_error("g", 400, None, other, &Secrets::default()).code, None);
        let quota = br#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}"#;
        let e = status_error("g", 429, None, quota, &Secrets::default());
        assert_eq!((e.status().as_u16(), e.code.as_deref()), (429, Some("rate_limit_exceeded")));
    }

    #[test]
    fn auth_failures_never_relay_upstream_text() {
        let body = br#"{"error":{"code":400,"message":"API key not valid: AIzaSECRET","status":"INVALID_ARGUMENT"}}"#;
        let e = status_error("g", 403, None, body, &Secrets::default());
        assert!(!e.message.contains("AIza"), "{}", e.message);
    }

    #[test]
    fn relayed_text_is_scrubbed() {
        let secrets = Secrets::new(["AIzaSECRETKEY123456"]);
        let body = br#"{"error":{"code":400,"message":"bad key AIzaSECRETKEY123456","status":"INVALID_ARGUMENT"}}"#;
        let e = status_error("g", 400, None, body, &secrets);
        assert!(!e.message.contains("AIzaSECRETKEY123456"), "{}", e.message);
        assert!(e.message.contains("INVALID_ARGUMENT"), "{}", e.message);
    }
}
