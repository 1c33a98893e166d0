//! OpenAI whole (non-stream) chat answers to and from [`ChatResponse`], and their `usage`.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{
    Obj, finish_from_canonical, finish_to_canonical, message, need_string, object, take, take_array, take_object,
    take_string, take_u64,
};
use crate::canonical::{ApiFormat, ChatResponse, ConvertError, Role, Usage};

/// Where the unread fields of the one choice (`logprobs`, ...) travel in [`ChatResponse::extra`]:
/// the canonical answer has no choice level.
pub(super) const CHOICE_EXTRA: &str = "choice";

/// Reads a chat answer body.
///
/// # Errors
/// [`ConvertError`] for a missing `id` or message, a field of the wrong type, or an answer
/// with other than one choice (`n` > 1 has no canonical form).
pub fn response_to_canonical(mut body: Obj) -> Result<ChatResponse, ConvertError> {
    let id = need_string(&mut body, "id", "")?;
    let model = take_string(&mut body, "model", "")?.unwrap_or_default();
    let created = take_u64(&mut body, "created", "")?;
    body.remove("object");
    let mut choices = take_array(&mut body, "choices", "")?;
    if choices.len() != 1 {
        return Err(ConvertError::new("choices", "an answer with other than one choice has no canonical form"));
    }
    let mut choice = object(choices.pop().unwrap_or_default(), "choices[0]")?;
    choice.remove("index");
    let message = take(&mut choice, "message").unwrap_or_else(|| json!({ "role": "assistant" }));
    let message = message::to_canonical(message, "choices[0].message", &mut HashMap::new())?;
    if message.role != Role::Assistant {
        return Err(ConvertError::new("choices[0].message.role", "must be \"assistant\""));
    }
    let finish = take_string(&mut choice, "finish_reason", "choices[0]")?.map(|r| finish_to_canonical(&r));
    let usage = take_object(&mut body, "usage", "")?.map(|u| usage_to_canonical(u, "usage")).transpose()?;
    if !choice.is_empty() {
        body.insert(CHOICE_EXTRA.into(), Value::Object(choice));
    }
    Ok(ChatResponse { origin: ApiFormat::OpenAi, id, model, created, message, finish, usage, extra: body })
}

/// Writes a chat answer body. An answer without `created` is stamped with the current time.
pub fn response_from_canonical(resp: ChatResponse) -> Obj {
    let keep = resp.origin == ApiFormat::OpenAi;
    from_canonical(resp, keep)
}

pub(super) fn from_canonical(resp: ChatResponse, keep: bool) -> Obj {
    let mut o = if keep { resp.extra } else { Obj::new() };
    let mut choice = match o.remove(CHOICE_EXTRA) {
        Some(Value::Object(c)) => c,
        _ => Obj::new(),
    };
    choice.insert("index".into(), 0.into());
    let message = message::message("assistant", resp.message.parts, resp.message.extra, keep, true);
    choice.insert("message".into(), Value::Object(message));
    let finish = resp.finish.as_ref().map(|f| finish_from_canonical(f, keep));
    choice.insert("finish_reason".into(), finish.into());
    o.insert("id".into(), resp.id.into());
    o.insert("object".into(), "chat.completion".into());
    o.insert("created".into(), resp.created.unwrap_or_else(unix_now).into());
    o.insert("model".into(), resp.model.into());
    o.insert("choices".into(), Value::Array(vec![Value::Object(choice)]));
    if let Some(u) = resp.usage {
        o.insert("usage".into(), Value::Object(usage_from_canonical(u, keep)));
    }
    o
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `prompt_tokens` includes cached tokens, as [`Usage::input_tokens`] does. The unread rest of
/// the `*_details` objects stays in `extra` under the same names; `total_tokens` is recomputed.
pub(super) fn usage_to_canonical(mut u: Obj, path: &str) -> Result<Usage, ConvertError> {
    let input_tokens = take_u64(&mut u, "prompt_tokens", path)?.unwrap_or(0);
    let output_tokens = take_u64(&mut u, "completion_tokens", path)?.unwrap_or(0);
    u.remove("total_tokens");
    let detail = |u: &mut Obj, key: &str, field: &str| -> Result<Option<u64>, ConvertError> {
        let dpath = format!("{path}.{key}");
        let Some(mut d) = take_object(u, key, path)? else { return Ok(None) };
        let n = take_u64(&mut d, field, &dpath)?;
        if !d.is_empty() {
            u.insert(key.into(), Value::Object(d));
        }
        Ok(n)
    };
    let cache_read_tokens = detail(&mut u, "prompt_tokens_details", "cached_tokens")?;
    let reasoning_tokens = detail(&mut u, "completion_tokens_details", "reasoning_tokens")?;
    Ok(Usage { input_tokens, output_tokens, cache_read_tokens, cache_write_tokens: None, reasoning_tokens, extra: u })
}

pub(super) fn usage_from_canonical(u: Usage, keep: bool) -> Obj {
    let mut o = if keep { u.extra } else { Obj::new() };
    let mut detail = |key: &str, field: &str, n: Option<u64>| {
        let mut d = match o.remove(key) {
            Some(Value::Object(d)) => d,
            _ => Obj::new(),
        };
        if let Some(n) = n {
            d.insert(field.into(), n.into());
        }
        if !d.is_empty() {
            o.insert(key.into(), Value::Object(d));
        }
    };
    detail("prompt_tokens_details", "cached_tokens", u.cache_read_tokens);
    detail("completion_tokens_details", "reasoning_tokens", u.reasoning_tokens);
    o.insert("prompt_tokens".into(), u.input_tokens.into());
    o.insert("completion_tokens".into(), u.output_tokens.into());
    o.insert("total_tokens".into(), (u.input_tokens + u.output_tokens).into());
    o
}
