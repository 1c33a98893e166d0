//! A canonical chat request as a Gemini `generateContent` body. What maps, what is dropped and
//! what is refused (with a 400 naming the field) is listed in docs/providers.md, `## gemini`.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::response::split_id;
use super::schema;
use crate::error::{Error, ErrorKind};
use crate::format::ApiFormat;
use weir_types::canonical::{ChatRequest, ImageSource, Message, Part, Role, ToolChoice};

type Obj = Map<String, Value>;

/// Client fields that would change the answer in a way Gemini cannot: refused by name.
const REFUSED: [&str; 5] = ["logit_bias", "top_logprobs", "audio", "prediction", "functions"];

/// Whether a stream should end with the token counts: an OpenAI client asks with
/// `stream_options.include_usage`; other formats' streams always carry them.
pub(super) fn wants_stream_usage(req: &ChatRequest) -> bool {
    if req.origin != ApiFormat::OpenAi {
        return true;
    }
    req.extra.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool) == Some(true)
}

fn refuse(param: impl Into<String>, why: impl std::fmt::Display) -> Error {
    let param = param.into();
    Error::new(ErrorKind::InvalidRequest, format!("`{param}` cannot be sent to a Gemini provider: {why}"))
        .with_param(param)
}

/// The Gemini body for `req`.
///
/// # Errors
/// 400 naming the field for what Gemini cannot express (see the module doc).
pub(super) fn to_gemini(req: ChatRequest) -> Result<Obj, Error> {
    let mut out = Obj::new();
    let system_len = req.system().len();
    let mut extra = req.extra;
    let mut messages = req.messages.into_iter().enumerate();

    let mut system = Vec::new();
    for (i, m) in messages.by_ref().take(system_len) {
        system.extend(text_parts(m, i)?);
    }
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": system }));
    }

    let mut contents: Vec<Obj> = Vec::new();
    let mut names: HashMap<String, String> = HashMap::new();
    for (i, m) in messages {
        let role = match m.role {
            Role::Assistant => "model",
            // A later instruction has no place of its own in Gemini: it becomes a user turn.
            Role::System | Role::Developer => {
                let parts = text_parts(m, i)?;
                push_turn(&mut contents, "user", parts);
                continue;
            }
            Role::User | Role::Tool => "user",
        };
        let parts = parts(m, i, &mut names)?;
        push_turn(&mut contents, role, parts);
    }
    out.insert("contents".into(), Value::Array(contents.into_iter().map(Value::Object).collect()));

    if !req.tools.is_empty() {
        let mut decls = Vec::with_capacity(req.tools.len());
        for (i, t) in req.tools.into_iter().enumerate() {
            let mut d = Obj::new();
            d.insert("name".into(), t.name.into());
            if let Some(desc) = t.description {
                d.insert("description".into(), desc.into());
            }
            if let Some(p) = t.parameters {
                let path = format!("tools[{i}].function.parameters");
                d.insert("parameters".into(), schema::to_gemini(&p).map_err(|why| refuse(path, why))?);
            }
            decls.push(Value::Object(d));
        }
        out.insert("tools".into(), json!([{ "functionDeclarations": decls }]));
    }
    if let Some(choice) = req.tool_choice {
        let config = match choice {
            ToolChoice::Auto => json!({ "mode": "AUTO" }),
            ToolChoice::None => json!({ "mode": "NONE" }),
            ToolChoice::Required => json!({ "mode": "ANY" }),
            ToolChoice::Tool { name } => json!({ "mode": "ANY", "allowedFunctionNames": [name] }),
        };
        out.insert("toolConfig".into(), json!({ "functionCallingConfig": config }));
    }

    let mut settings = Obj::new();
    if let Some(n) = req.max_tokens {
        settings.insert("maxOutputTokens".into(), n.into());
    }
    if let Some(t) = req.temperature {
        settings.insert("temperature".into(), t.into());
    }
    if let Some(p) = req.top_p {
        settings.insert("topP".into(), p.into());
    }
    if !req.stop.is_empty() {
        settings.insert("stopSequences".into(), req.stop.into());
    }
    generation_extras(&mut extra, &mut settings)?;
    if !settings.is_empty() {
        out.insert("generationConfig".into(), Value::Object(settings));
    }
    Ok(out)
}

/// The client's own fields that have a Gemini form (OpenAI's names; `top_k` as Anthropic and
/// vLLM spell it). Any other is dropped, except the [`REFUSED`] ones.
fn generation_extras(extra: &mut Obj, settings: &mut Obj) -> Result<(), Error> {
    if let Some(key) = REFUSED.iter().find(|k| extra.get(**k).is_some_and(|v| !v.is_null())) {
        return Err(refuse(*key, "Gemini has no such setting"));
    }
    if extra.get("logprobs").and_then(Value::as_bool) == Some(true) {
        return Err(refuse("logprobs", "Weir does not translate Gemini's log probabilities"));
    }
    match extra.get("n").filter(|v| !v.is_null()) {
        None => {}
        Some(v) if v.as_u64() == Some(1) => {}
        Some(_) => return Err(refuse("n", "only n = 1 is supported")),
    }
    if let Some(m) = extra.get("modalities").and_then(Value::as_array)
        && m.iter().any(|v| v.as_str() != Some("text"))
    {
        return Err(refuse("modalities", "only text answers are supported"));
    }
    for (from, to) in [
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("top_k", "topK"),
    ] {
        if let Some(v) = extra.remove(from).filter(|v| v.is_number()) {
            settings.insert(to.into(), v);
        }
    }
    if let Some(effort) = extra.get("reasoning_effort").and_then(Value::as_str) {
        // The budgets Google's own OpenAI-compatible endpoint uses for these efforts.
        let budget = match effort {
            "none" | "minimal" => 0,
            "low" => 1024,
            "medium" => 8192,
            "high" => 24576,
            _ => {
                return Err(refuse(
                    "reasoning_effort",
                    format!("{effort:?} is not none, minimal, low, medium or high"),
                ));
            }
        };
        settings.insert("thinkingConfig".into(), json!({ "thinkingBudget": budget }));
    }
    if let Some(format) = extra.get("response_format").filter(|v| !v.is_null()) {
        match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                settings.insert("responseMimeType".into(), "application/json".into());
            }
            Some("json_schema") => {
                settings.insert("responseMimeType".into(), "application/json".into());
                if let Some(s) = format.get("json_schema").and_then(|j| j.get("schema")) {
                    let converted =
                        schema::to_gemini(s).map_err(|why| refuse("response_format.json_schema.schema", why))?;
                    settings.insert("responseSchema".into(), converted);
                }
            }
            _ => return Err(refuse("response_format", "type must be text, json_object or json_schema")),
        }
    }
    Ok(())
}

/// Appends a turn, merged into the previous one when the role repeats: parallel tool results
/// (one OpenAI `tool` message each) become one user turn, as Gemini expects.
fn push_turn(contents: &mut Vec<Obj>, role: &str, parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    if let Some(last) = contents.last_mut()
        && last.get("role").and_then(Value::as_str) == Some(role)
        && let Some(Value::Array(p)) = last.get_mut("parts")
    {
        p.extend(parts);
        return;
    }
    let mut turn = Obj::new();
    turn.insert("role".into(), role.into());
    turn.insert("parts".into(), Value::Array(parts));
    contents.push(turn);
}

/// An instruction's text parts; anything else in one is refused.
fn text_parts(m: Message, i: usize) -> Result<Vec<Value>, Error> {
    m.parts
        .into_iter()
        .enumerate()
        .map(|(j, p)| match p {
            Part::Text { text, .. } => Ok(json!({ "text": text })),
            _ => Err(refuse(format!("messages[{i}].content[{j}]"), "an instruction may hold only text")),
        })
        .collect()
}

/// The Gemini parts of a user, model or tool message. `names` maps tool call ids to their
/// function's name, for results that do not carry it.
fn parts(m: Message, i: usize, names: &mut HashMap<String, String>) -> Result<Vec<Value>, Error> {
    let mut out = Vec::with_capacity(m.parts.len());
    for (j, p) in m.parts.into_iter().enumerate() {
        let path = || format!("messages[{i}].content[{j}]");
        match p {
            Part::Text { text, .. } => out.push(json!({ "text": text })),
            Part::Image { source, .. } => out.push(image(source).map_err(|why| refuse(path(), why))?),
            // Gemini does not take its reasoning back as text (its thought signatures return
            // in tool call ids instead, see `response::SIGNATURE_SEP`).
            Part::Reasoning { .. } => {}
            Part::ToolCall { id, name, arguments, .. } => {
                let args: Value = if arguments.trim().is_empty() {
                    json!({})
                } else {
                    serde_json::from_str(&arguments).map_err(|_| {
                        refuse(format!("messages[{i}].tool_calls"), "a tool call's arguments are not JSON")
                    })?
                };
                if !args.is_object() {
                    return Err(refuse(format!("messages[{i}].tool_calls"), "arguments must be a JSON object"));
                }
                let (call_id, signature) = split_id(&id);
                let mut part = json!({ "functionCall": { "id": call_id, "name": name, "args": args } });
                if let Some(sig) = signature {
                    part["thoughtSignature"] = sig.into();
                }
                out.push(part);
                names.insert(id, name);
            }
            Part::ToolResult { id, name, content, is_error, .. } => {
                let Some(name) = name.or_else(|| names.get(&id).cloned()) else {
                    return Err(refuse(
                        format!("messages[{i}].tool_call_id"),
                        "Gemini links a tool result to its call by the function's name: no earlier assistant \
                         message has a tool call with this id",
                    ));
                };
                let mut text = String::new();
                for c in content {
                    match c {
                        Part::Text { text: t, .. } => text.push_str(&t),
                        _ => return Err(refuse(format!("messages[{i}].content"), "a tool result may hold only text")),
                    }
                }
                let key = if is_error { "error" } else { "output" };
                // A result that is a JSON object goes as that object; any other text as a string.
                let value = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => Value::String(text),
                };
                let response = json!({ key: value });
                let call_id = split_id(&id).0;
                out.push(json!({ "functionResponse": { "id": call_id, "name": name, "response": response } }));
            }
            Part::Unknown { .. } => return Err(refuse(path(), "this kind of content has no Gemini form")),
        }
    }
    // Gemini refuses an empty text part; beside others (`content: ""` with tool calls) it says
    // nothing.
    if out.len() > 1 {
        out.retain(|p| p.get("text").and_then(Value::as_str) != Some(""));
    }
    Ok(out)
}

/// Image types a URL's extension names, for `fileData.mimeType`.
const EXTENSIONS: [(&str, &str); 6] = [
    (".png", "image/png"),
    (".jpg", "image/jpeg"),
    (".jpeg", "image/jpeg"),
    (".webp", "image/webp"),
    (".heic", "image/heic"),
    (".heif", "image/heif"),
];

/// An image part: bytes as `inlineData`; a URL as `fileData` where Gemini fetches it itself
/// (files uploaded with its Files API, Cloud Storage `gs://` objects); any other URL refused,
/// since Gemini does not fetch arbitrary web images and Weir does not download them.
fn image(source: ImageSource) -> Result<Value, String> {
    match source {
        ImageSource::Base64 { media_type, data } => {
            Ok(json!({ "inlineData": { "mimeType": media_type, "data": data } }))
        }
        ImageSource::Url { url } => {
            let fetchable = url.starts_with("gs://")
                || url.starts_with("https://generativelanguage.googleapis.com/")
                || url.starts_with("https://www.youtube.com/")
                || url.starts_with("https://youtu.be/");
            if !fetchable {
                return Err("Gemini takes images as base64 data URLs, Gemini Files API URIs or gs:// URIs, \
                            not other URLs"
                    .into());
            }
            let lower = url.to_ascii_lowercase();
            let mime = EXTENSIONS.iter().find(|(ext, _)| lower.ends_with(ext)).map(|(_, m)| *m);
            let mut file = Obj::new();
            file.insert("fileUri".into(), url.into());
            if let Some(m) = mime {
                file.insert("mimeType".into(), m.into());
            }
            Ok(json!({ "fileData": file }))
        }
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
