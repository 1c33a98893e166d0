//! Anthropic Messages request bodies to and from [`ChatRequest`].

use serde_json::{Value, json};

use super::content;
use crate::canonical::{ApiFormat, ChatRequest, ConvertError, Extra, Message, Part, Role, Tool, ToolChoice};
use crate::openai::canonical::{
    Obj, at, indexed, need_string, object, take, take_array, take_f64, take_string, take_u64,
};

/// Reads a Messages request body. `system` becomes a leading [`Role::System`] message; a user
/// turn's `tool_result` blocks stay in that user message ([`Role::User`], as the canonical
/// types keep them). `top_k`, `thinking`, `metadata`, `tool_choice.disable_parallel_tool_use`
/// and the like stay in `extra`: only Anthropic reads them.
///
/// # Errors
/// [`ConvertError`] for a missing `model` or `messages`, a role other than user or assistant,
/// a field of the wrong type, or an image source other than base64 or url.
pub fn request_to_canonical(mut body: Obj) -> Result<ChatRequest, ConvertError> {
    let model = need_string(&mut body, "model", "")?;
    let mut messages = Vec::new();
    if let Some(system) = take(&mut body, "system") {
        let parts = content::parts(Some(system), "system")?;
        messages.push(Message { role: Role::System, parts, extra: Extra::new() });
    }
    for (i, m) in take_array(&mut body, "messages", "")?.into_iter().enumerate() {
        let path = indexed("messages", i);
        let mut m = object(m, &path)?;
        let role = match take_string(&mut m, "role", &path)?.as_deref() {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            _ => return Err(ConvertError::new(at(&path, "role"), "must be \"user\" or \"assistant\"")),
        };
        let parts = content::parts(take(&mut m, "content"), &at(&path, "content"))?;
        messages.push(Message { role, parts, extra: m });
    }
    let tools = take_array(&mut body, "tools", "")?
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let path = indexed("tools", i);
            let mut t = object(t, &path)?;
            let name = need_string(&mut t, "name", &path)?;
            let description = take_string(&mut t, "description", &path)?;
            let parameters = take(&mut t, "input_schema");
            Ok(Tool { name, description, parameters, extra: t })
        })
        .collect::<Result<_, ConvertError>>()?;
    let tool_choice = match take(&mut body, "tool_choice") {
        None => None,
        Some(v) => {
            let mut c = object(v, "tool_choice")?;
            let choice = match take_string(&mut c, "type", "tool_choice")?.as_deref() {
                Some("auto") => ToolChoice::Auto,
                Some("any") => ToolChoice::Required,
                Some("none") => ToolChoice::None,
                Some("tool") => ToolChoice::Tool { name: need_string(&mut c, "name", "tool_choice")? },
                _ => return Err(ConvertError::new("tool_choice.type", "must be auto, any, tool or none")),
            };
            if !c.is_empty() {
                body.insert("tool_choice".into(), Value::Object(c));
            }
            Some(choice)
        }
    };
    let max_tokens = take_u64(&mut body, "max_tokens", "")?;
    let temperature = take_f64(&mut body, "temperature", "")?;
    let top_p = take_f64(&mut body, "top_p", "")?;
    let stop = take_array(&mut body, "stop_sequences", "")?
        .into_iter()
        .map(|s| match s {
            Value::String(s) => Ok(s),
            _ => Err(ConvertError::new("stop_sequences", "must be an array of strings")),
        })
        .collect::<Result<_, _>>()?;
    let stream = match take(&mut body, "stream") {
        None => false,
        Some(v) => v.as_bool().ok_or_else(|| ConvertError::new("stream", "must be true or false"))?,
    };
    Ok(ChatRequest {
        origin: ApiFormat::Anthropic,
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

/// Writes a Messages request body. The system and developer messages become `system` (a
/// string when they are one plain text; every such message, wherever it stands, since
/// Anthropic has no instruction turn inside the conversation); tool messages become user turns
/// of `tool_result` blocks; consecutive turns of one role are merged into one, as Anthropic
/// wants them alternating. `max_tokens` is written only when known: the provider fills in its
/// configured default.
pub fn request_from_canonical(req: ChatRequest) -> Obj {
    let keep = req.origin == ApiFormat::Anthropic;
    let mut o = if keep { req.extra } else { Obj::new() };
    o.insert("model".into(), req.model.into());
    let mut system: Vec<Part> = Vec::new();
    let mut messages: Vec<(&'static str, Vec<Value>, Extra)> = Vec::new();
    for m in req.messages {
        let role = match m.role {
            Role::System | Role::Developer => {
                system.extend(m.parts);
                continue;
            }
            Role::User | Role::Tool => "user",
            Role::Assistant => "assistant",
        };
        let blocks = content::blocks(m.parts, keep);
        match messages.last_mut() {
            Some((last, b, _)) if *last == role => b.extend(blocks),
            _ => messages.push((role, blocks, if keep { m.extra } else { Extra::new() })),
        }
    }
    if !system.is_empty() {
        let plain = system.iter().all(|p| matches!(p, Part::Text { extra, .. } if extra.is_empty() || !keep));
        let value = if plain {
            let texts: Vec<&str> = system
                .iter()
                .filter_map(|p| if let Part::Text { text, .. } = p { Some(text.as_str()) } else { None })
                .collect();
            Value::String(texts.join("\n\n"))
        } else {
            Value::Array(content::blocks(system, keep))
        };
        o.insert("system".into(), value);
    }
    let messages = messages.into_iter().map(|(role, blocks, mut extra)| {
        extra.insert("role".into(), role.into());
        extra.insert("content".into(), Value::Array(blocks));
        Value::Object(extra)
    });
    o.insert("messages".into(), messages.collect());
    if !req.tools.is_empty() {
        let tools = req.tools.into_iter().map(|t| {
            let mut f = if keep { t.extra } else { Obj::new() };
            f.insert("name".into(), t.name.into());
            if let Some(d) = t.description {
                f.insert("description".into(), d.into());
            }
            f.insert("input_schema".into(), t.parameters.unwrap_or_else(|| json!({ "type": "object" })));
            Value::Object(f)
        });
        o.insert("tools".into(), tools.collect());
    }
    if let Some(choice) = req.tool_choice {
        let mut c = match o.remove("tool_choice") {
            Some(Value::Object(c)) if keep => c,
            _ => Obj::new(),
        };
        match choice {
            ToolChoice::Auto => c.insert("type".into(), "auto".into()),
            ToolChoice::Required => c.insert("type".into(), "any".into()),
            ToolChoice::None => c.insert("type".into(), "none".into()),
            ToolChoice::Tool { name } => {
                c.insert("name".into(), name.into());
                c.insert("type".into(), "tool".into())
            }
        };
        o.insert("tool_choice".into(), Value::Object(c));
    }
    if let Some(n) = req.max_tokens {
        o.insert("max_tokens".into(), n.into());
    }
    if let Some(t) = req.temperature {
        o.insert("temperature".into(), t.into());
    }
    if let Some(p) = req.top_p {
        o.insert("top_p".into(), p.into());
    }
    if !req.stop.is_empty() {
        o.insert("stop_sequences".into(), req.stop.into());
    }
    if req.stream {
        o.insert("stream".into(), true.into());
    }
    o
}
