//! OpenAI chat request bodies to and from [`ChatRequest`].

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{Obj, at, indexed, message, need_string, object, take, take_array, take_f64, take_string, take_u64};
use crate::canonical::{ApiFormat, ChatRequest, ConvertError, Tool, ToolChoice};

/// Reads a chat request body (an object, as `json::parse_object` gives it).
///
/// # Errors
/// [`ConvertError`] for a missing `model` or `messages`, a field of the wrong type, or what
/// has no canonical form: the `function` role and legacy `function_call`s, tools other than
/// functions, a `tool_choice` of another shape.
pub fn request_to_canonical(mut body: Obj) -> Result<ChatRequest, ConvertError> {
    let model = need_string(&mut body, "model", "")?;
    let mut names = HashMap::new();
    let messages = take_array(&mut body, "messages", "")?
        .into_iter()
        .enumerate()
        .map(|(i, m)| message::to_canonical(m, &indexed("messages", i), &mut names))
        .collect::<Result<_, _>>()?;
    let tools = take_array(&mut body, "tools", "")?
        .into_iter()
        .enumerate()
        .map(|(i, t)| tool(t, i))
        .collect::<Result<_, _>>()?;
    let tool_choice = take(&mut body, "tool_choice").map(tool_choice).transpose()?;
    // The current name wins; the deprecated one, when both are given, stays in `extra`.
    let max_tokens = match take_u64(&mut body, "max_completion_tokens", "")? {
        Some(n) => Some(n),
        None => take_u64(&mut body, "max_tokens", "")?,
    };
    let temperature = take_f64(&mut body, "temperature", "")?;
    let top_p = take_f64(&mut body, "top_p", "")?;
    let stop = match take(&mut body, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|s| match s {
                Value::String(s) => Ok(s),
                _ => Err(ConvertError::new("stop", "must be a string or an array of strings")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ConvertError::new("stop", "must be a string or an array of strings")),
    };
    let stream = match take(&mut body, "stream") {
        None => false,
        Some(v) => v.as_bool().ok_or_else(|| ConvertError::new("stream", "must be true or false"))?,
    };
    // A canonical answer is one message: several choices cannot be asked of another format.
    if body.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(ConvertError::new("n", "only n = 1 can be served by a provider of another format"));
    }
    Ok(ChatRequest {
        origin: ApiFormat::OpenAi,
        model,
        messages,
        tools,
        tool_choice,
        max_tokens,
        temperature,
        top_p,
        stop,
        stream,
        extra: body,
    })
}

fn tool(v: Value, i: usize) -> Result<Tool, ConvertError> {
    let path = indexed("tools", i);
    let mut t = object(v, &path)?;
    if take_string(&mut t, "type", &path)?.is_some_and(|kind| kind != "function") {
        return Err(ConvertError::new(at(&path, "type"), "only function tools convert"));
    }
    let fpath = at(&path, "function");
    let mut f = object(t.remove("function").unwrap_or(Value::Null), &fpath)?;
    let name = need_string(&mut f, "name", &fpath)?;
    let description = take_string(&mut f, "description", &fpath)?;
    let parameters = take(&mut f, "parameters");
    Ok(Tool { name, description, parameters, extra: f })
}

fn tool_choice(v: Value) -> Result<ToolChoice, ConvertError> {
    match &v {
        Value::String(s) if s == "auto" => return Ok(ToolChoice::Auto),
        Value::String(s) if s == "none" => return Ok(ToolChoice::None),
        Value::String(s) if s == "required" => return Ok(ToolChoice::Required),
        _ => {}
    }
    let name = v.get("function").and_then(|f| f.get("name")).and_then(Value::as_str);
    match (v.get("type").and_then(Value::as_str), name) {
        (Some("function"), Some(name)) => Ok(ToolChoice::Tool { name: name.to_owned() }),
        _ => Err(ConvertError::new("tool_choice", "has no canonical form")),
    }
}

/// Writes a chat request body. From another format, a stream asks for usage
/// (`stream_options.include_usage`): the other format's clients expect token counts at the end.
pub fn request_from_canonical(req: ChatRequest) -> Obj {
    let keep = req.origin == ApiFormat::OpenAi;
    from_canonical(req, keep)
}

pub(super) fn from_canonical(req: ChatRequest, keep: bool) -> Obj {
    let mut o = if keep { req.extra } else { Obj::new() };
    o.insert("model".into(), req.model.into());
    let mut messages = Vec::with_capacity(req.messages.len());
    message::from_canonical(req.messages, keep, &mut messages);
    o.insert("messages".into(), Value::Array(messages));
    if !req.tools.is_empty() {
        let tools = req.tools.into_iter().map(|t| {
            let mut f = if keep { t.extra } else { Obj::new() };
            f.insert("name".into(), t.name.into());
            if let Some(d) = t.description {
                f.insert("description".into(), d.into());
            }
            if let Some(p) = t.parameters {
                f.insert("parameters".into(), p);
            }
            json!({ "type": "function", "function": f })
        });
        o.insert("tools".into(), tools.collect());
    }
    if let Some(choice) = req.tool_choice {
        let v = match choice {
            ToolChoice::Auto => "auto".into(),
            ToolChoice::None => "none".into(),
            ToolChoice::Required => "required".into(),
            ToolChoice::Tool { name } => json!({ "type": "function", "function": { "name": name } }),
        };
        o.insert("tool_choice".into(), v);
    }
    // OpenAI's current name: reasoning models refuse the deprecated `max_tokens`.
    if let Some(n) = req.max_tokens {
        o.insert("max_completion_tokens".into(), n.into());
    }
    if let Some(t) = req.temperature {
        o.insert("temperature".into(), t.into());
    }
    if let Some(p) = req.top_p {
        o.insert("top_p".into(), p.into());
    }
    if !req.stop.is_empty() {
        o.insert("stop".into(), req.stop.into());
    }
    if req.stream {
        o.insert("stream".into(), true.into());
        if !keep {
            o.insert("stream_options".into(), json!({ "include_usage": true }));
        }
    }
    o
}
