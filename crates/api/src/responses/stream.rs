//! Responses streams to and from canonical events.
//!
//! Writing: `response.created` and `response.in_progress` first; text opens a message item
//! (`response.output_item.added`, `response.content_part.added`) and goes out as
//! `response.output_text.delta`; each tool call is a `function_call` item with
//! `response.function_call_arguments.delta`s; an item is closed (`*.done`) when the next one
//! opens or the answer ends, and `response.completed` (or `response.incomplete`) carries the
//! whole response with its usage. Every event has its `sequence_number`. Reasoning is not
//! written (a Responses client reads reasoning only as encrypted items of OpenAI's own).

use bytes::Bytes;
use serde_json::{Value, json};

use super::convert::{message_item, now, status_of, usage_from_canonical, usage_to_canonical};
use crate::canonical::{ConvertError, Finish, StreamEvent, Usage};
use crate::format::ApiFormat;
use crate::openai::canonical::Obj;

/// The item being written.
#[derive(Debug)]
enum Open {
    /// A message; its text so far.
    Text(String),
    /// A function call: its canonical index, call id, name and arguments so far.
    Call { index: u32, call_id: String, name: String, arguments: String },
}

/// Writes canonical events as one Responses stream.
#[derive(Debug, Default)]
pub struct StreamWriter {
    id: String,
    model: String,
    created: u64,
    seq: u64,
    started: bool,
    open: Option<Open>,
    /// Items closed so far, as `response.completed` lists them.
    done: Vec<Value>,
    finish: Option<Finish>,
    usage: Option<Usage>,
}

impl StreamWriter {
    fn push(&mut self, out: &mut Vec<Bytes>, kind: &str, body: Value) {
        // `type` first: the front door frames the event by it without a parse.
        let rest = weir_types::json::write::to_vec(&body);
        let mut event = format!("{{\"type\":\"{kind}\",\"sequence_number\":{}", self.seq).into_bytes();
        match rest.get(1..) {
            Some(inner) if inner.len() > 1 => {
                event.push(b',');
                event.extend_from_slice(inner);
            }
            _ => event.push(b'}'),
        }
        self.seq += 1;
        out.push(Bytes::from(event));
    }

    fn response(&self, status: &str) -> Value {
        json!({
            "id": format!("resp_{}", self.id), "object": "response", "created_at": self.created,
            "status": status, "model": self.model, "output": self.done,
        })
    }

    fn start(&mut self, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        if self.created == 0 {
            self.created = now();
        }
        let response = self.response("in_progress");
        self.push(out, "response.created", json!({ "response": response }));
        self.push(out, "response.in_progress", json!({ "response": response }));
    }

    fn item_id(&self, open: &Open) -> String {
        match open {
            Open::Text(_) => format!("msg_{}", self.id),
            Open::Call { call_id, .. } => format!("fc_{call_id}"),
        }
    }

    /// Closes the open item, if any, with its `*.done` events.
    fn close(&mut self, out: &mut Vec<Bytes>) {
        let Some(open) = self.open.take() else { return };
        let item_id = self.item_id(&open);
        let output_index = self.done.len();
        let item = match open {
            Open::Text(text) => {
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                let ids = json!({"item_id": item_id, "output_index": output_index, "content_index": 0});
                let mut done = ids.clone();
                done["text"] = text.clone().into();
                self.push(out, "response.output_text.done", done);
                let mut part_done = ids;
                part_done["part"] = part;
                self.push(out, "response.content_part.done", part_done);
                message_item(&self.id, text, "completed")
            }
            Open::Call { call_id, name, arguments, .. } => {
                self.push(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": item_id, "output_index": output_index, "arguments": arguments}),
                );
                json!({"type": "function_call", "id": item_id, "call_id": call_id, "name": name,
                    "arguments": arguments, "status": "completed"})
            }
        };
        self.push(out, "response.output_item.done", json!({"output_index": output_index, "item": item}));
        self.done.push(item);
    }

    /// One canonical event's payloads.
    pub fn event(&mut self, event: StreamEvent, out: &mut Vec<Bytes>) {
        match event {
            StreamEvent::Start { id, model, created, .. } => {
                self.id = id;
                self.model = model;
                self.created = created.unwrap_or(0);
                self.start(out);
            }
            StreamEvent::Text { text } => {
                self.start(out);
                if !matches!(self.open, Some(Open::Text(_))) {
                    self.close(out);
                    let output_index = self.done.len();
                    let item = json!({"type": "message", "id": format!("msg_{}", self.id), "status": "in_progress",
                        "role": "assistant", "content": []});
                    self.push(out, "response.output_item.added", json!({"output_index": output_index, "item": item}));
                    self.push(
                        out,
                        "response.content_part.added",
                        json!({"item_id": format!("msg_{}", self.id), "output_index": output_index, "content_index": 0,
                            "part": {"type": "output_text", "text": "", "annotations": []}}),
                    );
                    self.open = Some(Open::Text(String::new()));
                }
                let output_index = self.done.len();
                if let Some(Open::Text(so_far)) = &mut self.open {
                    so_far.push_str(&text);
                }
                let item_id = format!("msg_{}", self.id);
                self.push(
                    out,
                    "response.output_text.delta",
                    json!({"item_id": item_id, "output_index": output_index, "content_index": 0, "delta": text}),
                );
            }
            StreamEvent::ToolCall { index, id, name } => {
                self.start(out);
                self.close(out);
                let output_index = self.done.len();
                let item = json!({"type": "function_call", "id": format!("fc_{id}"), "call_id": id, "name": name,
                    "arguments": "", "status": "in_progress"});
                self.push(out, "response.output_item.added", json!({"output_index": output_index, "item": item}));
                self.open = Some(Open::Call { index, call_id: id, name, arguments: String::new() });
            }
            StreamEvent::ToolArguments { index, arguments } => {
                let output_index = self.done.len();
                let Some(Open::Call { index: open, call_id, arguments: so_far, .. }) = &mut self.open else { return };
                if *open != index {
                    return;
                }
                so_far.push_str(&arguments);
                let item_id = format!("fc_{call_id}");
                self.push(
                    out,
                    "response.function_call_arguments.delta",
                    json!({"item_id": item_id, "output_index": output_index, "delta": arguments}),
                );
            }
            StreamEvent::Finish { reason } => self.finish = Some(reason),
            StreamEvent::Usage { usage } => self.usage = Some(usage),
            StreamEvent::Reasoning { .. } => {}
        }
    }

    /// The closing events of a stream that went well.
    pub fn end(&mut self, out: &mut Vec<Bytes>) {
        self.start(out);
        self.close(out);
        let (status, incomplete) = status_of(self.finish.as_ref());
        let mut response = self.response(status);
        response["incomplete_details"] = incomplete;
        response["usage"] = self.usage.as_ref().map_or(Value::Null, usage_from_canonical);
        let kind = if status == "completed" { "response.completed" } else { "response.incomplete" };
        self.push(out, kind, json!({ "response": response }));
    }
}

/// Reads one Responses stream into canonical events.
#[derive(Debug, Default)]
pub struct StreamReader {
    calls: u32,
    saw_call: bool,
}

impl StreamReader {
    /// The canonical events of one event payload.
    ///
    /// # Errors
    /// A payload that is not a JSON object.
    pub fn event(&mut self, payload: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), ConvertError> {
        let v: Value = serde_json::from_slice(payload).map_err(|e| ConvertError::new("event", e.to_string()))?;
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or_default().to_owned();
        match v.get("type").and_then(Value::as_str).unwrap_or_default() {
            "response.created" => out.push(StreamEvent::Start {
                origin: ApiFormat::Responses,
                id: s("/response/id"),
                model: s("/response/model"),
                created: v.pointer("/response/created_at").and_then(Value::as_u64),
                extra: Obj::new(),
            }),
            "response.output_text.delta" => out.push(StreamEvent::Text { text: s("/delta") }),
            "response.output_item.added" if s("/item/type") == "function_call" => {
                self.saw_call = true;
                out.push(StreamEvent::ToolCall { index: self.calls, id: s("/item/call_id"), name: s("/item/name") });
                self.calls += 1;
            }
            "response.function_call_arguments.delta" => {
                out.push(StreamEvent::ToolArguments { index: self.calls.saturating_sub(1), arguments: s("/delta") })
            }
            kind @ ("response.completed" | "response.incomplete") => {
                let reason = match v.pointer("/response/incomplete_details/reason").and_then(Value::as_str) {
                    Some("max_output_tokens") => Finish::Length,
                    Some("content_filter") => Finish::ContentFilter,
                    Some(other) => Finish::Other(other.to_owned()),
                    None if kind == "response.incomplete" => Finish::Other("incomplete".into()),
                    None if self.saw_call => Finish::ToolCalls,
                    None => Finish::Stop,
                };
                out.push(StreamEvent::Finish { reason });
                if let Some(u) = v.pointer("/response/usage").filter(|u| u.is_object()) {
                    out.push(StreamEvent::Usage { usage: usage_to_canonical(u.clone()) });
                }
            }
            _ => {}
        }
        Ok(())
    }
}
