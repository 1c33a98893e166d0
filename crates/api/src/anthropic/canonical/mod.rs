//! Anthropic Messages to and from the canonical types (`crate::canonical`): requests, whole
//! answers and stream events. Used only when the client's format and the provider's differ.
//!
//! Reading keeps every field no canonical field holds in an `extra` (Anthropic's own: `top_k`,
//! `thinking`, `metadata`, `cache_control` markers, ...), so writing back to Anthropic loses
//! nothing; writing from another format leaves that format's `extra` out. Content blocks are
//! read into parts: `text`, `image` (base64 or url), `tool_use`, `tool_result`, `thinking`;
//! any other block (`document`, `redacted_thinking`, ...) is kept whole for Anthropic only.

mod content;
mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;

use serde_json::Value;

use crate::canonical::{ConvertError, Finish, Usage};
use crate::openai::canonical::{Obj, take_string, take_u64};

pub use request::{request_from_canonical, request_to_canonical};
pub use response::{response_from_canonical, response_to_canonical};
pub use stream::{StreamReader, StreamWriter};

/// `stop_reason` (with `stop_sequence`) as a canonical finish.
fn finish_to_canonical(reason: &str, sequence: Option<String>) -> Finish {
    match reason {
        "end_turn" => Finish::Stop,
        "max_tokens" => Finish::Length,
        "stop_sequence" => Finish::StopSequence(sequence),
        "tool_use" => Finish::ToolCalls,
        "refusal" => Finish::ContentFilter,
        other => Finish::Other(other.to_owned()),
    }
}

/// Anthropic's `stop_reason` and `stop_sequence`; a reason of another format that Anthropic
/// lacks is `end_turn`.
fn finish_from_canonical(finish: &Finish, keep: bool) -> (Value, Value) {
    let reason = match finish {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::StopSequence(Some(s)) => return ("stop_sequence".into(), s.as_str().into()),
        Finish::StopSequence(None) => "stop_sequence",
        Finish::ToolCalls => "tool_use",
        Finish::ContentFilter => "refusal",
        Finish::Other(r) if keep => r,
        Finish::Other(_) => "end_turn",
    };
    (reason.into(), Value::Null)
}

/// Anthropic's `input_tokens` leaves out cache reads and writes; the canonical count, like
/// OpenAI's `prompt_tokens`, includes them.
fn usage_to_canonical(mut u: Obj, path: &str) -> Result<Usage, ConvertError> {
    let input = take_u64(&mut u, "input_tokens", path)?.unwrap_or(0);
    let output_tokens = take_u64(&mut u, "output_tokens", path)?.unwrap_or(0);
    let cache_read_tokens = take_u64(&mut u, "cache_read_input_tokens", path)?;
    let cache_write_tokens = take_u64(&mut u, "cache_creation_input_tokens", path)?;
    let input_tokens = input + cache_read_tokens.unwrap_or(0) + cache_write_tokens.unwrap_or(0);
    Ok(Usage { input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens: None, extra: u })
}

fn usage_from_canonical(u: Usage, keep: bool) -> Obj {
    let mut o = if keep { u.extra } else { Obj::new() };
    let cached = u.cache_read_tokens.unwrap_or(0) + u.cache_write_tokens.unwrap_or(0);
    o.insert("input_tokens".into(), u.input_tokens.saturating_sub(cached).into());
    o.insert("output_tokens".into(), u.output_tokens.into());
    if let Some(n) = u.cache_read_tokens {
        o.insert("cache_read_input_tokens".into(), n.into());
    }
    if let Some(n) = u.cache_write_tokens {
        o.insert("cache_creation_input_tokens".into(), n.into());
    }
    o
}

/// A block's `type`, required.
fn block_type(b: &mut Obj, path: &str) -> Result<String, ConvertError> {
    take_string(b, "type", path)?.ok_or_else(|| ConvertError::new(format!("{path}.type"), "is required"))
}
