//! The OpenAI front door (chat completions and embeddings): checking request bodies into a
//! [`FrontDoor`], with a 400 that names the offending field for anything malformed, and
//! rendering errors and stream events the way OpenAI clients read them ([`render`]).
//!
//! [`read_request`] scans the body once ([`scan`]) without building a JSON tree and validates
//! the scan's summary; the body stays the client's bytes ([`JsonBody`]) and is parsed into a
//! tree only if a plugin or provider reads its fields. Re-serialising or even parsing a 1 KB
//! body into a tree costs more instructions than any other single step of a proxied request
//! and a body that nothing edits needs neither: its bytes go upstream
//! as they are. The one way the bytes can say something other than their tree is a repeated
//! key (Weir keeps the last copy; another parser may keep the first), so such a body is
//! parsed at once and always re-serialised: the provider then reads what routing and plugins
//! read.

pub mod canonical;
mod fast_scan;
mod render;
pub(crate) mod scan;
mod summary;

use bytes::Bytes;
use http::Method;
use serde_json::{Map, Value};

use crate::canonical::{ChatRequest, ChatResponse, ConvertError, StreamEvent};
use crate::error::{Error, ErrorKind};
use crate::exchange::JsonBody;
use crate::format::{ApiFormat, Operation};
use crate::json::{index, parse_body};
use crate::{BodyUse, CallRoute, Format, FrontDoor};

/// OpenAI's API format.
#[derive(Debug, Clone, Copy)]
pub struct OpenAi;

impl Format for OpenAi {
    const FORMAT: ApiFormat = ApiFormat::OpenAi;
    const ROUTES: &'static [CallRoute] = &[
        (Method::POST, "/v1/chat/completions", Operation::Chat),
        (Method::POST, "/v1/embeddings", Operation::Embeddings),
    ];
    const END_OF_STREAM: Option<&'static [u8]> = Some(render::DONE_FRAME);
    // `max_tokens` is the older name, still accepted (and refused by reasoning models).
    const MAX_TOKENS: &'static [&'static str] = &["/max_completion_tokens", "/max_tokens"];
    type EventReader = canonical::StreamReader;
    type EventWriter = canonical::StreamWriter;

    fn read_request(op: Operation, bytes: Bytes, usage: BodyUse) -> Result<FrontDoor, Error> {
        read_request(op, bytes, usage)
    }

    fn validate(op: Operation, body: &Map<String, Value>) -> Result<(String, bool), Error> {
        validate(op, body)
    }

    fn set_model(body: &mut Map<String, Value>, model: String) {
        body.insert("model".into(), Value::String(model));
    }

    fn error_body(e: &Error) -> Bytes {
        render::error_body(e)
    }

    fn error_event(e: &Error) -> Bytes {
        render::error_event(e)
    }

    fn frame_event(payload: &[u8]) -> Bytes {
        crate::sse::frame(payload)
    }

    fn request_to_canonical(op: Operation, body: Map<String, Value>) -> Result<ChatRequest, ConvertError> {
        match op {
            Operation::Chat => canonical::request_to_canonical(body),
            Operation::Embeddings => Err(ConvertError::new("", "embeddings have no canonical form")),
        }
    }

    fn request_from_canonical(req: ChatRequest) -> Map<String, Value> {
        canonical::request_from_canonical(req)
    }

    fn response_to_canonical(body: Map<String, Value>) -> Result<ChatResponse, ConvertError> {
        canonical::response_to_canonical(body)
    }

    fn response_from_canonical(resp: ChatResponse) -> Map<String, Value> {
        canonical::response_from_canonical(resp)
    }

    fn read_event(
        reader: &mut Self::EventReader,
        payload: &[u8],
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), ConvertError> {
        reader.chunk(payload, out)
    }

    fn write_event(writer: &mut Self::EventWriter, event: StreamEvent, out: &mut Vec<Bytes>) {
        out.push(Bytes::from(weir_types::json::write::to_vec(&writer.event(event))));
    }

    fn end_events(_: &mut Self::EventWriter, _: &mut Vec<Bytes>) {}
}

/// Roles accepted in `messages[].role`.
const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool", "function"];

/// Checks a request body for `op`: JSON syntax, an object, the fields Weir relies on
/// ([`validate`]'s rules and errors). The body stays the client's bytes (parsed into a tree
/// later only if something needs one), except when a key repeats: then it is parsed at once,
/// and the tree decides which copy counts.
///
/// # Errors
/// 400 `invalid_json` for malformed JSON, 400 `invalid_request` naming the first invalid
/// field.
pub fn read_request(op: Operation, bytes: Bytes, usage: BodyUse) -> Result<FrontDoor, Error> {
    if bytes.is_empty() {
        return Err(Error::new(ErrorKind::InvalidJson, "request body is empty; expected a JSON object"));
    }
    let (model, stream, index) = match scan::scan(&bytes, usage == BodyUse::Read) {
        Ok(scan::Scanned { top: Some(mut top), repeated: false, chat_texts, input_texts, .. }) => {
            let (model, stream) = validate_scanned(op, &top)?;
            let texts = match op {
                Operation::Chat => chat_texts,
                Operation::Embeddings => input_texts,
            };
            (model, stream, index::BodyIndex { texts, fields: std::mem::take(&mut top.fields) })
        }
        // Rare and never the fast path: the tree decides which copy counts.
        Ok(scan::Scanned { top: Some(_), repeated: true, .. }) => return read_tree(op, &bytes),
        Ok(scan::Scanned { top: None, .. }) => {
            return Err(Error::new(ErrorKind::InvalidRequest, "request body must be a JSON object"));
        }
        Err(e) => return Err(Error::new(ErrorKind::InvalidJson, format!("request body is not valid JSON: {e}"))),
    };
    let body = match usage {
        BodyUse::Forward => JsonBody::from_raw(bytes),
        BodyUse::Read => JsonBody::from_indexed(bytes, index),
    };
    Ok(FrontDoor { model, stream, body })
}

/// [`read_request`] for a body that repeats a key: through a tree, whose bytes are never
/// forwarded (they may say something else to another parser).
fn read_tree(op: Operation, bytes: &Bytes) -> Result<FrontDoor, Error> {
    let parsed = parse_body(bytes)?;
    let (model, stream) = validate(op, &parsed.map)?;
    Ok(FrontDoor { model, stream, body: JsonBody::from_map(parsed.map) })
}

/// Validates the fields Weir relies on, returning `(model, stream)`.
///
/// # Errors
/// 400 naming the first invalid field.
pub fn validate(op: Operation, body: &Map<String, Value>) -> Result<(String, bool), Error> {
    validate_scanned(op, &summarise(body))
}

/// The summary the scan makes, taken from a tree instead: one set of rules for both.
fn summarise(body: &Map<String, Value>) -> scan::Top<'_> {
    use scan::{Input, Message, Messages};
    let field = |name: &str| body.get(name).map(kind);
    let messages = body.get("messages").map(|m| match m {
        Value::Array(items) => Messages::Items(
            items
                .iter()
                .map(|m| match m.as_object() {
                    Some(o) => {
                        Message { object: true, role: o.get("role").map(kind), content: o.get("content").map(kind) }
                    }
                    None => Message::default(),
                })
                .collect(),
        ),
        _ => Messages::NotArray,
    });
    let input = body.get("input").map(|v| match v {
        Value::String(_) => Input::Str,
        Value::Array(items) => Input::Array {
            len: items.len(),
            ok: items
                .iter()
                .all(|v| v.is_string() || v.is_u64() || v.as_array().is_some_and(|a| a.iter().all(Value::is_u64))),
        },
        _ => Input::Other,
    });
    scan::Top {
        model: field("model"),
        stream: field("stream"),
        messages,
        max_tokens: field("max_tokens"),
        max_completion_tokens: field("max_completion_tokens"),
        n: field("n"),
        temperature: field("temperature"),
        input,
        system: None,
        fields: Vec::new(),
    }
}

/// A tree value as the scan summarises it.
pub(crate) fn kind(v: &Value) -> scan::Kind<'_> {
    use scan::Kind;
    match v {
        Value::Null => Kind::Null,
        Value::Bool(b) => Kind::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Kind::U64(u),
            (None, Some(i)) => Kind::I64(i),
            (None, None) => Kind::F64(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => Kind::Str(Some(std::borrow::Cow::Borrowed(s))),
        Value::Array(_) => Kind::Array,
        Value::Object(_) => Kind::Object,
    }
}

/// [`validate`] on a scan's summary: the same rules, order and errors.
fn validate_scanned(op: Operation, top: &scan::Top<'_>) -> Result<(String, bool), Error> {
    use scan::Kind;
    let model = match &top.model {
        Some(Kind::Str(Some(m))) if !m.trim().is_empty() => m.clone().into_owned(),
        Some(Kind::Str(_)) => return Err(Error::invalid_param("model", "model must not be empty")),
        Some(_) => return Err(Error::invalid_param("model", "model must be a string")),
        None => return Err(Error::invalid_param("model", "missing required field: model")),
    };
    let stream = match &top.stream {
        None | Some(Kind::Null) => false,
        Some(Kind::Bool(b)) => *b,
        Some(_) => return Err(Error::invalid_param("stream", "stream must be a boolean")),
    };
    match op {
        Operation::Chat => validate_scanned_chat(top)?,
        Operation::Embeddings => {
            if stream {
                return Err(Error::invalid_param("stream", "embeddings cannot be streamed"));
            }
            match &top.input {
                Some(scan::Input::Str | scan::Input::Array { ok: true, len: 1.. }) => {}
                Some(scan::Input::Array { len: 0, .. }) => {
                    return Err(Error::invalid_param("input", "input must not be empty"));
                }
                Some(scan::Input::Array { .. }) => {
                    return Err(Error::invalid_param(
                        "input",
                        "input must be a string, an array of strings, or token arrays",
                    ));
                }
                Some(scan::Input::Other) => {
                    return Err(Error::invalid_param("input", "input must be a string or an array"));
                }
                None => return Err(Error::invalid_param("input", "missing required field: input")),
            }
        }
    }
    Ok((model, stream))
}

fn validate_scanned_chat(top: &scan::Top<'_>) -> Result<(), Error> {
    use scan::Kind;
    let messages = match &top.messages {
        Some(scan::Messages::Items(m)) if !m.is_empty() => m,
        Some(scan::Messages::Items(_)) => {
            return Err(Error::invalid_param("messages", "messages must not be empty"));
        }
        Some(scan::Messages::NotArray) => return Err(Error::invalid_param("messages", "messages must be an array")),
        None => return Err(Error::invalid_param("messages", "missing required field: messages")),
    };
    for (i, m) in messages.iter().enumerate() {
        if !m.object {
            return Err(not_an_object(i));
        }
        match &m.role {
            Some(Kind::Str(Some(r))) => check_role(i, r)?,
            _ => return Err(role_required(i)),
        }
        if !matches!(m.content, None | Some(Kind::Null | Kind::Str(_) | Kind::Array)) {
            return Err(bad_content(i));
        }
    }
    for (field, v) in
        [("max_tokens", &top.max_tokens), ("max_completion_tokens", &top.max_completion_tokens), ("n", &top.n)]
    {
        if let Some(v) = v.as_ref().filter(|v| **v != Kind::Null)
            && v.as_u64().is_none()
        {
            return Err(not_a_count(field));
        }
    }
    if let Some(t) = top.temperature.as_ref().filter(|v| **v != Kind::Null) {
        check_temperature(t.as_f64())?;
    }
    Ok(())
}

fn not_an_object(i: usize) -> Error {
    Error::new(ErrorKind::InvalidRequest, format!("messages[{i}] must be an object"))
        .with_param(format!("messages[{i}]"))
}

fn check_role(i: usize, role: &str) -> Result<(), Error> {
    if ROLES.contains(&role) {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::InvalidRequest,
        format!("messages[{i}].role {role:?} is not one of {}", ROLES.join(", ")),
    )
    .with_param(format!("messages[{i}].role")))
}

fn role_required(i: usize) -> Error {
    Error::new(ErrorKind::InvalidRequest, format!("messages[{i}].role is required"))
        .with_param(format!("messages[{i}].role"))
}

fn bad_content(i: usize) -> Error {
    Error::new(
        ErrorKind::InvalidRequest,
        format!("messages[{i}].content must be a string or an array of content parts"),
    )
    .with_param(format!("messages[{i}].content"))
}

fn not_a_count(field: &'static str) -> Error {
    Error::invalid_param(field, format!("{field} must be a non-negative integer"))
}

fn check_temperature(t: Option<f64>) -> Result<(), Error> {
    match t {
        Some(t) if (0.0..=2.0).contains(&t) => Ok(()),
        _ => Err(Error::invalid_param("temperature", "temperature must be a number between 0 and 2")),
    }
}

#[cfg(test)]
mod tests;
