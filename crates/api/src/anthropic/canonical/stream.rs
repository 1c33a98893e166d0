//! Anthropic stream events (`message_start`, `content_block_start` / `_delta` / `_stop`,
//! `message_delta`, `message_stop`, `ping`, `error`) to and from [`StreamEvent`]s. Anthropic
//! opens and closes a block around each text, thinking or tool call, so the writer keeps which
//! block is open and writes the start before the first delta and the stop before the next
//! block; the stop reason and usage are held for the closing `message_delta`.

use bytes::Bytes;
use serde_json::{Value, json};

use super::{finish_from_canonical, finish_to_canonical, usage_from_canonical, usage_to_canonical};
use crate::canonical::{ApiFormat, ConvertError, Finish, StreamEvent, Usage};
use crate::openai::canonical::{Obj, object, take_object, take_string, take_u64};

/// Most content blocks in one streamed answer; bounds the state an upstream's `index` grows.
const MAX_BLOCKS: usize = 1024;

/// Reads the events of one Anthropic stream.
#[derive(Debug, Default)]
pub struct StreamReader {
    /// `blocks[i]`: the tool call index of content block `i`, when it is a tool call.
    blocks: Vec<Option<u32>>,
    calls: u32,
    /// The input counts `message_start` reported; `message_delta` reports the output.
    input: Option<Usage>,
}

impl StreamReader {
    /// Reads one event (the JSON of its `data:`), appending its canonical events to `out`.
    ///
    /// # Errors
    /// [`ConvertError`] for an event that is not a JSON object, a field of the wrong type, or
    /// an `error` event (the upstream failed mid-stream).
    pub fn event(&mut self, payload: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), ConvertError> {
        let v: Value = serde_json::from_slice(payload).map_err(|e| ConvertError::new("", format!("not JSON: {e}")))?;
        let mut e = object(v, "")?;
        match take_string(&mut e, "type", "")?.as_deref() {
            Some("message_start") => {
                let mut m = take_object(&mut e, "message", "")?.unwrap_or_default();
                let id = take_string(&mut m, "id", "message")?.unwrap_or_default();
                let model = take_string(&mut m, "model", "message")?.unwrap_or_default();
                if let Some(u) = take_object(&mut m, "usage", "message")? {
                    self.input = Some(usage_to_canonical(u, "message.usage")?);
                }
                for key in ["type", "role", "content", "stop_reason", "stop_sequence"] {
                    m.remove(key);
                }
                out.push(StreamEvent::Start { origin: ApiFormat::Anthropic, id, model, created: None, extra: m });
            }
            Some("content_block_start") => {
                let slot = self.slot(&mut e)?;
                let mut b = take_object(&mut e, "content_block", "")?.unwrap_or_default();
                match take_string(&mut b, "type", "content_block")?.as_deref() {
                    Some("tool_use") => {
                        let index = self.calls;
                        self.calls += 1;
                        self.blocks[slot] = Some(index);
                        let id = take_string(&mut b, "id", "content_block")?.unwrap_or_default();
                        let name = take_string(&mut b, "name", "content_block")?.unwrap_or_default();
                        out.push(StreamEvent::ToolCall { index, id, name });
                    }
                    Some("text") => {
                        if let Some(text) = take_string(&mut b, "text", "content_block")?.filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::Text { text });
                        }
                    }
                    _ => {}
                }
            }
            Some("content_block_delta") => {
                let slot = self.slot(&mut e)?;
                let mut d = take_object(&mut e, "delta", "")?.unwrap_or_default();
                match take_string(&mut d, "type", "delta")?.as_deref() {
                    Some("text_delta") => {
                        let text = take_string(&mut d, "text", "delta")?.unwrap_or_default();
                        out.push(StreamEvent::Text { text });
                    }
                    Some("thinking_delta") => {
                        let text = take_string(&mut d, "thinking", "delta")?.unwrap_or_default();
                        out.push(StreamEvent::Reasoning { text });
                    }
                    Some("input_json_delta") => {
                        let Some(index) = self.blocks[slot] else {
                            return Err(ConvertError::new("index", "input_json_delta outside a tool_use block"));
                        };
                        let arguments = take_string(&mut d, "partial_json", "delta")?.unwrap_or_default();
                        if !arguments.is_empty() {
                            out.push(StreamEvent::ToolArguments { index, arguments });
                        }
                    }
                    // signature_delta, citations_delta: no canonical form in a stream.
                    _ => {}
                }
            }
            Some("message_delta") => {
                let mut d = take_object(&mut e, "delta", "")?.unwrap_or_default();
                let sequence = take_string(&mut d, "stop_sequence", "delta")?;
                if let Some(r) = take_string(&mut d, "stop_reason", "delta")? {
                    out.push(StreamEvent::Finish { reason: finish_to_canonical(&r, sequence) });
                }
                if let Some(u) = take_object(&mut e, "usage", "")? {
                    out.push(StreamEvent::Usage { usage: self.usage(u)? });
                }
            }
            Some("error") => {
                let err = take_object(&mut e, "error", "")?.unwrap_or_default();
                let message = err.get("message").and_then(Value::as_str).unwrap_or("unknown error");
                return Err(ConvertError::new("error", format!("the stream failed: {message}")));
            }
            // content_block_stop, message_stop, ping, and event types added later.
            _ => {}
        }
        Ok(())
    }

    /// The block `index` of an event, made room for.
    fn slot(&mut self, e: &mut Obj) -> Result<usize, ConvertError> {
        let index = take_u64(e, "index", "")?.unwrap_or(0);
        let slot = usize::try_from(index).ok().filter(|&i| i < MAX_BLOCKS);
        let Some(slot) = slot else { return Err(ConvertError::new("index", "more content blocks than 1024")) };
        if self.blocks.len() <= slot {
            self.blocks.resize(slot + 1, None);
        }
        Ok(slot)
    }

    /// `message_delta`'s usage, with the input counts of `message_start` where it has none.
    fn usage(&mut self, u: Obj) -> Result<Usage, ConvertError> {
        let has_input = u.contains_key("input_tokens");
        let mut usage = usage_to_canonical(u, "usage")?;
        if let Some(start) = &self.input
            && !has_input
        {
            usage.input_tokens = start.input_tokens;
            usage.cache_read_tokens = usage.cache_read_tokens.or(start.cache_read_tokens);
            usage.cache_write_tokens = usage.cache_write_tokens.or(start.cache_write_tokens);
        }
        Ok(usage)
    }
}

/// What kind of block is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    Tool(u32),
}

/// Writes [`StreamEvent`]s as the events of one Anthropic stream.
#[derive(Debug, Default)]
pub struct StreamWriter {
    started: bool,
    keep: bool,
    /// The open block and its index.
    open: Option<(Open, usize)>,
    next_block: usize,
    /// `tools[i]`: the block index of tool call `i`.
    tools: Vec<usize>,
    finish: Option<Finish>,
    usage: Option<Usage>,
}

/// An event's JSON with `type` written first, as Anthropic writes it: the front door's framing
/// and the provider read the type from the first key without parsing the rest.
fn payload(mut v: Value) -> Bytes {
    let kind = v.as_object_mut().and_then(|o| o.remove("type"));
    let rest = weir_types::json::write::to_vec(&v);
    let Some(Value::String(kind)) = kind else { return Bytes::from(rest) };
    let mut out = Vec::with_capacity(rest.len() + kind.len() + 12);
    out.extend_from_slice(b"{\"type\":");
    weir_types::json::write::write_string(&mut out, &kind);
    if rest.len() > 2 {
        out.push(b',');
    }
    out.extend_from_slice(&rest[1..]);
    Bytes::from(out)
}

impl StreamWriter {
    /// Appends the event payloads for `ev` to `out`.
    pub fn event(&mut self, ev: StreamEvent, out: &mut Vec<Bytes>) {
        match ev {
            StreamEvent::Start { origin, id, model, extra, .. } => {
                self.keep = origin == ApiFormat::Anthropic;
                self.started = true;
                let mut m = if self.keep { extra } else { Obj::new() };
                m.insert("id".into(), id.into());
                m.insert("type".into(), "message".into());
                m.insert("role".into(), "assistant".into());
                m.insert("model".into(), model.into());
                m.insert("content".into(), json!([]));
                m.insert("stop_reason".into(), Value::Null);
                m.insert("stop_sequence".into(), Value::Null);
                m.entry("usage").or_insert_with(|| json!({ "input_tokens": 0, "output_tokens": 0 }));
                out.push(payload(json!({ "type": "message_start", "message": m })));
            }
            StreamEvent::Text { text } => {
                let index = self.block(Open::Text, json!({ "type": "text", "text": "" }), out);
                let delta = json!({ "type": "text_delta", "text": text });
                out.push(payload(json!({ "type": "content_block_delta", "index": index, "delta": delta })));
            }
            StreamEvent::Reasoning { text } => {
                let block = json!({ "type": "thinking", "thinking": "", "signature": "" });
                let index = self.block(Open::Thinking, block, out);
                let delta = json!({ "type": "thinking_delta", "thinking": text });
                out.push(payload(json!({ "type": "content_block_delta", "index": index, "delta": delta })));
            }
            StreamEvent::ToolCall { index, id, name } => {
                self.close(out);
                let block = json!({ "type": "tool_use", "id": id, "name": name, "input": {} });
                let at = self.block(Open::Tool(index), block, out);
                let slot = index as usize;
                if slot < MAX_BLOCKS {
                    if self.tools.len() <= slot {
                        self.tools.resize(slot + 1, usize::MAX);
                    }
                    self.tools[slot] = at;
                }
            }
            StreamEvent::ToolArguments { index, arguments } => {
                let Some(&at) = self.tools.get(index as usize).filter(|&&at| at != usize::MAX) else { return };
                if self.open.is_some_and(|(_, i)| i != at) {
                    self.close(out);
                }
                let delta = json!({ "type": "input_json_delta", "partial_json": arguments });
                out.push(payload(json!({ "type": "content_block_delta", "index": at, "delta": delta })));
            }
            StreamEvent::Finish { reason } => {
                self.close(out);
                self.finish = Some(reason);
            }
            StreamEvent::Usage { usage } => self.usage = Some(usage),
        }
    }

    /// The closing events: the open block's stop, `message_delta` with the stop reason and the
    /// usage, and `message_stop`.
    pub fn end(&mut self, out: &mut Vec<Bytes>) {
        if !self.started {
            return;
        }
        self.close(out);
        let (reason, sequence) = match &self.finish {
            Some(f) => finish_from_canonical(f, self.keep),
            None => ("end_turn".into(), Value::Null),
        };
        let usage = usage_from_canonical(self.usage.take().unwrap_or_default(), self.keep);
        let delta = json!({ "stop_reason": reason, "stop_sequence": sequence });
        out.push(payload(json!({ "type": "message_delta", "delta": delta, "usage": usage })));
        out.push(payload(json!({ "type": "message_stop" })));
    }

    /// The index of an open block of `kind`, opening one (and closing another) if needed.
    fn block(&mut self, kind: Open, start: Value, out: &mut Vec<Bytes>) -> usize {
        if let Some((open, index)) = self.open
            && open == kind
        {
            return index;
        }
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some((kind, index));
        out.push(payload(json!({ "type": "content_block_start", "index": index, "content_block": start })));
        index
    }

    /// Closes the open block, as a stream whose upstream closed it (`content_block_stop`): the
    /// next text or thinking opens a new one.
    pub fn close_block(&mut self, out: &mut Vec<Bytes>) {
        self.close(out);
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        if let Some((_, index)) = self.open.take() {
            out.push(payload(json!({ "type": "content_block_stop", "index": index })));
        }
    }
}
