//! A ConverseStream answer (`application/vnd.amazon.eventstream`) read into canonical stream
//! events as its frames arrive. Frames are decoded by `aws-smithy-eventstream` (prelude and
//! message CRCs checked); a frame may be split across any number of reads. Each frame's
//! `:event-type` decides the event; an `exception` or `error` frame ends the stream with an
//! error item, and so does a body that ends before `messageStop`.

use std::collections::VecDeque;
use std::sync::Arc;

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::{HeaderValue, Message};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::Value;

use super::errors::upstream_error;
use super::response::{finish, usage};
use crate::error::{Error, ErrorKind};
use crate::http::{Returning, SendError};
use crate::secrets::Secrets;
use weir_types::canonical::{ApiFormat, Extra, StreamEvent};

/// Largest frame accepted (AWS caps event-stream messages at 16 MiB); bounds what one frame
/// can make Weir buffer.
const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Canonical events of one stream, with the state linking Converse's content block indexes
/// to tool call indexes.
struct Reader {
    name: String,
    id: String,
    model: String,
    secrets: Arc<Secrets>,
    decoder: MessageFrameDecoder,
    buf: BytesMut,
    /// `contentBlockIndex` -> tool call index, for the blocks that are tool calls.
    tools: Vec<(u64, u32)>,
    started: bool,
    stopped: bool,
    out: VecDeque<Result<StreamEvent, Error>>,
}

impl Reader {
    fn new(name: String, id: String, model: String, secrets: Arc<Secrets>) -> Self {
        Self {
            name,
            id,
            model,
            secrets,
            decoder: MessageFrameDecoder::new(),
            buf: BytesMut::new(),
            tools: Vec::new(),
            started: false,
            stopped: false,
            out: VecDeque::new(),
        }
    }

    /// Takes more bytes of the body and reads every frame they complete.
    fn feed(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.buf.extend_from_slice(bytes);
        loop {
            // The decoder keeps a frame's prelude once read and waits for the rest.
            match self.decoder.decode_frame(&mut self.buf) {
                Ok(DecodedFrame::Complete(message)) => self.message(&message)?,
                Ok(DecodedFrame::Incomplete) if self.buf.len() > MAX_FRAME_BYTES => {
                    return Err(self.invalid("a frame larger than 16 MiB".into()));
                }
                Ok(DecodedFrame::Incomplete) => return Ok(()),
                Err(e) => return Err(self.invalid(format!("an invalid event-stream frame ({e})"))),
            }
        }
    }

    fn invalid(&self, what: String) -> Error {
        Error::new(ErrorKind::UpstreamInvalid, format!("provider {} sent {what}", self.name))
    }

    /// One decoded frame: events queued in `out`, or the stream's end as an error.
    fn message(&mut self, m: &Message) -> Result<(), Error> {
        let header = |name: &str| {
            m.headers().iter().find(|h| h.name().as_str() == name).and_then(|h| match h.value() {
                HeaderValue::String(s) => Some(s.as_str().to_owned()),
                _ => None,
            })
        };
        // Upstream text reaches the client: scrubbed before it is read.
        let payload = self.secrets.scrub_bytes(m.payload().clone());
        let json: Value = if payload.is_empty() {
            Value::Object(Default::default())
        } else {
            serde_json::from_slice(&payload).map_err(|_| self.invalid("an event that is not JSON".into()))?
        };
        match header(":message-type").as_deref() {
            Some("event") => {}
            Some("exception") => {
                let kind = header(":exception-type").unwrap_or_default();
                let message = json.get("message").or_else(|| json.get("Message")).and_then(Value::as_str);
                return Err(upstream_error(&self.name, 502, Some(&kind), message, &self.secrets));
            }
            Some("error") => {
                let code = header(":error-code").unwrap_or_default();
                let message = header(":error-message");
                return Err(upstream_error(&self.name, 502, Some(&code), message.as_deref(), &self.secrets));
            }
            other => return Err(self.invalid(format!("a frame of message type {other:?}"))),
        }
        let event_type = header(":event-type").unwrap_or_default();
        // `messageStart` begins the answer; any other event first begins it too.
        if !self.started {
            self.start();
        }
        let block = json.get("contentBlockIndex").and_then(Value::as_u64).unwrap_or(0);
        match event_type.as_str() {
            "contentBlockStart" => {
                if let Some(tool) = json.get("start").and_then(|s| s.get("toolUse")) {
                    let index = u32::try_from(self.tools.len()).unwrap_or(u32::MAX);
                    self.tools.push((block, index));
                    let field = |n: &str| tool.get(n).and_then(Value::as_str).unwrap_or_default().to_owned();
                    self.out.push_back(Ok(StreamEvent::ToolCall {
                        index,
                        id: field("toolUseId"),
                        name: field("name"),
                    }));
                }
            }
            "contentBlockDelta" => {
                let delta = json.get("delta").unwrap_or(&Value::Null);
                if let Some(text) = delta.get("text").and_then(Value::as_str) {
                    self.out.push_back(Ok(StreamEvent::Text { text: text.to_owned() }));
                } else if let Some(input) = delta.get("toolUse").and_then(|t| t.get("input")).and_then(Value::as_str) {
                    let Some(&(_, index)) = self.tools.iter().find(|(b, _)| *b == block) else {
                        return Err(self.invalid(format!("tool input for block {block}, which started no tool call")));
                    };
                    self.out.push_back(Ok(StreamEvent::ToolArguments { index, arguments: input.to_owned() }));
                } else if let Some(text) =
                    delta.get("reasoningContent").and_then(|r| r.get("text")).and_then(Value::as_str)
                {
                    self.out.push_back(Ok(StreamEvent::Reasoning { text: text.to_owned() }));
                }
                // A reasoning signature or redacted reasoning has no stream event: left out.
            }
            "messageStop" => {
                self.stopped = true;
                let reason = json.get("stopReason").and_then(Value::as_str).unwrap_or("end_turn");
                self.out.push_back(Ok(StreamEvent::Finish { reason: finish(reason) }));
            }
            "metadata" => {
                if let Some(u) = json.get("usage") {
                    self.out.push_back(Ok(StreamEvent::Usage { usage: usage(u) }));
                }
            }
            // messageStart (handled above), contentBlockStop, and event types added later.
            _ => {}
        }
        Ok(())
    }

    fn start(&mut self) {
        self.started = true;
        self.out.push_back(Ok(StreamEvent::Start {
            origin: ApiFormat::OpenAi,
            id: self.id.clone(),
            model: self.model.clone(),
            created: None,
            extra: Extra::new(),
        }));
    }
}

/// The canonical events of a ConverseStream body read from `upstream` (its data frames), for
/// provider `name`, answer `id` and `model`. The connection `conn` goes back to its lanes
/// when the body ends after `messageStop`; a stream that fails or is dropped before closes it.
pub fn events<S, E>(
    name: String,
    id: String,
    model: String,
    upstream: S,
    secrets: Arc<Secrets>,
    conn: Option<Returning>,
) -> BoxStream<'static, Result<StreamEvent, Error>>
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
    E: std::error::Error + 'static,
{
    let state = (upstream, Reader::new(name, id, model, secrets), false, conn);
    futures_util::stream::unfold(state, |(mut upstream, mut reader, mut finished, mut conn)| async move {
        loop {
            if let Some(item) = reader.out.pop_front() {
                return Some((item, (upstream, reader, finished, conn)));
            }
            if finished {
                return None;
            }
            // One unit of tokio's cooperative budget per read: a body that always has bytes
            // ready cannot hold its serving thread.
            tokio::task::consume_budget().await;
            match upstream.next().await {
                Some(Ok(bytes)) => {
                    if let Err(e) = reader.feed(&bytes) {
                        finished = true;
                        reader.out.push_back(Err(e));
                    }
                }
                Some(Err(e)) => {
                    finished = true;
                    let cause = SendError::from_chain(&e).cause;
                    let err = Error::new(
                        ErrorKind::UpstreamUnavailable,
                        format!("provider {} stream failed: {cause}", reader.name),
                    );
                    reader.out.push_back(Err(err));
                }
                None => {
                    finished = true;
                    if !reader.stopped || !reader.buf.is_empty() {
                        let what = if reader.stopped { "a cut frame at the end" } else { "no messageStop" };
                        let err = reader.invalid(format!("a stream that ended with {what}"));
                        reader.out.push_back(Err(err));
                    } else if let Some(conn) = conn.take() {
                        conn.done();
                    }
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
