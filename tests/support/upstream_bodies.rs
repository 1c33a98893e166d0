//! The mock upstream's fixed bodies: sized answers, raw SSE fixtures, plain-text errors and
//! embeddings (`upstream.rs` decides which one a request gets).

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};

use super::upstream::{Body, USAGE, full, last_user_text};

/// A 200 JSON body of exactly `size` bytes (at least the JSON frame's), with Content-Length
/// or, with `no_length`, chunked in 16 KiB frames.
pub(super) fn sized_response(size: usize, no_length: bool) -> Response<Body> {
    let head = b"{\"id\":\"big\",\"pad\":\"";
    let mut bytes = Vec::with_capacity(size.max(head.len() + 2));
    bytes.extend_from_slice(head);
    bytes.resize(size.saturating_sub(2).max(head.len()), b'x');
    bytes.extend_from_slice(b"\"}");
    let bytes = Bytes::from(bytes);
    let builder = Response::builder().header("content-type", "application/json");
    if !no_length {
        return builder.body(full(bytes)).unwrap();
    }
    let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = (0..bytes.len())
        .step_by(16 * 1024)
        .map(|at| Ok(Frame::data(bytes.slice(at..(at + 16 * 1024).min(bytes.len())))))
        .collect();
    builder.body(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames)))).unwrap()
}

/// An error answered as plain text, as a misconfigured proxy in front of a provider would.
pub(super) fn text_error(status: u16, text: &str) -> Response<Body> {
    Response::builder().status(status).header("content-type", "text/plain").body(full(text.to_owned())).unwrap()
}

/// An OpenAI embeddings answer for `body`: one small vector per input.
pub(super) fn embeddings(body: &Value) -> Value {
    let n = match &body["input"] {
        Value::Array(items) => items.len(),
        _ => 1,
    };
    let data: Vec<Value> =
        (0..n).map(|i| json!({"object": "embedding", "index": i, "embedding": [0.25, -0.5, i as f64]})).collect();
    json!({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": n, "total_tokens": n}})
}

/// Size of the mock's generated speech (`/v1/audio/speech`): several frames.
pub const SPEECH_BYTES: usize = 300 * 1024;

/// The answer to an OpenAI endpoint Weir relays as it is, `None` for the others: a stream or a
/// whole text completion on `/v1/completions`, binary audio on `/v1/audio/speech`, a 400 for a
/// moderation of `"bad"`, and elsewhere a JSON echo of what arrived (method, path, query,
/// content type, body size, model, whether a key came).
pub(super) fn relayed(
    method: &http::Method,
    path: &str,
    body: &Value,
    headers: &http::HeaderMap,
    raw: &Bytes,
) -> Option<Response<Body>> {
    if path == "/v1/responses" {
        return Some(responses_answer(body));
    }
    let relayed = [
        "/v1/completions",
        "/v1/moderations",
        "/v1/images/",
        "/v1/audio/",
        "/v1/files",
        "/v1/batches",
        "/v1/responses/",
    ]
    .iter()
    .any(|p| path.starts_with(p));
    if !relayed {
        return None;
    }
    let json_resp = |status: u16, v: Value| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(full(serde_json::to_vec(&v).unwrap()))
            .unwrap()
    };
    if path == "/v1/completions" && body["stream"] == true {
        let mut text = String::new();
        for piece in ["Hello", " there"] {
            let chunk = json!({"id": "cmpl-1", "object": "text_completion", "model": body["model"],
                "choices": [{"index": 0, "text": piece, "finish_reason": null}]});
            text.push_str(&format!("data: {chunk}\n\n"));
        }
        text.push_str("data: [DONE]\n\n");
        return Some(Response::builder().header("content-type", "text/event-stream").body(full(text)).unwrap());
    }
    if path == "/v1/completions" {
        return Some(json_resp(
            200,
            json!({"id": "cmpl-1", "object": "text_completion", "model": body["model"],
                "choices": [{"index": 0, "text": "Hello there", "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}),
        ));
    }
    if path == "/v1/moderations" && body["input"] == "bad" {
        return Some(json_resp(
            400,
            json!({"error": {"message": "input `bad` is not accepted by the mock", "type": "invalid_request_error",
                "param": "input", "code": "mock_refused"}}),
        ));
    }
    if path == "/v1/audio/speech" {
        let bytes: Bytes = (0..SPEECH_BYTES).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = (0..bytes.len())
            .step_by(16 * 1024)
            .map(|at| Ok(Frame::data(bytes.slice(at..(at + 16 * 1024).min(bytes.len())))))
            .collect();
        return Some(
            Response::builder()
                .header("content-type", "audio/mpeg")
                .body(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames))))
                .unwrap(),
        );
    }
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    Some(json_resp(
        200,
        json!({"object": "mock.relay", "method": method.as_str(), "path": path,
            "content_type": content_type, "body_bytes": raw.len(), "model": body["model"],
            "authorization": headers.contains_key("authorization")}),
    ))
}

/// An OpenAI Responses answer to `body`: the last input text echoed, whole or as a stream of
/// `event:`-framed events ending with `response.completed` (no `[DONE]`, as OpenAI sends it).
fn responses_answer(body: &Value) -> Response<Body> {
    let text = match &body["input"] {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .rev()
            .find_map(|i| {
                i["content"].as_str().map(str::to_owned).or_else(|| i["content"][0]["text"].as_str().map(str::to_owned))
            })
            .unwrap_or_default(),
        _ => String::new(),
    };
    let usage = json!({"input_tokens": 7, "input_tokens_details": {"cached_tokens": 2}, "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 10});
    let output = json!([{"type": "message", "id": "msg_up", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]}]);
    let response = json!({"id": "resp_up", "object": "response", "created_at": 1, "status": "completed",
        "model": body["model"], "output": output, "usage": usage});
    if body["stream"] != true {
        return Response::builder()
            .header("content-type", "application/json")
            .body(full(serde_json::to_vec(&response).unwrap()))
            .unwrap();
    }
    let mut events = vec![
        json!({"type": "response.created", "sequence_number": 0, "response": {"id": "resp_up", "status": "in_progress", "model": body["model"], "output": []}}),
    ];
    for (i, word) in text.split_inclusive(' ').enumerate() {
        events.push(json!({"type": "response.output_text.delta", "sequence_number": i + 1, "item_id": "msg_up",
            "output_index": 0, "content_index": 0, "delta": word}));
    }
    events.push(json!({"type": "response.completed", "sequence_number": events.len(), "response": response}));
    let text: String =
        events.iter().map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap())).collect();
    Response::builder().header("content-type", "text/event-stream").body(full(text)).unwrap()
}

/// A chat answer that echoes the last user message.
pub(super) fn completion(body: &Value) -> Value {
    json!({
        "id": "chatcmpl-up", "object": "chat.completion", "created": 0, "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": last_user_text(body)},
                     "finish_reason": "stop"}],
        "usage": usage(),
    })
}

/// The usage every answer reports ([`super::upstream::USAGE`]).
pub(super) fn usage() -> Value {
    let (prompt, completion, cached) = USAGE;
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
           "prompt_tokens_details": {"cached_tokens": cached}})
}
