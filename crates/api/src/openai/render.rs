//! What an OpenAI client reads when something fails: the error body, and the event that ends a
//! stream whose head was already sent. Status, `type` and `code` are the error's own
//! (`weir_types::error`); this is only their OpenAI spelling.

use bytes::Bytes;

use crate::error::Error;

/// The event that ends an OpenAI stream.
pub(super) const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";

/// `{"error":{"message","type","param","code"}}`.
pub(super) fn error_body(e: &Error) -> Bytes {
    let body = serde_json::json!({
        "error": {
            "message": e.message,
            "type": e.type_str(),
            "param": e.param,
            "code": e.code_str(),
        }
    });
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// The error body as the stream's last event (OpenAI sends no `[DONE]` after it).
pub(super) fn error_event(e: &Error) -> Bytes {
    let body = error_body(e);
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&body);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_shape() {
        let e = Error::invalid_param("messages", "messages must be an array");
        let v: serde_json::Value = serde_json::from_slice(&error_body(&e)).unwrap();
        assert_eq!(v["error"]["param"], "messages");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "invalid_request");
        assert_eq!(v["error"]["message"], "messages must be an array");
    }
}
