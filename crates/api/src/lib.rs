//! Weir's front doors: one module per API format ([`openai`], [`anthropic`]). A front door owns
//! its routes, checks its request bodies into the gateway's request, and renders errors and
//! stream events the way its clients read them; it also converts its format to and from the
//! canonical types (`weir_types::canonical`) for a provider that speaks another.
//!
//! Every format implements [`Format`] on a zero-sized type, and the functions here dispatch
//! with a `match` on [`ApiFormat`]: no `dyn`, no box, and a new format is a compile error in
//! each `match` until it is handled (Pingora and agentgateway dispatch their protocols the
//! same way).

pub mod anthropic;
pub mod openai;
pub mod responses;
mod route;
pub mod sse;

use weir_types::{canonical, error, exchange, format, json};

use bytes::Bytes;
use http::Method;
use serde_json::{Map, Value};

use crate::anthropic::Anthropic;
use crate::canonical::{ChatRequest, ChatResponse, ConvertError, StreamEvent};
use crate::error::Error;
use crate::exchange::JsonBody;
use crate::format::{ApiFormat, Endpoint, Operation};
use crate::openai::OpenAi;
use crate::responses::Responses;

pub use route::{Route, route};

/// The format of answers that belong to no front door's route (404s, refused connections,
/// the browser guard, the admin API): OpenAI's, which every Weir client understands today.
pub const GATEWAY_FORMAT: ApiFormat = ApiFormat::OpenAi;

/// A model-call route of a front door: method, path, and what is asked there.
pub type CallRoute = (Method, &'static str, Operation);

/// A request body checked at the front door.
#[derive(Debug)]
pub struct FrontDoor {
    /// The model asked for.
    pub model: String,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The body: the client's bytes, or a tree when a key repeats.
    pub body: JsonBody,
}

/// What the phases after the front door will do with a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyUse {
    /// Nothing reads its fields (no `on-request` hook): scan it, keep the bytes.
    Forward,
    /// Plugins read it: scan it and also record where its prompt texts and top-level fields
    /// are (`json::index::BodyIndex`), so that their usual reads need no tree.
    Read,
}

/// One API format at the front door. Implemented by a zero-sized type per format; reached
/// through the dispatch functions of this crate, never as a trait object.
pub trait Format {
    /// Which format this is.
    const FORMAT: ApiFormat;
    /// Its model-call routes.
    const ROUTES: &'static [CallRoute];
    /// The bytes that end a stream that went well, if the format has such a marker.
    const END_OF_STREAM: Option<&'static [u8]>;
    /// JSON pointers to the top-level fields that limit the answer's output tokens.
    const MAX_TOKENS: &'static [&'static str];
    /// State kept while reading one stream of this format into canonical events.
    type EventReader: Default + Send + 'static;
    /// State kept while writing canonical events as one stream of this format.
    type EventWriter: Default + Send + 'static;

    /// Checks a request body for `op`; the body stays the client's bytes where it can.
    ///
    /// # Errors
    /// 400 naming the first malformed or invalid field.
    fn read_request(op: Operation, bytes: Bytes, usage: BodyUse) -> Result<FrontDoor, Error>;
    /// Checks a body tree (after a plugin edited it), returning `(model, stream)`.
    ///
    /// # Errors
    /// 400 naming the first invalid field.
    fn validate(op: Operation, body: &Map<String, Value>) -> Result<(String, bool), Error>;
    /// Writes `model` where the format keeps it.
    fn set_model(body: &mut Map<String, Value>, model: String);
    /// The body of an error answer.
    fn error_body(e: &Error) -> Bytes;
    /// The last event of a stream that failed after its head was sent.
    fn error_event(e: &Error) -> Bytes;
    /// One stream event as its bytes on the wire.
    fn frame_event(payload: &[u8]) -> Bytes;

    /// A request body as a canonical chat request.
    ///
    /// # Errors
    /// What has no canonical form, or is malformed, with the path to it.
    fn request_to_canonical(op: Operation, body: Map<String, Value>) -> Result<ChatRequest, ConvertError>;
    /// A canonical chat request as this format's body.
    fn request_from_canonical(req: ChatRequest) -> Map<String, Value>;
    /// A whole answer as a canonical one.
    ///
    /// # Errors
    /// What has no canonical form, or is malformed, with the path to it.
    fn response_to_canonical(body: Map<String, Value>) -> Result<ChatResponse, ConvertError>;
    /// A canonical answer as this format's body.
    fn response_from_canonical(resp: ChatResponse) -> Map<String, Value>;
    /// One stream event's payload as canonical events, appended to `out`.
    ///
    /// # Errors
    /// What has no canonical form, or is malformed, with the path to it.
    fn read_event(
        reader: &mut Self::EventReader,
        payload: &[u8],
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), ConvertError>;
    /// One canonical event as zero or more of this format's event payloads (unframed),
    /// appended to `out`: a format whose blocks open and close (Anthropic) writes several.
    fn write_event(writer: &mut Self::EventWriter, event: StreamEvent, out: &mut Vec<Bytes>);
    /// The payloads that end a stream that went well (Anthropic: `message_delta` with the stop
    /// reason and usage, then `message_stop`), appended to `out`.
    fn end_events(writer: &mut Self::EventWriter, out: &mut Vec<Bytes>);
}

/// Checks a request body for `endpoint` in its format ([`Format::read_request`]).
///
/// # Errors
/// 400 `invalid_json` for malformed JSON, 400 `invalid_request` naming the first invalid
/// field.
pub fn read_request(endpoint: Endpoint, bytes: Bytes, usage: BodyUse) -> Result<FrontDoor, Error> {
    match endpoint.format {
        ApiFormat::OpenAi => OpenAi::read_request(endpoint.op, bytes, usage),
        ApiFormat::Anthropic => Anthropic::read_request(endpoint.op, bytes, usage),
        ApiFormat::Responses => Responses::read_request(endpoint.op, bytes, usage),
    }
}

/// Validates a body tree of `endpoint`, returning `(model, stream)` ([`Format::validate`]).
///
/// # Errors
/// 400 naming the first invalid field.
pub fn validate(endpoint: Endpoint, body: &Map<String, Value>) -> Result<(String, bool), Error> {
    match endpoint.format {
        ApiFormat::OpenAi => OpenAi::validate(endpoint.op, body),
        ApiFormat::Anthropic => Anthropic::validate(endpoint.op, body),
        ApiFormat::Responses => Responses::validate(endpoint.op, body),
    }
}

/// Writes `model` where `format` keeps it.
pub fn set_model(format: ApiFormat, body: &mut Map<String, Value>, model: String) {
    match format {
        ApiFormat::OpenAi => OpenAi::set_model(body, model),
        ApiFormat::Anthropic => Anthropic::set_model(body, model),
        ApiFormat::Responses => Responses::set_model(body, model),
    }
}

/// Where `format` keeps the answer's output-token limit ([`Format::MAX_TOKENS`]).
pub fn max_tokens_pointers(format: ApiFormat) -> &'static [&'static str] {
    match format {
        ApiFormat::OpenAi => OpenAi::MAX_TOKENS,
        ApiFormat::Anthropic => Anthropic::MAX_TOKENS,
        ApiFormat::Responses => Responses::MAX_TOKENS,
    }
}

/// The body of an error answer in `format`.
pub fn error_body(format: ApiFormat, e: &Error) -> Bytes {
    match format {
        ApiFormat::OpenAi => OpenAi::error_body(e),
        ApiFormat::Anthropic => Anthropic::error_body(e),
        ApiFormat::Responses => Responses::error_body(e),
    }
}

/// The last event of a `format` stream that failed after its head was sent.
pub fn error_event(format: ApiFormat, e: &Error) -> Bytes {
    match format {
        ApiFormat::OpenAi => OpenAi::error_event(e),
        ApiFormat::Anthropic => Anthropic::error_event(e),
        ApiFormat::Responses => Responses::error_event(e),
    }
}

/// One stream event payload framed for a `format` client.
pub fn frame_event(format: ApiFormat, payload: &[u8]) -> Bytes {
    match format {
        ApiFormat::OpenAi => OpenAi::frame_event(payload),
        ApiFormat::Anthropic => Anthropic::frame_event(payload),
        ApiFormat::Responses => Responses::frame_event(payload),
    }
}

/// The bytes that end a `format` stream that went well, if the format has a marker.
pub fn end_of_stream(format: ApiFormat) -> Option<&'static [u8]> {
    match format {
        ApiFormat::OpenAi => OpenAi::END_OF_STREAM,
        ApiFormat::Anthropic => Anthropic::END_OF_STREAM,
        ApiFormat::Responses => Responses::END_OF_STREAM,
    }
}

/// A `format` request body as a canonical chat request.
///
/// # Errors
/// What has no canonical form, or is malformed, with the path to it.
pub fn request_to_canonical(endpoint: Endpoint, body: Map<String, Value>) -> Result<ChatRequest, ConvertError> {
    match endpoint.format {
        ApiFormat::OpenAi => OpenAi::request_to_canonical(endpoint.op, body),
        ApiFormat::Anthropic => Anthropic::request_to_canonical(endpoint.op, body),
        ApiFormat::Responses => Responses::request_to_canonical(endpoint.op, body),
    }
}

/// A canonical chat request as a `format` body.
pub fn request_from_canonical(format: ApiFormat, req: ChatRequest) -> Map<String, Value> {
    match format {
        ApiFormat::OpenAi => OpenAi::request_from_canonical(req),
        ApiFormat::Anthropic => Anthropic::request_from_canonical(req),
        ApiFormat::Responses => Responses::request_from_canonical(req),
    }
}

/// A `format` answer body as a canonical answer.
///
/// # Errors
/// What has no canonical form, or is malformed, with the path to it.
pub fn response_to_canonical(format: ApiFormat, body: Map<String, Value>) -> Result<ChatResponse, ConvertError> {
    match format {
        ApiFormat::OpenAi => OpenAi::response_to_canonical(body),
        ApiFormat::Anthropic => Anthropic::response_to_canonical(body),
        ApiFormat::Responses => Responses::response_to_canonical(body),
    }
}

/// A canonical answer as a `format` body.
pub fn response_from_canonical(format: ApiFormat, resp: ChatResponse) -> Map<String, Value> {
    match format {
        ApiFormat::OpenAi => OpenAi::response_from_canonical(resp),
        ApiFormat::Anthropic => Anthropic::response_from_canonical(resp),
        ApiFormat::Responses => Responses::response_from_canonical(resp),
    }
}

/// Reads the events of one stream in some format into canonical events.
#[derive(Debug)]
pub enum EventReader {
    /// An OpenAI stream.
    OpenAi(<OpenAi as Format>::EventReader),
    /// An Anthropic stream.
    Anthropic(<Anthropic as Format>::EventReader),
    /// A Responses stream.
    Responses(<Responses as Format>::EventReader),
}

impl EventReader {
    /// A reader for one stream in `format`.
    pub fn new(format: ApiFormat) -> Self {
        match format {
            ApiFormat::OpenAi => Self::OpenAi(Default::default()),
            ApiFormat::Anthropic => Self::Anthropic(Default::default()),
            ApiFormat::Responses => Self::Responses(Default::default()),
        }
    }

    /// Appends the canonical events of one event payload to `out`.
    ///
    /// # Errors
    /// What has no canonical form, or is malformed, with the path to it.
    pub fn read(&mut self, payload: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), ConvertError> {
        match self {
            Self::OpenAi(r) => OpenAi::read_event(r, payload, out),
            Self::Anthropic(r) => Anthropic::read_event(r, payload, out),
            Self::Responses(r) => Responses::read_event(r, payload, out),
        }
    }
}

/// Writes canonical events as the event payloads of one stream in some format.
#[derive(Debug)]
pub enum EventWriter {
    /// An OpenAI stream.
    OpenAi(<OpenAi as Format>::EventWriter),
    /// An Anthropic stream.
    Anthropic(<Anthropic as Format>::EventWriter),
    /// A Responses stream.
    Responses(<Responses as Format>::EventWriter),
}

impl EventWriter {
    /// A writer for one stream in `format`.
    pub fn new(format: ApiFormat) -> Self {
        match format {
            ApiFormat::OpenAi => Self::OpenAi(Default::default()),
            ApiFormat::Anthropic => Self::Anthropic(Default::default()),
            ApiFormat::Responses => Self::Responses(Default::default()),
        }
    }

    /// One event's payloads (unframed: the front door frames them), appended to `out`.
    pub fn write(&mut self, event: StreamEvent, out: &mut Vec<Bytes>) {
        match self {
            Self::OpenAi(w) => OpenAi::write_event(w, event, out),
            Self::Anthropic(w) => Anthropic::write_event(w, event, out),
            Self::Responses(w) => Responses::write_event(w, event, out),
        }
    }

    /// Closes the open content block (Anthropic's `content_block_stop`), so the next text
    /// opens a new one; formats without blocks write nothing.
    pub fn close_block(&mut self, out: &mut Vec<Bytes>) {
        if let Self::Anthropic(w) = self {
            w.close_block(out);
        }
    }

    /// The payloads that end a stream that went well, appended to `out`.
    pub fn end(&mut self, out: &mut Vec<Bytes>) {
        match self {
            Self::OpenAi(w) => OpenAi::end_events(w, out),
            Self::Anthropic(w) => Anthropic::end_events(w, out),
            Self::Responses(w) => Responses::end_events(w, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn an_openai_stream_is_sse_ended_by_done() {
        assert_eq!(&frame_event(ApiFormat::OpenAi, b"{}")[..], b"data: {}\n\n");
        assert_eq!(end_of_stream(ApiFormat::OpenAi), Some(&b"data: [DONE]\n\n"[..]));
        let e = Error::new(ErrorKind::UpstreamUnavailable, "gone");
        let event = error_event(ApiFormat::OpenAi, &e);
        assert_eq!(&event[..], [&b"data: "[..], &error_body(ApiFormat::OpenAi, &e), b"\n\n"].concat());
    }

    #[test]
    fn set_model_writes_where_the_format_keeps_it() {
        let mut body = Map::new();
        set_model(ApiFormat::OpenAi, &mut body, "m".into());
        assert_eq!(body["model"], "m");
    }
}
