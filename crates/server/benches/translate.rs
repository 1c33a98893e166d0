//! What translating between OpenAI's and Anthropic's formats costs per request, without
//! sockets: an OpenAI chat request written as Anthropic's (the bench body, ~1 KB), Anthropic's
//! ~1 KB answer written back as OpenAI's, and the event payloads of the load benchmark's
//! Anthropic stream read and rewritten as OpenAI chunks (its first write alone, what time to
//! first byte waits for, and the whole stream). Each beside the passthrough it replaces.
//!
//! Run: `cargo bench -p weir-server --bench translate -- --warm-up-time 1 --measurement-time 3`.
#![allow(missing_docs)]

mod common;

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use weir_server::api::{EventReader, EventWriter};
use weir_server::exchange::JsonBody;
use weir_server::format::{ApiFormat, Endpoint};
use weir_server::providers::codec;

/// The reply text of `weir-mock-upstream` (~900 bytes).
fn reply_text() -> String {
    "The quick brown fox jumps over the lazy dog. ".repeat(20).trim_end().to_string()
}

fn requests(c: &mut Criterion) {
    let openai = Bytes::from(serde_json::to_vec(&common::bench_chat_body()).unwrap());
    let mut anthropic = common::bench_chat_body();
    let system = anthropic["messages"][0]["content"].clone();
    let user = anthropic["messages"][1].clone();
    anthropic["system"] = system;
    anthropic["messages"] = json!([user]);
    let anthropic = Bytes::from(serde_json::to_vec(&anthropic).unwrap());
    let to_anthropic = |endpoint, body: &Bytes| {
        codec::request_body(ApiFormat::Anthropic, endpoint, JsonBody::from_raw(body.clone()), "bench-1".into())
    };
    let written = to_anthropic(Endpoint::OPENAI_CHAT, &openai).unwrap();
    let tree: serde_json::Value = serde_json::from_slice(&written).unwrap();
    assert_eq!(tree["system"], "You are a helpful assistant.", "translated: {tree}");
    c.bench_function("request_openai_to_anthropic_1kb", |b| {
        b.iter(|| to_anthropic(Endpoint::OPENAI_CHAT, black_box(&openai)).unwrap())
    });
    c.bench_function("request_anthropic_passthrough_1kb", |b| {
        b.iter(|| to_anthropic(Endpoint::ANTHROPIC_MESSAGES, black_box(&anthropic)).unwrap())
    });
}

fn answers(c: &mut Criterion) {
    let answer = Bytes::from(
        serde_json::to_vec(&json!({
            "id": "msg_bench", "type": "message", "role": "assistant", "model": "bench-1",
            "content": [{"type": "text", "text": reply_text()}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 250, "output_tokens": 200},
        }))
        .unwrap(),
    );
    let openai = codec::response(ApiFormat::Anthropic, ApiFormat::OpenAi, answer.clone()).unwrap();
    let tree: serde_json::Value = serde_json::from_slice(&openai).unwrap();
    assert_eq!(tree["choices"][0]["message"]["content"], reply_text(), "translated: {tree}");
    c.bench_function("answer_anthropic_to_openai_1kb", |b| {
        b.iter(|| codec::response(ApiFormat::Anthropic, ApiFormat::OpenAi, black_box(answer.clone())).unwrap())
    });
}

/// The `data:` payloads of the mock's Anthropic stream, in its 9 writes.
fn stream_writes() -> Vec<Vec<Bytes>> {
    let text = reply_text() + " ";
    let piece = text.len() / 8;
    let delta = |i: usize| {
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": &text[i * piece..(i + 1) * piece]}})
    };
    let bytes = |v: serde_json::Value| Bytes::from(serde_json::to_vec(&v).unwrap());
    let head = vec![
        bytes(json!({"type": "message_start", "message": {"id": "msg_bench", "type": "message", "role": "assistant",
            "model": "bench-1", "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 250, "output_tokens": 1}}})),
        bytes(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
        bytes(json!({"type": "ping"})),
        bytes(delta(0)),
    ];
    let mut writes = vec![head];
    writes.extend((1..8).map(|i| vec![bytes(delta(i))]));
    writes.push(vec![
        bytes(json!({"type": "content_block_stop", "index": 0})),
        bytes(json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 200}})),
        bytes(json!({"type": "message_stop"})),
    ]);
    writes
}

/// Reads `writes` as Anthropic events and writes them as OpenAI chunks (and, if `end`, the
/// stream's closing chunks), as the codec does for each payload; returns the chunks.
fn translate(writes: &[Vec<Bytes>], end: bool) -> Vec<Bytes> {
    let mut reader = EventReader::new(ApiFormat::Anthropic);
    let mut writer = EventWriter::new(ApiFormat::OpenAi);
    let (mut canonical, mut out) = (Vec::new(), Vec::new());
    for payload in writes.iter().flatten() {
        reader.read(payload, &mut canonical).unwrap();
        for ev in canonical.drain(..) {
            writer.write(ev, &mut out);
        }
    }
    if end {
        writer.end(&mut out);
    }
    out
}

fn streams(c: &mut Criterion) {
    let writes = stream_writes();
    assert!(!translate(&writes[..1], false).is_empty(), "the first write gives the client a chunk");
    let all = translate(&writes, true);
    let text: String = all
        .iter()
        .filter_map(|c| serde_json::from_slice::<serde_json::Value>(c).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    let sent = reply_text() + " ";
    assert_eq!(text, sent[..sent.len() / 8 * 8], "the chunks carry every delta's text");
    c.bench_function("stream_anthropic_to_openai_first_write", |b| {
        b.iter(|| translate(black_box(&writes[..1]), false))
    });
    c.bench_function("stream_anthropic_to_openai_whole_14_events", |b| b.iter(|| translate(black_box(&writes), true)));
}

criterion_group!(benches, requests, answers, streams);
criterion_main!(benches);
