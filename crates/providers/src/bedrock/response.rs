//! A Bedrock Converse answer (and the pieces its stream shares: stop reasons, usage) read into
//! the canonical types.

use serde_json::{Map, Value};

use weir_types::canonical::{ApiFormat, ChatResponse, Extra, Finish, Message, Part, Role, Usage};

/// Why an answer does not read: the provider's fault (502).
pub type Invalid = String;

/// Reads a whole Converse answer. `id` is the answer's id (Converse has none in the body: the
/// request id), `model` the model asked for.
///
/// # Errors
/// A message naming what is missing or of the wrong type.
pub fn from_converse(body: &Map<String, Value>, id: String, model: String) -> Result<ChatResponse, Invalid> {
    let content = body
        .get("output")
        .and_then(|o| o.get("message"))
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .ok_or("the answer has no output.message.content array")?;
    let mut parts = Vec::with_capacity(content.len());
    for (i, block) in content.iter().enumerate() {
        if let Some(text) = block.get("text").and_then(Value::as_str) {
            parts.push(Part::Text { text: text.to_owned(), extra: Extra::new() });
        } else if let Some(tool) = block.get("toolUse") {
            let field = |name: &str| {
                tool.get(name)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| format!("content[{i}].toolUse.{name} is missing"))
            };
            let input = tool.get("input").cloned().unwrap_or_else(|| Value::Object(Map::new()));
            parts.push(Part::ToolCall {
                id: field("toolUseId")?,
                name: field("name")?,
                arguments: input.to_string(),
                extra: Extra::new(),
            });
        } else if let Some(r) = block.get("reasoningContent") {
            // Redacted reasoning (opaque bytes) has no text to show: left out.
            if let Some(rt) = r.get("reasoningText") {
                parts.push(Part::Reasoning {
                    text: rt.get("text").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    signature: rt.get("signature").and_then(Value::as_str).map(str::to_owned),
                    extra: Extra::new(),
                });
            }
        }
        // Other blocks (citations, guard content, ...) have no canonical part: left out.
    }
    let finish = body.get("stopReason").and_then(Value::as_str).map(finish);
    let usage = body.get("usage").map(usage);
    Ok(ChatResponse {
        origin: ApiFormat::OpenAi,
        id,
        model,
        created: None,
        message: Message { role: Role::Assistant, parts, extra: Extra::new() },
        finish,
        usage,
        extra: Extra::new(),
    })
}

/// A Converse `stopReason` as a canonical finish.
pub fn finish(reason: &str) -> Finish {
    match reason {
        "end_turn" => Finish::Stop,
        "tool_use" => Finish::ToolCalls,
        "max_tokens" => Finish::Length,
        "stop_sequence" => Finish::StopSequence(None),
        "guardrail_intervened" | "content_filtered" => Finish::ContentFilter,
        other => Finish::Other(other.to_owned()),
    }
}

/// A Converse `usage` object. Its `inputTokens` leaves out cache reads and writes (as
/// Anthropic's does); the canonical input count holds them.
pub fn usage(u: &Value) -> Usage {
    let n = |name: &str| u.get(name).and_then(Value::as_u64);
    let read = n("cacheReadInputTokens");
    let write = n("cacheWriteInputTokens");
    Usage {
        input_tokens: n("inputTokens").unwrap_or(0) + read.unwrap_or(0) + write.unwrap_or(0),
        output_tokens: n("outputTokens").unwrap_or(0),
        cache_read_tokens: read,
        cache_write_tokens: write,
        reasoning_tokens: None,
        extra: Extra::new(),
    }
}

/// The canonical usage as the counts of `weir_tokens_total`.
pub fn metered(u: &Usage) -> crate::usage::Usage {
    crate::usage::Usage {
        prompt: u.input_tokens,
        completion: u.output_tokens,
        cached: u.cache_read_tokens.unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read(v: Value) -> Result<ChatResponse, Invalid> {
        from_converse(v.as_object().unwrap(), "req-1".into(), "m".into())
    }

    #[test]
    fn text_tool_use_and_reasoning_blocks_read_in_order() {
        let resp = read(json!({
            "output": { "message": { "role": "assistant", "content": [
                { "reasoningContent": { "reasoningText": { "text": "think", "signature": "sig" } } },
                { "text": "Let me look." },
                { "toolUse": { "toolUseId": "tu1", "name": "weather", "input": { "city": "Paris" } } }
            ] } },
            "stopReason": "tool_use",
            "usage": { "inputTokens": 10, "outputTokens": 5, "totalTokens": 15 },
            "metrics": { "latencyMs": 100 }
        }))
        .unwrap();
        assert_eq!(resp.id, "req-1");
        assert_eq!(resp.finish, Some(Finish::ToolCalls));
        assert!(
            matches!(&resp.message.parts[0], Part::Reasoning { text, signature: Some(s), .. } if text == "think" && s == "sig")
        );
        assert!(matches!(&resp.message.parts[1], Part::Text { text, .. } if text == "Let me look."));
        let Part::ToolCall { id, name, arguments, .. } = &resp.message.parts[2] else { panic!("not a call") };
        assert_eq!((id.as_str(), name.as_str()), ("tu1", "weather"));
        assert_eq!(serde_json::from_str::<Value>(arguments).unwrap(), json!({ "city": "Paris" }));
        assert_eq!(resp.usage.unwrap().input_tokens, 10);
    }

    #[test]
    fn cached_tokens_count_as_input() {
        let u = usage(&json!({ "inputTokens": 3, "outputTokens": 2, "cacheReadInputTokens": 100,
            "cacheWriteInputTokens": 7 }));
        assert_eq!((u.input_tokens, u.cache_read_tokens, u.cache_write_tokens), (110, Some(100), Some(7)));
        assert_eq!(metered(&u), crate::usage::Usage { prompt: 110, completion: 2, cached: 100 });
    }

    #[test]
    fn every_stop_reason_maps() {
        assert_eq!(finish("end_turn"), Finish::Stop);
        assert_eq!(finish("max_tokens"), Finish::Length);
        assert_eq!(finish("stop_sequence"), Finish::StopSequence(None));
        assert_eq!(finish("guardrail_intervened"), Finish::ContentFilter);
        assert_eq!(finish("content_filtered"), Finish::ContentFilter);
        assert_eq!(finish("model_context_window_exceeded"), Finish::Other("model_context_window_exceeded".into()));
    }

    #[test]
    fn an_answer_without_content_is_invalid() {
        let err = read(json!({ "output": {} })).unwrap_err();
        assert!(err.contains("output.message.content"), "{err}");
    }
}
