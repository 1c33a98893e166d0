//! Gemini `GenerateContentResponse`s to canonical answers: the first candidate's parts (text,
//! `thought` parts as reasoning, `functionCall`s as tool calls), its `finishReason` and the
//! `usageMetadata`. Shared by whole answers and stream events ([`super::stream`]).

use serde_json::{Map, Value};

use crate::error::{Error, ErrorKind};
use crate::usage;
use weir_types::canonical::{ApiFormat, ChatResponse, Extra, Finish, Message, Part, Role, Usage};

/// Joins a call's id and Gemini's `thoughtSignature` in the tool call id a client sees: the
/// client sends the id back with the call and its result, and the signature returns to
/// Gemini with them ([`split_id`]), which Gemini's thinking models need for their reasoning
/// to carry across tool turns (and newer ones demand).
pub(super) const SIGNATURE_SEP: &str = "__thought__";

/// A tool call id as Gemini's call id and the `thoughtSignature` it carries, if any.
pub(super) fn split_id(id: &str) -> (&str, Option<&str>) {
    match id.split_once(SIGNATURE_SEP) {
        Some((id, sig)) => (id, Some(sig)),
        None => (id, None),
    }
}

/// One piece of a candidate's content, as Weir reads it.
pub(super) enum Piece {
    /// Answer text.
    Text(String),
    /// A `thought: true` part's text.
    Thought(String),
    /// A function call: its id (made up when Gemini sent none), name and arguments as JSON text.
    Call { id: String, name: String, arguments: String },
}

/// The pieces of `candidate.content.parts`. `calls` counts this answer's function calls so
/// far; a call without an id gets `call_<n>` from it, which the client sends back with the
/// result and [`super::request`] links by name again; a `thoughtSignature` rides in the id
/// ([`SIGNATURE_SEP`]). Other parts (code execution, inline
/// data) are dropped.
pub(super) fn pieces(candidate: &Value, calls: &mut u32, out: &mut Vec<Piece>) {
    let Some(parts) = candidate.get("content").and_then(|c| c.get("parts")).and_then(Value::as_array) else {
        return;
    };
    for p in parts {
        if let Some(call) = p.get("functionCall") {
            let name = call.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
            let mut id = match call.get("id").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                Some(id) => id.to_owned(),
                None => format!("call_{calls}"),
            };
            if let Some(sig) = p.get("thoughtSignature").and_then(Value::as_str) {
                id = format!("{id}{SIGNATURE_SEP}{sig}");
            }
            *calls += 1;
            let args = call.get("args").cloned().unwrap_or_else(|| Value::Object(Map::new()));
            out.push(Piece::Call { id, name, arguments: args.to_string() });
        } else if let Some(text) = p.get("text").and_then(Value::as_str) {
            if p.get("thought").and_then(Value::as_bool) == Some(true) {
                out.push(Piece::Thought(text.to_owned()));
            } else {
                out.push(Piece::Text(text.to_owned()));
            }
        }
    }
}

/// Gemini's `finishReason`. Gemini says `STOP` after function calls too: an answer that
/// called tools is [`Finish::ToolCalls`]. Its safety and policy stops are a content filter;
/// any other reason (`OTHER`, `MALFORMED_FUNCTION_CALL`, ...) is a plain stop.
pub(super) fn finish(reason: &str, called: bool) -> Finish {
    match reason {
        "MAX_TOKENS" => Finish::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => Finish::ContentFilter,
        _ if called => Finish::ToolCalls,
        _ => Finish::Stop,
    }
}

/// `usageMetadata` as canonical counts: input includes cached and tool-use prompt tokens;
/// output is the candidates' tokens plus the thinking ones (Gemini counts them apart).
pub(super) fn usage_of(meta: &Value) -> Usage {
    let n = |key: &str| meta.get(key).and_then(Value::as_u64);
    let thoughts = n("thoughtsTokenCount");
    Usage {
        input_tokens: n("promptTokenCount").unwrap_or(0) + n("toolUsePromptTokenCount").unwrap_or(0),
        output_tokens: n("candidatesTokenCount").unwrap_or(0) + thoughts.unwrap_or(0),
        cache_read_tokens: n("cachedContentTokenCount"),
        cache_write_tokens: None,
        reasoning_tokens: thoughts,
        extra: Extra::new(),
    }
}

/// The counts `weir_tokens_total` takes.
pub(super) fn pool_usage(u: &Usage) -> usage::Usage {
    usage::Usage { prompt: u.input_tokens, completion: u.output_tokens, cached: u.cache_read_tokens.unwrap_or(0) }
}

/// A prompt Gemini refused to answer (`promptFeedback.blockReason`, no candidates): the
/// client's input was blocked, so a 400 that says why.
pub(super) fn blocked(name: &str, answer: &Value) -> Option<Error> {
    let has_candidates = answer.get("candidates").and_then(Value::as_array).is_some_and(|c| !c.is_empty());
    if has_candidates {
        return None;
    }
    let reason = answer.get("promptFeedback")?.get("blockReason")?.as_str()?;
    let reason: String = reason.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
    // A safety or policy block is a content-policy refusal: never sent on to a fallback.
    let code = match reason.as_str() {
        "SAFETY" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "IMAGE_SAFETY" => "content_policy_violation",
        _ => "prompt_blocked",
    };
    Some(
        Error::new(
            ErrorKind::InvalidRequest,
            format!("provider {name} blocked the prompt (blockReason {reason}) and gave no answer"),
        )
        .with_code(code),
    )
}

/// The answer's id: Gemini's `responseId`, else a fresh one.
pub(super) fn answer_id(answer: &Value) -> String {
    match answer.get("responseId").and_then(Value::as_str) {
        Some(id) => id.to_owned(),
        None => format!("gemini-{:016x}", fastrand::u64(..)),
    }
}

/// The model that answered: Gemini's `modelVersion`, else the one asked for.
pub(super) fn answer_model(answer: &Value, asked: &str) -> String {
    answer.get("modelVersion").and_then(Value::as_str).unwrap_or(asked).to_owned()
}

/// A whole `generateContent` answer (already scrubbed) as a canonical answer written for the
/// `client`'s format.
///
/// # Errors
/// 502 `upstream_invalid` for a body that is not a Gemini answer; 400 for a blocked prompt.
pub(super) fn to_canonical(name: &str, model: &str, client: ApiFormat, body: &[u8]) -> Result<ChatResponse, Error> {
    let invalid = |why: &str| Error::new(ErrorKind::UpstreamInvalid, format!("provider {name} {why}"));
    let answer: Value =
        serde_json::from_slice(body).map_err(|_| invalid("returned a response that is not valid JSON"))?;
    if !answer.is_object() {
        return Err(invalid("returned a response that is not a JSON object"));
    }
    if let Some(e) = blocked(name, &answer) {
        return Err(e);
    }
    let Some(candidate) = answer.get("candidates").and_then(|c| c.get(0)) else {
        return Err(invalid("returned an answer without candidates"));
    };
    let mut calls = 0;
    let mut found = Vec::new();
    pieces(candidate, &mut calls, &mut found);
    let parts = found
        .into_iter()
        .map(|p| match p {
            Piece::Text(text) => Part::Text { text, extra: Extra::new() },
            Piece::Thought(text) => Part::Reasoning { text, signature: None, extra: Extra::new() },
            Piece::Call { id, name, arguments } => Part::ToolCall { id, name, arguments, extra: Extra::new() },
        })
        .collect();
    let finish = candidate.get("finishReason").and_then(Value::as_str).map(|r| finish(r, calls > 0));
    Ok(ChatResponse {
        // Nothing in `extra`: the client's format writes only its own fields.
        origin: client,
        id: answer_id(&answer),
        model: answer_model(&answer, model),
        created: None,
        message: Message { role: Role::Assistant, parts, extra: Extra::new() },
        finish,
        usage: answer.get("usageMetadata").map(usage_of),
        extra: Extra::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_with_thoughts_and_a_call_converts() {
        let body = br#"{"candidates":[{"content":{"role":"model","parts":[
            {"text":"Let me think","thought":true},{"text":"Checking."},
            {"functionCall":{"name":"weather","args":{"city":"Paris"}},"thoughtSignature":"c2ln"}]},
            "finishReason":"STOP","index":0}],
            "usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":5,"thoughtsTokenCount":3,
            "cachedContentTokenCount":4,"totalTokenCount":18},"modelVersion":"gemini-2.5-flash","responseId":"r1"}"#;
        let a = to_canonical("g", "gemini-2.5-flash", ApiFormat::OpenAi, body).unwrap();
        assert_eq!(a.id, "r1");
        assert_eq!(a.finish, Some(Finish::ToolCalls));
        assert!(matches!(&a.message.parts[0], Part::Reasoning { text, .. } if text == "Let me think"));
        assert!(matches!(&a.message.parts[1], Part::Text { text, .. } if text == "Checking."));
        let Part::ToolCall { id, name, arguments, .. } = &a.message.parts[2] else { panic!("no call") };
        assert_eq!(
            (id.as_str(), name.as_str(), arguments.as_str()),
            ("call_0__thought__c2ln", "weather", r#"{"city":"Paris"}"#)
        );
        assert_eq!(split_id(id), ("call_0", Some("c2ln")));
        let u = a.usage.unwrap();
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.cache_read_tokens, u.reasoning_tokens),
            (10, 8, Some(4), Some(3))
        );
    }

    #[test]
    fn finish_reasons_map() {
        assert_eq!(finish("MAX_TOKENS", false), Finish::Length);
        assert_eq!(finish("SAFETY", false), Finish::ContentFilter);
        assert_eq!(finish("PROHIBITED_CONTENT", true), Finish::ContentFilter);
        assert_eq!(finish("STOP", false), Finish::Stop);
        assert_eq!(finish("OTHER", false), Finish::Stop);
    }

    #[test]
    fn a_blocked_prompt_is_a_clear_400() {
        let body = br#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":3}}"#;
        let e = to_canonical("g", "m", ApiFormat::OpenAi, body).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.message.contains("blocked the prompt (blockReason SAFETY)"), "{}", e.message);
        assert_eq!(e.code.as_deref(), Some("content_policy_violation"), "a safety block is a policy refusal");
        let other = br#"{"promptFeedback":{"blockReason":"OTHER"}}"#;
        let e = to_canonical("g", "m", ApiFormat::OpenAi, other).unwrap_err();
        assert_eq!(e.code.as_deref(), Some("prompt_blocked"));
        let e = to_canonical("g", "m", ApiFormat::OpenAi, br#"{"candidates":[]}"#).unwrap_err();
        assert_eq!(e.kind, ErrorKind::UpstreamInvalid);
    }
}
