//! OpenAI `messages[]` and their content parts, both ways. Shared by requests (the whole
//! conversation) and answers (one assistant message).

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{Obj, at, indexed, need_string, object, take, take_array, take_string};
use crate::canonical::{ConvertError, Extra, ImageSource, Message, Part, Role};

/// Reads one message. `names` maps the tool call ids seen so far to their tool's name, which
/// a tool result carries for formats that link results by name (Gemini).
pub(super) fn to_canonical(v: Value, path: &str, names: &mut HashMap<String, String>) -> Result<Message, ConvertError> {
    let mut m = object(v, path)?;
    let role = need_string(&mut m, "role", path)?;
    let role = match role.as_str() {
        "system" => Role::System,
        "developer" => Role::Developer,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        _ => return Err(ConvertError::new(at(path, "role"), format!("{role:?} has no canonical form"))),
    };
    if role == Role::Tool {
        let id = need_string(&mut m, "tool_call_id", path)?;
        let content = parts(take(&mut m, "content"), &at(path, "content"))?;
        let name = names.get(&id).cloned();
        let result = Part::ToolResult { id, name, content, is_error: false, extra: Extra::new() };
        return Ok(Message { role, parts: vec![result], extra: m });
    }
    let mut out = Vec::new();
    if let Some(text) = take_string(&mut m, "reasoning_content", path)? {
        // Not OpenAI's own: the field vLLM, DeepSeek and others stream reasoning in.
        out.push(Part::Reasoning { text, signature: None, extra: Extra::new() });
    }
    out.extend(parts(take(&mut m, "content"), &at(path, "content"))?);
    for (i, call) in take_array(&mut m, "tool_calls", path)?.into_iter().enumerate() {
        let part = tool_call(call, &indexed(&at(path, "tool_calls"), i))?;
        if let Part::ToolCall { id, name, .. } = &part {
            names.insert(id.clone(), name.clone());
        }
        out.push(part);
    }
    if m.contains_key("function_call") {
        return Err(ConvertError::new(at(path, "function_call"), "legacy function calls have no canonical form"));
    }
    Ok(Message { role, parts: out, extra: m })
}

fn tool_call(v: Value, path: &str) -> Result<Part, ConvertError> {
    let mut c = object(v, path)?;
    match c.remove("type") {
        Some(Value::String(t)) if t == "function" => {}
        None => {}
        Some(_) => return Err(ConvertError::new(at(path, "type"), "only function tool calls convert")),
    }
    let id = need_string(&mut c, "id", path)?;
    let fpath = at(path, "function");
    let mut f = object(c.remove("function").unwrap_or(Value::Null), &fpath)?;
    let name = need_string(&mut f, "name", &fpath)?;
    let arguments = take_string(&mut f, "arguments", &fpath)?.unwrap_or_default();
    Ok(Part::ToolCall { id, name, arguments, extra: c })
}

/// `content`: absent or `null`, a string, or a list of parts.
fn parts(content: Option<Value>, path: &str) -> Result<Vec<Part>, ConvertError> {
    match content {
        None => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![Part::Text { text, extra: Extra::new() }]),
        Some(Value::Array(items)) => {
            items.into_iter().enumerate().map(|(i, item)| part(item, &indexed(path, i))).collect()
        }
        Some(_) => Err(ConvertError::new(path, "must be a string or an array of parts")),
    }
}

fn part(v: Value, path: &str) -> Result<Part, ConvertError> {
    let mut p = object(v, path)?;
    let kind = p.get("type").and_then(Value::as_str).unwrap_or_default();
    match kind {
        "text" if p.get("text").is_some_and(Value::is_string) => {
            p.remove("type");
            let text = need_string(&mut p, "text", path)?;
            Ok(Part::Text { text, extra: p })
        }
        "image_url" if p.len() == 2 => {
            let ipath = at(path, "image_url");
            let mut image = match p.remove("image_url") {
                Some(Value::String(url)) => Obj::from_iter([("url".to_owned(), Value::String(url))]),
                other => object(other.unwrap_or(Value::Null), &ipath)?,
            };
            let url = need_string(&mut image, "url", &ipath)?;
            Ok(Part::Image { source: image_source(url), extra: image })
        }
        _ => Ok(Part::Unknown { part: p }),
    }
}

/// A `data:` URL with base64 bytes becomes the bytes; any other URL stays a URL.
fn image_source(url: String) -> ImageSource {
    let parsed = url.strip_prefix("data:").and_then(|rest| rest.split_once(";base64,"));
    match parsed {
        Some((media_type, data)) if !media_type.contains([',', ';']) => {
            ImageSource::Base64 { media_type: media_type.to_owned(), data: data.to_owned() }
        }
        _ => ImageSource::Url { url },
    }
}

/// Writes the conversation. A message's tool results become `tool` messages of their own,
/// ahead of what else it holds (Anthropic puts results and text in one user turn; OpenAI
/// wants the results right after the assistant's calls). `keep`: write `extra` fields back.
pub(super) fn from_canonical(messages: Vec<Message>, keep: bool, out: &mut Vec<Value>) {
    for m in messages {
        let mut rest = Vec::with_capacity(m.parts.len());
        let mut results = 0;
        for part in m.parts {
            match part {
                Part::ToolResult { id, content, extra, .. } => {
                    results += 1;
                    let mut t = Obj::new();
                    if keep {
                        t.extend(m.extra.clone());
                        t.extend(extra);
                    }
                    t.insert("role".into(), "tool".into());
                    t.insert("tool_call_id".into(), id.into());
                    t.insert("content".into(), content_value(content, keep).unwrap_or_else(|| "".into()));
                    out.push(Value::Object(t));
                }
                other => rest.push(other),
            }
        }
        if results > 0 && rest.is_empty() {
            continue;
        }
        let role = match m.role {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User | Role::Tool => "user",
            Role::Assistant => "assistant",
        };
        out.push(Value::Object(message(role, rest, m.extra, keep, false)));
    }
}

/// One message object. Reasoning is written only in answers (`reasoning_content`): OpenAI
/// refuses the field in requests.
pub(super) fn message(role: &str, parts: Vec<Part>, extra: Extra, keep: bool, answer: bool) -> Obj {
    let mut o = if keep { extra } else { Obj::new() };
    o.insert("role".into(), role.into());
    let mut content = Vec::with_capacity(parts.len());
    let mut calls = Vec::new();
    let mut reasoning = String::new();
    for part in parts {
        match part {
            Part::ToolCall { id, name, arguments, extra } => {
                let mut c = if keep { extra } else { Obj::new() };
                c.insert("id".into(), id.into());
                c.insert("type".into(), "function".into());
                c.insert("function".into(), json!({ "name": name, "arguments": arguments }));
                calls.push(Value::Object(c));
            }
            Part::Reasoning { text, .. } => reasoning.push_str(&text),
            other => content.push(other),
        }
    }
    o.insert("content".into(), content_value(content, keep).unwrap_or(Value::Null));
    if !calls.is_empty() {
        o.insert("tool_calls".into(), Value::Array(calls));
    }
    if answer && !reasoning.is_empty() {
        o.insert("reasoning_content".into(), reasoning.into());
    }
    o
}

/// `content`: a lone plain text part as a string, else a list of parts; `None` when empty.
fn content_value(parts: Vec<Part>, keep: bool) -> Option<Value> {
    if let [Part::Text { text, extra }] = parts.as_slice()
        && (extra.is_empty() || !keep)
    {
        return Some(text.as_str().into());
    }
    let items: Vec<Value> = parts.into_iter().filter_map(|p| part_value(p, keep)).collect();
    (!items.is_empty()).then_some(Value::Array(items))
}

fn part_value(part: Part, keep: bool) -> Option<Value> {
    let o = match part {
        Part::Text { text, extra } => {
            let mut o = if keep { extra } else { Obj::new() };
            o.insert("type".into(), "text".into());
            o.insert("text".into(), text.into());
            o
        }
        Part::Image { source, extra } => {
            let mut image = if keep { extra } else { Obj::new() };
            let url = match source {
                ImageSource::Url { url } => url,
                ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
            };
            image.insert("url".into(), url.into());
            Obj::from_iter([("type".to_owned(), "image_url".into()), ("image_url".to_owned(), Value::Object(image))])
        }
        Part::Unknown { part } if keep => part,
        _ => return None,
    };
    Some(Value::Object(o))
}
