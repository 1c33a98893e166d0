//! The OpenAI Responses front door (`POST /v1/responses`). To an OpenAI provider the client's
//! bytes go as they are (`/responses` upstream, every feature kept); to any other provider the
//! request, the answer and the stream are translated through the canonical types for text,
//! images, function tools and streaming ([`convert`], [`stream`]). Errors have OpenAI's shape;
//! stream events are framed `event: <type>` + `data:` and a stream ends with its own
//! `response.completed`, no `[DONE]`.

pub mod convert;
pub mod stream;
#[cfg(test)]
mod tests;

use bytes::Bytes;
use http::Method;
use serde_json::{Map, Value};

use crate::anthropic::frame_as;
use crate::canonical::{ChatRequest, ChatResponse, ConvertError, StreamEvent};
use crate::error::{Error, ErrorKind};
use crate::exchange::JsonBody;
use crate::format::{ApiFormat, Operation};
use crate::json::parse_body;
use crate::{BodyUse, CallRoute, Format, FrontDoor};

/// OpenAI's Responses API format.
#[derive(Debug, Clone, Copy)]
pub struct Responses;

impl Format for Responses {
    const FORMAT: ApiFormat = ApiFormat::Responses;
    const ROUTES: &'static [CallRoute] = &[(Method::POST, "/v1/responses", Operation::Chat)];
    const END_OF_STREAM: Option<&'static [u8]> = None;
    const MAX_TOKENS: &'static [&'static str] = &["/max_output_tokens"];
    type EventReader = stream::StreamReader;
    type EventWriter = stream::StreamWriter;

    fn read_request(_: Operation, bytes: Bytes, _: BodyUse) -> Result<FrontDoor, Error> {
        let parsed = parse_body(&bytes)?;
        let (model, stream) = validate(&parsed.map)?;
        let body =
            if parsed.faithful { JsonBody::from_parsed(bytes, parsed.map) } else { JsonBody::from_map(parsed.map) };
        Ok(FrontDoor { model, stream, body })
    }

    fn validate(_: Operation, body: &Map<String, Value>) -> Result<(String, bool), Error> {
        validate(body)
    }

    fn set_model(body: &mut Map<String, Value>, model: String) {
        body.insert("model".into(), Value::String(model));
    }

    fn error_body(e: &Error) -> Bytes {
        crate::openai::OpenAi::error_body(e)
    }

    fn error_event(e: &Error) -> Bytes {
        let body = serde_json::json!({
            "type": "error",
            "code": e.code_str(),
            "message": e.message,
            "param": e.param,
        });
        frame_as("error", &serde_json::to_vec(&body).unwrap_or_default())
    }

    fn frame_event(payload: &[u8]) -> Bytes {
        frame_as(crate::anthropic::event_type(payload).unwrap_or("message"), payload)
    }

    fn request_to_canonical(_: Operation, body: Map<String, Value>) -> Result<ChatRequest, ConvertError> {
        convert::request_to_canonical(body)
    }

    fn request_from_canonical(req: ChatRequest) -> Map<String, Value> {
        convert::request_from_canonical(req)
    }

    fn response_to_canonical(body: Map<String, Value>) -> Result<ChatResponse, ConvertError> {
        convert::response_to_canonical(body)
    }

    fn response_from_canonical(resp: ChatResponse) -> Map<String, Value> {
        convert::response_from_canonical(resp)
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

/// Checks what Weir relies on: `model`, `input` (a string or a list), `stream`,
/// `max_output_tokens` and `temperature` where given. Returns `(model, stream)`.
///
/// # Errors
/// 400 naming the first invalid field.
pub fn validate(body: &Map<String, Value>) -> Result<(String, bool), Error> {
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
        Some(Value::String(_)) => return Err(Error::invalid_param("model", "model: must not be empty")),
        Some(_) => return Err(Error::invalid_param("model", "model: Input should be a valid string")),
        None => return Err(Error::invalid_param("model", "model: Field required")),
    };
    match body.get("input") {
        Some(Value::String(_) | Value::Array(_)) => {}
        // A continuation names its earlier response instead.
        None | Some(Value::Null) if body.get("previous_response_id").is_some_and(Value::is_string) => {}
        None | Some(Value::Null) => return Err(Error::invalid_param("input", "input: Field required")),
        Some(_) => return Err(Error::invalid_param("input", "input: must be a string or a list of items")),
    }
    if let Some(Value::Array(items)) = body.get("input")
        && let Some(i) = items.iter().position(|item| !item.is_object())
    {
        let at = format!("input[{i}]");
        return Err(Error::new(ErrorKind::InvalidRequest, format!("{at}: must be an object")).with_param(at));
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(Error::invalid_param("stream", "stream: Input should be a valid boolean")),
    };
    if let Some(n) = body.get("max_output_tokens").filter(|v| !v.is_null())
        && n.as_u64().is_none_or(|n| n < 1)
    {
        return Err(Error::invalid_param("max_output_tokens", "max_output_tokens: must be an integer of at least 1"));
    }
    if let Some(t) = body.get("temperature").filter(|v| !v.is_null())
        && !t.as_f64().is_some_and(|t| (0.0..=2.0).contains(&t))
    {
        return Err(Error::invalid_param("temperature", "temperature: must be a number between 0 and 2"));
    }
    Ok((model, stream))
}
