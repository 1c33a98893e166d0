//! The socket side: accept connections (HTTP/1.1 and HTTP/2) on the client listener and the
//! optional admin listener, serve each client connection on one of the serving threads
//! ([`crate::shards`]), dispatch client requests by method and path, and shut down gracefully
//! (stop accepting, drain pools, finish in-flight responses).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::body::ResponseBody;
use crate::client_io::{ClientConn, ClientIo};
use crate::error::{Error, ErrorKind};
use crate::gateway::AppState;
use crate::providers::Endpoint;
use crate::reload::Reloader;
use crate::repoll::Repoll;
use crate::shards::Shards;

/// After `shutdown_timeout`, how long connections may take to write the 503s of requests the
/// drain did not finish (so they are answered, not cut off).
const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// The admin API's write timeout: its answers are small, and it is not reloaded with the
/// client-facing settings.
const ADMIN_SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Bound, not yet serving, listeners, and the serving threads.
pub struct Server {
    listener: TcpListener,
    admin: Option<TcpListener>,
    state: Arc<AppState>,
    draining: Arc<AtomicBool>,
    shards: Shards,
}

impl Server {
    /// Binds the client listener and starts `threads` serving threads (one per core when 0).
    ///
    /// # Errors
    /// The bind error (address in use, permission), or a thread that could not start.
    pub async fn bind(addr: SocketAddr, threads: usize, state: Arc<AppState>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let shards = Shards::start(crate::shards::count(threads))?;
        Ok(Self { listener, admin: None, state, draining: Arc::new(AtomicBool::new(false)), shards })
    }

    /// How many serving threads there are.
    pub fn threads(&self) -> usize {
        self.shards.len()
    }

    /// Binds the admin listener too.
    ///
    /// # Errors
    /// The bind error.
    pub async fn bind_admin(&mut self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let l = TcpListener::bind(addr).await?;
        let local = l.local_addr()?;
        self.admin = Some(l);
        Ok(local)
    }

    /// The bound client address (useful with port 0).
    ///
    /// # Errors
    /// If the socket has no local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains for at most `shutdown_timeout`:
    /// no new connections, queued and in-flight requests finish, what is left gets 503.
    pub async fn serve(self, reloader: Arc<Reloader>, shutdown: impl Future<Output = ()>, shutdown_timeout: Duration) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let graceful = GracefulShutdown::new();
        let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
        let admin_task = self.admin.map(|l| {
            let stop = stop_rx.clone();
            let builder = builder.clone();
            tokio::spawn(async move {
                let handler = move |req, _: &ClientConn| crate::admin::dispatch(reloader.clone(), req);
                let admin_graceful = GracefulShutdown::new();
                // The admin API is served on the control runtime, beside reloads and signals.
                accept_loop(l, stopped(stop), |stream| {
                    let watcher = admin_graceful.watcher();
                    tokio::spawn(serve_conn(stream, ADMIN_SEND_TIMEOUT, builder.clone(), watcher, handler.clone()));
                })
                .await;
            })
        });
        let state = self.state.clone();
        let draining = self.draining.clone();
        let handler = move |req, conn: &ClientConn| dispatch(state.clone(), draining.clone(), conn.clone(), req);
        let shards = &self.shards;
        let gateway = &self.state.gateway;
        let to_shard = |stream: TcpStream| {
            // The socket moves to the shard's own reactor.
            let stream = match stream.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot hand a connection to a serving thread");
                    return;
                }
            };
            let (builder, watcher, handler) = (builder.clone(), graceful.watcher(), handler.clone());
            // Read per connection: a reload changes it for new connections.
            let send_timeout = gateway.load().config.server.send_timeout;
            shards.spawn(move || async move {
                match TcpStream::from_std(stream) {
                    Ok(stream) => serve_conn(stream, send_timeout, builder, watcher, handler).await,
                    Err(e) => tracing::warn!(error = %e, "cannot register a connection on a serving thread"),
                }
            });
        };
        tokio::select! {
            () = accept_loop(self.listener, stopped(stop_rx), to_shard) => {}
            () = shutdown => {}
        }
        let _ = stop_tx.send(true);
        if let Some(t) = admin_task {
            t.abort();
        }
        self.draining.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + shutdown_timeout;
        tracing::info!(timeout_ms = shutdown_timeout.as_millis() as u64, "shutting down: draining requests");
        let gateway = self.state.gateway.load_full();
        let drain_pools = gateway.shutdown(deadline);
        // At the deadline the pools answer what is left with 503; connections get a moment
        // more to write those answers before the process exits.
        let drain_conns = tokio::time::timeout_at(deadline + ANSWER_GRACE, graceful.shutdown());
        let (_, conns) = tokio::join!(drain_pools, drain_conns);
        if conns.is_err() {
            tracing::warn!("shutdown timeout reached with connections still open");
        }
        // Dropping `self.shards` stops the serving threads: their connections have ended, or
        // the drain's deadline has passed and what is left is dropped with them.
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Accepts connections until `stop` resolves and hands each to `serve` (which spawns it).
async fn accept_loop(listener: TcpListener, stop: impl Future<Output = ()>, mut serve: impl FnMut(TcpStream)) {
    tokio::pin!(stop);
    loop {
        let (stream, _peer) = tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => match accepted {
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
        serve(stream);
    }
}

/// Serves one connection to its end, watched by the graceful shutdown so a drain lets its
/// in-flight requests finish. Writes that make no progress for `send_timeout` close it.
fn serve_conn<H, F>(
    stream: TcpStream,
    send_timeout: Duration,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    handler: H,
) -> impl Future<Output = ()> + Send + 'static
where
    H: Fn(Request<Incoming>, &ClientConn) -> F + Send + Sync + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    let (io, client) = ClientIo::new(stream, send_timeout);
    let service = hyper::service::service_fn(move |req| {
        let fut = handler(req, &client);
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
    let conn = watcher.watch(conn);
    // Reading a request body makes the connection's task wake itself: poll it again at once
    // rather than through the scheduler (see `repoll`).
    Repoll::new(async move {
        let _ = conn.await;
    })
}

async fn dispatch(
    state: Arc<AppState>,
    draining: Arc<AtomicBool>,
    conn: ClientConn,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let path = req.uri().path();
    let method = req.method();
    match (method, path) {
        (&Method::POST, "/v1/chat/completions") => {
            crate::pipeline::handle(state.gateway.load_full(), Endpoint::ChatCompletions, req, conn).await
        }
        (&Method::POST, "/v1/embeddings") => {
            crate::pipeline::handle(state.gateway.load_full(), Endpoint::Embeddings, req, conn).await
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
