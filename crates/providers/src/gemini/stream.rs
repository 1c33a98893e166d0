//! `streamGenerateContent?alt=sse` bodies as canonical stream events, converted as each SSE
//! event arrives (every one is a whole `GenerateContentResponse`): `Start` once, text and
//! reasoning deltas, a tool call and its arguments per `functionCall`, `Finish` at the
//! `finishReason`, and the last `usageMetadata` when the body ends. A body that ends before a
//! `finishReason` is reported as an error item, so the client learns the answer was cut.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::Value;

use super::response::{Piece, answer_id, answer_model, blocked, finish, pieces, usage_of};
use crate::error::{Error, ErrorKind};
use crate::http::{Returning, SendError};
use crate::secrets::Secrets;
use crate::sse::{SseEvent, SseParser};
use weir_types::canonical::{ApiFormat, Extra, StreamEvent};

type Item = Result<StreamEvent, Error>;

/// Where one stream is.
struct State<S> {
    upstream: S,
    parser: SseParser,
    name: String,
    model: String,
    client: ApiFormat,
    /// Whether the stream ends with a `Usage` event.
    wants_usage: bool,
    secrets: Arc<Secrets>,
    conn: Option<Returning>,
    started: bool,
    /// Function calls so far (their indexes, and `call_<n>` ids).
    calls: u32,
    finished: bool,
    usage: Option<Value>,
    pending: VecDeque<Item>,
    /// Nothing more comes after `pending`.
    over: bool,
}

/// The canonical events of one upstream SSE body, read from `upstream` (its data frames),
/// each event's data scrubbed of `secrets` before it is read. The connection `conn` goes back
/// to its lanes when the body ends after a `finishReason`; a stream that fails or is dropped
/// before closes it.
pub(super) fn events<S, E>(
    name: String,
    model: String,
    client: ApiFormat,
    wants_usage: bool,
    upstream: S,
    secrets: Arc<Secrets>,
    conn: Option<Returning>,
) -> BoxStream<'static, Item>
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
    E: std::error::Error + 'static,
{
    let state = State {
        upstream,
        parser: SseParser::default(),
        name,
        model,
        client,
        wants_usage,
        secrets,
        conn,
        started: false,
        calls: 0,
        finished: false,
        usage: None,
        pending: VecDeque::new(),
        over: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(item) = st.pending.pop_front() {
                return Some((item, st));
            }
            if st.over {
                return None;
            }
            match st.parser.next_event() {
                Ok(Some(SseEvent::Data(data))) => {
                    let data = st.secrets.scrub_bytes(data);
                    st.read(&data);
                    continue;
                }
                // Not Gemini's, but an end all the same.
                Ok(Some(SseEvent::Done)) => {
                    st.end();
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    st.fail(Error::new(ErrorKind::UpstreamInvalid, format!("provider {} sent {e}", st.name)));
                    continue;
                }
            }
            // Each read costs one unit of tokio's cooperative budget (see openai.rs).
            tokio::task::consume_budget().await;
            match st.upstream.next().await {
                Some(Ok(bytes)) => st.parser.feed(&bytes),
                Some(Err(e)) => {
                    let why = format!("provider {} stream failed: {}", st.name, SendError::from_chain(&e).cause);
                    st.fail(Error::new(ErrorKind::UpstreamUnavailable, why));
                }
                None => st.end(),
            }
        }
    })
    .boxed()
}

impl<S> State<S> {
    /// Queues the events of one `GenerateContentResponse`.
    fn read(&mut self, data: &[u8]) {
        let Ok(chunk) = serde_json::from_slice::<Value>(data) else {
            let why = format!("provider {} sent a stream event that is not JSON", self.name);
            return self.fail(Error::new(ErrorKind::UpstreamInvalid, why));
        };
        if let Some(e) = chunk.get("error") {
            let status = e.get("code").and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok()).unwrap_or(500);
            return self.fail(super::errors::status_error(&self.name, status, None, data, &self.secrets));
        }
        if let Some(e) = blocked(&self.name, &chunk) {
            return self.fail(e);
        }
        if !self.started {
            self.started = true;
            self.pending.push_back(Ok(StreamEvent::Start {
                origin: self.client,
                id: answer_id(&chunk),
                model: answer_model(&chunk, &self.model),
                created: None,
                extra: Extra::new(),
            }));
        }
        if let Some(meta) = chunk.get("usageMetadata") {
            self.usage = Some(meta.clone());
        }
        let Some(candidate) = chunk.get("candidates").and_then(|c| c.get(0)) else { return };
        let mut found = Vec::new();
        let before = self.calls;
        pieces(candidate, &mut self.calls, &mut found);
        let mut index = before;
        for p in found {
            match p {
                Piece::Text(text) if !text.is_empty() => self.pending.push_back(Ok(StreamEvent::Text { text })),
                Piece::Thought(text) if !text.is_empty() => {
                    self.pending.push_back(Ok(StreamEvent::Reasoning { text }));
                }
                Piece::Text(_) | Piece::Thought(_) => {}
                Piece::Call { id, name, arguments } => {
                    self.pending.push_back(Ok(StreamEvent::ToolCall { index, id, name }));
                    self.pending.push_back(Ok(StreamEvent::ToolArguments { index, arguments }));
                    index += 1;
                }
            }
        }
        if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str)
            && !self.finished
        {
            self.finished = true;
            self.pending.push_back(Ok(StreamEvent::Finish { reason: finish(reason, self.calls > 0) }));
        }
    }

    /// The body ended: after a `finishReason`, the usage and a clean end; else an error.
    fn end(&mut self) {
        if !self.finished {
            let why = format!("provider {} ended the stream early, before a finishReason", self.name);
            return self.fail(Error::new(ErrorKind::UpstreamInvalid, why));
        }
        if self.wants_usage
            && let Some(meta) = self.usage.take()
        {
            self.pending.push_back(Ok(StreamEvent::Usage { usage: usage_of(&meta) }));
        }
        if let Some(conn) = self.conn.take() {
            conn.done();
        }
        self.over = true;
    }

    /// Queues `e` as the last item; the connection is dropped (closed) with the stream.
    fn fail(&mut self, e: Error) {
        self.pending.push_back(Err(e));
        self.over = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(body: &'static str) -> Vec<Item> {
        let upstream = futures_util::stream::iter(
            body.as_bytes().chunks(7).map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c))).collect::<Vec<_>>(),
        );
        events("g".into(), "m".into(), ApiFormat::OpenAi, true, upstream, Default::default(), None).collect().await
    }

    #[tokio::test]
    async fn text_and_a_call_stream_as_canonical_events_then_usage() {
        let body = concat!(
            "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Hel\"}]}}],",
            "\"usageMetadata\":{\"promptTokenCount\":4},\"responseId\":\"r9\"}\r\n\r\n",
            "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"lo\"},",
            "{\"functionCall\":{\"name\":\"f\",\"args\":{\"a\":1}}}]},\"finishReason\":\"STOP\"}],",
            "\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":6}}\r\n\r\n",
        );
        let out: Vec<StreamEvent> = run(body).await.into_iter().map(Result::unwrap).collect();
        assert!(matches!(&out[0], StreamEvent::Start { id, .. } if id == "r9"));
        assert_eq!(out[1], StreamEvent::Text { text: "Hel".into() });
        assert_eq!(out[2], StreamEvent::Text { text: "lo".into() });
        assert_eq!(out[3], StreamEvent::ToolCall { index: 0, id: "call_0".into(), name: "f".into() });
        assert_eq!(out[4], StreamEvent::ToolArguments { index: 0, arguments: r#"{"a":1}"#.into() });
        assert!(matches!(&out[5], StreamEvent::Finish { reason: weir_types::canonical::Finish::ToolCalls }));
        let StreamEvent::Usage { usage } = &out[6] else { panic!("no usage: {out:?}") };
        assert_eq!((usage.input_tokens, usage.output_tokens), (4, 6));
        assert_eq!(out.len(), 7);
    }

    #[tokio::test]
    async fn each_event_is_converted_when_it_arrives_not_at_the_end() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
        let body = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) }));
        let mut out = events("g".into(), "m".into(), ApiFormat::OpenAi, false, body, Default::default(), None);
        let first = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}]}\n\n";
        tx.send(Ok(Bytes::from_static(first.as_bytes()))).unwrap();
        // The body is still open: the start and the text must come out now.
        let wait = std::time::Duration::from_secs(5);
        let start = tokio::time::timeout(wait, out.next()).await.expect("start before the body ends");
        assert!(matches!(start, Some(Ok(StreamEvent::Start { .. }))), "{start:?}");
        let text = tokio::time::timeout(wait, out.next()).await.expect("text before the body ends");
        assert_eq!(text.unwrap().unwrap(), StreamEvent::Text { text: "Hi".into() });
        let last = "data: {\"candidates\":[{\"finishReason\":\"STOP\"}]}\n\n";
        tx.send(Ok(Bytes::from_static(last.as_bytes()))).unwrap();
        drop(tx);
        let rest: Vec<Item> = out.collect().await;
        assert_eq!(rest.len(), 1, "the finish, and no usage unasked: {rest:?}");
        assert!(matches!(rest[0], Ok(StreamEvent::Finish { .. })));
    }

    #[tokio::test]
    async fn a_body_that_ends_before_a_finish_reason_is_an_error() {
        let body = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}]}\n\n";
        let out = run(body).await;
        assert_eq!(out.len(), 3);
        let e = out[2].as_ref().unwrap_err();
        assert!(e.message.contains("ended the stream early"), "{}", e.message);
    }

    #[tokio::test]
    async fn an_error_event_mid_stream_keeps_its_status() {
        let body = "data: {\"error\":{\"code\":503,\"message\":\"overloaded\",\"status\":\"UNAVAILABLE\"}}\n\n";
        let out = run(body).await;
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_ref().unwrap_err().status(), 503);
    }
}
