//! The Anthropic front door (`POST /v1/messages`): checking Messages API bodies into a
//! [`FrontDoor`] with a 400 naming the offending field, Anthropic's error bodies and its
//! `event: <type>` stream framing ([`render`]), and its conversions to and from the canonical
//! types ([`canonical`]).
//!
//! The body is checked by the same one-pass scan as OpenAI's (`openai::scan`, which also
//! records the texts of `system` here), so it stays the client's bytes unless a key repeats.

pub mod canonical;
mod render;

use bytes::Bytes;
use http::Method;
use serde_json::{Map, Value};

use crate::canonical::{ChatRequest, ChatResponse, ConvertError, StreamEvent};
use crate::error::{Error, ErrorKind};
use crate::exchange::JsonBody;
use crate::format::{ApiFormat, Operation};
use crate::json::{index, parse_body};
use crate::openai::scan;
use crate::{BodyUse, CallRoute, Format, FrontDoor};

pub use render::event_type;
pub(crate) use render::frame_as;

/// Anthropic's Messages API format.
#[derive(Debug, Clone, Copy)]
pub struct Anthropic;

impl Format for Anthropic {
    const FORMAT: ApiFormat = ApiFormat::Anthropic;
    const ROUTES: &'static [CallRoute] = &[(Method::POST, "/v1/messages", Operation::Chat)];
    // The stream's own last event (`message_stop`) ends it; there is no marker after it.
    const END_OF_STREAM: Option<&'static [u8]> = None;
    const MAX_TOKENS: &'static [&'static str] = &["/max_tokens"];
    type EventReader = canonical::StreamReader;
    type EventWriter = canonical::StreamWriter;

    fn read_request(op: Operation, bytes: Bytes, usage: BodyUse) -> Result<FrontDoor, Error> {
        read_request(op, bytes, usage)
    }

    fn validate(_: Operation, body: &Map<String, Value>) -> Result<(String, bool), Error> {
        validate(body)
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
        render::frame(payload)
    }

    fn request_to_canonical(_: Operation, body: Map<String, Value>) -> Result<ChatRequest, ConvertError> {
        canonical::request_to_canonical(body)
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
        reader.event(payload, out)
    }

    fn write_event(writer: &mut Self::EventWriter, event: StreamEvent, out: &mut Vec<Bytes>) {
        writer.event(event, out);
    }

    fn end_events(writer: &mut Self::EventWriter, out: &mut Vec<Bytes>) {
        writer.end(out);
    }
}

/// Checks a Messages API body: JSON syntax, an object, and the fields Anthropic requires
/// ([`validate`]'s rules). Only chat exists in this format, so `op` is always chat.
///
/// # Errors
/// 400 `invalid_json` for malformed JSON, 400 `invalid_request` naming the first invalid field.
pub fn read_request(_: Operation, bytes: Bytes, usage: BodyUse) -> Result<FrontDoor, Error> {
    if bytes.is_empty() {
        return Err(Error::new(ErrorKind::InvalidJson, "request body is empty; expected a JSON object"));
    }
    let (model, stream, index) = match scan::scan_for(&bytes, usage == BodyUse::Read, true) {
        Ok(scan::Scanned { top: Some(mut top), repeated: false, mut system_texts, chat_texts, .. }) => {
            let (model, stream) = validate_scanned(&top)?;
            // Instructions first, as `json::visit_prompt_texts` reads them.
            system_texts.extend(chat_texts);
            (model, stream, index::BodyIndex { texts: system_texts, fields: std::mem::take(&mut top.fields) })
        }
        Ok(scan::Scanned { top: Some(_), repeated: true, .. }) => {
            let parsed = parse_body(&bytes)?;
            let (model, stream) = validate(&parsed.map)?;
            return Ok(FrontDoor { model, stream, body: JsonBody::from_map(parsed.map) });
        }
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

/// Validates the fields Weir relies on and Anthropic requires, returning `(model, stream)`.
///
/// # Errors
/// 400 naming the first invalid field.
pub fn validate(body: &Map<String, Value>) -> Result<(String, bool), Error> {
    use scan::{Message, Messages};
    let field = |name: &str| body.get(name).map(crate::openai::kind);
    let messages = body.get("messages").map(|m| match m {
        Value::Array(items) => Messages::Items(
            items
                .iter()
                .map(|m| match m.as_object() {
                    Some(o) => Message {
                        object: true,
                        role: o.get("role").map(crate::openai::kind),
                        content: o.get("content").map(crate::openai::kind),
                    },
                    None => Message::default(),
                })
                .collect(),
        ),
        _ => Messages::NotArray,
    });
    let top = scan::Top {
        model: field("model"),
        stream: field("stream"),
        messages,
        max_tokens: field("max_tokens"),
        temperature: field("temperature"),
        system: field("system"),
        ..scan::Top::default()
    };
    validate_scanned(&top)
}

/// [`validate`] on a scan's summary: the same rules, order and errors.
fn validate_scanned(top: &scan::Top<'_>) -> Result<(String, bool), Error> {
    use scan::Kind;
    let model = match &top.model {
        Some(Kind::Str(Some(m))) if !m.trim().is_empty() => m.clone().into_owned(),
        Some(Kind::Str(_)) => return Err(Error::invalid_param("model", "model: must not be empty")),
        Some(_) => return Err(Error::invalid_param("model", "model: Input should be a valid string")),
        None => return Err(Error::invalid_param("model", "model: Field required")),
    };
    let messages = match &top.messages {
        Some(scan::Messages::Items(m)) if !m.is_empty() => m,
        Some(scan::Messages::Items(_)) => {
            return Err(Error::invalid_param("messages", "messages: at least one message is required"));
        }
        Some(scan::Messages::NotArray) => {
            return Err(Error::invalid_param("messages", "messages: Input should be a valid list"));
        }
        None => return Err(Error::invalid_param("messages", "messages: Field required")),
    };
    for (i, m) in messages.iter().enumerate() {
        let at = |field: &str| if field.is_empty() { format!("messages.{i}") } else { format!("messages.{i}.{field}") };
        let bad = |field: &str, why: &str| {
            Error::new(ErrorKind::InvalidRequest, format!("{}: {why}", at(field))).with_param(at(field))
        };
        if !m.object {
            return Err(bad("", "Input should be a valid dictionary"));
        }
        match &m.role {
            Some(Kind::Str(Some(r))) if r == "user" || r == "assistant" => {}
            Some(_) => return Err(bad("role", "Input should be 'user' or 'assistant'")),
            None => return Err(bad("role", "Field required")),
        }
        match &m.content {
            Some(Kind::Str(_) | Kind::Array) => {}
            Some(_) => return Err(bad("content", "Input should be a valid string or a list of content blocks")),
            None => return Err(bad("content", "Field required")),
        }
    }
    match top.max_tokens.as_ref().map(Kind::as_u64) {
        Some(Some(1..)) => {}
        Some(_) => {
            return Err(Error::invalid_param("max_tokens", "max_tokens: Input should be an integer of at least 1"));
        }
        None => return Err(Error::invalid_param("max_tokens", "max_tokens: Field required")),
    }
    let stream = match &top.stream {
        None | Some(Kind::Null) => false,
        Some(Kind::Bool(b)) => *b,
        Some(_) => return Err(Error::invalid_param("stream", "stream: Input should be a valid boolean")),
    };
    if let Some(t) = top.temperature.as_ref().filter(|v| **v != Kind::Null)
        && !t.as_f64().is_some_and(|t| (0.0..=1.0).contains(&t))
    {
        return Err(Error::invalid_param("temperature", "temperature: Input should be a number between 0 and 1"));
    }
    if !matches!(top.system, None | Some(Kind::Null | Kind::Str(_) | Kind::Array)) {
        return Err(Error::invalid_param("system", "system: Input should be a valid string or a list of text blocks"));
    }
    Ok((model, stream))
}

#[cfg(test)]
mod tests;
