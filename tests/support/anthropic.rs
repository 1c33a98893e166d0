//! A mock Anthropic Messages API on 127.0.0.1, in the wire shape of Anthropic's API reference:
//! `POST /v1/messages` (whole answers and `event:`/`data:` streams of `message_start`,
//! `content_block_*`, `ping`, `message_delta`, `message_stop`), `GET /v1/models`, and errors as
//! `{"type":"error","error":{"type","message"}}`. It records every request (path, `x-api-key`,
//! `anthropic-version`, raw body).
//!
//! Directives appended to the model name (`claude;status=429`), as the OpenAI mock has them:
//! - `status=CODE`: answer that status with Anthropic's error type for it (429 adds
//!   `retry-after: 7`; 400 says the prompt is too long; 401 quotes the key it was sent).
//! - `tools`: answer with a `tool_use` block (streamed as `input_json_delta` fragments).
//! - `cut`: a stream ends (cleanly, at the TCP level) before `message_stop`.
//! - `error_event`: a stream sends an `error` event (`overloaded_error`) after its first block.
//! - `pii`: the answer's text is [`PII_TEXT`] (one delta when streamed).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// Token usage every answer reports: input, output, cache read, cache creation.
pub const USAGE: (u64, u64, u64, u64) = (20, 9, 6, 2);
/// The text of every answer, streamed as these pieces.
pub const TEXT: [&str; 3] = ["Hello", " from", " Anthropic"];
/// The text of a `pii` answer.
pub const PII_TEXT: &str = "Mail ops@example.com today";

/// One request received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// e.g. `/v1/messages`.
    pub path: String,
    /// `x-api-key`.
    pub api_key: Option<String>,
    /// `anthropic-version`.
    pub version: Option<String>,
    /// `authorization` (Anthropic takes none: Weir must not send the OpenAI header).
    pub authorization: Option<String>,
    /// The body exactly as received.
    pub raw: Bytes,
    /// The body as JSON (`Null` when empty).
    pub body: Value,
}

/// A running mock; stops when dropped.
pub struct MockAnthropic {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    server: tokio::task::JoinHandle<()>,
}

impl MockAnthropic {
    /// Starts the mock, listing `claude-mock-1` and `claude-mock-2` on `/v1/models`.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let st = seen.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let seen = st.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(seen.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen, server }
    }

    /// A `[[providers]]` table of kind `anthropic` named `name`, with key `sk-ant-test-key`.
    pub fn provider_toml(&self, name: &str, extra: &str) -> String {
        format!(
            "[[providers]]\nname = \"{name}\"\nkind = \"anthropic\"\nbase_url = \"http://{}/v1\"\n\
             keys = [{{ value = \"sk-ant-test-key\" }}]\n{extra}\n",
            self.addr
        )
    }

    /// Every `POST /v1/messages` received.
    pub fn messages(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().iter().filter(|s| s.path == "/v1/messages").cloned().collect()
    }
}

impl Drop for MockAnthropic {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

async fn handle(seen: Arc<Mutex<Vec<Seen>>>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let (api_key, version, authorization) =
        (header(&req, "x-api-key"), header(&req, "anthropic-version"), header(&req, "authorization"));
    let raw = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        api_key: api_key.clone(),
        version,
        authorization,
        raw,
        body: body.clone(),
    });
    if path == "/v1/models" {
        let data = json!({"data": [
            {"type": "model", "id": "claude-mock-1", "display_name": "Mock 1", "created_at": "2025-01-01T00:00:00Z"},
            {"type": "model", "id": "claude-mock-2", "display_name": "Mock 2", "created_at": "2025-01-01T00:00:00Z"}
        ], "has_more": false, "first_id": "claude-mock-1", "last_id": "claude-mock-2"});
        return Ok(json_response(200, &data));
    }
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let directive = |d: &str| model.split(';').skip(1).any(|x| x == d);
    let status = model.split(';').find_map(|x| x.strip_prefix("status=")).and_then(|s| s.parse::<u16>().ok());
    if let Some(status) = status {
        let (kind, message) = match status {
            400 => ("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum".to_owned()),
            401 => ("authentication_error", format!("invalid x-api-key {}", api_key.unwrap_or_default())),
            429 => ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit".into()),
            529 => ("overloaded_error", "Overloaded".into()),
            _ => ("api_error", "Internal server error".into()),
        };
        let mut resp = json_response(status, &json!({"type": "error", "error": {"type": kind, "message": message}}));
        if status == 429 {
            resp.headers_mut().insert("retry-after", "7".parse().unwrap());
        }
        return Ok(resp);
    }
    let tools = directive("tools");
    let text: &[&str] = if directive("pii") { &[PII_TEXT] } else { &TEXT };
    if body["stream"] == json!(true) {
        let sse = stream_text(&model, text, tools, directive("cut"), directive("error_event"));
        let mut resp = Response::new(Full::new(Bytes::from(sse)));
        resp.headers_mut().insert("content-type", "text/event-stream; charset=utf-8".parse().unwrap());
        return Ok(resp);
    }
    let (input, output, read, created) = USAGE;
    let content = if tools {
        json!([{"type": "text", "text": "Let me check."},
               {"type": "tool_use", "id": "toolu_01Mock", "name": "get_weather", "input": {"city": "Oslo"}}])
    } else {
        json!([{"type": "text", "text": text.concat()}])
    };
    let answer = json!({
        "id": "msg_01Mock", "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": if tools { "tool_use" } else { "end_turn" }, "stop_sequence": null,
        "usage": {"input_tokens": input, "output_tokens": output, "cache_read_input_tokens": read,
                  "cache_creation_input_tokens": created}
    });
    Ok(json_response(200, &answer))
}

fn json_response(status: u16, v: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(v.to_string())));
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
    resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
    resp.headers_mut().insert("request-id", "req_01Mock".parse().unwrap());
    resp
}

/// The SSE text of a streamed answer.
fn stream_text(model: &str, text: &[&str], tools: bool, cut: bool, error_event: bool) -> String {
    let (input, output, read, created) = USAGE;
    let mut events: Vec<Value> = vec![json!({"type": "message_start", "message": {
        "id": "msg_01Mock", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input, "output_tokens": 1, "cache_read_input_tokens": read,
                  "cache_creation_input_tokens": created}}})];
    events.push(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}));
    events.push(json!({"type": "ping"}));
    for t in text {
        events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}));
    }
    events.push(json!({"type": "content_block_stop", "index": 0}));
    if error_event {
        events.push(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));
    }
    if tools {
        events.push(json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_01Mock", "name": "get_weather", "input": {}}}));
        for part in ["", "{\"city\": ", "\"Oslo\"}"] {
            events.push(json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": part}}));
        }
        events.push(json!({"type": "content_block_stop", "index": 1}));
    }
    if !cut {
        events.push(json!({"type": "message_delta",
            "delta": {"stop_reason": if tools { "tool_use" } else { "end_turn" }, "stop_sequence": null},
            "usage": {"output_tokens": output}}));
        events.push(json!({"type": "message_stop"}));
    }
    events.iter().map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap())).collect()
}

/// The `(event name, data)` pairs of an Anthropic SSE text, checking each event's name is its
/// data's `type`.
pub fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut lines = e.lines();
            let name =
                lines.next().and_then(|l| l.strip_prefix("event: ")).unwrap_or_else(|| panic!("no event line: {e}"));
            let data: String = lines.filter_map(|l| l.strip_prefix("data: ")).collect();
            let v: Value = serde_json::from_str(&data).unwrap_or_else(|_| panic!("bad data: {e}"));
            assert_eq!(v["type"], name, "{e}");
            (name.to_owned(), v)
        })
        .collect()
}
