use serde_json::json;

use super::*;
use crate::format::Endpoint;

/// The canonical form of an OpenAI chat body, as the front door makes it.
fn canonical(body: Value) -> ChatRequest {
    weir_api::request_to_canonical(Endpoint::OPENAI_CHAT, body.as_object().unwrap().clone()).unwrap()
}

fn converse(body: Value) -> Value {
    to_converse(&canonical(body)).unwrap()
}

#[test]
fn system_messages_inference_settings_and_turns_are_written() {
    let out = converse(json!({
        "model": "m",
        "messages": [
            { "role": "system", "content": "Be brief." },
            { "role": "user", "content": "Hi" },
            { "role": "assistant", "content": "Hello" },
            { "role": "user", "content": [{ "type": "text", "text": "More" }] }
        ],
        "max_tokens": 50, "temperature": 0.5, "top_p": 0.9, "stop": ["END"], "n": 1, "user": "u1"
    }));
    assert_eq!(out["system"], json!([{ "text": "Be brief." }]));
    assert_eq!(
        out["messages"],
        json!([
            { "role": "user", "content": [{ "text": "Hi" }] },
            { "role": "assistant", "content": [{ "text": "Hello" }] },
            { "role": "user", "content": [{ "text": "More" }] }
        ])
    );
    assert_eq!(
        out["inferenceConfig"],
        json!({ "maxTokens": 50, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"] })
    );
    assert!(out.get("toolConfig").is_none());
    assert!(out.get("user").is_none() && out.get("model").is_none(), "dropped / in the URL: {out}");
}

#[test]
fn tools_calls_and_results_become_tool_config_tool_use_and_one_user_turn() {
    let out = converse(json!({
        "model": "m",
        "messages": [
            { "role": "user", "content": "Weather in Paris and Rome?" },
            { "role": "assistant", "content": null, "tool_calls": [
                { "id": "c1", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Paris\"}" } },
                { "id": "c2", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Rome\"}" } }
            ] },
            { "role": "tool", "tool_call_id": "c1", "content": "sunny" },
            { "role": "tool", "tool_call_id": "c2", "content": "rain" }
        ],
        "tools": [{ "type": "function", "function": { "name": "weather", "description": "Get weather",
            "parameters": { "type": "object", "properties": { "city": { "type": "string" } } } } }],
        "tool_choice": { "type": "function", "function": { "name": "weather" } }
    }));
    assert_eq!(
        out["toolConfig"],
        json!({
            "tools": [{ "toolSpec": { "name": "weather", "description": "Get weather", "inputSchema": { "json":
                { "type": "object", "properties": { "city": { "type": "string" } } } } } }],
            "toolChoice": { "tool": { "name": "weather" } }
        })
    );
    let messages = out["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "the two tool messages are one user turn: {out}");
    assert_eq!(
        messages[1]["content"],
        json!([
            { "toolUse": { "toolUseId": "c1", "name": "weather", "input": { "city": "Paris" } } },
            { "toolUse": { "toolUseId": "c2", "name": "weather", "input": { "city": "Rome" } } }
        ])
    );
    assert_eq!(messages[2]["role"], "user");
    assert_eq!(
        messages[2]["content"],
        json!([
            { "toolResult": { "toolUseId": "c1", "content": [{ "text": "sunny" }], "status": "success" } },
            { "toolResult": { "toolUseId": "c2", "content": [{ "text": "rain" }], "status": "success" } }
        ])
    );
}

#[test]
fn tool_choice_auto_and_required_map_to_auto_and_any() {
    let tools = json!([{ "type": "function", "function": { "name": "f", "parameters": { "type": "object" } } }]);
    for (choice, want) in [("auto", json!({ "auto": {} })), ("required", json!({ "any": {} }))] {
        let out = converse(json!({ "model": "m", "messages": [{ "role": "user", "content": "x" }],
            "tools": tools, "tool_choice": choice }));
        assert_eq!(out["toolConfig"]["toolChoice"], want);
    }
    let out = converse(json!({ "model": "m", "messages": [{ "role": "user", "content": "x" }],
        "tools": tools, "tool_choice": "none" }));
    assert!(out.get("toolConfig").is_none(), "none: the tools are left out");
}

#[test]
fn tool_choice_none_with_tool_blocks_in_the_conversation_is_refused() {
    let req = canonical(json!({ "model": "m", "messages": [
        { "role": "user", "content": "x" },
        { "role": "assistant", "tool_calls": [{ "id": "c1", "type": "function",
            "function": { "name": "f", "arguments": "{}" } }] },
        { "role": "tool", "tool_call_id": "c1", "content": "r" }
    ], "tools": [{ "type": "function", "function": { "name": "f" } }], "tool_choice": "none" }));
    assert_eq!(to_converse(&req).unwrap_err().path, "tool_choice");
}

#[test]
fn a_data_url_image_becomes_bytes_with_its_format_and_a_url_is_refused() {
    let out = converse(json!({ "model": "m", "messages": [{ "role": "user", "content": [
        { "type": "text", "text": "What is this?" },
        { "type": "image_url", "image_url": { "url": "data:image/png;base64,iVBORw0KGgo=" } }
    ] }] }));
    assert_eq!(
        out["messages"][0]["content"][1],
        json!({ "image": { "format": "png", "source": { "bytes": "iVBORw0KGgo=" } } })
    );
    let req = canonical(json!({ "model": "m", "messages": [{ "role": "user", "content": [
        { "type": "image_url", "image_url": { "url": "https://example.com/cat.png" } }
    ] }] }));
    let err = to_converse(&req).unwrap_err();
    assert_eq!(err.path, "messages[0].content[0]");
    assert!(err.reason.contains("not URLs"), "{}", err.reason);
}

#[test]
fn n_above_one_and_json_response_format_are_refused_by_name() {
    let base = || json!({ "model": "m", "messages": [{ "role": "user", "content": "x" }] });
    let mut n = base();
    n["n"] = json!(2);
    // Refused on the way to the canonical form, for every provider of another format.
    let err = weir_api::request_to_canonical(Endpoint::OPENAI_CHAT, n.as_object().unwrap().clone()).unwrap_err();
    assert_eq!(err.path, "n");
    let mut rf = base();
    rf["response_format"] = json!({ "type": "json_object" });
    assert_eq!(to_converse(&canonical(rf)).unwrap_err().path, "response_format");
    let mut text = base();
    text["response_format"] = json!({ "type": "text" });
    assert!(to_converse(&canonical(text)).is_ok());
}

#[test]
fn model_ids_are_percent_encoded_as_one_path_segment() {
    assert_eq!(model_segment("anthropic.claude-3-haiku-20240307-v1:0"), "anthropic.claude-3-haiku-20240307-v1%3A0");
    assert_eq!(
        model_segment("arn:aws:bedrock:us-east-1::foundation-model/x"),
        "arn%3Aaws%3Abedrock%3Aus-east-1%3A%3Afoundation-model%2Fx"
    );
}
