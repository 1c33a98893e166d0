//! Anthropic whole (non-stream) Messages answers to and from [`ChatResponse`].

use serde_json::Value;

use super::{content, finish_from_canonical, finish_to_canonical, usage_from_canonical, usage_to_canonical};
use crate::canonical::{ApiFormat, ChatResponse, ConvertError, Extra, Message, Role};
use crate::openai::canonical::{Obj, need_string, take, take_object, take_string};

/// Reads a Messages answer body.
///
/// # Errors
/// [`ConvertError`] for a missing `id`, a role other than assistant, or a malformed block.
pub fn response_to_canonical(mut body: Obj) -> Result<ChatResponse, ConvertError> {
    let id = need_string(&mut body, "id", "")?;
    let model = take_string(&mut body, "model", "")?.unwrap_or_default();
    body.remove("type");
    if take_string(&mut body, "role", "")?.is_some_and(|r| r != "assistant") {
        return Err(ConvertError::new("role", "must be \"assistant\""));
    }
    let parts = content::parts(take(&mut body, "content"), "content")?;
    let sequence = take_string(&mut body, "stop_sequence", "")?;
    let finish = take_string(&mut body, "stop_reason", "")?.map(|r| finish_to_canonical(&r, sequence));
    let usage = take_object(&mut body, "usage", "")?.map(|u| usage_to_canonical(u, "usage")).transpose()?;
    let message = Message { role: Role::Assistant, parts, extra: Extra::new() };
    Ok(ChatResponse { origin: ApiFormat::Anthropic, id, model, created: None, message, finish, usage, extra: body })
}

/// Writes a Messages answer body.
pub fn response_from_canonical(resp: ChatResponse) -> Obj {
    let keep = resp.origin == ApiFormat::Anthropic;
    let mut o = if keep { resp.extra } else { Obj::new() };
    o.insert("id".into(), resp.id.into());
    o.insert("type".into(), "message".into());
    o.insert("role".into(), "assistant".into());
    o.insert("model".into(), resp.model.into());
    o.insert("content".into(), Value::Array(content::blocks(resp.message.parts, keep)));
    let (reason, sequence) = match &resp.finish {
        Some(f) => finish_from_canonical(f, keep),
        None => (Value::Null, Value::Null),
    };
    o.insert("stop_reason".into(), reason);
    o.insert("stop_sequence".into(), sequence);
    let usage = usage_from_canonical(resp.usage.unwrap_or_default(), keep);
    o.insert("usage".into(), Value::Object(usage));
    o
}
