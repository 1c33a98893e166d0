//! The mock upstream's fixed bodies: sized answers, raw SSE fixtures, plain-text errors and
//! embeddings (`upstream.rs` decides which one a request gets).

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};

use super::upstream::{Body, full};

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
