//! A mock Amazon Bedrock Runtime on 127.0.0.1 (Converse and ConverseStream), answering in the
//! real wire shapes: Converse JSON, ConverseStream as `application/vnd.amazon.eventstream`
//! frames, AWS errors (`x-amzn-errortype` + `{"message"}`) and stream exception frames. It
//! verifies every request's SigV4 signature by recomputing it (HMAC-SHA256 here, independent of
//! the signer Weir uses) and refuses a bad one with 403 `InvalidSignatureException` like AWS.
//! Everything received is recorded.
//!
//! Behaviour is chosen by directives after `;` in the model id (`br/m;error=ThrottlingException`
//! arrives as path segment `m%3Berror%3DThrottlingException`):
//! - `error=TYPE`: answer the AWS error TYPE with its status.
//! - `exception=TYPE`: a stream sends its start and first text, then an exception frame.
//! - `cut`: a stream ends after its text, without `messageStop`.
//! - `leak`: the answer's text quotes the secret key and session token (an upstream that leaks).
//!
//! Answers: with tools and no tool result in the last turn, a call of the first tool with
//! `{"city":"Paris"}`; else `echo: <last user text>` (plus `[image png N bytes]` per image).
//! Every answer reports [`USAGE`]. Each stream frame is written in two pieces with a pause
//! between them, so Weir reads frames split across reads.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2_sigv4::{Digest, Sha256};

/// The credentials the mock accepts.
pub const REGION: &str = "us-east-1";
/// See [`REGION`].
pub const ACCESS_KEY: &str = "AKIAMOCKBEDROCK0001";
/// See [`REGION`].
pub const SECRET_KEY: &str = "mock/Secret+Key-for-bedrock-0123456789";
/// See [`REGION`].
pub const SESSION_TOKEN: &str = "MockSessionToken//abcdefghijklmnop==";
/// Tokens every answer reports: input, output, cache read.
pub const USAGE: (u64, u64, u64) = (10, 5, 4);

type Body = BoxBody<Bytes, Infallible>;

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The path as received (model id percent-encoded).
    pub path: String,
    /// The request headers.
    pub headers: HeaderMap,
    /// The JSON body.
    pub body: Value,
    /// Whether the SigV4 signature verified.
    pub signature_ok: bool,
}

struct State {
    seen: Mutex<Vec<Seen>>,
    /// The session token requests must carry (and sign), if any.
    token: Option<String>,
}

/// A running mock; stops when dropped.
pub struct MockBedrock {
    addr: SocketAddr,
    state: Arc<State>,
    server: tokio::task::JoinHandle<()>,
}

impl MockBedrock {
    /// Starts a mock that accepts [`ACCESS_KEY`] / [`SECRET_KEY`], and `token` as session
    /// token when given (requests without it are refused then).
    pub async fn start(token: Option<&str>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State { seen: Mutex::new(Vec::new()), token: token.map(str::to_owned) });
        let st = state.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = st.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state, server }
    }

    /// A `[[providers]]` table of kind `bedrock` named `name` in front of this mock, with
    /// `extra` lines (credentials are left to them or to the environment).
    pub fn provider_toml(&self, name: &str, extra: &str) -> String {
        format!(
            "[[providers]]\nname = \"{name}\"\nkind = \"bedrock\"\nbase_url = \"http://{}\"\n\
             models = [\"anthropic.claude-3-haiku-20240307-v1:0\"]\n{extra}\n",
            self.addr
        )
    }

    /// The provider table with the mock's credentials written in it.
    pub fn provider_with_keys(&self, name: &str) -> String {
        let token = self.state.token.as_deref().map(|t| format!("session_token = \"{t}\"\n")).unwrap_or_default();
        self.provider_toml(
            name,
            &format!(
                "region = \"{REGION}\"\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n{token}"
            ),
        )
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

impl Drop for MockBedrock {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let signature_ok = verify(&parts.method, &path, &parts.headers, &bytes, state.token.as_deref());
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    state.seen.lock().unwrap().push(Seen {
        path: path.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
        signature_ok,
    });
    if !signature_ok {
        return Ok(error(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided.",
        ));
    }
    let segments: Vec<&str> = path.split('/').collect();
    let (model, op) = match segments.as_slice() {
        ["", "model", model, op] => (percent_decode(model), *op),
        _ => return Ok(error("UnknownOperationException", "unknown path")),
    };
    let directives: Vec<&str> = model.split(';').skip(1).collect();
    let directive = |key: &str| directives.iter().find_map(|d| d.strip_prefix(key)?.strip_prefix('='));
    if let Some(kind) = directive("error") {
        return Ok(error(kind, &format!("{kind} from the mock")));
    }
    let leak = directives.contains(&"leak");
    let answer = answer(&body, leak);
    match op {
        "converse" => Ok(json_response(200, &converse(&answer))),
        "converse-stream" => {
            let mut frames = stream_frames(&answer);
            if let Some(kind) = directive("exception") {
                frames.truncate(2);
                frames.push(frame(
                    "exception",
                    &[(":exception-type", kind)],
                    &json!({ "message": format!("{kind} mid-stream") }),
                ));
            } else if directives.contains(&"cut") {
                frames.truncate(2);
            }
            Ok(event_stream(frames))
        }
        _ => Ok(error("UnknownOperationException", "unknown operation")),
    }
}

/// What the model answers.
enum Answer {
    Text(String),
    Tool { id: String, name: String },
}

fn answer(body: &Value, leak: bool) -> Answer {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last = messages.last().cloned().unwrap_or(Value::Null);
    let blocks = last["content"].as_array().cloned().unwrap_or_default();
    let has_result = blocks.iter().any(|b| b.get("toolResult").is_some());
    if let Some(tool) = body["toolConfig"]["tools"][0]["toolSpec"]["name"].as_str()
        && !has_result
    {
        return Answer::Tool { id: "tooluse_mock01".into(), name: tool.into() };
    }
    let mut text = String::from("echo:");
    for b in &blocks {
        if let Some(t) = b["text"].as_str() {
            text.push(' ');
            text.push_str(t);
        } else if let Some(img) = b.get("image") {
            let n = img["source"]["bytes"].as_str().map_or(0, str::len);
            text.push_str(&format!(" [image {} {n} bytes]", img["format"].as_str().unwrap_or("?")));
        } else if let Some(r) = b.get("toolResult") {
            text.push_str(&format!(" result {}: {}", r["toolUseId"].as_str().unwrap_or("?"), r["content"][0]["text"]));
        }
    }
    if leak {
        text.push_str(&format!(" secret {SECRET_KEY} token {SESSION_TOKEN}"));
    }
    Answer::Text(text)
}

fn usage() -> Value {
    let (input, output, cached) = USAGE;
    json!({ "inputTokens": input, "outputTokens": output, "totalTokens": input + output + cached,
        "cacheReadInputTokens": cached, "cacheWriteInputTokens": 0 })
}

fn converse(answer: &Answer) -> Value {
    let (content, stop) = match answer {
        Answer::Text(t) => (json!([{ "text": t }]), "end_turn"),
        Answer::Tool { id, name } => (
            json!([{ "text": "Checking." }, { "toolUse": { "toolUseId": id, "name": name, "input": { "city": "Paris" } } }]),
            "tool_use",
        ),
    };
    json!({ "output": { "message": { "role": "assistant", "content": content } }, "stopReason": stop,
        "usage": usage(), "metrics": { "latencyMs": 12 } })
}

fn stream_frames(answer: &Answer) -> Vec<Vec<u8>> {
    let event = |kind: &str, payload: Value| frame("event", &[(":event-type", kind)], &payload);
    let mut frames = vec![event("messageStart", json!({ "role": "assistant", "p": "abcdefgh" }))];
    let stop = match answer {
        Answer::Text(t) => {
            for word in t.split_inclusive(' ') {
                frames.push(event("contentBlockDelta", json!({ "contentBlockIndex": 0, "delta": { "text": word } })));
            }
            frames.push(event("contentBlockStop", json!({ "contentBlockIndex": 0 })));
            "end_turn"
        }
        Answer::Tool { id, name } => {
            frames
                .push(event("contentBlockDelta", json!({ "contentBlockIndex": 0, "delta": { "text": "Checking." } })));
            frames.push(event("contentBlockStop", json!({ "contentBlockIndex": 0 })));
            frames.push(event(
                "contentBlockStart",
                json!({ "contentBlockIndex": 1,
                "start": { "toolUse": { "toolUseId": id, "name": name } } }),
            ));
            for piece in ["{\"city\":", "\"Paris\"}"] {
                frames.push(event(
                    "contentBlockDelta",
                    json!({ "contentBlockIndex": 1, "delta": { "toolUse": { "input": piece } } }),
                ));
            }
            frames.push(event("contentBlockStop", json!({ "contentBlockIndex": 1 })));
            "tool_use"
        }
    };
    frames.push(event("messageStop", json!({ "stopReason": stop })));
    frames.push(event("metadata", json!({ "usage": usage(), "metrics": { "latencyMs": 12 } })));
    frames
}

/// One event-stream frame.
fn frame(message_type: &str, headers: &[(&str, &str)], payload: &Value) -> Vec<u8> {
    let mut m = Message::new(Bytes::from(payload.to_string()))
        .add_header(Header::new(":message-type", HeaderValue::String(message_type.to_owned().into())))
        .add_header(Header::new(":content-type", HeaderValue::String("application/json".into())));
    for (name, value) in headers {
        m = m.add_header(Header::new((*name).to_owned(), HeaderValue::String((*value).to_owned().into())));
    }
    let mut out = Vec::new();
    write_message_to(&m, &mut out).unwrap();
    out
}

/// A 200 event-stream answer writing each frame in two pieces, 2 ms apart.
fn event_stream(frames: Vec<Vec<u8>>) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        for f in frames {
            let cut = f.len() / 2;
            let f = Bytes::from(f);
            for piece in [f.slice(..cut), f.slice(cut..)] {
                if tx.send(piece).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let mut rx = rx;
    let body = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|b| b.map(|b| Ok::<_, Infallible>(Frame::data(b))))
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/vnd.amazon.eventstream")
        .header("x-amzn-requestid", "mock-request-1")
        .body(BodyExt::boxed(StreamBody::new(body)))
        .unwrap()
}

fn json_response(status: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-amzn-requestid", "mock-request-1")
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .unwrap()
}

/// An AWS error answer with the type's status.
fn error(kind: &str, message: &str) -> Response<Body> {
    let status = match kind {
        "ThrottlingException" => 429,
        "ValidationException" | "UnknownOperationException" => 400,
        "AccessDeniedException" | "InvalidSignatureException" => 403,
        "ModelNotReadyException" | "ServiceUnavailableException" => 503,
        "ResourceNotFoundException" => 404,
        _ => 500,
    };
    let mut resp = json_response(status, &json!({ "message": message }));
    resp.headers_mut().insert(
        "x-amzn-errortype",
        format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/").parse().unwrap(),
    );
    resp
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// --- SigV4 verification, from AWS's published algorithm ---

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// URI-encodes each path segment again (SigV4 for services other than S3 encodes the path as
/// sent once more).
fn canonical_uri(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether `authorization` is a valid SigV4 signature of the request by [`ACCESS_KEY`] /
/// [`SECRET_KEY`] for service `bedrock` in [`REGION`] (and the session token, when required,
/// is sent and signed).
fn verify(method: &http::Method, path: &str, headers: &HeaderMap, body: &[u8], token: Option<&str>) -> bool {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let (Some(auth), Some(date)) = (header("authorization"), header("x-amz-date")) else { return false };
    let Some(rest) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else { return false };
    let mut credential = "";
    let mut signed = "";
    let mut signature = "";
    for part in rest.split(", ") {
        match part.split_once('=') {
            Some(("Credential", v)) => credential = v,
            Some(("SignedHeaders", v)) => signed = v,
            Some(("Signature", v)) => signature = v,
            _ => return false,
        }
    }
    let day = &date[..date.len().min(8)];
    let scope = format!("{day}/{REGION}/bedrock/aws4_request");
    if credential != format!("{ACCESS_KEY}/{scope}") {
        return false;
    }
    let names: Vec<&str> = signed.split(';').collect();
    if !names.contains(&"host") || !names.contains(&"x-amz-date") {
        return false;
    }
    if let Some(t) = token
        && (header("x-amz-security-token") != Some(t) || !names.contains(&"x-amz-security-token"))
    {
        return false;
    }
    let mut canonical_headers = String::new();
    for n in &names {
        let Some(v) = header(n) else { return false };
        canonical_headers.push_str(&format!("{n}:{}\n", v.split_whitespace().collect::<Vec<_>>().join(" ")));
    }
    let creq = format!("{method}\n{}\n\n{canonical_headers}\n{signed}\n{}", canonical_uri(path), sha256_hex(body));
    let sts = format!("AWS4-HMAC-SHA256\n{date}\n{scope}\n{}", sha256_hex(creq.as_bytes()));
    let mut key = hmac(format!("AWS4{SECRET_KEY}").as_bytes(), day.as_bytes());
    for part in [REGION, "bedrock", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    hex(&hmac(&key, sts.as_bytes())) == signature
}
