//! OpenAI `chat.completion.chunk` stream events to and from [`StreamEvent`]s. Each direction
//! keeps a little state across the events of one stream: which tool calls have begun, and the
//! id, model and time every OpenAI chunk repeats. The `data:` framing and `[DONE]` belong to
//! the caller.

use serde_json::{Value, json};

use super::response::{unix_now, usage_from_canonical, usage_to_canonical};
use super::{Obj, finish_from_canonical, finish_to_canonical, object, take_array, take_object, take_string, take_u64};
use crate::canonical::{ApiFormat, ConvertError, Extra, StreamEvent};

/// Most tool calls in one streamed answer; bounds the state an upstream's `index` can grow.
const MAX_TOOL_CALLS: usize = 256;

/// Reads the chunks of one OpenAI stream.
#[derive(Debug, Default)]
pub struct StreamReader {
    started: bool,
    /// `calls[i]`: tool call `i` has begun (some servers repeat its id in later deltas).
    calls: Vec<bool>,
}

impl StreamReader {
    /// Reads one chunk (the JSON after `data: `, other than `[DONE]`), appending its events
    /// to `out`. The first chunk also yields [`StreamEvent::Start`].
    ///
    /// # Errors
    /// [`ConvertError`] for a chunk that is not a JSON object, a field of the wrong type, a
    /// choice other than the first (`n` > 1), or a tool call index past 255.
    pub fn chunk(&mut self, payload: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), ConvertError> {
        let v: Value = serde_json::from_slice(payload).map_err(|e| ConvertError::new("", format!("not JSON: {e}")))?;
        self.read(object(v, "")?, out)
    }

    fn read(&mut self, mut c: Obj, out: &mut Vec<StreamEvent>) -> Result<(), ConvertError> {
        let choices = take_array(&mut c, "choices", "")?;
        let usage = take_object(&mut c, "usage", "")?;
        if !self.started {
            self.started = true;
            let id = take_string(&mut c, "id", "")?.unwrap_or_default();
            let model = take_string(&mut c, "model", "")?.unwrap_or_default();
            let created = take_u64(&mut c, "created", "")?;
            c.remove("object");
            // Per-chunk padding against length side channels: nothing to keep.
            c.remove("obfuscation");
            out.push(StreamEvent::Start { origin: ApiFormat::OpenAi, id, model, created, extra: c });
        }
        for (i, choice) in choices.into_iter().enumerate() {
            let path = format!("choices[{i}]");
            let mut choice = object(choice, &path)?;
            if take_u64(&mut choice, "index", &path)?.unwrap_or(0) != 0 {
                return Err(ConvertError::new(format!("{path}.index"), "only one choice converts"));
            }
            if let Some(delta) = take_object(&mut choice, "delta", &path)? {
                self.delta(delta, &format!("{path}.delta"), out)?;
            }
            if let Some(reason) = take_string(&mut choice, "finish_reason", &path)? {
                out.push(StreamEvent::Finish { reason: finish_to_canonical(&reason) });
            }
        }
        if let Some(u) = usage {
            out.push(StreamEvent::Usage { usage: usage_to_canonical(u, "usage")? });
        }
        Ok(())
    }

    fn delta(&mut self, mut d: Obj, path: &str, out: &mut Vec<StreamEvent>) -> Result<(), ConvertError> {
        if let Some(text) = take_string(&mut d, "reasoning_content", path)?.filter(|t| !t.is_empty()) {
            out.push(StreamEvent::Reasoning { text });
        }
        if let Some(text) = take_string(&mut d, "content", path)?.filter(|t| !t.is_empty()) {
            out.push(StreamEvent::Text { text });
        }
        for (j, call) in take_array(&mut d, "tool_calls", path)?.into_iter().enumerate() {
            let cpath = format!("{path}.tool_calls[{j}]");
            let mut call = object(call, &cpath)?;
            let index = take_u64(&mut call, "index", &cpath)?.unwrap_or(0);
            let slot = usize::try_from(index).ok().filter(|&i| i < MAX_TOOL_CALLS);
            let Some(slot) = slot else {
                return Err(ConvertError::new(format!("{cpath}.index"), "more tool calls than 256"));
            };
            let mut f = take_object(&mut call, "function", &cpath)?.unwrap_or_default();
            let fpath = format!("{cpath}.function");
            let name = take_string(&mut f, "name", &fpath)?;
            let index = slot as u32;
            if let Some(id) = take_string(&mut call, "id", &cpath)?
                && !self.calls.get(slot).copied().unwrap_or(false)
            {
                if self.calls.len() <= slot {
                    self.calls.resize(slot + 1, false);
                }
                self.calls[slot] = true;
                out.push(StreamEvent::ToolCall { index, id, name: name.unwrap_or_default() });
            }
            if let Some(arguments) = take_string(&mut f, "arguments", &fpath)?.filter(|a| !a.is_empty()) {
                out.push(StreamEvent::ToolArguments { index, arguments });
            }
        }
        Ok(())
    }
}

/// Writes [`StreamEvent`]s as the chunks of one OpenAI stream.
#[derive(Debug, Default)]
pub struct StreamWriter {
    id: String,
    model: String,
    created: u64,
    /// Fields every chunk repeats (`system_fingerprint`, ...), when the stream came from OpenAI.
    repeated: Extra,
    keep: bool,
}

impl StreamWriter {
    /// The chunk (the JSON after `data: `) for one event. Reasoning goes in
    /// `delta.reasoning_content`, where vLLM and DeepSeek put it.
    pub fn event(&mut self, ev: StreamEvent) -> Value {
        let delta = match ev {
            StreamEvent::Start { origin, id, model, created, extra } => {
                self.keep = origin == ApiFormat::OpenAi;
                (self.id, self.model, self.created) = (id, model, created.unwrap_or_else(unix_now));
                self.repeated = if self.keep { extra } else { Extra::new() };
                json!({ "role": "assistant", "content": "" })
            }
            StreamEvent::Text { text } => json!({ "content": text }),
            StreamEvent::Reasoning { text } => json!({ "reasoning_content": text }),
            StreamEvent::ToolCall { index, id, name } => json!({ "tool_calls": [{
                "index": index, "id": id, "type": "function", "function": { "name": name, "arguments": "" }
            }] }),
            StreamEvent::ToolArguments { index, arguments } => {
                json!({ "tool_calls": [{ "index": index, "function": { "arguments": arguments } }] })
            }
            StreamEvent::Finish { reason } => {
                let reason = finish_from_canonical(&reason, self.keep);
                let choice = json!({ "index": 0, "delta": {}, "finish_reason": reason });
                return self.chunk(Value::Array(vec![choice]), None);
            }
            StreamEvent::Usage { usage } => {
                let usage = usage_from_canonical(usage, self.keep);
                return self.chunk(Value::Array(Vec::new()), Some(usage));
            }
        };
        let choice = json!({ "index": 0, "delta": delta, "finish_reason": null });
        self.chunk(Value::Array(vec![choice]), None)
    }

    fn chunk(&self, choices: Value, usage: Option<Obj>) -> Value {
        let mut o = self.repeated.clone();
        o.insert("id".into(), self.id.as_str().into());
        o.insert("object".into(), "chat.completion.chunk".into());
        o.insert("created".into(), self.created.into());
        o.insert("model".into(), self.model.as_str().into());
        o.insert("choices".into(), choices);
        if let Some(u) = usage {
            o.insert("usage".into(), Value::Object(u));
        }
        Value::Object(o)
    }
}
