//! The socket side: accept connections (HTTP/1.1 and HTTP/2), dispatch by method and path,
//! and shut down gracefully (stop accepting, drain pools, finish in-flight responses).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::body::ResponseBody;
use crate::error::{Error, ErrorKind};
use crate::gateway::AppState;
use crate::providers::Endpoint;

/// After `shutdown_timeout`, how long connections may take to write the 503s of requests the
/// drain did not finish (so they are answered, not cut off).
const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// A bound, not yet serving, listener.
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
    draining: Arc<AtomicBool>,
}

impl Server {
    /// Binds the client listener.
    ///
    /// # Errors
    /// The bind error (address in use, permission).
    pub async fn bind(addr: SocketAddr, state: Arc<AppState>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self { listener, state, draining: Arc::new(AtomicBool::new(false)) })
    }

    /// The bound address (useful with port 0).
    ///
    /// # Errors
    /// If the socket has no local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains for at most `shutdown_timeout`:
    /// no new connections, queued and in-flight requests finish, what is left gets 503.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>, shutdown_timeout: Duration) {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let builder = auto::Builder::new(TokioExecutor::new());
        tokio::pin!(shutdown);
        loop {
            let (stream, _peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let state = self.state.clone();
            let draining = self.draining.clone();
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                let draining = draining.clone();
                async move { Ok::<_, Infallible>(dispatch(state, &draining, req).await) }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
        drop(self.listener);
        self.draining.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + shutdown_timeout;
        tracing::info!(timeout_ms = shutdown_timeout.as_millis() as u64, "shutting down: draining requests");
        let gateway = self.state.gateway.load_full();
        let drain_pools = gateway.shutdown(deadline);
        let drain_conns = graceful.shutdown();
        // At the deadline the pools answer what is left with 503; connections get a moment
        // more to write those answers before the process exits.
        let (_, conns) = tokio::join!(drain_pools, tokio::time::timeout_at(deadline + ANSWER_GRACE, drain_conns));
        if conns.is_err() {
            tracing::warn!("shutdown timeout reached with connections still open");
        }
    }
}

async fn dispatch(state: Arc<AppState>, draining: &AtomicBool, req: Request<Incoming>) -> Response<ResponseBody> {
    let path = req.uri().path();
    let method = req.method();
    match (method, path) {
        (&Method::POST, "/v1/chat/completions") => {
            crate::pipeline::handle(state.gateway.load_full(), Endpoint::ChatCompletions, req).await
        }
        (&Method::POST, "/v1/embeddings") => {
            crate::pipeline::handle(state.gateway.load_full(), Endpoint::Embeddings, req).await
        }
        (&Method::GET, "/v1/models") => crate::routes::models(&state.gateway.load()),
        (&Method::GET, p) if p.starts_with("/v1/models/") => {
            crate::routes::model(&state.gateway.load(), &p["/v1/models/".len()..])
        }
        (&Method::GET, "/health") => crate::routes::health(),
        (&Method::GET, "/ready") => crate::routes::ready(&state.gateway.load(), draining.load(Ordering::Relaxed)),
        (&Method::GET, "/metrics") => crate::routes::metrics(),
        (_, "/v1/chat/completions" | "/v1/embeddings" | "/v1/models" | "/health" | "/ready" | "/metrics") => {
            Error::new(ErrorKind::MethodNotAllowed, format!("method {method} is not allowed on {path}")).to_response()
        }
        _ => Error::new(ErrorKind::RouteNotFound, format!("no route for {method} {path}")).to_response(),
    }
}
