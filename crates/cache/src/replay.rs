//! Whole answers and streams, both ways: a cached answer is kept whole (in the client's format)
//! and replayed as a stream to a client that asks for one; a streamed answer is recorded into a
//! whole one so the next request, streamed or not, can be answered from it.
//!
//! Both go through the canonical types, so what a replay carries is what they carry: the
//! answer's id, model, text, reasoning text, tool calls, stop reason and usage. Reasoning
//! signatures and per-event extras of the original stream are not replayed.

use bytes::Bytes;
use weir_api::{EventReader, EventWriter};
use weir_types::canonical::{ChatResponse, Extra, Message, Part, Role, StreamEvent};
use weir_types::format::ApiFormat;

/// The event payloads (unframed, as the front door frames them) of a stream that says what
/// `body`, a whole chat answer in `format`, says. `None` when the answer has no canonical form
/// (e.g. several choices): the request then goes upstream.
pub fn stream_of(format: ApiFormat, body: &[u8], usage_chunk: bool) -> Option<Vec<Bytes>> {
    let map = serde_json::from_slice(body).ok()?;
    let resp = weir_api::response_to_canonical(format, map).ok()?;
    let mut writer = EventWriter::new(format);
    let mut out = Vec::with_capacity(resp.message.parts.len() * 2 + 4);
    let ChatResponse { origin, id, model, created, message, finish, usage, extra } = resp;
    writer.write(StreamEvent::Start { origin, id, model, created, extra }, &mut out);
    let mut tools = 0u32;
    for part in message.parts {
        match part {
            Part::Text { text, .. } => writer.write(StreamEvent::Text { text }, &mut out),
            Part::Reasoning { text, .. } => writer.write(StreamEvent::Reasoning { text }, &mut out),
            Part::ToolCall { id, name, arguments, .. } => {
                writer.write(StreamEvent::ToolCall { index: tools, id, name }, &mut out);
                writer.write(StreamEvent::ToolArguments { index: tools, arguments }, &mut out);
                tools += 1;
            }
            _ => {}
        }
    }
    if let Some(reason) = finish {
        writer.write(StreamEvent::Finish { reason }, &mut out);
    }
    // An OpenAI stream carries a usage chunk only when the client asked; Anthropic's always does.
    if let Some(usage) = usage.filter(|_| usage_chunk || format != ApiFormat::OpenAi) {
        writer.write(StreamEvent::Usage { usage }, &mut out);
    }
    writer.end(&mut out);
    Some(out)
}

/// Records one stream's payloads into the whole answer they make, up to a size.
#[derive(Debug)]
pub struct Recorder {
    format: ApiFormat,
    reader: EventReader,
    events: Vec<StreamEvent>,
    /// Payload bytes left before the stream is too big to keep.
    budget: usize,
    /// A payload did not read, or the budget ran out: nothing is kept.
    spoiled: bool,
}

impl Recorder {
    /// A recorder for one `format` stream of at most `max_bytes` of payloads.
    pub fn new(format: ApiFormat, max_bytes: usize) -> Self {
        Self { format, reader: EventReader::new(format), events: Vec::new(), budget: max_bytes, spoiled: false }
    }

    /// Notes one event payload, as the provider sent it.
    pub fn note(&mut self, payload: &[u8]) {
        if self.spoiled {
            return;
        }
        match self.budget.checked_sub(payload.len()) {
            Some(left) => self.budget = left,
            None => return self.spoil(),
        }
        if self.reader.read(payload, &mut self.events).is_err() {
            self.spoil();
        }
    }

    fn spoil(&mut self) {
        self.spoiled = true;
        self.events = Vec::new();
    }

    /// The whole answer in the stream's format, once the stream ended well; `None` if it
    /// could not be recorded (too big, unreadable, or no answer began).
    pub fn finish(self) -> Option<Bytes> {
        if self.spoiled {
            return None;
        }
        let resp = whole(self.events)?;
        let map = weir_api::response_from_canonical(self.format, resp);
        serde_json::to_vec(&map).ok().map(Bytes::from)
    }
}

/// The answer a stream's events make.
fn whole(events: Vec<StreamEvent>) -> Option<ChatResponse> {
    let mut events = events.into_iter();
    let Some(StreamEvent::Start { origin, id, model, created, extra }) = events.next() else { return None };
    let mut resp = ChatResponse {
        origin,
        id,
        model,
        created,
        message: Message { role: Role::Assistant, parts: Vec::new(), extra: Extra::new() },
        finish: None,
        usage: None,
        extra,
    };
    // Tool calls by their stream index, as positions in `parts`.
    let mut tools: Vec<(u32, usize)> = Vec::new();
    let parts = &mut resp.message.parts;
    for ev in events {
        match ev {
            StreamEvent::Start { .. } => return None,
            StreamEvent::Text { text } => match parts.last_mut() {
                Some(Part::Text { text: t, .. }) => t.push_str(&text),
                _ => parts.push(Part::Text { text, extra: Extra::new() }),
            },
            StreamEvent::Reasoning { text } => match parts.last_mut() {
                Some(Part::Reasoning { text: t, .. }) => t.push_str(&text),
                _ => parts.push(Part::Reasoning { text, signature: None, extra: Extra::new() }),
            },
            StreamEvent::ToolCall { index, id, name } => {
                tools.push((index, parts.len()));
                parts.push(Part::ToolCall { id, name, arguments: String::new(), extra: Extra::new() });
            }
            StreamEvent::ToolArguments { index, arguments } => {
                let at = tools.iter().rev().find(|(i, _)| *i == index)?.1;
                if let Some(Part::ToolCall { arguments: a, .. }) = parts.get_mut(at) {
                    a.push_str(&arguments);
                }
            }
            StreamEvent::Finish { reason } => resp.finish = Some(reason),
            StreamEvent::Usage { usage } => resp.usage = Some(usage),
        }
    }
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = r#"{"id":"c1","object":"chat.completion","created":7,"model":"m","choices":[{"index":0,
        "message":{"role":"assistant","content":"Hello there"},"finish_reason":"stop"}],
        "usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;

    #[test]
    fn a_whole_openai_answer_replays_as_chunks_and_records_back() {
        let events = stream_of(ApiFormat::OpenAi, ANSWER.as_bytes(), true).unwrap();
        let chunks: Vec<serde_json::Value> = events.iter().map(|e| serde_json::from_slice(e).unwrap()).collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hello there");
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[3]["usage"]["total_tokens"], 5);
        assert!(chunks.iter().all(|c| c["id"] == "c1" && c["object"] == "chat.completion.chunk"));
        assert_eq!(stream_of(ApiFormat::OpenAi, ANSWER.as_bytes(), false).unwrap().len(), 3, "no usage chunk");

        let mut rec = Recorder::new(ApiFormat::OpenAi, 1 << 20);
        for e in &events {
            rec.note(e);
        }
        let back: serde_json::Value = serde_json::from_slice(&rec.finish().unwrap()).unwrap();
        assert_eq!(back["choices"][0]["message"]["content"], "Hello there");
        assert_eq!(back["choices"][0]["finish_reason"], "stop");
        assert_eq!(back["usage"]["completion_tokens"], 2);
    }

    #[test]
    fn an_anthropic_answer_with_a_tool_call_replays_as_blocks() {
        let answer = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[
            {"type":"text","text":"Let me look."},
            {"type":"tool_use","id":"tu_1","name":"weather","input":{"city":"Paris"}}],
            "stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":4,"output_tokens":9}}"#;
        let events = stream_of(ApiFormat::Anthropic, answer.as_bytes(), false).unwrap();
        let types: Vec<String> = events
            .iter()
            .map(|e| serde_json::from_slice::<serde_json::Value>(e).unwrap()["type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(types.first().map(String::as_str), Some("message_start"));
        assert_eq!(types.last().map(String::as_str), Some("message_stop"));
        assert!(types.iter().any(|t| t == "content_block_start"));
        let mut rec = Recorder::new(ApiFormat::Anthropic, 1 << 20);
        events.iter().for_each(|e| rec.note(e));
        let back: serde_json::Value = serde_json::from_slice(&rec.finish().unwrap()).unwrap();
        assert_eq!(back["content"][0]["text"], "Let me look.");
        assert_eq!(back["content"][1]["input"]["city"], "Paris");
        assert_eq!(back["stop_reason"], "tool_use");
    }

    #[test]
    fn a_stream_past_its_budget_or_unreadable_is_not_recorded() {
        let events = stream_of(ApiFormat::OpenAi, ANSWER.as_bytes(), false).unwrap();
        let mut small = Recorder::new(ApiFormat::OpenAi, 10);
        events.iter().for_each(|e| small.note(e));
        assert!(small.finish().is_none());
        let mut bad = Recorder::new(ApiFormat::OpenAi, 1 << 20);
        bad.note(b"[1]");
        assert!(bad.finish().is_none());
        assert!(Recorder::new(ApiFormat::OpenAi, 1 << 20).finish().is_none(), "no answer began");
    }
}
