//! Continuing a cut stream (`[[routes]] stream_resume = "continue"`): when a stream fails after
//! bytes reached the client, the next fallback is asked the same request with the text so far
//! as a trailing assistant message (prefill), and its events continue the client's one stream.
//!
//! The relay notes every payload it hands to the client; they are read into canonical events,
//! so the continuation's events can be written by a writer that has "written" the same stream:
//! the same answer id, no second start event, the text block still open. Its refusal (any
//! failure before its first event), or no step left, ends the stream with the error event.

use std::borrow::Cow;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::Ctx;
use crate::api::{EventReader, EventWriter};
use crate::canonical::{Extra, Message, Part, Role, StreamEvent};
use crate::error::{Error, ErrorKind};
use crate::format::ApiFormat;
use crate::gateway::Gateway;
use crate::policy::{Plan, Served};
use crate::pool::{Reply, ShutdownSignal, StreamItem};
use crate::providers::ProviderRequest;
use crate::trace::Span;

/// What the relay needs to continue one stream, kept only for an opted-in route's streams.
pub(super) struct Resume {
    format: ApiFormat,
    /// The request as it went upstream, in the client's format (model not yet replaced).
    request: ProviderRequest,
    plan: Plan<'static>,
    /// The model of the request's first attempt when the plan does not name one.
    primary_model: String,
    /// The model as the client named it (the metrics' `model` label).
    client_model: String,
    /// The provider and model serving the stream now.
    serving: (usize, String),
    /// When the request began, for what is left of its total timeout.
    started: Instant,
    said: Transcript,
    /// The continuation in progress.
    cont: Option<Continuation>,
}

/// What the client was sent, read into canonical events.
struct Transcript {
    reader: EventReader,
    /// The events, consecutive text merged.
    events: Vec<StreamEvent>,
    /// A payload did not read, a tool call began, or the answer finished: no continuation.
    closed: bool,
    /// The last content block was closed (Anthropic's `content_block_stop`): the continuation
    /// opens a new one.
    block_closed: bool,
}

impl Transcript {
    fn new(format: ApiFormat) -> Self {
        Self { reader: EventReader::new(format), events: Vec::new(), closed: false, block_closed: false }
    }

    fn note(&mut self, payload: &[u8]) {
        if self.closed {
            return;
        }
        let mut read = Vec::new();
        if self.reader.read(payload, &mut read).is_err() {
            self.closed = true;
            return;
        }
        if read.is_empty() {
            // Events that carry no canonical event: only a block's stop changes what follows.
            if payload.windows(20).any(|w| w == b"\"content_block_stop\"") {
                self.block_closed = true;
            }
            return;
        }
        self.block_closed = false;
        for ev in read {
            match (ev, self.events.last_mut()) {
                (StreamEvent::Text { text }, Some(StreamEvent::Text { text: t })) => t.push_str(&text),
                (StreamEvent::Reasoning { text }, Some(StreamEvent::Reasoning { text: t })) => t.push_str(&text),
                // A tool call is not continued: its arguments cannot be prefilled.
                (StreamEvent::ToolCall { .. } | StreamEvent::Finish { .. }, _) => {
                    self.closed = true;
                    self.events = Vec::new();
                    return;
                }
                (ev, _) => self.events.push(ev),
            }
        }
    }

    /// Whether a continuation can follow: the answer began and nothing closed it.
    fn open(&self) -> bool {
        !self.closed && matches!(self.events.first(), Some(StreamEvent::Start { .. }))
    }

    /// The answer's text so far (reasoning left out), the prefill.
    fn text(&self) -> String {
        (self.events.iter())
            .filter_map(|e| match e {
                StreamEvent::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// A fallback's stream rewritten as the rest of the client's: its events are read, and
/// written by a writer that has already written what the client was sent.
struct Continuation {
    reader: EventReader,
    writer: EventWriter,
}

impl Continuation {
    fn new(format: ApiFormat, said: &Transcript) -> Self {
        let mut writer = EventWriter::new(format);
        let mut scratch = Vec::new();
        for ev in said.events.iter().cloned() {
            writer.write(ev, &mut scratch);
        }
        if said.block_closed {
            writer.close_block(&mut scratch);
        }
        Self { reader: EventReader::new(format), writer }
    }

    fn rewrite(&mut self, payload: &[u8]) -> Result<Vec<Bytes>, Error> {
        let mut events = Vec::new();
        self.reader.read(payload, &mut events).map_err(|e| {
            Error::new(ErrorKind::UpstreamInvalid, format!("the continuing stream sent an unreadable event: {e}"))
        })?;
        let mut out = Vec::new();
        // Its start is dropped: the client has one.
        for ev in events.into_iter().filter(|e| !matches!(e, StreamEvent::Start { .. })) {
            self.writer.write(ev, &mut out);
        }
        Ok(out)
    }
}

/// A continuation asked of the policy.
pub(super) enum Next {
    /// The fallback answered: its chunks continue the stream.
    Continued { chunks: mpsc::Receiver<Result<StreamItem, Error>>, shutdown: ShutdownSignal, attempt: Span },
    /// No continuation: the stream ends with its error event.
    Stop,
}

impl Resume {
    /// The resume state of a stream of `request` (as sent upstream) that `targets[serving]`
    /// answers, when the plan opted in.
    pub(super) fn new(
        plan: &Plan<'_>,
        request: ProviderRequest,
        serving: usize,
        client_model: &str,
        started: Instant,
    ) -> Option<Box<Self>> {
        // A Responses stream's items open and close in ways its replay does not track.
        if !plan.resume || !request.stream || request.endpoint.format == ApiFormat::Responses {
            return None;
        }
        let primary_model = request.model.clone();
        let model = match serving {
            t if t == plan.routed => plan.model.clone().unwrap_or_else(|| primary_model.clone()),
            t => plan
                .fallbacks
                .iter()
                .find(|s| s.provider == t)
                .map_or_else(|| primary_model.clone(), |s| s.model.clone()),
        };
        let plan = Plan {
            routed: plan.routed,
            model: plan.model.clone(),
            fallbacks: Cow::Owned(plan.fallbacks.to_vec()),
            timeout: plan.timeout,
            latency: false,
            hedge: None,
            resume: true,
        };
        let format = request.endpoint.format;
        Some(Box::new(Self {
            format,
            request,
            plan,
            primary_model,
            client_model: client_model.to_owned(),
            serving: (serving, model),
            started,
            said: Transcript::new(format),
            cont: None,
        }))
    }

    /// Notes one payload as it goes to the client (before the stream hooks).
    pub(super) fn note(&mut self, payload: &[u8]) {
        self.said.note(payload);
    }

    /// Whether the continuation's payloads are being rewritten now.
    pub(super) fn continuing(&self) -> bool {
        self.cont.is_some()
    }

    /// The client's payloads for one payload of the continuation: its start is dropped (the
    /// client has one), the rest written as the client's stream goes on.
    ///
    /// # Errors
    /// 502 when the payload does not read.
    pub(super) fn rewrite(&mut self, payload: &[u8]) -> Result<Vec<Bytes>, Error> {
        match &mut self.cont {
            Some(c) => c.rewrite(payload),
            None => Ok(vec![Bytes::copy_from_slice(payload)]),
        }
    }

    /// The payloads that close a continued stream that ended well (before the terminator).
    pub(super) fn end(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        if let Some(c) = &mut self.cont {
            c.writer.end(&mut out);
        }
        out
    }

    /// After `failed` cut the stream: asks the next step for the rest, counting the attempts
    /// on `ctx`. `Stop` when the stream cannot be continued, no step is left, or the step
    /// refused (a 4xx such as a refused prefill, or any failure before its first event).
    pub(super) async fn next(&mut self, gw: &Gateway, ctx: &mut Ctx, failed: &Error) -> Next {
        let cut = gw.targets[self.serving.0].pool.name().clone();
        if !self.said.open() || !resumable(failed) {
            return Next::Stop;
        }
        let left = self.plan.timeout.map(|t| t.saturating_sub(self.started.elapsed()));
        let plan = (self.plan)
            .after(self.serving.0, &self.serving.1, &self.primary_model, left)
            .filter(|_| left.is_none_or(|l| !l.is_zero()));
        let Some(plan) = plan else {
            count(&cut, "none_left");
            return Next::Stop;
        };
        let Some(req) = self.prefilled() else {
            count(&cut, "refused");
            return Next::Stop;
        };
        // The continuation's first step is a fallback like any other (`weir_fallbacks_total`).
        gw.targets[plan.routed].guard.fallbacks.increment(1);
        let mut served = Served::new(plan.routed);
        // The attempts go on being numbered from the request's (`weir.attempt` on their spans).
        served.attempts = ctx.attempts;
        let result = gw.policy.execute(&gw.targets, &plan, req, &mut served).await;
        let tried = served.attempts > ctx.attempts;
        ctx.attempts = served.attempts;
        ctx.upstream += served.upstream;
        let model = plan.fallbacks.iter().find(|s| s.provider == served.target).map(|s| s.model.clone());
        match result {
            Ok(Reply::Stream { chunks, shutdown, .. }) => {
                count(&cut, "continued");
                self.serving = (served.target, model.or(plan.model).unwrap_or_default());
                ctx.target = Some(super::Target::new(&gw.targets[served.target].pool, &self.client_model));
                self.cont = Some(Continuation::new(self.format, &self.said));
                Next::Continued { chunks, shutdown, attempt: std::mem::take(&mut served.stream_attempt) }
            }
            Ok(Reply::Full { .. }) => {
                count(&cut, "refused");
                Next::Stop
            }
            Err(e) => {
                if !tried {
                    count(&cut, "none_left");
                } else {
                    count(&cut, "refused");
                }
                tracing::debug!(request_id = %ctx.id, error = %gw.secrets.scrub_error(e), "a cut stream's continuation was refused");
                Next::Stop
            }
        }
    }

    /// The request with the answer so far as a trailing assistant message, built through the
    /// canonical request so every provider kind gets it in its own form.
    fn prefilled(&self) -> Option<ProviderRequest> {
        let mut req = self.request.clone();
        let text = self.said.text();
        if !text.is_empty() {
            let body = std::mem::take(&mut req.body).into_map();
            let mut chat = crate::api::request_to_canonical(req.endpoint, body).ok()?;
            chat.messages.push(Message {
                role: Role::Assistant,
                parts: vec![Part::Text { text, extra: Extra::new() }],
                extra: Extra::new(),
            });
            req.body = crate::exchange::JsonBody::from_map(crate::api::request_from_canonical(self.format, chat));
        }
        Some(req)
    }
}

/// Failures of the upstream's stream; a shutdown, a plugin's failure or the total timeout are not continued.
fn resumable(e: &Error) -> bool {
    matches!(
        e.kind,
        ErrorKind::Upstream { .. }
            | ErrorKind::UpstreamUnavailable
            | ErrorKind::UpstreamInvalid
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamTooLarge
    )
}

fn count(provider: &std::sync::Arc<str>, outcome: &'static str) {
    metrics::counter!("weir_stream_resumes_total", "provider" => provider.to_string(), "outcome" => outcome)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openai(delta: &str, finish: Option<&str>) -> Vec<u8> {
        let c = serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "m",
            "choices": [{"index": 0, "delta": serde_json::from_str::<serde_json::Value>(delta).unwrap(), "finish_reason": finish}]});
        serde_json::to_vec(&c).unwrap()
    }

    #[test]
    fn the_text_so_far_is_the_prefill_and_a_tool_call_or_finish_closes_it() {
        let mut said = Transcript::new(ApiFormat::OpenAi);
        assert!(!said.open(), "nothing began");
        said.note(&openai(r#"{"role": "assistant", "content": "Hel"}"#, None));
        said.note(&openai(r#"{"content": "lo"}"#, None));
        assert!(said.open());
        assert_eq!(said.text(), "Hello");

        let call = r#"{"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]}"#;
        said.note(&openai(call, None));
        assert!(!said.open(), "a stream inside a tool call is not continued");

        let mut done = Transcript::new(ApiFormat::OpenAi);
        done.note(&openai(r#"{"content": "all"}"#, None));
        done.note(&openai("{}", Some("stop")));
        assert!(!done.open(), "a finished answer is not continued");
    }

    #[test]
    fn a_continuation_keeps_the_first_streams_id_and_sends_no_second_start() {
        let mut said = Transcript::new(ApiFormat::OpenAi);
        said.note(&openai(r#"{"role": "assistant", "content": "Hel"}"#, None));
        let mut cont = Continuation::new(ApiFormat::OpenAi, &said);
        let other = br#"{"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 9, "model": "n",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "lo"}, "finish_reason": null}]}"#;
        let out = cont.rewrite(other).unwrap();
        assert_eq!(out.len(), 1, "the text only: {out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out[0]).unwrap();
        assert_eq!(
            (v["id"].as_str(), v["model"].as_str(), v["created"].as_u64()),
            (Some("chatcmpl-1"), Some("m"), Some(7))
        );
        assert_eq!(v["choices"][0]["delta"]["content"], "lo");
        assert!(v["choices"][0]["delta"].get("role").is_none(), "{v}");
        assert_eq!(cont.rewrite(b"not json").unwrap_err().status(), 502);
    }

    #[test]
    fn an_anthropic_block_the_upstream_closed_is_not_reopened() {
        let start = br#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"c","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":1}}}"#;
        let block = br#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#;
        let delta = |t: &str| {
            let v = serde_json::json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}});
            serde_json::to_vec(&v).unwrap()
        };
        let stop = br#"{"type":"content_block_stop","index":0}"#;
        let mut said = Transcript::new(ApiFormat::Anthropic);
        for p in [&start[..], block, &delta("Hel"), stop] {
            said.note(p);
        }
        assert!(said.open() && said.block_closed);
        let mut cont = Continuation::new(ApiFormat::Anthropic, &said);
        let mut out = Vec::new();
        for p in [&start[..], block, &delta("lo")] {
            out.extend(cont.rewrite(p).unwrap());
        }
        let types: Vec<(String, u64)> = (out.iter())
            .map(|p| {
                let v: serde_json::Value = serde_json::from_slice(p).unwrap();
                (v["type"].as_str().unwrap().to_owned(), v["index"].as_u64().unwrap_or(99))
            })
            .collect();
        let want = [("content_block_start".to_owned(), 1), ("content_block_delta".to_owned(), 1)];
        assert_eq!(types, want, "a new block after the closed one, no second message_start");
    }
}
