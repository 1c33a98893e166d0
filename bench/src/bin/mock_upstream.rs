//! A fast OpenAI-compatible mock upstream for `scripts/bench.sh`: hyper directly, HTTP/1.1
//! keep-alive, a multi-threaded runtime, and fixed pre-built answers so that it costs the
//! gateways under test as little CPU as possible.
//!
//! `POST /v1/chat/completions` (any body) answers a fixed ~1 KB `chat.completion`; a body
//! containing `"stream":true` gets a fixed SSE stream of `--chunks` chunks and `[DONE]`.
//! `GET /v1/models` lists `bench-1`. Anything else is 404.
//!
//! Usage: `weir-mock-upstream [--listen 127.0.0.1:0] [--threads 2] [--chunks 8]
//! [--chunk-delay-us 0]` (a delay spaces the chunks, so time to first byte and total differ). It prints
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

/// The pre-built answers, shared by every connection.
struct Answers {
    full: Bytes,
    /// Pause before each chunk after the first (zero: the whole stream at once).
    chunk_delay: std::time::Duration,
    chunks: Vec<Bytes>,
    models: Bytes,
}

impl Answers {
    fn new(chunks: usize, chunk_delay: std::time::Duration) -> Self {
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
        Self { full: Bytes::from(full), chunk_delay, chunks: out, models }
    }
}

fn full(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(body).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    resp
}

async fn handle(answers: Arc<Answers>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/chat/completions") => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return Ok(full(StatusCode::BAD_REQUEST, "text/plain", Bytes::from_static(b"bad body"))),
            };
            if contains(&body, b"\"stream\":true") {
                let body = if answers.chunk_delay.is_zero() {
                    let frames = answers.chunks.clone().into_iter().map(|c| Ok::<_, Infallible>(Frame::data(c)));
                    FrameIter(frames).boxed_unsync()
                } else {
                    paced(answers.clone()).boxed_unsync()
                };
                let mut resp = Response::new(body);
                let h = resp.headers_mut();
                h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/event-stream"));
                h.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
                Ok(resp)
            } else {
                Ok(full(StatusCode::OK, "application/json", answers.full.clone()))
            }
        }
        (&Method::GET, "/v1/models") => Ok(full(StatusCode::OK, "application/json", answers.models.clone())),
        _ => Ok(full(StatusCode::NOT_FOUND, "application/json", Bytes::from_static(br#"{"error":"not found"}"#))),
    }
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

/// The stream with `chunk_delay` between chunks, written by a task as a real upstream would.
fn paced(answers: Arc<Answers>) -> Paced {
    let (tx, rx) = tokio::sync::mpsc::channel(answers.chunks.len());
    tokio::spawn(async move {
        for (i, chunk) in answers.chunks.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(answers.chunk_delay).await;
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
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
        println!("listening on {}", listener.local_addr().expect("addr"));
        let answers = Arc::new(Answers::new(chunks, chunk_delay));
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
