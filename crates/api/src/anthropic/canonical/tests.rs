//! Fixture tests: each Anthropic fixture (real wire shape) is read into the canonical types and
//! compared with its checked-in snapshot, written back to Anthropic (the input itself, or
//! `*.anthropic.*` where writing normalises spelling) and read again; it is also written as
//! OpenAI (`*.openai.*`), and OpenAI's own fixtures are written as Anthropic, so both
//! directions of the translation are pinned. `WEIR_UPDATE_FIXTURES=1` rewrites the snapshots;
//! review the diff.

use std::path::PathBuf;

use bytes::Bytes;
use serde_json::Value;

use super::*;
use crate::canonical::{ApiFormat, StreamEvent};

fn path(dir: &str, name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src").join(dir).join("canonical/fixtures").join(name)
}

fn read(dir: &str, name: &str) -> String {
    std::fs::read_to_string(path(dir, name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn updating() -> bool {
    std::env::var_os("WEIR_UPDATE_FIXTURES").is_some()
}

/// Compares `got` with the snapshot `name` (in this format's fixtures), or writes it.
fn snapshot(name: &str, got: &str) {
    let file = path("anthropic", name);
    if updating() {
        std::fs::write(file, got).unwrap();
        return;
    }
    let want = read("anthropic", name);
    assert!(want == got, "{name} differs:\n{got}");
}

fn json_snapshot(name: &str, got: &Value) {
    snapshot(name, &(serde_json::to_string_pretty(got).unwrap() + "\n"));
}

/// The written form must equal the input, or the checked-in normalised form `name` if present.
fn rendered(name: &str, input: &Value, got: &Value) {
    if path("anthropic", name).exists() || (updating() && got != input) {
        json_snapshot(name, got);
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

/// The `data:` payloads of an SSE fixture.
fn sse_payloads(text: &str) -> Vec<&str> {
    text.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|d| *d != "[DONE]").collect()
}

/// Payloads as an Anthropic SSE text, framed as the front door frames them.
fn framed(payloads: &[Bytes]) -> String {
    payloads.iter().map(|p| String::from_utf8(crate::anthropic::render::frame(p).to_vec()).unwrap()).collect()
}

#[test]
fn the_request_fixture_converts_both_ways() {
    let input: Value = serde_json::from_str(&read("anthropic", "request_agent.json")).unwrap();
    let canonical = request_to_canonical(object(input.clone())).unwrap();
    json_snapshot("request_agent.canonical.json", &serde_json::to_value(&canonical).unwrap());
    let out = Value::Object(request_from_canonical(canonical.clone()));
    rendered("request_agent.anthropic.json", &input, &out);
    assert_eq!(request_to_canonical(object(out)).unwrap(), canonical);
    let openai = Value::Object(crate::openai::canonical::request_from_canonical(canonical));
    json_snapshot("request_agent.openai.json", &openai);
}

#[test]
fn openai_requests_convert_to_anthropic() {
    for name in ["request_agent", "request_legacy"] {
        let input: Value = serde_json::from_str(&read("openai", &format!("{name}.json"))).unwrap();
        let canonical = crate::openai::canonical::request_to_canonical(object(input)).unwrap();
        let out = Value::Object(request_from_canonical(canonical));
        json_snapshot(&format!("openai_{name}.anthropic.json"), &out);
        assert!(out.get("top_k").is_none() && out.get("n").is_none(), "OpenAI's extra stays out");
        request_to_canonical(object(out)).unwrap();
    }
}

#[test]
fn the_response_fixture_converts_both_ways() {
    let input: Value = serde_json::from_str(&read("anthropic", "response_tool_use.json")).unwrap();
    let canonical = response_to_canonical(object(input.clone())).unwrap();
    json_snapshot("response_tool_use.canonical.json", &serde_json::to_value(&canonical).unwrap());
    assert_eq!(canonical.usage.as_ref().unwrap().input_tokens, 472 + 10 + 2048, "cache reads and writes are input");
    let out = Value::Object(response_from_canonical(canonical.clone()));
    rendered("response_tool_use.anthropic.json", &input, &out);
    let mut openai = crate::openai::canonical::response_from_canonical(canonical);
    openai.insert("created".into(), 0.into());
    json_snapshot("response_tool_use.openai.json", &Value::Object(openai));
}

#[test]
fn openai_responses_convert_to_anthropic() {
    for name in ["response_text", "response_tool_calls"] {
        let input: Value = serde_json::from_str(&read("openai", &format!("{name}.json"))).unwrap();
        let canonical = crate::openai::canonical::response_to_canonical(object(input)).unwrap();
        let out = Value::Object(response_from_canonical(canonical));
        json_snapshot(&format!("openai_{name}.anthropic.json"), &out);
    }
}

#[test]
fn the_stream_fixture_converts_both_ways() {
    let text = read("anthropic", "stream_tool_use.sse");
    let mut reader = StreamReader::default();
    let mut events = Vec::new();
    for p in sse_payloads(&text) {
        reader.event(p.as_bytes(), &mut events).unwrap();
    }
    json_snapshot("stream_tool_use.events.json", &serde_json::to_value(&events).unwrap());
    assert!(
        matches!(events.last(), Some(StreamEvent::Usage { usage }) if usage.input_tokens == 572 && usage.output_tokens == 89)
    );
    let mut writer = StreamWriter::default();
    let mut out = Vec::new();
    for ev in events.clone() {
        writer.event(ev, &mut out);
    }
    writer.end(&mut out);
    snapshot("stream_tool_use.anthropic.sse", &framed(&out));
    check_sequence(&out);
    let mut again = Vec::new();
    let mut reader = StreamReader::default();
    for p in &out {
        reader.event(p, &mut again).unwrap();
    }
    // Thinking's signature has no canonical stream event, so it is the one thing not carried.
    assert_eq!(again, events);
}

#[test]
fn an_openai_stream_becomes_a_valid_anthropic_event_sequence() {
    let text = read("openai", "stream_tool_calls.sse");
    let mut reader = crate::openai::canonical::StreamReader::default();
    let mut writer = StreamWriter::default();
    let (mut events, mut out) = (Vec::new(), Vec::new());
    for p in sse_payloads(&text) {
        reader.chunk(p.as_bytes(), &mut events).unwrap();
        for ev in events.drain(..) {
            writer.event(ev, &mut out);
        }
    }
    writer.end(&mut out);
    snapshot("openai_stream_tool_calls.anthropic.sse", &framed(&out));
    check_sequence(&out);
    assert!(out.iter().all(|p| p.starts_with(b"{\"type\":\"")), "type first, as Anthropic writes it");
}

#[test]
fn an_error_event_does_not_convert() {
    let mut out = Vec::new();
    let e = StreamReader::default()
        .event(br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#, &mut out)
        .unwrap_err();
    assert!(e.reason.contains("Overloaded"), "{e}");
}

#[test]
fn roles_other_than_user_and_assistant_are_refused_with_their_path() {
    let body = serde_json::json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]});
    let e = request_to_canonical(object(body)).unwrap_err();
    assert_eq!(e.path, "messages[0].role");
}

/// The rules an Anthropic client relies on: `message_start` first, every delta inside a block
/// that was started and not yet stopped, `message_delta` then `message_stop` last.
fn check_sequence(out: &[Bytes]) {
    let events: Vec<Value> = out.iter().map(|p| serde_json::from_slice(p).unwrap()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"message_start"));
    assert_eq!(&kinds[kinds.len() - 2..], ["message_delta", "message_stop"]);
    let mut open: Option<u64> = None;
    let mut started = Vec::new();
    for e in &events {
        let index = e["index"].as_u64();
        match e["type"].as_str().unwrap() {
            "content_block_start" => {
                assert!(open.is_none(), "a block starts while another is open: {e}");
                assert!(!started.contains(&index), "a block index repeats: {e}");
                started.push(index);
                open = index;
            }
            "content_block_delta" => assert_eq!(open, index, "a delta outside its open block: {e}"),
            "content_block_stop" => {
                assert_eq!(open, index, "a stop of a block not open: {e}");
                open = None;
            }
            "message_delta" => {
                assert!(open.is_none(), "message_delta with a block open");
                assert!(e["delta"]["stop_reason"].is_string() && e["usage"]["output_tokens"].is_u64(), "{e}");
            }
            _ => {}
        }
    }
    let _ = ApiFormat::Anthropic;
}
