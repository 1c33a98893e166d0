use serde_json::{Value, json};

use super::convert::{request_from_canonical, request_to_canonical};
use super::stream::{StreamReader, StreamWriter};
use crate::canonical::{Finish, Part, Role, StreamEvent, ToolChoice, Usage};
use crate::format::ApiFormat;

fn obj(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn a_request_reads_into_a_conversation_and_writes_back() {
    let req = request_to_canonical(obj(json!({
        "model": "m", "instructions": "sys",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        ],
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": true}],
        "tool_choice": {"type": "function", "name": "f"},
        "max_output_tokens": 9, "store": false,
        "text": {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}}},
    })))
    .unwrap();
    assert_eq!(req.origin, ApiFormat::Responses);
    let roles: Vec<Role> = req.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::System, Role::User, Role::Assistant, Role::Tool], "two calls share one turn");
    assert_eq!(req.messages[2].parts.len(), 2);
    assert!(matches!(&req.messages[3].parts[0], Part::ToolResult { id, .. } if id == "c1"));
    assert_eq!(req.tool_choice, Some(ToolChoice::Tool { name: "f".into() }));
    assert_eq!(req.max_tokens, Some(9));
    assert_eq!(req.extra["response_format"]["json_schema"]["name"], "a");
    assert_eq!(req.extra["store"], false, "unread fields stay for a Responses writer");

    let back = request_from_canonical(req);
    assert_eq!(back["instructions"], "sys");
    assert_eq!(back["input"][0]["content"][0]["type"], "input_text");
    assert_eq!(back["input"][1]["type"], "function_call");
    assert_eq!(back["input"][3]["type"], "function_call_output");
    assert_eq!(back["tools"][0]["strict"], true);
}

#[test]
fn state_at_openai_and_its_own_tools_are_refused_by_path() {
    for (body, path) in [
        (json!({"model": "m", "input": "x", "previous_response_id": "r"}), "previous_response_id"),
        (json!({"model": "m", "input": "x", "tools": [{"type": "file_search"}]}), "tools[0].type"),
        (json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}), "input[0].type"),
        (json!({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}), "text.format.type"),
    ] {
        let e = request_to_canonical(obj(body.clone())).unwrap_err();
        assert_eq!(e.path, path, "{body}");
    }
}

#[test]
fn a_written_stream_numbers_its_events_and_closes_each_item_before_the_next() {
    let mut w = StreamWriter::default();
    let mut out = Vec::new();
    for event in [
        StreamEvent::Start {
            origin: ApiFormat::OpenAi,
            id: "x".into(),
            model: "m".into(),
            created: Some(1),
            extra: Default::default(),
        },
        StreamEvent::Text { text: "a".into() },
        StreamEvent::ToolCall { index: 0, id: "c".into(), name: "f".into() },
        StreamEvent::ToolArguments { index: 0, arguments: "{}".into() },
        StreamEvent::Finish { reason: Finish::ToolCalls },
        StreamEvent::Usage { usage: Usage { input_tokens: 3, output_tokens: 2, ..Usage::default() } },
    ] {
        w.event(event, &mut out);
    }
    w.end(&mut out);
    let events: Vec<Value> = out.iter().map(|b| serde_json::from_slice(b).unwrap()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert!(out.iter().all(|b| b.starts_with(b"{\"type\":")), "type first, for framing without a parse");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], i);
    }
    let done = &events.last().unwrap()["response"];
    assert_eq!(done["output"][1]["arguments"], "{}");
    assert_eq!(done["usage"]["total_tokens"], 5);

    // And read back.
    let mut r = StreamReader::default();
    let mut canonical = Vec::new();
    for b in &out {
        r.event(b, &mut canonical).unwrap();
    }
    assert!(matches!(canonical.first(), Some(StreamEvent::Start { .. })));
    assert!(canonical.contains(&StreamEvent::Text { text: "a".into() }));
    assert!(canonical.contains(&StreamEvent::Finish { reason: Finish::ToolCalls }));
}
