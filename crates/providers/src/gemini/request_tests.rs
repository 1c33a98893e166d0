use serde_json::json;

use super::*;

/// The Gemini body for an OpenAI chat request, through the OpenAI front door's canonical form.
fn convert(openai: Value) -> Result<Value, Error> {
    let req = weir_api::request_to_canonical(crate::format::Endpoint::OPENAI_CHAT, openai.as_object().unwrap().clone())
        .expect("converts to canonical");
    to_gemini(req).map(Value::Object)
}

#[test]
fn system_turns_tools_and_settings_map() {
    let g = convert(json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_a__thought__c2ln", "type": "function", "function": {"name": "look", "arguments": "{\"q\":1}"}},
                {"id": "call_b", "type": "function", "function": {"name": "peek", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "call_a__thought__c2ln", "content": "{\"found\":true}"},
            {"role": "tool", "tool_call_id": "call_b", "content": "nothing"}
        ],
        "tools": [{"type": "function", "function": {"name": "look", "description": "Looks",
            "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}, "additionalProperties": false}}}],
        "tool_choice": {"type": "function", "function": {"name": "look"}},
        "max_tokens": 50, "temperature": 0.5, "top_p": 0.9, "stop": ["END"], "n": 1, "seed": 7,
        "response_format": {"type": "json_object"}
    }))
    .unwrap();
    assert_eq!(g["systemInstruction"], json!({"parts": [{"text": "Be brief."}]}));
    let contents = g["contents"].as_array().unwrap();
    assert_eq!(contents.len(), 3, "user, model, and one user turn holding both results: {g}");
    assert_eq!(contents[0]["role"], "user");
    assert_eq!(contents[0]["parts"][1], json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}));
    assert_eq!(contents[1]["role"], "model");
    assert_eq!(
        contents[1]["parts"][0],
        json!({"functionCall": {"id": "call_a", "name": "look", "args": {"q": 1}}, "thoughtSignature": "c2ln"}),
        "the signature the id carried goes back beside the call"
    );
    assert_eq!(contents[1]["parts"][1]["functionCall"]["args"], json!({}));
    assert_eq!(contents[2]["role"], "user");
    assert_eq!(
        contents[2]["parts"][0],
        json!({"functionResponse": {"id": "call_a", "name": "look", "response": {"output": {"found": true}}}})
    );
    assert_eq!(contents[2]["parts"][1]["functionResponse"]["name"], "peek");
    assert_eq!(contents[2]["parts"][1]["functionResponse"]["response"], json!({"output": "nothing"}));
    let decl = &g["tools"][0]["functionDeclarations"][0];
    assert_eq!(decl["name"], "look");
    assert!(decl["parameters"].get("additionalProperties").is_none());
    assert_eq!(g["toolConfig"], json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["look"]}}));
    assert_eq!(
        g["generationConfig"],
        json!({"maxOutputTokens": 50, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"], "seed": 7,
            "responseMimeType": "application/json"})
    );
}

#[test]
fn what_gemini_cannot_express_is_refused_naming_the_field() {
    let base = |extra: Value| {
        let mut v = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        v
    };
    // `n` > 1 is refused on the way to the canonical form, for every provider of another format.
    let e = weir_api::request_to_canonical(
        crate::format::Endpoint::OPENAI_CHAT,
        base(json!({"n": 2})).as_object().unwrap().clone(),
    )
    .unwrap_err();
    assert_eq!(e.path, "n");
    let e = convert(base(json!({"logit_bias": {"1": 2}}))).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("logit_bias"));
    let e = convert(json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}))
    .unwrap_err();
    assert_eq!(e.param.as_deref(), Some("messages[0].content[0]"));
    assert!(e.message.contains("base64 data URLs"), "{}", e.message);
    let e = convert(json!({"model": "m", "messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}))
        .unwrap_err();
    assert_eq!(e.param.as_deref(), Some("messages[0].tool_call_id"));
}

#[test]
fn a_gs_url_is_file_data_and_json_schema_is_a_response_schema() {
    let g = convert(json!({
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "gs://b/cat.jpg"}}]}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": true,
            "schema": {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false}}}
    }))
    .unwrap();
    assert_eq!(
        g["contents"][0]["parts"][0],
        json!({"fileData": {"fileUri": "gs://b/cat.jpg", "mimeType": "image/jpeg"}})
    );
    assert_eq!(
        g["generationConfig"]["responseSchema"],
        json!({"type": "object", "properties": {"a": {"type": "string"}}})
    );
}

#[test]
fn stream_usage_follows_include_usage() {
    let with = |so: Value| {
        let v = json!({"model": "m", "messages": [], "stream": true, "stream_options": so});
        weir_api::request_to_canonical(crate::format::Endpoint::OPENAI_CHAT, v.as_object().unwrap().clone()).unwrap()
    };
    assert!(wants_stream_usage(&with(json!({"include_usage": true}))));
    assert!(!wants_stream_usage(&with(json!({}))));
}
