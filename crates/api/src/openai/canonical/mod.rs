//! OpenAI Chat Completions to and from the canonical types (`crate::canonical`): requests,
//! whole answers and `chat.completion.chunk` stream events. Used only when the client's format
//! and the provider's differ; the same format goes through as the client's bytes.
//!
//! Reading keeps every field no canonical field holds in an `extra` (OpenAI's own), so writing
//! back to OpenAI loses nothing but spelling: a lone text part comes back as a plain string,
//! `stop` as a list, `max_tokens` as `max_completion_tokens`. Writing from another format
//! leaves that format's `extra` out. The fixture tests pin both directions.

mod message;
mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;

use serde_json::{Map, Value};

use crate::canonical::{ConvertError, Finish};

pub use request::{request_from_canonical, request_to_canonical};
pub use response::{response_from_canonical, response_to_canonical};
pub use stream::{StreamReader, StreamWriter};

pub(crate) type Obj = Map<String, Value>;

// Error paths are built for every message and part of every translated request, so they are
// concatenated rather than formatted (`format!` cost ~0.5k instructions each).

/// `path.key`, or `key` at the top.
pub(crate) fn at(path: &str, key: &str) -> String {
    if path.is_empty() {
        return key.to_owned();
    }
    let mut s = String::with_capacity(path.len() + 1 + key.len());
    s.push_str(path);
    s.push('.');
    s.push_str(key);
    s
}

/// `path[i]`.
pub(crate) fn indexed(path: &str, i: usize) -> String {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut n = i;
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut s = String::with_capacity(path.len() + 2 + digits.len() - start);
    s.push_str(path);
    s.push('[');
    digits[start..].iter().for_each(|&d| s.push(char::from(d)));
    s.push(']');
    s
}

pub(crate) fn object(v: Value, path: &str) -> Result<Obj, ConvertError> {
    match v {
        Value::Object(o) => Ok(o),
        _ => Err(ConvertError::new(path, "must be an object")),
    }
}

/// A field that may be absent or `null`.
pub(crate) fn take(o: &mut Obj, key: &str) -> Option<Value> {
    o.remove(key).filter(|v| !v.is_null())
}

pub(crate) fn take_string(o: &mut Obj, key: &str, path: &str) -> Result<Option<String>, ConvertError> {
    match take(o, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ConvertError::new(at(path, key), "must be a string")),
    }
}

pub(crate) fn need_string(o: &mut Obj, key: &str, path: &str) -> Result<String, ConvertError> {
    take_string(o, key, path)?.ok_or_else(|| ConvertError::new(at(path, key), "is required"))
}

pub(crate) fn take_u64(o: &mut Obj, key: &str, path: &str) -> Result<Option<u64>, ConvertError> {
    take(o, key)
        .map(|v| v.as_u64().ok_or_else(|| ConvertError::new(at(path, key), "must be a whole number")))
        .transpose()
}

pub(crate) fn take_f64(o: &mut Obj, key: &str, path: &str) -> Result<Option<f64>, ConvertError> {
    take(o, key).map(|v| v.as_f64().ok_or_else(|| ConvertError::new(at(path, key), "must be a number"))).transpose()
}

pub(crate) fn take_array(o: &mut Obj, key: &str, path: &str) -> Result<Vec<Value>, ConvertError> {
    match take(o, key) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(ConvertError::new(at(path, key), "must be an array")),
    }
}

pub(crate) fn take_object(o: &mut Obj, key: &str, path: &str) -> Result<Option<Obj>, ConvertError> {
    take(o, key).map(|v| object(v, &at(path, key))).transpose()
}

fn finish_to_canonical(reason: &str) -> Finish {
    match reason {
        "stop" => Finish::Stop,
        "length" => Finish::Length,
        "tool_calls" => Finish::ToolCalls,
        "content_filter" => Finish::ContentFilter,
        other => Finish::Other(other.to_owned()),
    }
}

/// OpenAI's name for `finish`; a reason of another format that OpenAI lacks is `stop`.
fn finish_from_canonical(finish: &Finish, keep: bool) -> &str {
    match finish {
        Finish::Stop | Finish::StopSequence(_) => "stop",
        Finish::Length => "length",
        Finish::ToolCalls => "tool_calls",
        Finish::ContentFilter => "content_filter",
        Finish::Other(reason) if keep => reason,
        Finish::Other(_) => "stop",
    }
}
