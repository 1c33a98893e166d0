//! A mock OpenAI-compatible upstream on 127.0.0.1: a real hyper server that Weir calls as an
//! `openai` provider. Each request picks its behaviour with directives appended to the model
//! name, which Weir forwards unchanged (`up/m;latency=300;status=503` routes to provider `up`
//! and arrives here as model `m;latency=300;status=503`). Everything received is recorded.
//!
//! Directives (`;key=value`, any order):
//! - `latency=MS`: wait before the response head.
//! - `hold`: wait before the response head until [`MockUpstream::release`].
//! - `status=CODE`: answer with that status and an OpenAI error body (`401` quotes the key
//!   it was sent, like real providers do); `retry_after=S` adds `Retry-After`;
//!   `echo_auth` puts the `Authorization` header it saw into any error message, the answer's
//!   content (200) or a stream chunk (that chunk is written in two pieces, split inside the
//!   key); `echo_param` puts the key it was sent into the error's `param`; `echo_header=NAME`
//!   puts the value of request header `NAME` into the error message; `key_at=N` answers a
//!   plain-text (not JSON) error body with the key starting at byte `N`.
//! - `fail_times=N`: `status=` (default 500) or `reset` only for the first N requests with
//!   this model and prompt, then the normal answer; `reset`: close the connection before any
//!   response head; `code=CODE`: the error body's `code` (default `mock_<status>`);
//!   `for_key=KEY`: `status=` only for requests sent with key `KEY`.
//! - `malformed`: answer 200 with a body that is not JSON.
//! - `size=BYTES`: answer 200 with a valid JSON body of that many bytes, with Content-Length;
//!   with `no_length` too, the same body goes chunked (no Content-Length) in 16 KiB frames.
//! - `redirect`: answer `307 Temporary Redirect` to `/v1/redirected` (same method and body).
//! - `chunks=N`, `chunk_delay=MS`: stream shape (default: one chunk per word of the prompt).
//! - `hold_after=N`: after N stream chunks, wait until [`MockUpstream::release`].
//! - `stall=MS`: a stream's head goes at once, its first chunk after MS (a slow first token);
//!   with `fail_times=N`, only the first N requests stall.
//! - `cut=nodone` (stream ends cleanly without `[DONE]`) or `cut=drop` (connection dropped
//!   mid-stream), after the chunks.
//! - `cut_at=N`: the connection drops after N stream chunks (a cut mid-answer).
//! - `prefill`: answers only a request ending in an assistant message (else 400), streaming
//!   `r0 r1 ` (or `chunks=N` pieces) as `chatcmpl-fallback`; `no_prefill`: 400 to one that does.
//! - `pad=BYTES`: each stream chunk's content is that many bytes long (large streams, to fill
//!   socket buffers behind a client that does not read).
//! - Usage: every answer reports [`USAGE`] (cached tokens included); a stream does so in a last
//!   chunk with no choices when the request asks with `stream_options.include_usage`, as
//!   OpenAI does.
//! - `relay`: the answer (or error) carries rate-limit and request-id headers, and a
//!   `set-cookie` and `x-internal` that must not reach the client; `code=CODE` gives a `status`
//!   error that code (`code=content_filter`: in Azure's content-filter shape).
//! - Azure OpenAI paths (`/openai/deployments/{d}/chat/completions?api-version=...`) answer as
//!   the `/v1` ones do: Azure speaks OpenAI's format.
//! - `sse=NAME`: the stream is the raw SSE fixture NAME, then `[DONE]`: `multiline` (one chunk
//!   whose JSON spans two `data:` lines, with LF, CRLF and CR line ends) or `lone_cr` (two
//!   events separated by CR CR, the second carrying a `data:` line after a lone CR).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

mod directives;
use super::upstream_bodies::{completion, embeddings, sized_response, text_error, usage};
use directives::Directives;

/// Token usage every answer reports: prompt, completion and cached prompt tokens.
pub const USAGE: (u64, u64, u64) = (12, 5, 4);

/// What `relay` adds to an answer: what providers send, then two headers that must stay here.
pub const RELAY_HEADERS: &[(&str, &str)] = &[
    ("x-ratelimit-limit-requests", "60"),
    ("x-ratelimit-remaining-requests", "59"),
    ("x-ratelimit-reset-tokens", "6m0s"),
    ("openai-processing-ms", "42"),
    ("x-request-id", "req_upstream_1"),
    ("set-cookie", "session=abc"),
    ("x-internal", "do-not-relay"),
];

/// Longest a `hold` waits for [`MockUpstream::release`]: nothing hangs forever.
const MAX_HOLD: Duration = Duration::from_secs(30);

pub(super) type Body = BoxBody<Bytes, std::io::Error>;

/// How a recorded request ended, as seen from the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still being answered.
    InProgress,
    /// The whole response was handed to the connection.
    Completed,
    /// Weir closed the connection before the response finished.
    Cancelled,
}

/// One request the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Request method.
    pub method: http::Method,
    /// Request path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// JSON body (`Null` for GET).
    pub body: Value,
    /// The body exactly as received.
    pub raw: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// Every request header.
    pub headers: http::HeaderMap,
    /// The query string, if any.
    pub query: Option<String>,
    /// Stream chunks written so far.
    pub chunks_sent: usize,
    /// How it ended.
    pub outcome: Outcome,
}

impl Seen {
    /// The model name as received (directives included).
    pub fn model(&self) -> &str {
        self.body["model"].as_str().unwrap_or_default()
    }

    /// The last user message text.
    pub fn prompt(&self) -> String {
        last_user_text(&self.body)
    }
}

struct State {
    seen: Mutex<Vec<Seen>>,
    gate: watch::Sender<bool>,
    models: Vec<String>,
    fail_all: Option<u16>,
    /// Tasks serving open connections, so a test can close them all.
    conns: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Connections accepted so far.
    accepted: std::sync::atomic::AtomicUsize,
    /// Requests seen per model and prompt, for `fail_times`.
    tries: Mutex<std::collections::HashMap<String, u32>>,
}

impl State {
    fn update(&self, i: usize, f: impl FnOnce(&mut Seen)) {
        f(&mut self.seen.lock().unwrap()[i]);
    }
}

/// A running mock upstream; stops when dropped.
pub struct MockUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    server: tokio::task::JoinHandle<()>,
}

impl MockUpstream {
    /// Starts an upstream that lists `up-model-a` and `up-model-b` on `/v1/models`.
    pub async fn start() -> Self {
        Self::spawn(vec!["up-model-a".into(), "up-model-b".into()], None).await
    }

    /// Starts an upstream that answers every request (models included) with `status`.
    pub async fn failing(status: u16) -> Self {
        Self::spawn(Vec::new(), Some(status)).await
    }

    async fn spawn(models: Vec<String>, fail_all: Option<u16>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (gate, _) = watch::channel(false);
        let state = Arc::new(State {
            seen: Mutex::new(Vec::new()),
            gate,
            models,
            fail_all,
            conns: Mutex::new(Vec::new()),
            accepted: Default::default(),
            tries: Mutex::default(),
        });
        let st = state.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                st.accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let state = st.clone();
                let conn = tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                let mut conns = st.conns.lock().unwrap();
                conns.retain(|c| !c.is_finished());
                conns.push(conn.abort_handle());
            }
        });
        Self { addr, state, server }
    }

    /// Closes every open connection at once (as a provider's idle timeout or a restart would)
    /// and returns when their sockets are closed.
    pub async fn close_connections(&self) {
        let conns: Vec<_> = self.state.conns.lock().unwrap().drain(..).collect();
        conns.iter().for_each(tokio::task::AbortHandle::abort);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !conns.iter().all(tokio::task::AbortHandle::is_finished) {
            assert!(tokio::time::Instant::now() < deadline, "connections did not close");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Connections accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.state.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Connections open now (their serving task ends when Weir closes its end).
    pub fn connections_open(&self) -> usize {
        self.state.conns.lock().unwrap().iter().filter(|c| !c.is_finished()).count()
    }

    /// Base URL to configure as the provider's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// A `[[providers]]` table of kind `openai` named `name` in front of this upstream, with
    /// key `sk-test-key`, `extra` lines (e.g. `models = [...]`) and `pool` lines for its pool.
    pub fn provider_toml(&self, name: &str, extra: &str, pool: &str) -> String {
        format!(
            "[[providers]]\nname = \"{name}\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
             keys = [{{ value = \"sk-test-key\", weight = 1 }}]\n{extra}\n[providers.pool]\n{pool}\n",
            self.base_url()
        )
    }

    /// Every request received so far (model listings included).
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Requests received on one path.
    pub fn seen_on(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }

    /// Chat completion requests received.
    pub fn chats(&self) -> Vec<Seen> {
        self.seen_on("/v1/chat/completions")
    }

    /// Lets every held request (`hold`, `hold_after`) go on, now and later.
    pub fn release(&self) {
        self.state.gate.send_replace(true);
    }

    /// Waits (at most 15 s, polling) until `cond` holds for the recorded requests.
    ///
    /// # Panics
    /// When it does not, naming `what`.
    pub async fn wait_until(&self, what: &str, cond: impl Fn(&[Seen]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if cond(&self.seen()) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "upstream never saw: {what}; saw {:#?}", self.seen());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Marks a request cancelled if hyper drops its handler (Weir closed the connection) before
/// the response was produced.
struct CancelGuard {
    state: Arc<State>,
    index: usize,
    armed: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if self.armed {
            self.state.update(self.index, |s| s.outcome = Outcome::Cancelled);
        }
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, std::io::Error> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let query = req.uri().query().map(str::to_owned);
    let authorization = req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(Into::into);
    let headers = req.headers().clone();
    let bytes = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body: Value =
        if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
    let index = {
        let mut seen = state.seen.lock().unwrap();
        let entry = Seen {
            method: method.clone(),
            path: path.clone(),
            body: body.clone(),
            raw: String::from_utf8_lossy(&bytes).into_owned(),
            authorization: authorization.clone(),
            headers: headers.clone(),
            query,
            chunks_sent: 0,
            outcome: Outcome::InProgress,
        };
        seen.push(entry);
        seen.len() - 1
    };
    let mut guard = CancelGuard { state: state.clone(), index, armed: true };
    // Azure addresses a deployment; the rest of its path is OpenAI's.
    let route = match path.strip_prefix("/openai/deployments/").and_then(|rest| rest.split_once('/')) {
        Some((_, op)) => format!("/v1/{op}"),
        None => path.clone(),
    };
    let mut resp = match super::upstream_bodies::relayed(&method, &route, &body, &headers, &bytes) {
        Some(resp) => {
            state.update(index, |s| s.outcome = Outcome::Completed);
            Some(resp)
        }
        None => respond(&state, index, &route, &body, &headers).await,
    };
    if let Some(resp) =
        resp.as_mut().filter(|_| Directives::parse(body["model"].as_str().unwrap_or_default()).is_ok_and(|d| d.relay))
    {
        for (name, value) in RELAY_HEADERS {
            resp.headers_mut().append(*name, http::HeaderValue::from_static(value));
        }
    }
    guard.armed = false;
    // An error from the service makes hyper close the connection without a response.
    resp.ok_or_else(|| std::io::Error::other("mock upstream resets the connection"))
}

async fn respond(
    state: &Arc<State>,
    index: usize,
    path: &str,
    body: &Value,
    headers: &http::HeaderMap,
) -> Option<Response<Body>> {
    let auth = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let complete = |resp| {
        state.update(index, |s| s.outcome = Outcome::Completed);
        Some(resp)
    };
    if let Some(status) = state.fail_all {
        return complete(error_response(status, None, "upstream is down", None));
    }
    if path == "/v1/models" {
        let data: Vec<Value> =
            state.models.iter().map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "up"})).collect();
        return complete(json_response(StatusCode::OK, &json!({"object": "list", "data": data})));
    }
    let model = body["model"].as_str().unwrap_or_default();
    let mut d = match Directives::parse(model) {
        Ok(d) => d,
        Err(msg) => return complete(error_response(400, None, &msg, None)),
    };
    if let Some(n) = d.fail_times {
        let key = format!("{model}\n{}", last_user_text(body));
        let tries = *state.tries.lock().unwrap().entry(key).and_modify(|t| *t += 1).or_insert(1);
        if tries > n {
            (d.status, d.reset, d.stall) = (None, false, Duration::ZERO);
        } else if !d.reset && d.stall.is_zero() {
            d.status = d.status.or(Some(500));
        }
    }
    if d.for_key.as_deref().is_some_and(|k| auth.map(|a| a.trim_start_matches("Bearer ")) != Some(k)) {
        d.status = None;
    }
    if d.reset {
        state.update(index, |s| s.outcome = Outcome::Completed);
        return None;
    }
    if !d.latency.is_zero() {
        tokio::time::sleep(d.latency).await;
    }
    if d.hold {
        wait_gate(state).await;
    }
    if let Some(status) = d.status {
        let mut msg = match status {
            401 => format!("Incorrect API key provided: {}", auth.unwrap_or("none").trim_start_matches("Bearer ")),
            _ => format!("mock upstream failure {status}"),
        };
        if d.echo_auth {
            msg.push_str(&format!(" (request had Authorization: {})", auth.unwrap_or("none")));
        }
        if let Some(name) = &d.echo_header {
            let value = headers.get(name.as_str()).and_then(|v| v.to_str().ok()).unwrap_or("none");
            msg.push_str(&format!(" (request had {name}: {value})"));
        }
        let key = auth.unwrap_or("none").trim_start_matches("Bearer ");
        if let Some(at) = d.key_at {
            return complete(text_error(status, &format!("{}{key} and more text after the key", "x".repeat(at))));
        }
        if let Some(code) = d.code.as_ref().filter(|c| *c == "content_filter") {
            let inner = json!({"code": "ResponsibleAIPolicyViolation", "content_filter_result": {"hate": {"filtered": true, "severity": "high"}}});
            let body = json!({"error": {"message": msg, "type": null, "param": "prompt", "code": code, "status": status, "innererror": inner}});
            return complete(json_response(StatusCode::from_u16(status).unwrap(), &body));
        }
        let param = if d.echo_param { Some(key) } else { (status == 400).then_some("messages") };
        let mut resp = error_response(status, param, &msg, d.retry_after);
        if let Some(code) = &d.code {
            let body =
                json!({"error": {"message": msg, "type": "invalid_request_error", "param": param, "code": code}});
            *resp.body_mut() = full(serde_json::to_vec(&body).unwrap());
        }
        return complete(resp);
    }
    if let Some(why) = d.prefill_refusal(body) {
        return complete(error_response(400, Some("messages"), why, None));
    }
    if d.redirect {
        return complete(
            Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header("location", "/v1/redirected")
                .body(full(Bytes::from_static(b"moved")))
                .unwrap(),
        );
    }
    if d.malformed {
        return complete(
            Response::builder()
                .header("content-type", "application/json")
                .body(full(Bytes::from_static(b"{\"id\": \"oops\", this is not json")))
                .unwrap(),
        );
    }
    if let Some(size) = d.size {
        return complete(sized_response(size, d.no_length));
    }
    match path {
        "/v1/chat/completions" if body["stream"] == true => {
            let echo = d.echo_auth.then(|| auth.unwrap_or("none").to_owned());
            Some(stream_response(state.clone(), index, body, d, echo))
        }
        "/v1/chat/completions" => {
            let mut answer = completion(body);
            if d.echo_auth {
                answer["choices"][0]["message"]["content"] = json!(format!("you sent {}", auth.unwrap_or("none")));
            }
            complete(json_response(StatusCode::OK, &answer))
        }
        "/v1/embeddings" => complete(json_response(StatusCode::OK, &embeddings(body))),
        _ => complete(error_response(404, None, &format!("no route {path}"), None)),
    }
}

async fn wait_gate(state: &State) {
    let mut open = state.gate.subscribe();
    let _ = tokio::time::timeout(MAX_HOLD, open.wait_for(|o| *o)).await;
}

/// Streams chunks from a producer task; the body is a channel, so when Weir closes the
/// connection hyper drops the receiver and the producer's next send fails: recorded as
/// `Cancelled` with how many chunks went out. With `echo`, a first chunk quotes it, written
/// in two pieces split in its middle (two reads upstream of Weir).
fn stream_response(
    state: Arc<State>,
    index: usize,
    body: &Value,
    d: Directives,
    echo: Option<String>,
) -> Response<Body> {
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let pieces: Vec<String> = match d.chunks {
        Some(n) if d.prefill => (0..n).map(|i| format!("r{i} ")).collect(),
        None if d.prefill => vec!["r0 ".into(), "r1 ".into()],
        Some(n) => (0..n).map(|i| format!("c{i} ")).collect(),
        None => last_user_text(body).split_inclusive(' ').map(str::to_owned).collect(),
    };
    let include_usage = body["stream_options"]["include_usage"] == true;
    let count = d.sse.map_or(pieces.len() + 1 + usize::from(include_usage), <[_]>::len);
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
    tokio::spawn(async move {
        if let Some(echo) = echo {
            let frame = sse(&chunk(&model, json!({"content": format!("you sent {echo}")}), None));
            let at = frame.windows(echo.len()).position(|w| w == echo.as_bytes()).unwrap() + echo.len() / 2;
            for piece in [frame.slice(..at), frame.slice(at..)] {
                if tx.send(Ok(Frame::data(piece))).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // Frames are made as they are sent: a padded stream may be many megabytes.
        let frame = |i: usize| match (d.sse, pieces.get(i)) {
            (Some(raw), _) => Bytes::from_static(raw[i]),
            (None, Some(p)) => {
                let content = d.pad.map_or_else(|| p.clone(), |n| format!("{p:x<n$}"));
                let mut c = chunk(&model, json!({"content": content}), None);
                if d.prefill {
                    c["id"] = json!("chatcmpl-fallback");
                }
                sse(&c)
            }
            (None, None) if i == pieces.len() => sse(&chunk(&model, json!({}), Some("stop"))),
            (None, None) => sse(&json!({
                "id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 0, "model": model,
                "choices": [], "usage": usage(),
            })),
        };
        for i in 0..count {
            if d.hold_after == Some(i) {
                wait_gate(&state).await;
            }
            if i == 0 && !d.stall.is_zero() {
                tokio::time::sleep(d.stall).await;
            }
            if d.cut_at == Some(i) {
                let _ = tx.send(Err(std::io::Error::other("mock upstream cuts the stream"))).await;
                state.update(index, |s| s.outcome = Outcome::Completed);
                return;
            }
            if i > 0 && !d.chunk_delay.is_zero() {
                tokio::time::sleep(d.chunk_delay).await;
            }
            if tx.send(Ok(Frame::data(frame(i)))).await.is_err() {
                state.update(index, |s| s.outcome = Outcome::Cancelled);
                return;
            }
            state.update(index, |s| s.chunks_sent += 1);
        }
        let end = match d.cut.as_deref() {
            Some("drop") => Err(std::io::Error::other("mock upstream drops the connection")),
            Some(_) => Ok(None),
            None => Ok(Some(Bytes::from_static(b"data: [DONE]\n\n"))),
        };
        let sent = match end {
            Ok(Some(done)) => tx.send(Ok(Frame::data(done))).await.is_ok(),
            Ok(None) => true,
            Err(e) => tx.send(Err(e)).await.is_ok(),
        };
        state.update(index, |s| s.outcome = if sent { Outcome::Completed } else { Outcome::Cancelled });
    });
    let body = StreamBody::new(receiver_stream(rx));
    Response::builder().header("content-type", "text/event-stream").body(BodyExt::boxed(body)).unwrap()
}

fn receiver_stream<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

pub(super) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never: Infallible| match never {}).boxed()
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

fn error_response(status: u16, param: Option<&str>, message: &str, retry_after: Option<u64>) -> Response<Body> {
    let kind = match status {
        401 => "authentication_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    };
    let body = json!({"error": {"message": message, "type": kind, "param": param, "code": format!("mock_{status}")}});
    let mut resp = json_response(StatusCode::from_u16(status).unwrap(), &body);
    if let Some(secs) = retry_after {
        resp.headers_mut().insert(http::header::RETRY_AFTER, secs.into());
    }
    resp
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 0, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    })
}

pub(super) fn last_user_text(body: &Value) -> String {
    let messages = body["messages"].as_array().map(Vec::as_slice).unwrap_or_default();
    messages.iter().rev().find(|m| m["role"] == "user").and_then(|m| m["content"].as_str()).unwrap_or("").to_owned()
}
