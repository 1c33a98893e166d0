//! OpenAI Responses bodies to and from the canonical types: requests and whole answers.
//!
//! Read: `instructions` and `input` (a string, or items: messages with text and image parts,
//! `function_call`, `function_call_output`) become the conversation; function `tools`,
//! `tool_choice`, `max_output_tokens`, `temperature`, `top_p`, and `text.format` (kept as a
//! chat-style `response_format`, which the Gemini and Bedrock converters read). What the other
//! formats cannot express is refused with the path to it: `previous_response_id` and
//! `conversation` (the history lives at OpenAI), built-in tools (`web_search`, `file_search`,
//! ...), and input items other than the ones above. Everything else unread stays in `extra`.

use serde_json::{Value, json};

use crate::canonical::{
    ChatRequest, ChatResponse, ConvertError, Finish, ImageSource, Message, Part, Role, Tool, ToolChoice, Usage,
};
use crate::format::ApiFormat;
use crate::openai::canonical::{Obj, at, object, take, take_f64, take_string, take_u64};

const ORIGIN: ApiFormat = ApiFormat::Responses;

/// Request fields that hold state at OpenAI or tools only OpenAI runs: no other provider can
/// answer them as asked.
const REFUSED: &[&str] = &["previous_response_id", "conversation", "prompt", "background"];

/// A Responses request body as a canonical chat request.
///
/// # Errors
/// What has no canonical form, with the path to it.
pub fn request_to_canonical(mut o: Obj) -> Result<ChatRequest, ConvertError> {
    if let Some(key) = REFUSED.iter().find(|k| o.get(**k).is_some_and(|v| !v.is_null())) {
        return Err(ConvertError::new(*key, "only an OpenAI provider can serve it (the state lives there)"));
    }
    let model = take_string(&mut o, "model", "")?.unwrap_or_default();
    let mut messages = Vec::new();
    if let Some(text) = take_string(&mut o, "instructions", "")? {
        messages.push(text_message(Role::System, text));
    }
    match take(&mut o, "input") {
        Some(Value::String(s)) => messages.push(text_message(Role::User, s)),
        Some(Value::Array(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                read_item(item, &format!("input[{i}]"), &mut messages)?;
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => return Err(ConvertError::new("input", "must be a string or a list of items")),
    }
    let tools = match take(&mut o, "tools") {
        Some(Value::Array(tools)) => tools
            .into_iter()
            .enumerate()
            .map(|(i, t)| read_tool(t, &format!("tools[{i}]")))
            .collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    let tool_choice = match take(&mut o, "tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => return Err(ConvertError::new("tool_choice", "must be auto, none, required or a function")),
        }),
        Some(v) => match (v.get("type").and_then(Value::as_str), v.get("name").and_then(Value::as_str)) {
            (Some("function"), Some(name)) => Some(ToolChoice::Tool { name: name.to_owned() }),
            _ => return Err(ConvertError::new("tool_choice", "only a function can be named")),
        },
    };
    let max_tokens = take_u64(&mut o, "max_output_tokens", "")?;
    let temperature = take_f64(&mut o, "temperature", "")?;
    let top_p = take_f64(&mut o, "top_p", "")?;
    let stream = take(&mut o, "stream").and_then(|v| v.as_bool()).unwrap_or(false);
    if let Some(mut text) = take(&mut o, "text").and_then(|t| object(t, "text").ok())
        && let Some(format) = take(&mut text, "format").filter(|f| !f.is_null())
    {
        o.insert("response_format".into(), response_format(format)?);
    }
    Ok(ChatRequest {
        origin: ORIGIN,
        model,
        messages,
        tools,
        tool_choice,
        max_tokens,
        temperature,
        top_p,
        stop: Vec::new(),
        stream,
        extra: o,
    })
}

/// `text.format` in chat's `response_format` shape.
fn response_format(format: Value) -> Result<Value, ConvertError> {
    let mut f = object(format, "text.format")?;
    match take_string(&mut f, "type", "text.format")?.as_deref() {
        Some("text") => Ok(json!({"type": "text"})),
        Some("json_object") => Ok(json!({"type": "json_object"})),
        Some("json_schema") => {
            let name = take(&mut f, "name").unwrap_or_else(|| "answer".into());
            let schema = take(&mut f, "schema").unwrap_or(Value::Null);
            let strict = take(&mut f, "strict").unwrap_or(Value::Null);
            Ok(json!({"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": strict}}))
        }
        _ => Err(ConvertError::new("text.format.type", "must be text, json_object or json_schema")),
    }
}

fn text_message(role: Role, text: String) -> Message {
    Message { role, parts: vec![Part::Text { text, extra: Obj::new() }], extra: Obj::new() }
}

/// One input item, appended to `out` (consecutive function calls join one assistant turn).
fn read_item(item: Value, path: &str, out: &mut Vec<Message>) -> Result<(), ConvertError> {
    let mut o = object(item, path)?;
    let kind = take_string(&mut o, "type", path)?;
    match kind.as_deref() {
        None | Some("message") => {
            let role = match take_string(&mut o, "role", path)?.as_deref() {
                Some("user") => Role::User,
                Some("assistant") => Role::Assistant,
                Some("system") => Role::System,
                Some("developer") => Role::Developer,
                _ => return Err(ConvertError::new(at(path, "role"), "must be user, assistant, system or developer")),
            };
            let parts = match take(&mut o, "content") {
                Some(Value::String(s)) => vec![Part::Text { text: s, extra: Obj::new() }],
                Some(Value::Array(parts)) => parts
                    .into_iter()
                    .enumerate()
                    .map(|(i, p)| read_part(p, &format!("{path}.content[{i}]")))
                    .collect::<Result<_, _>>()?,
                _ => return Err(ConvertError::new(at(path, "content"), "must be a string or a list of parts")),
            };
            out.push(Message { role, parts, extra: Obj::new() });
        }
        Some("function_call") => {
            let id = take_string(&mut o, "call_id", path)?
                .ok_or_else(|| ConvertError::new(at(path, "call_id"), "is required"))?;
            let name =
                take_string(&mut o, "name", path)?.ok_or_else(|| ConvertError::new(at(path, "name"), "is required"))?;
            let arguments = take_string(&mut o, "arguments", path)?.unwrap_or_else(|| "{}".into());
            let call = Part::ToolCall { id, name, arguments, extra: Obj::new() };
            match out.last_mut() {
                Some(m) if m.role == Role::Assistant && m.parts.iter().all(|p| matches!(p, Part::ToolCall { .. })) => {
                    m.parts.push(call);
                }
                _ => out.push(Message { role: Role::Assistant, parts: vec![call], extra: Obj::new() }),
            }
        }
        Some("function_call_output") => {
            let id = take_string(&mut o, "call_id", path)?
                .ok_or_else(|| ConvertError::new(at(path, "call_id"), "is required"))?;
            let content = match take(&mut o, "output") {
                Some(Value::String(s)) => vec![Part::Text { text: s, extra: Obj::new() }],
                Some(Value::Array(parts)) => parts
                    .into_iter()
                    .enumerate()
                    .map(|(i, p)| read_part(p, &format!("{path}.output[{i}]")))
                    .collect::<Result<_, _>>()?,
                _ => return Err(ConvertError::new(at(path, "output"), "must be a string or a list of parts")),
            };
            let result = Part::ToolResult { id, name: None, content, is_error: false, extra: Obj::new() };
            out.push(Message { role: Role::Tool, parts: vec![result], extra: Obj::new() });
        }
        // Earlier reasoning is the model's own bookkeeping: another model cannot read it.
        Some("reasoning") => {}
        Some(other) => {
            return Err(ConvertError::new(
                at(path, "type"),
                format!("`{other}` items can only go to an OpenAI provider"),
            ));
        }
    }
    Ok(())
}

fn read_part(part: Value, path: &str) -> Result<Part, ConvertError> {
    let mut p = object(part, path)?;
    match take_string(&mut p, "type", path)?.as_deref() {
        Some("input_text" | "output_text" | "text") => {
            let text = take_string(&mut p, "text", path)?.unwrap_or_default();
            Ok(Part::Text { text, extra: Obj::new() })
        }
        Some("input_image") => {
            let url = take_string(&mut p, "image_url", path)?.ok_or_else(|| {
                ConvertError::new(at(path, "image_url"), "is required (file_id images stay at OpenAI)")
            })?;
            let source = match url.strip_prefix("data:").and_then(|rest| rest.split_once(";base64,")) {
                Some((media_type, data)) => ImageSource::Base64 { media_type: media_type.into(), data: data.into() },
                None => ImageSource::Url { url },
            };
            Ok(Part::Image { source, extra: p })
        }
        Some("refusal") => {
            let text = take_string(&mut p, "refusal", path)?.unwrap_or_default();
            Ok(Part::Text { text, extra: Obj::new() })
        }
        Some(other) => {
            Err(ConvertError::new(at(path, "type"), format!("`{other}` parts can only go to an OpenAI provider")))
        }
        None => Err(ConvertError::new(at(path, "type"), "is required")),
    }
}

fn read_tool(tool: Value, path: &str) -> Result<Tool, ConvertError> {
    let mut t = object(tool, path)?;
    match take_string(&mut t, "type", path)?.as_deref() {
        Some("function") => {}
        Some(other) => {
            return Err(ConvertError::new(at(path, "type"), format!("the `{other}` tool runs only at OpenAI")));
        }
        None => return Err(ConvertError::new(at(path, "type"), "is required")),
    }
    let name = take_string(&mut t, "name", path)?.ok_or_else(|| ConvertError::new(at(path, "name"), "is required"))?;
    let description = take_string(&mut t, "description", path)?;
    let parameters = take(&mut t, "parameters");
    Ok(Tool { name, description, parameters, extra: t })
}

/// A canonical chat request as a Responses body.
pub fn request_from_canonical(req: ChatRequest) -> Obj {
    let keep = req.origin == ORIGIN;
    let mut o = if keep { req.extra } else { Obj::new() };
    o.insert("model".into(), req.model.into());
    let mut instructions = Vec::new();
    let mut input = Vec::new();
    for m in req.messages {
        let role = match m.role {
            Role::System | Role::Developer if input.is_empty() => {
                instructions.extend(m.parts.into_iter().filter_map(|p| match p {
                    Part::Text { text, .. } => Some(text),
                    _ => None,
                }));
                continue;
            }
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "user",
        };
        let mut content = Vec::new();
        for part in m.parts {
            match part {
                Part::Text { text, .. } => {
                    let kind = if role == "assistant" { "output_text" } else { "input_text" };
                    content.push(json!({"type": kind, "text": text}));
                }
                Part::Image { source, .. } => {
                    let url = match source {
                        ImageSource::Url { url } => url,
                        ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
                    };
                    content.push(json!({"type": "input_image", "image_url": url}));
                }
                Part::ToolCall { id, name, arguments, .. } => {
                    input.push(json!({"type": "function_call", "call_id": id, "name": name, "arguments": arguments}));
                }
                Part::ToolResult { id, content: result, .. } => {
                    let text: String = result
                        .into_iter()
                        .filter_map(|p| match p {
                            Part::Text { text, .. } => Some(text),
                            _ => None,
                        })
                        .collect();
                    input.push(json!({"type": "function_call_output", "call_id": id, "output": text}));
                }
                Part::Reasoning { .. } | Part::Unknown { .. } => {}
            }
        }
        if !content.is_empty() {
            input.push(json!({"type": "message", "role": role, "content": content}));
        }
    }
    if !instructions.is_empty() {
        o.insert("instructions".into(), instructions.join("\n\n").into());
    }
    o.insert("input".into(), input.into());
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .into_iter()
            .map(|t| {
                let mut f = if keep { t.extra } else { Obj::new() };
                f.insert("type".into(), "function".into());
                f.insert("name".into(), t.name.into());
                if let Some(d) = t.description {
                    f.insert("description".into(), d.into());
                }
                if let Some(p) = t.parameters {
                    f.insert("parameters".into(), p);
                }
                Value::Object(f)
            })
            .collect();
        o.insert("tools".into(), tools.into());
    }
    if let Some(choice) = req.tool_choice {
        let v = match choice {
            ToolChoice::Auto => "auto".into(),
            ToolChoice::None => "none".into(),
            ToolChoice::Required => "required".into(),
            ToolChoice::Tool { name } => json!({"type": "function", "name": name}),
        };
        o.insert("tool_choice".into(), v);
    }
    if let Some(n) = req.max_tokens {
        o.insert("max_output_tokens".into(), n.into());
    }
    if let Some(t) = req.temperature {
        o.insert("temperature".into(), t.into());
    }
    if let Some(p) = req.top_p {
        o.insert("top_p".into(), p.into());
    }
    if req.stream {
        o.insert("stream".into(), true.into());
    }
    o
}

/// A Responses answer as a canonical one: its output messages' text, function calls and usage.
///
/// # Errors
/// A malformed answer, with the path to it.
pub fn response_to_canonical(mut o: Obj) -> Result<ChatResponse, ConvertError> {
    let id = take_string(&mut o, "id", "")?.unwrap_or_default();
    let model = take_string(&mut o, "model", "")?.unwrap_or_default();
    let created = take_u64(&mut o, "created_at", "")?;
    let mut parts = Vec::new();
    let mut calls = false;
    if let Some(Value::Array(items)) = take(&mut o, "output") {
        for item in items {
            match item.get("type").and_then(Value::as_str) {
                Some("message") => {
                    for c in item.get("content").and_then(Value::as_array).into_iter().flatten() {
                        if let Some(text) = c.get("text").and_then(Value::as_str) {
                            parts.push(Part::Text { text: text.to_owned(), extra: Obj::new() });
                        }
                    }
                }
                Some("function_call") => {
                    calls = true;
                    let s = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
                    parts.push(Part::ToolCall {
                        id: s("call_id"),
                        name: s("name"),
                        arguments: s("arguments"),
                        extra: Obj::new(),
                    });
                }
                _ => {}
            }
        }
    }
    let incomplete =
        take(&mut o, "incomplete_details").and_then(|d| d.get("reason").and_then(Value::as_str).map(str::to_owned));
    let finish = match incomplete.as_deref() {
        Some("max_output_tokens") => Finish::Length,
        Some("content_filter") => Finish::ContentFilter,
        Some(other) => Finish::Other(other.to_owned()),
        None if calls => Finish::ToolCalls,
        None => Finish::Stop,
    };
    let usage = take(&mut o, "usage").filter(Value::is_object).map(usage_to_canonical);
    let message = Message { role: Role::Assistant, parts, extra: Obj::new() };
    Ok(ChatResponse { origin: ORIGIN, id, model, created, message, finish: Some(finish), usage, extra: Obj::new() })
}

pub(super) fn usage_to_canonical(u: Value) -> Usage {
    let n = |p: &str| u.pointer(p).and_then(Value::as_u64);
    Usage {
        input_tokens: n("/input_tokens").unwrap_or(0),
        output_tokens: n("/output_tokens").unwrap_or(0),
        cache_read_tokens: n("/input_tokens_details/cached_tokens"),
        cache_write_tokens: None,
        reasoning_tokens: n("/output_tokens_details/reasoning_tokens"),
        extra: Obj::new(),
    }
}

pub(super) fn usage_from_canonical(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cache_read_tokens.unwrap_or(0)},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens.unwrap_or(0)},
        "total_tokens": u.input_tokens + u.output_tokens,
    })
}

/// The output items of an answer: a message with its text (when there is any), then one
/// `function_call` item per tool call.
pub(super) fn output_items(id: &str, parts: Vec<Part>) -> Vec<Value> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in parts {
        match part {
            Part::Text { text: t, .. } => text.push_str(&t),
            Part::ToolCall { id: call_id, name, arguments, .. } => calls.push(json!({
                "type": "function_call", "id": format!("fc_{call_id}"), "call_id": call_id,
                "name": name, "arguments": arguments, "status": "completed",
            })),
            _ => {}
        }
    }
    let mut out = Vec::with_capacity(1 + calls.len());
    if !text.is_empty() || calls.is_empty() {
        out.push(message_item(id, text, "completed"));
    }
    out.extend(calls);
    out
}

pub(super) fn message_item(id: &str, text: String, status: &str) -> Value {
    json!({
        "type": "message", "id": format!("msg_{id}"), "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    })
}

/// `status` and `incomplete_details` for a finish.
pub(super) fn status_of(finish: Option<&Finish>) -> (&'static str, Value) {
    match finish {
        Some(Finish::Length) => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some(Finish::ContentFilter) => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// A canonical answer as a Responses body.
pub fn response_from_canonical(resp: ChatResponse) -> Obj {
    let (status, incomplete) = status_of(resp.finish.as_ref());
    let id = resp.id;
    let output = output_items(&id, resp.message.parts);
    let mut o = Obj::new();
    o.insert("id".into(), format!("resp_{id}").into());
    o.insert("object".into(), "response".into());
    o.insert("created_at".into(), resp.created.unwrap_or_else(now).into());
    o.insert("status".into(), status.into());
    o.insert("incomplete_details".into(), incomplete);
    o.insert("model".into(), resp.model.into());
    o.insert("output".into(), output.into());
    o.insert("usage".into(), resp.usage.as_ref().map_or(Value::Null, usage_from_canonical));
    o
}

pub(super) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
