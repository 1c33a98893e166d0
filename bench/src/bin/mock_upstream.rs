//! A fast mock upstream in OpenAI's and Anthropic's wire formats for `scripts/bench.sh`: hyper
//! directly, HTTP/1.1 keep-alive, a multi-threaded runtime, and fixed pre-built answers so that
//! it costs the gateways under test as little CPU as possible.
//!
//! `POST /v1/chat/completions` (any body) answers a fixed ~1 KB `chat.completion`; a body
//! containing `"stream":true` gets a fixed SSE stream of `--chunks` chunks and `[DONE]`.
//! `POST /v1/messages` is the same in Anthropic's Messages shape: a ~1 KB `message`, or a stream
//! of `event:` + `data:` events (`message_start`, `content_block_start`, `ping` and the first
//! `content_block_delta` in one write, then the other deltas, then `content_block_stop`,
//! `message_delta` and `message_stop` in one write), as many writes as the OpenAI stream.
//! `GET /v1/models` lists `bench-1`. `POST /v1/traces` accepts an OTLP/HTTP trace export (the
//! body is read, not decoded) with an empty `ExportTraceServiceResponse`, so one more instance
//! serves as the collector of the traced scenario. Anything else is 404.
//!
//! Usage: `weir-mock-upstream [--listen 127.0.0.1:0] [--threads 2] [--chunks 8]
//! [--chunk-delay-us 0] [--fail-percent 0]` (a delay spaces the chunks, so time to first byte and
//! total differ; `--fail-percent N` answers N% of model calls, spread evenly, with a 503). It prints
//! `listening on ADDR` once bound, then serves until killed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// One format's pre-built answer: whole, and as the writes of a stream.
struct Answer {
    full: Bytes,
    chunks: Arc<[Bytes]>,
}

/// The pre-built answers, shared by every connection.
struct Answers {
    openai: Answer,
    anthropic: Answer,
    /// Pause before each chunk after the first (zero: the whole stream at once).
    chunk_delay: std::time::Duration,
    /// Share of model calls answered 503, in percent.
    fail_percent: u64,
    /// Model calls so far (which of them fail is a hash of this count).
    calls: std::sync::atomic::AtomicU64,
    models: Bytes,
}

impl Answers {
    fn new(chunks: usize, chunk_delay: std::time::Duration, fail_percent: u64) -> Self {
        // ~1 KB of reply text, so the answer is about the size of the request.
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(20);
        let full = format!(
            concat!(
                r#"{{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-1","#,
                r#""choices":[{{"index":0,"message":{{"role":"assistant","content":"{}"}},"finish_reason":"stop"}}],"#,
                r#""usage":{{"prompt_tokens":250,"completion_tokens":200,"total_tokens":450}}}}"#
            ),
            text.trim_end()
        );
        let piece = text.len() / chunks.max(1);
        let mut out = Vec::with_capacity(chunks + 1);
        for i in 0..chunks {
            let part = &text[i * piece..(i + 1) * piece];
            out.push(Bytes::from(format!(
                concat!(
                    "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,",
                    "\"model\":\"bench-1\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\"}},",
                    "\"finish_reason\":null}}]}}\n\n"
                ),
                part
            )));
        }
        out.push(Bytes::from_static(b"data: [DONE]\n\n"));
        let models =
            Bytes::from_static(br#"{"object":"list","data":[{"id":"bench-1","object":"model","owned_by":"bench"}]}"#);
        let openai = Answer { full: Bytes::from(full), chunks: out.into() };
        Self {
            openai,
            anthropic: anthropic(&text, chunks),
            chunk_delay,
            fail_percent,
            calls: std::sync::atomic::AtomicU64::new(0),
            models,
        }
    }
}

/// The same reply text and token counts as Anthropic's Messages API writes them.
fn anthropic(text: &str, chunks: usize) -> Answer {
    let full = format!(
        concat!(
            r#"{{"id":"msg_bench","type":"message","role":"assistant","model":"bench-1","#,
            r#""content":[{{"type":"text","text":"{}"}}],"stop_reason":"end_turn","stop_sequence":null,"#,
            r#""usage":{{"input_tokens":250,"output_tokens":200}}}}"#
        ),
        text.trim_end()
    );
    let event = |name: &str, data: String| format!("event: {name}\ndata: {data}\n\n");
    let delta = |part: &str| {
        event(
            "content_block_delta",
            format!(r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"{part}"}}}}"#),
        )
    };
    let n = chunks.max(1);
    let piece = text.len() / n;
    let mut out = Vec::with_capacity(n + 1);
    // The head arrives at once, as Anthropic sends it: the first write carries the first text.
    let mut head = event(
        "message_start",
        concat!(
            r#"{"type":"message_start","message":{"id":"msg_bench","type":"message","role":"assistant","#,
            r#""model":"bench-1","content":[],"stop_reason":null,"stop_sequence":null,"#,
            r#""usage":{"input_tokens":250,"output_tokens":1}}}"#
        )
        .to_string(),
    );
    head += &event(
        "content_block_start",
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#.to_string(),
    );
    head += &event("ping", r#"{"type":"ping"}"#.to_string());
    head += &delta(&text[..piece]);
    out.push(Bytes::from(head));
    for i in 1..n {
        out.push(Bytes::from(delta(&text[i * piece..(i + 1) * piece])));
    }
    let mut tail = event("content_block_stop", r#"{"type":"content_block_stop","index":0}"#.to_string());
    tail += &event(
        "message_delta",
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":200}}"#
            .to_string(),
    );
    tail += &event("message_stop", r#"{"type":"message_stop"}"#.to_string());
    out.push(Bytes::from(tail));
    Answer { full: Bytes::from(full), chunks: out.into() }
}

fn full(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(body).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    resp
}

async fn handle(answers: Arc<Answers>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let answer = match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/chat/completions") => &answers.openai,
        (&Method::POST, "/v1/messages") => &answers.anthropic,
        (&Method::GET, "/v1/models") => return Ok(full(StatusCode::OK, "application/json", answers.models.clone())),
        (&Method::POST, "/v1/traces") => {
            // An empty protobuf message is zero bytes: full success.
            let status = if req.into_body().collect().await.is_ok() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
            return Ok(full(status, "application/x-protobuf", Bytes::new()));
        }
        _ => {
            return Ok(full(
                StatusCode::NOT_FOUND,
                "application/json",
                Bytes::from_static(br#"{"error":"not found"}"#),
            ));
        }
    };
    if answers.fail_percent > 0 {
        // A multiplicative hash of the call count: failures spread out, not in runs.
        let n = answers.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 100 < answers.fail_percent {
            let _ = req.into_body().collect().await;
            let error = br#"{"error":{"message":"bench mock: injected failure","type":"server_error","code":null}}"#;
            return Ok(full(StatusCode::SERVICE_UNAVAILABLE, "application/json", Bytes::from_static(error)));
        }
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(full(StatusCode::BAD_REQUEST, "text/plain", Bytes::from_static(b"bad body"))),
    };
    if !contains(&body, b"\"stream\":true") {
        return Ok(full(StatusCode::OK, "application/json", answer.full.clone()));
    }
    let body = if answers.chunk_delay.is_zero() {
        let chunks = answer.chunks.clone();
        let frames = (0..chunks.len()).map(move |i| Ok::<_, Infallible>(Frame::data(chunks[i].clone())));
        FrameIter(frames).boxed_unsync()
    } else {
        paced(answer.chunks.clone(), answers.chunk_delay).boxed_unsync()
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// A body whose frames come from an iterator (each chunk is its own frame, as an upstream
/// that writes events one by one would send them).
struct FrameIter<I>(I);

impl<I> hyper::body::Body for FrameIter<I>
where
    I: Iterator<Item = Result<Frame<Bytes>, Infallible>> + Unpin,
{
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.get_mut().0.next())
    }
}

/// The stream with `delay` between chunks, written by a task as a real upstream would.
fn paced(chunks: Arc<[Bytes]>, delay: std::time::Duration) -> Paced {
    let (tx, rx) = tokio::sync::mpsc::channel(chunks.len());
    tokio::spawn(async move {
        for (i, chunk) in chunks.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(delay).await;
            }
            if tx.send(chunk.clone()).await.is_err() {
                return;
            }
        }
    });
    Paced(rx)
}

struct Paced(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for Paced {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut().0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen: SocketAddr = arg(&args, "--listen").unwrap_or_else(|| "127.0.0.1:0".into()).parse().expect("--listen");
    assert!(listen.ip().is_loopback(), "the bench mock listens on loopback only");
    let threads: usize = arg(&args, "--threads").map_or(2, |t| t.parse().expect("--threads"));
    let chunks: usize = arg(&args, "--chunks").map_or(8, |t| t.parse().expect("--chunks"));
    let delay_us: u64 = arg(&args, "--chunk-delay-us").map_or(0, |t| t.parse().expect("--chunk-delay-us"));
    let chunk_delay = std::time::Duration::from_micros(delay_us);
    let fail_percent: u64 = arg(&args, "--fail-percent").map_or(0, |t| t.parse().expect("--fail-percent"));
    assert!(fail_percent <= 100, "--fail-percent is at most 100");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
        println!("listening on {}", listener.local_addr().expect("addr"));
        let answers = Arc::new(Answers::new(chunks, chunk_delay, fail_percent));
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let answers = answers.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(answers.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
}
