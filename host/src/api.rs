//! The OpenAI wire format at the front door: parsing and validating request bodies into a
//! [`GatewayRequest`], with a 400 that names the offending field for anything malformed.

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::error::{Error, ErrorKind};
use crate::providers::Endpoint;

/// Roles accepted in `messages[].role`.
const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool", "function"];

/// Parses the body as a JSON object.
///
/// # Errors
/// 400 `invalid_json` for malformed JSON, 400 `invalid_request` for a non-object.
pub fn parse_object(body: &Bytes) -> Result<Map<String, Value>, Error> {
    if body.is_empty() {
        return Err(Error::new(ErrorKind::InvalidJson, "request body is empty; expected a JSON object"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::new(ErrorKind::InvalidRequest, "request body must be a JSON object")),
        Err(e) => Err(Error::new(ErrorKind::InvalidJson, format!("request body is not valid JSON: {e}"))),
    }
}

/// Validates the fields Weir relies on, returning `(model, stream)`.
///
/// # Errors
/// 400 naming the first invalid field.
pub fn validate(endpoint: Endpoint, body: &Map<String, Value>) -> Result<(String, bool), Error> {
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
        Some(Value::String(_)) => return Err(Error::invalid_param("model", "model must not be empty")),
        Some(_) => return Err(Error::invalid_param("model", "model must be a string")),
        None => return Err(Error::invalid_param("model", "missing required field: model")),
    };
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(Error::invalid_param("stream", "stream must be a boolean")),
    };
    match endpoint {
        Endpoint::ChatCompletions => validate_chat(body)?,
        Endpoint::Embeddings => {
            if stream {
                return Err(Error::invalid_param("stream", "embeddings cannot be streamed"));
            }
            validate_embeddings(body)?;
        }
    }
    Ok((model, stream))
}

fn validate_chat(body: &Map<String, Value>) -> Result<(), Error> {
    let messages = match body.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => return Err(Error::invalid_param("messages", "messages must not be empty")),
        Some(_) => return Err(Error::invalid_param("messages", "messages must be an array")),
        None => return Err(Error::invalid_param("messages", "missing required field: messages")),
    };
    for (i, m) in messages.iter().enumerate() {
        let Some(obj) = m.as_object() else {
            return Err(Error::new(ErrorKind::InvalidRequest, format!("messages[{i}] must be an object"))
                .with_param(format!("messages[{i}]")));
        };
        match obj.get("role").and_then(Value::as_str) {
            Some(r) if ROLES.contains(&r) => {}
            Some(r) => {
                return Err(Error::new(
                    ErrorKind::InvalidRequest,
                    format!("messages[{i}].role {r:?} is not one of {}", ROLES.join(", ")),
                )
                .with_param(format!("messages[{i}].role")));
            }
            None => {
                return Err(Error::new(ErrorKind::InvalidRequest, format!("messages[{i}].role is required"))
                    .with_param(format!("messages[{i}].role")));
            }
        }
        match obj.get("content") {
            None | Some(Value::Null | Value::String(_) | Value::Array(_)) => {}
            Some(_) => {
                return Err(Error::new(
                    ErrorKind::InvalidRequest,
                    format!("messages[{i}].content must be a string or an array of content parts"),
                )
                .with_param(format!("messages[{i}].content")));
            }
        }
    }
    for field in ["max_tokens", "max_completion_tokens", "n"] {
        if let Some(v) = body.get(field).filter(|v| !v.is_null())
            && v.as_u64().is_none()
        {
            return Err(Error::invalid_param(field, format!("{field} must be a non-negative integer")));
        }
    }
    if let Some(t) = body.get("temperature").filter(|v| !v.is_null()) {
        match t.as_f64() {
            Some(t) if (0.0..=2.0).contains(&t) => {}
            _ => return Err(Error::invalid_param("temperature", "temperature must be a number between 0 and 2")),
        }
    }
    Ok(())
}

fn validate_embeddings(body: &Map<String, Value>) -> Result<(), Error> {
    match body.get("input") {
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(items)) if items.is_empty() => Err(Error::invalid_param("input", "input must not be empty")),
        Some(Value::Array(items)) => {
            let ok = items
                .iter()
                .all(|v| v.is_string() || v.is_u64() || v.as_array().is_some_and(|a| a.iter().all(Value::is_u64)));
            if ok {
                Ok(())
            } else {
                Err(Error::invalid_param("input", "input must be a string, an array of strings, or token arrays"))
            }
        }
        Some(_) => Err(Error::invalid_param("input", "input must be a string or an array")),
        None => Err(Error::invalid_param("input", "missing required field: input")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(endpoint: Endpoint, v: Value) -> Result<(String, bool), Error> {
        validate(endpoint, v.as_object().unwrap())
    }

    #[test]
    fn malformed_json_is_invalid_json() {
        let err = parse_object(&Bytes::from_static(b"{\"model\":")).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidJson);
        assert_eq!(err.status(), 400);
        assert_eq!(parse_object(&Bytes::from_static(b"[1]")).unwrap_err().kind, ErrorKind::InvalidRequest);
    }

    #[test]
    fn chat_fields_are_checked() {
        let ok = json!({"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true});
        assert_eq!(check(Endpoint::ChatCompletions, ok).unwrap(), ("m".into(), true));
        let err = check(Endpoint::ChatCompletions, json!({"messages":[]})).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("model"));
        let err = check(Endpoint::ChatCompletions, json!({"model":"m","messages":"hi"})).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages"));
        let err = check(Endpoint::ChatCompletions, json!({"model":"m","messages":[{"role":"robot"}]})).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages[0].role"));
        let err = check(Endpoint::ChatCompletions, json!({"model":"m","messages":[{"role":"user"}],"max_tokens":-1}))
            .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("max_tokens"));
    }

    #[test]
    fn embeddings_input_is_checked() {
        assert!(check(Endpoint::Embeddings, json!({"model":"e","input":["a","b"]})).is_ok());
        assert!(check(Endpoint::Embeddings, json!({"model":"e","input":[[1,2]]})).is_ok());
        let err = check(Endpoint::Embeddings, json!({"model":"e","input":{}})).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("input"));
    }
}
