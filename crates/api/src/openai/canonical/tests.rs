//! Fixture tests: each OpenAI fixture is read into the canonical types, compared with its
//! checked-in snapshot (`*.canonical.json`, `*.events.json`), written back to OpenAI (the
//! input itself, or `*.openai.*` where writing normalises spelling) and read again.
//! `WEIR_UPDATE_FIXTURES=1` rewrites the snapshots; review the diff.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::*;
use crate::canonical::{ApiFormat, ChatRequest, Extra, Finish, ImageSource, Message, Part, Role, StreamEvent, Usage};

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/openai/canonical/fixtures").join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn updating() -> bool {
    std::env::var_os("WEIR_UPDATE_FIXTURES").is_some()
}

/// Compares `got` with the JSON snapshot `name`, or writes it when updating.
fn snapshot(name: &str, got: &Value) {
    if updating() {
        std::fs::write(path(name), serde_json::to_string_pretty(got).unwrap() + "\n").unwrap();
        return;
    }
    let want: Value = serde_json::from_str(&read(name)).unwrap();
    assert!(want == *got, "{name} differs:\n{}", serde_json::to_string_pretty(got).unwrap());
}

/// The rendered form must equal the input, or the checked-in normalised form `name` if present.
fn rendered(name: &str, input: &Value, got: &Value) {
    if path(name).exists() || (updating() && got != input) {
        snapshot(name, got);
    } else {
        assert!(got == input, "written back differs from the input; if on purpose, add {name}:\n{got:#}");
    }
}

fn object(v: Value) -> Obj {
    match v {
        Value::Object(o) => o,
        other => panic!("not an object: {other}"),
    }
}

#[test]
fn request_fixtures_convert_both_ways() {
    for name in ["request_agent", "request_legacy"] {
        let input: Value = serde_json::from_str(&read(&format!("{name}.json"))).unwrap();
        let canonical = request_to_canonical(object(input.clone())).unwrap();
        snapshot(&format!("{name}.canonical.json"), &serde_json::to_value(&canonical).unwrap());
        let out = Value::Object(request_from_canonical(canonical.clone()));
        rendered(&format!("{name}.openai.json"), &input, &out);
        assert_eq!(request_to_canonical(object(out)).unwrap(), canonical, "{name}");
    }
}

#[test]
fn response_fixtures_convert_both_ways() {
    for name in ["response_text", "response_tool_calls"] {
        let input: Value = serde_json::from_str(&read(&format!("{name}.json"))).unwrap();
        let canonical = response_to_canonical(object(input.clone())).unwrap();
        snapshot(&format!("{name}.canonical.json"), &serde_json::to_value(&canonical).unwrap());
        let out = Value::Object(response_from_canonical(canonical.clone()));
        rendered(&format!("{name}.openai.json"), &input, &out);
        assert_eq!(response_to_canonical(object(out)).unwrap(), canonical, "{name}");
    }
}

/// The `data:` payloads of an SSE text, up to `[DONE]`.
fn payloads(sse: &str) -> Vec<&str> {
    sse.lines().filter_map(|l| l.strip_prefix("data: ")).take_while(|p| *p != "[DONE]").collect()
}

fn read_stream(chunks: &[&str]) -> Vec<StreamEvent> {
    let mut reader = StreamReader::default();
    let mut events = Vec::new();
    for c in chunks {
        reader.chunk(c.as_bytes(), &mut events).unwrap();
    }
    events
}

#[test]
fn stream_fixture_converts_both_ways() {
    let name = "stream_tool_calls";
    let events = read_stream(&payloads(&read(&format!("{name}.sse"))));
    snapshot(&format!("{name}.events.json"), &serde_json::to_value(&events).unwrap());
    let mut writer = StreamWriter::default();
    let mut sse = String::new();
    for ev in events.clone() {
        sse += &format!("data: {}\n\n", writer.event(ev));
    }
    sse += "data: [DONE]\n\n";
    let normalised = format!("{name}.openai.sse");
    if updating() {
        std::fs::write(path(&normalised), &sse).unwrap();
    }
    assert_eq!(sse, read(&normalised));
    assert_eq!(read_stream(&payloads(&sse)), events);
}

fn text(t: &str) -> Part {
    Part::Text { text: t.into(), extra: Extra::new() }
}

fn other_origin_request() -> ChatRequest {
    let mut extra = Extra::new();
    extra.insert("top_k".into(), 5.into());
    let result = Part::ToolResult {
        id: "toolu_1".into(),
        name: Some("get_weather".into()),
        content: vec![text("7 C")],
        is_error: true,
        extra: Extra::new(),
    };
    ChatRequest {
        origin: ApiFormat::OpenAi,
        model: "m".into(),
        messages: vec![
            Message { role: Role::System, parts: vec![text("be brief")], extra: Extra::new() },
            Message {
                role: Role::Assistant,
                parts: vec![
                    Part::Reasoning { text: "hmm".into(), signature: Some("sig".into()), extra: Extra::new() },
                    Part::ToolCall {
                        id: "toolu_1".into(),
                        name: "get_weather".into(),
                        arguments: "{}".into(),
                        extra: Extra::new(),
                    },
                ],
                extra: Extra::new(),
            },
            Message { role: Role::User, parts: vec![result, text("and tomorrow?")], extra: extra.clone() },
        ],
        tools: vec![],
        tool_choice: None,
        max_tokens: Some(100),
        temperature: None,
        top_p: None,
        stop: vec![],
        stream: true,
        extra,
    }
}

#[test]
fn another_formats_request_leaves_its_extras_out_and_splits_tool_results() {
    let out = Value::Object(request::from_canonical(other_origin_request(), false));
    let want = json!({
        "model": "m",
        "messages": [
            { "role": "system", "content": "be brief" },
            { "role": "assistant", "content": null, "tool_calls": [
                { "id": "toolu_1", "type": "function", "function": { "name": "get_weather", "arguments": "{}" } }
            ] },
            { "role": "tool", "tool_call_id": "toolu_1", "content": "7 C" },
            { "role": "user", "content": "and tomorrow?" }
        ],
        "max_completion_tokens": 100,
        "stream": true,
        "stream_options": { "include_usage": true }
    });
    assert_eq!(out, want);
}

#[test]
fn another_formats_answer_and_stream_use_openai_names_only() {
    let resp = crate::canonical::ChatResponse {
        origin: ApiFormat::OpenAi,
        id: "msg_1".into(),
        model: "claude".into(),
        created: Some(7),
        message: Message {
            role: Role::Assistant,
            parts: vec![Part::Reasoning { text: "think".into(), signature: None, extra: Extra::new() }, text("hi")],
            extra: Extra::new(),
        },
        finish: Some(Finish::Other("pause_turn".into())),
        usage: Some(Usage { input_tokens: 3, output_tokens: 2, cache_write_tokens: Some(1), ..Usage::default() }),
        extra: Extra::from_iter([("stop_sequence".to_owned(), Value::Null)]),
    };
    let out = Value::Object(response::from_canonical(resp, false));
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        out["choices"][0]["message"],
        json!({ "role": "assistant", "content": "hi", "reasoning_content": "think" })
    );
    assert_eq!(out["usage"], json!({ "prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5 }));
    assert!(out.get("stop_sequence").is_none());

    let mut w = StreamWriter::default();
    let start = w.event(StreamEvent::Start {
        origin: ApiFormat::OpenAi,
        id: "msg_1".into(),
        model: "claude".into(),
        created: Some(7),
        extra: Extra::from_iter([("system_fingerprint".to_owned(), "fp".into())]),
    });
    assert_eq!(start["system_fingerprint"], "fp", "from OpenAI, repeated fields are kept");
    let end = w.event(StreamEvent::Finish { reason: Finish::StopSequence(Some("END".into())) });
    assert_eq!((&end["choices"][0]["finish_reason"], &end["id"]), (&"stop".into(), &"msg_1".into()));
    // A writer that saw no OpenAI start keeps no OpenAI names of its own.
    let other = StreamWriter::default().event(StreamEvent::Finish { reason: Finish::Other("pause_turn".into()) });
    assert_eq!(other["choices"][0]["finish_reason"], "stop");
}

#[test]
fn images_are_bytes_only_for_base64_data_urls() {
    let source = |url: &str| {
        let body = json!({ "model": "m", "messages": [{ "role": "user", "content": [
            { "type": "image_url", "image_url": { "url": url } }
        ] }] });
        match request_to_canonical(object(body)).unwrap().messages.remove(0).parts.remove(0) {
            Part::Image { source, .. } => source,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        source("data:image/jpeg;base64,/9j/4A=="),
        ImageSource::Base64 { media_type: "image/jpeg".into(), data: "/9j/4A==".into() }
    );
    assert_eq!(source("data:text/plain,hi"), ImageSource::Url { url: "data:text/plain,hi".into() });
}

#[test]
fn what_has_no_canonical_form_is_refused_naming_the_field() {
    let err = |body: Value| request_to_canonical(object(body)).unwrap_err().path;
    let m = |msg: Value| json!({ "model": "m", "messages": [msg] });
    assert_eq!(err(m(json!({ "role": "function", "name": "f", "content": "x" }))), "messages[0].role");
    assert_eq!(err(m(json!({ "role": "tool", "content": "x" }))), "messages[0].tool_call_id");
    assert_eq!(err(json!({ "messages": [] })), "model");
    let custom = json!({ "model": "m", "messages": [], "tools": [{ "type": "custom", "custom": { "name": "x" } }] });
    assert_eq!(err(custom), "tools[0].type");
    // Paths name multi-digit indexes and nested parts exactly.
    let mut many: Vec<Value> = (0..12).map(|_| json!({ "role": "user", "content": "x" })).collect();
    many.push(json!({ "role": "user", "content": [{ "type": "text", "text": "a" }, { "type": "image_url", "image_url": 5 }] }));
    assert_eq!(err(json!({ "model": "m", "messages": many })), "messages[12].content[1].image_url");
    let call =
        json!({ "role": "assistant", "tool_calls": [{ "id": "a", "function": { "name": "f" } }, { "type": "x" }] });
    assert_eq!(err(m(call)), "messages[0].tool_calls[1].type");

    let two = json!({ "id": "c", "choices": [{ "message": { "role": "assistant" } }, { "message": { "role": "assistant" } }] });
    assert_eq!(response_to_canonical(object(two)).unwrap_err().path, "choices");

    let mut reader = StreamReader::default();
    let far = br#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":100000,"id":"x"}]}}]}"#;
    let e = reader.chunk(far, &mut Vec::new()).unwrap_err();
    assert_eq!(e.path, "choices[0].delta.tool_calls[0].index");
    assert!(reader.chunk(b"not json", &mut Vec::new()).is_err());
}

#[test]
fn tool_results_carry_the_name_of_their_call() {
    let canonical = request_to_canonical(object(read("request_agent.json").parse().unwrap())).unwrap();
    let names: Vec<_> = canonical
        .messages
        .iter()
        .flat_map(|m| &m.parts)
        .filter_map(|p| match p {
            Part::ToolResult { name, .. } => name.as_deref(),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["get_weather", "get_weather"]);
}
