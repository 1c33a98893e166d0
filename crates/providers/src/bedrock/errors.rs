//! Bedrock's errors as Weir errors: an HTTP error status with its `x-amzn-errortype` header and
//! `{"message": ...}` body, or an exception frame inside a stream. The AWS error type decides the
//! status (AWS's own status for the type); upstream text is scrubbed of secrets, and auth errors
//! never relay it.

use crate::error::{Error, ErrorKind};
use crate::secrets::Secrets;
use crate::upstream_common::{MAX_RELAYED_MESSAGE, says_context_length};

/// The status of an AWS error type (`ThrottlingException`, or a stream's `throttlingException`;
/// a `x-amzn-errortype` value may carry `:http://...` after the name). `None` for a type not
/// known here: the HTTP status stands.
pub fn status_of(error_type: &str) -> Option<u16> {
    let name = error_type.split(':').next().unwrap_or_default();
    let status = match name.to_ascii_lowercase().as_str() {
        "throttlingexception" | "toomanyrequestsexception" | "servicequotaexceededexception" => 429,
        "validationexception" => 400,
        "accessdeniedexception" | "unrecognizedclientexception" | "invalidsignatureexception" => 403,
        "expiredtokenexception" | "incompletesignatureexception" | "missingauthenticationtokenexception" => 403,
        "resourcenotfoundexception" => 404,
        "modelnotreadyexception" | "serviceunavailableexception" => 503,
        "modeltimeoutexception" => 408,
        "modelerrorexception" | "modelstreamerrorexception" => 424,
        "internalserverexception" => 500,
        _ => return None,
    };
    Some(status)
}

/// The error for an upstream error: status `status` (HTTP, or from the frame's type), AWS type
/// `error_type` when given, message `message` from upstream.
pub fn upstream_error(
    name: &str,
    status: u16,
    error_type: Option<&str>,
    message: Option<&str>,
    secrets: &Secrets,
) -> Error {
    let status = error_type.and_then(status_of).unwrap_or(status);
    let kind = error_type.map(|t| t.split(':').next().unwrap_or_default()).filter(|t| !t.is_empty());
    let code = code_of(kind.unwrap_or_default(), message.unwrap_or_default());
    let message = if status == 401 || status == 403 {
        // AWS auth messages quote the canonical request and parts of the credentials.
        format!("provider {name} rejected Weir's AWS credentials (upstream status {status})")
    } else {
        let what = kind.map(|k| secrets.scrub_cut(k, 100));
        let text = message.map(|m| secrets.scrub_cut(m, MAX_RELAYED_MESSAGE)).unwrap_or_default();
        match what {
            Some(k) => format!("provider {name} returned {status} {k}: {text}"),
            None => format!("provider {name} returned {status}: {text}"),
        }
    };
    let err = Error::new(ErrorKind::Upstream { status }, message);
    match code {
        Some(code) => err.with_upstream_code(code),
        None => err,
    }
}

/// The OpenAI-style code clients and the policy act on, from AWS error type `kind` and its
/// `message`: a validation error about the input's length is `context_length_exceeded`
/// ("Input is too long for requested model", a Claude model's "prompt is too long"), a
/// throttle `rate_limit_exceeded`.
fn code_of(kind: &str, message: &str) -> Option<&'static str> {
    match kind.to_ascii_lowercase().as_str() {
        "validationexception" if says_context_length(message) => Some("context_length_exceeded"),
        "throttlingexception" | "toomanyrequestsexception" => Some("rate_limit_exceeded"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_error_types_decide_the_status() {
        assert_eq!(status_of("ThrottlingException"), Some(429));
        assert_eq!(status_of("throttlingException"), Some(429));
        assert_eq!(status_of("ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"), Some(400));
        assert_eq!(status_of("AccessDeniedException"), Some(403));
        assert_eq!(status_of("ModelNotReadyException"), Some(503));
        assert_eq!(status_of("SomethingNew"), None);
    }

    #[test]
    fn aws_errors_become_the_codes_clients_and_the_policy_act_on() {
        let s = Secrets::default();
        let code = |status, kind, message| upstream_error("b", status, Some(kind), Some(message), &s).code;
        let long = "The model returned the following errors: Input is too long for requested model.";
        assert_eq!(code(400, "ValidationException", long).as_deref(), Some("context_length_exceeded"));
        let claude = "prompt is too long: 210000 tokens > 200000 maximum";
        assert_eq!(code(400, "validationException", claude).as_deref(), Some("context_length_exceeded"));
        assert_eq!(code(400, "ValidationException", "Malformed input request"), None);
        let throttled = "Too many requests, please wait before trying again.";
        assert_eq!(code(429, "ThrottlingException", throttled).as_deref(), Some("rate_limit_exceeded"));
        assert_eq!(code(500, "InternalServerException", "oops"), None);
    }

    #[test]
    fn auth_errors_never_relay_upstream_text_and_others_are_scrubbed() {
        let secrets = Secrets::new(["wJalrXUtnFEMI/K7MDENG"]);
        let e = upstream_error(
            "b",
            403,
            Some("AccessDeniedException"),
            Some("key AKID... wJalrXUtnFEMI/K7MDENG"),
            &secrets,
        );
        assert_eq!(e.kind, ErrorKind::Upstream { status: 403 });
        assert_eq!(e.status(), 502, "an upstream auth failure is the gateway's, not the client's");
        assert!(!e.message.contains("AKID"), "{}", e.message);
        let e = upstream_error("b", 400, Some("ValidationException"), Some("bad wJalrXUtnFEMI/K7MDENG"), &secrets);
        assert_eq!(e.status(), 400);
        assert!(e.message.contains("bad <redacted>") && e.message.contains("ValidationException"), "{}", e.message);
    }
}
