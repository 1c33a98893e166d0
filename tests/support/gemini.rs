//! A mock Google AI Gemini API on 127.0.0.1, answering in Gemini's wire shape (from the public
//! API reference): `POST /v1beta/models/{model}:generateContent`,
//! `:streamGenerateContent?alt=sse` (each SSE event a whole `GenerateContentResponse`, the
//! last with `finishReason` and `usageMetadata`, no end marker), `:batchEmbedContents`,
//! `GET /v1beta/models`, and errors as `{"error": {"code", "message", "status", "details"}}`.
//! Everything received is recorded (path, query, `x-goog-api-key`, body).
//!
//! The model name picks the behaviour:
//! - `err429`: 429 `RESOURCE_EXHAUSTED` with a `RetryInfo` of 20s; `err400`: 400
//!   `INVALID_ARGUMENT`; `err403`: 403 `PERMISSION_DENIED` quoting the key it was sent.
//! - `cut`: a stream that sends one text event and ends without a `finishReason`.
//! - `echokey`: the answer's text (or first stream event) holds the key it was sent.
//! - `blocked`: no candidates, `promptFeedback.blockReason = "SAFETY"`.
//! - anything else: with `tools` declared and no `functionResponse` in the last turn, a
//!   `functionCall` of the first declared function with `{"city": "Paris"}` (whole answers
//!   add a `thoughtSignature`, [`SIGNATURE`]); else text:
//!   `result: <response JSON>` after a `functionResponse`, `echo: <last user text>` otherwise
//!   (streamed one word per event).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// Token counts every answer reports: prompt, candidates, cached.
pub const USAGE: (u64, u64, u64) = (12, 5, 4);

/// The `thoughtSignature` a whole answer's function call carries.
pub const SIGNATURE: &str = "c2lnbmF0dXJl";

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct GeminiSeen {
    /// e.g. `GET` or `POST`.
    pub method: String,
    /// e.g. `/v1beta/models/gemini-x:generateContent`.
    pub path: String,
    /// The query string, if any (`alt=sse`).
    pub query: Option<String>,
    /// The `x-goog-api-key` header.
    pub api_key: Option<String>,
    /// The `authorization` header (Gemini keys must not go there).
    pub authorization: Option<String>,
    /// JSON body (`Null` for GET).
    pub body: Value,
}

type Seen = Arc<Mutex<Vec<GeminiSeen>>>;

/// A running mock; stops when dropped.
pub struct MockGemini {
    addr: SocketAddr,
    seen: Seen,
    server: tokio::task::JoinHandle<()>,
}

impl MockGemini {
    /// Starts the mock on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Seen = Arc::default();
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

    /// The `base_url` of a `gemini` provider in front of this mock.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1beta", self.addr)
    }

    /// A `[[providers]]` table of kind `gemini` named `name`, key `key`, and `extra` lines.
    pub fn provider_toml(&self, name: &str, key: &str, extra: &str) -> String {
        format!(
            "[[providers]]\nname = \"{name}\"\nkind = \"gemini\"\nbase_url = \"{}\"\n\
             keys = [{{ value = \"{key}\" }}]\n{extra}\n",
            self.base_url()
        )
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<GeminiSeen> {
        self.seen.lock().unwrap().clone()
    }

    /// The POSTs received (model listings left out).
    pub fn posts(&self) -> Vec<GeminiSeen> {
        self.seen().into_iter().filter(|s| s.method == "POST").collect()
    }
}

impl Drop for MockGemini {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn json_response(status: u16, v: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json; charset=UTF-8")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

fn google_error(code: u16, status: &str, message: &str) -> Response<Full<Bytes>> {
    let mut e = json!({ "error": { "code": code, "message": message, "status": status } });
    if code == 429 {
        e["error"]["details"] = json!([
            { "@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [] },
            { "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "20s" }
        ]);
    }
    json_response(code, &e)
}

fn usage() -> Value {
    let (p, c, cached) = USAGE;
    json!({ "promptTokenCount": p, "candidatesTokenCount": c, "cachedContentTokenCount": cached,
        "totalTokenCount": p + c })
}

fn candidate(parts: Value, finish: Option<&str>) -> Value {
    let mut c = json!({ "content": { "role": "model", "parts": parts }, "index": 0 });
    if let Some(f) = finish {
        c["finishReason"] = f.into();
    }
    c
}

async fn handle(seen: Seen, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let api_key = header("x-goog-api-key");
    let authorization = header("authorization");
    let bytes = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    seen.lock().unwrap().push(GeminiSeen {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        api_key: api_key.clone(),
        authorization,
        body: body.clone(),
    });
    let key = api_key.unwrap_or_default();
    if key.is_empty() {
        return Ok(google_error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."));
    }
    if method == "GET" && path == "/v1beta/models" {
        let models = json!({ "models": [
            { "name": "models/gemini-2.0-flash", "supportedGenerationMethods": ["generateContent"] },
            { "name": "models/text-embedding-004", "supportedGenerationMethods": ["embedContent"] }
        ] });
        return Ok(json_response(200, &models));
    }
    let Some((model, action)) = path.strip_prefix("/v1beta/models/").and_then(|r| r.split_once(':')) else {
        return Ok(google_error(404, "NOT_FOUND", "no such method"));
    };
    match model {
        "err429" => return Ok(google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (quota).")),
        "err400" => return Ok(google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")),
        "err403" => {
            return Ok(google_error(403, "PERMISSION_DENIED", &format!("API key {key} lacks permission")));
        }
        _ => {}
    }
    Ok(match action {
        "generateContent" => json_response(200, &whole(model, &key, &body)),
        "streamGenerateContent" => sse(&stream(model, &key, &body)),
        "batchEmbedContents" => embed(&body),
        _ => google_error(404, "NOT_FOUND", "no such method"),
    })
}

/// What the model answers: a function call or a text.
enum Answer {
    Call(String),
    Text(String),
    Blocked,
}

fn answer(model: &str, key: &str, body: &Value) -> Answer {
    if model == "blocked" {
        return Answer::Blocked;
    }
    if model == "echokey" {
        return Answer::Text(format!("your key is {key}"));
    }
    let last = body["contents"].as_array().and_then(|c| c.last()).cloned().unwrap_or(Value::Null);
    let parts = last["parts"].as_array().cloned().unwrap_or_default();
    if let Some(r) = parts.iter().find_map(|p| p.get("functionResponse")) {
        return Answer::Text(format!("result: {}", r["response"]));
    }
    if let Some(name) = body["tools"][0]["functionDeclarations"][0]["name"].as_str() {
        return Answer::Call(name.to_owned());
    }
    let text: String = parts.iter().filter_map(|p| p["text"].as_str()).collect();
    Answer::Text(format!("echo: {text}"))
}

fn whole(model: &str, key: &str, body: &Value) -> Value {
    let parts = match answer(model, key, body) {
        Answer::Blocked => return json!({ "promptFeedback": { "blockReason": "SAFETY" }, "usageMetadata": usage() }),
        Answer::Call(name) => json!([{ "functionCall": { "name": name, "args": { "city": "Paris" } },
            "thoughtSignature": SIGNATURE }]),
        Answer::Text(t) => json!([{ "text": t }]),
    };
    json!({ "candidates": [candidate(parts, Some("STOP"))], "usageMetadata": usage(),
        "modelVersion": model, "responseId": "resp-1" })
}

fn stream(model: &str, key: &str, body: &Value) -> Vec<Value> {
    let event = |parts: Value, finish: Option<&str>| {
        let mut e = json!({ "candidates": [candidate(parts, finish)], "modelVersion": model, "responseId": "resp-s" });
        e["usageMetadata"] = if finish.is_some() { usage() } else { json!({ "promptTokenCount": USAGE.0 }) };
        e
    };
    match answer(model, key, body) {
        Answer::Blocked => vec![json!({ "promptFeedback": { "blockReason": "SAFETY" } })],
        Answer::Call(name) => {
            vec![event(json!([{ "functionCall": { "name": name, "args": { "city": "Paris" } } }]), Some("STOP"))]
        }
        Answer::Text(t) => {
            let words: Vec<String> = t.split_inclusive(' ').map(str::to_owned).collect();
            let n = words.len();
            let mut out: Vec<Value> = words
                .into_iter()
                .enumerate()
                .map(|(i, w)| event(json!([{ "text": w }]), (i + 1 == n).then_some("STOP")))
                .collect();
            if model == "cut" {
                out.truncate(1);
                out[0]["candidates"][0].as_object_mut().unwrap().remove("finishReason");
            }
            out
        }
    }
}

fn sse(events: &[Value]) -> Response<Full<Bytes>> {
    let mut body = String::new();
    for e in events {
        body.push_str("data: ");
        body.push_str(&e.to_string());
        body.push_str("\r\n\r\n");
    }
    Response::builder().header("content-type", "text/event-stream").body(Full::new(Bytes::from(body))).unwrap()
}

fn embed(body: &Value) -> Response<Full<Bytes>> {
    let requests = body["requests"].as_array().cloned().unwrap_or_default();
    let embeddings: Vec<Value> = requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let dims = r["outputDimensionality"].as_u64().unwrap_or(3) as usize;
            let values: Vec<f64> = (0..dims).map(|d| i as f64 + d as f64 / 4.0).collect();
            json!({ "values": values })
        })
        .collect();
    json_response(200, &json!({ "embeddings": embeddings }))
}
