//! A canonical chat request written as a Bedrock Converse request body. What Converse cannot
//! express is refused with a 400 naming the field, or dropped by a documented rule
//! (docs/providers.md, `## bedrock`); it never silently changes meaning.

use serde_json::{Map, Value, json};

use weir_types::canonical::{ChatRequest, ImageSource, Message, Part, Role, ToolChoice};

/// A request Converse cannot express: the client's fault, so 400 naming `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The field, in the client's names where they are the same in every format
    /// (`messages[i].content[j]`, `n`, `tool_choice`).
    pub path: String,
    /// Why.
    pub reason: String,
}

fn refuse(path: impl Into<String>, reason: impl Into<String>) -> Refused {
    Refused { path: path.into(), reason: reason.into() }
}

/// Request fields of the client's format Converse has no equivalent for and which would
/// change the answer's shape or meaning if dropped: refused when set to anything but their
/// default. (Other unread fields, e.g. `user`, `seed`, penalties, `parallel_tool_calls`, are
/// dropped: they only tune sampling or bookkeeping.)
fn check_extra(extra: &Map<String, Value>) -> Result<(), Refused> {
    if let Some(n) = extra.get("n").filter(|n| !n.is_null())
        && n.as_u64() != Some(1)
    {
        return Err(refuse("n", "Bedrock answers with one choice; only n = 1 is supported"));
    }
    if let Some(rf) = extra.get("response_format").filter(|v| !v.is_null()) {
        let text = rf.get("type").and_then(Value::as_str) == Some("text");
        if !text {
            return Err(refuse(
                "response_format",
                "Bedrock Converse has no JSON mode; describe the JSON wanted in the prompt, or use a tool",
            ));
        }
    }
    if extra.get("logprobs").and_then(Value::as_bool) == Some(true) {
        return Err(refuse("logprobs", "Bedrock Converse returns no log probabilities"));
    }
    Ok(())
}

/// The Converse body for `req` (`modelId` goes in the URL, not the body).
///
/// # Errors
/// [`Refused`] for what Converse cannot express: `n` > 1, a JSON `response_format`, image
/// URLs, images of another type than png/jpeg/gif/webp, tool calls whose arguments are not a
/// JSON object, parts of kinds Converse has no block for, `tool_choice: none` with tool
/// blocks in the conversation.
pub fn to_converse(req: &ChatRequest) -> Result<Value, Refused> {
    check_extra(&req.extra)?;
    let mut body = Map::new();
    let mut system = Vec::new();
    let mut messages: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut tool_blocks = false;
    for (i, m) in req.messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        let role = match m.role {
            // Converse keeps instructions apart; those later in the conversation join them.
            Role::System | Role::Developer => {
                for (j, p) in m.parts.iter().enumerate() {
                    match p {
                        Part::Text { text, .. } => system.push(json!({ "text": text })),
                        _ => return Err(refuse(format!("{path}.content[{j}]"), "instructions may only hold text")),
                    }
                }
                continue;
            }
            Role::User | Role::Tool => "user",
            Role::Assistant => "assistant",
        };
        let blocks = blocks(m, &path, &mut tool_blocks)?;
        if blocks.is_empty() {
            continue;
        }
        // Converse wants turns to alternate: tool results and the user text after them, or
        // consecutive turns of one role, become one turn.
        match messages.last_mut() {
            Some((last, content)) if *last == role => content.extend(blocks),
            _ => messages.push((role, blocks)),
        }
    }
    let messages: Vec<Value> =
        messages.into_iter().map(|(role, content)| json!({ "role": role, "content": content })).collect();
    body.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    let mut inference = Map::new();
    if let Some(n) = req.max_tokens {
        inference.insert("maxTokens".into(), n.into());
    }
    if let Some(t) = req.temperature {
        inference.insert("temperature".into(), t.into());
    }
    if let Some(p) = req.top_p {
        inference.insert("topP".into(), p.into());
    }
    if !req.stop.is_empty() {
        inference.insert("stopSequences".into(), req.stop.clone().into());
    }
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if let Some(config) = tool_config(req, tool_blocks)? {
        body.insert("toolConfig".into(), config);
    }
    Ok(Value::Object(body))
}

/// `toolConfig`, or none when there are no tools or `tool_choice` is `none` (Converse has no
/// "none": the tools are left out so the model cannot call them).
fn tool_config(req: &ChatRequest, tool_blocks: bool) -> Result<Option<Value>, Refused> {
    if req.tools.is_empty() {
        return Ok(None);
    }
    let choice = match &req.tool_choice {
        None => None,
        Some(ToolChoice::Auto) => Some(json!({ "auto": {} })),
        Some(ToolChoice::Required) => Some(json!({ "any": {} })),
        Some(ToolChoice::Tool { name }) => Some(json!({ "tool": { "name": name } })),
        Some(ToolChoice::None) if tool_blocks => {
            return Err(refuse(
                "tool_choice",
                "\"none\" is expressed on Bedrock by leaving the tools out, which Converse refuses for a \
                 conversation that holds tool calls or results",
            ));
        }
        Some(ToolChoice::None) => return Ok(None),
    };
    let tools: Vec<Value> = req
        .tools
        .iter()
        .map(|t| {
            let mut spec = Map::new();
            spec.insert("name".into(), t.name.as_str().into());
            if let Some(d) = t.description.as_deref().filter(|d| !d.is_empty()) {
                spec.insert("description".into(), d.into());
            }
            let schema = t.parameters.clone().unwrap_or_else(|| json!({ "type": "object", "properties": {} }));
            spec.insert("inputSchema".into(), json!({ "json": schema }));
            json!({ "toolSpec": spec })
        })
        .collect();
    let mut config = Map::new();
    config.insert("tools".into(), Value::Array(tools));
    if let Some(choice) = choice {
        config.insert("toolChoice".into(), choice);
    }
    Ok(Some(Value::Object(config)))
}

/// The content blocks of one message. Empty text is left out (Converse refuses blank blocks;
/// OpenAI clients send `""` beside tool calls).
fn blocks(m: &Message, path: &str, tool_blocks: &mut bool) -> Result<Vec<Value>, Refused> {
    let mut out = Vec::with_capacity(m.parts.len());
    for (j, part) in m.parts.iter().enumerate() {
        let path = format!("{path}.content[{j}]");
        match part {
            Part::Text { text, .. } if text.is_empty() => {}
            Part::Text { text, .. } => out.push(json!({ "text": text })),
            Part::Image { source, .. } => out.push(image(source, &path)?),
            Part::Reasoning { text, signature, .. } => {
                let mut r = Map::new();
                r.insert("text".into(), text.as_str().into());
                if let Some(s) = signature {
                    r.insert("signature".into(), s.as_str().into());
                }
                out.push(json!({ "reasoningContent": { "reasoningText": r } }));
            }
            Part::ToolCall { id, name, arguments, .. } => {
                *tool_blocks = true;
                let input: Value = if arguments.trim().is_empty() {
                    json!({})
                } else {
                    serde_json::from_str(arguments).map_err(|_| {
                        refuse(format!("{path}.arguments"), "tool call arguments must be a JSON object for Bedrock")
                    })?
                };
                if !input.is_object() {
                    return Err(refuse(format!("{path}.arguments"), "tool call arguments must be a JSON object"));
                }
                out.push(json!({ "toolUse": { "toolUseId": id, "name": name, "input": input } }));
            }
            Part::ToolResult { id, content, is_error, .. } => {
                *tool_blocks = true;
                let mut inner = Vec::with_capacity(content.len().max(1));
                for (k, p) in content.iter().enumerate() {
                    let path = format!("{path}.content[{k}]");
                    match p {
                        Part::Text { text, .. } => inner.push(json!({ "text": text })),
                        Part::Image { source, .. } => inner.push(image(source, &path)?),
                        _ => return Err(refuse(path, "a tool result may only hold text and images on Bedrock")),
                    }
                }
                if inner.is_empty() {
                    inner.push(json!({ "text": "" }));
                }
                let status = if *is_error { "error" } else { "success" };
                out.push(json!({ "toolResult": { "toolUseId": id, "content": inner, "status": status } }));
            }
            Part::Unknown { .. } => {
                return Err(refuse(path, "this kind of content has no Bedrock Converse block"));
            }
        }
    }
    Ok(out)
}

/// An image block: Converse takes bytes (base64 in JSON) of png, jpeg, gif or webp only.
fn image(source: &ImageSource, path: &str) -> Result<Value, Refused> {
    match source {
        ImageSource::Url { .. } => {
            Err(refuse(path, "Bedrock takes images as bytes, not URLs; send the image as a base64 data URL"))
        }
        ImageSource::Base64 { media_type, data } => {
            let format = match media_type.to_ascii_lowercase().as_str() {
                "image/png" => "png",
                "image/jpeg" | "image/jpg" => "jpeg",
                "image/gif" => "gif",
                "image/webp" => "webp",
                _ => {
                    return Err(refuse(path, format!("Bedrock takes png, jpeg, gif or webp images, not {media_type}")));
                }
            };
            Ok(json!({ "image": { "format": format, "source": { "bytes": data } } }))
        }
    }
}

/// `modelId` as a URL path segment: everything but unreserved characters percent-encoded
/// (model ids hold `:`, ARNs `/`).
pub fn model_segment(model: &str) -> String {
    let mut out = String::with_capacity(model.len() + 8);
    for b in model.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
