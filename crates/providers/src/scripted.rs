//! A provider for unit tests: each request's last user message is a script
//! (`sleep:MS`, `panic`, `error:STATUS`, `fail:N`, `stream:N`), and calls are counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;

use super::{ProviderRequest, ProviderResponse};
use crate::error::{Error, ErrorKind};

/// Scripted test provider.
#[derive(Default, Clone)]
pub struct Scripted {
    /// Calls that reached the provider.
    pub calls: Arc<AtomicUsize>,
    /// Calls that ran to completion (not cancelled).
    pub completed: Arc<AtomicUsize>,
}

impl Scripted {
    /// The format its scripts and answers are in.
    pub const FORMAT: crate::format::ApiFormat = crate::format::ApiFormat::OpenAi;

    /// Runs the script in the last user message.
    ///
    /// # Errors
    /// `error:STATUS` answers with that upstream status.
    pub async fn call(&self, mut req: ProviderRequest) -> Result<ProviderResponse, Error> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let script = super::mock::last_user_text(req.body.map());
        for step in script.split_whitespace() {
            let (op, arg) = step.split_once(':').unwrap_or((step, ""));
            match op {
                "sleep" => tokio::time::sleep(Duration::from_millis(arg.parse().unwrap_or(0))).await,
                "panic" => panic!("scripted panic"),
                // `fail:N`: the first N calls to this provider answer 503.
                "fail" if call <= arg.parse().unwrap_or(0) => {
                    return Err(Error::new(ErrorKind::Upstream { status: 503 }, "scripted"));
                }
                "error" => {
                    return Err(Error::new(ErrorKind::Upstream { status: arg.parse().unwrap_or(500) }, "scripted"));
                }
                "stream" => {
                    let n: usize = arg.parse().unwrap_or(1);
                    let done = self.completed.clone();
                    let s = futures_util::stream::iter(0..n).then(move |i| {
                        let done = done.clone();
                        async move {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            if i + 1 == n {
                                done.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(Bytes::from(format!("{{\"i\":{i}}}")))
                        }
                    });
                    return Ok(ProviderResponse::stream(s.boxed()));
                }
                _ => {}
            }
        }
        self.completed.fetch_add(1, Ordering::SeqCst);
        Ok(ProviderResponse::full(Bytes::from_static(b"{\"ok\":true}"), None))
    }
}

/// A plain-http upstream on 127.0.0.1 that answers every chat with a fixed completion after
/// `delay` and counts the connections it has open.
pub async fn counting_upstream(delay: Duration) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = open.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let open = counter.clone();
            open.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = service_fn(move |_req| async move {
                    tokio::time::sleep(delay).await;
                    let body = r#"{"id":"c","object":"chat.completion","choices":[]}"#;
                    let resp = http::Response::builder()
                        .header("content-type", "application/json")
                        .body(http_body_util::Full::new(bytes::Bytes::from_static(body.as_bytes())))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, open)
}

/// Waits (a bounded number of short sleeps) until the upstream counts `n` open connections.
pub async fn open_connections(open: &std::sync::atomic::AtomicUsize, n: usize) -> usize {
    for _ in 0..200 {
        if open.load(Ordering::SeqCst) == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    open.load(Ordering::SeqCst)
}
