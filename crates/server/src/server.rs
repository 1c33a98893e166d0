//! The socket side: accept connections (HTTP/1.1 and HTTP/2) on the client listener and the
//! optional admin listener, refuse those past `max_connections`, serve each client connection
//! on one of the serving threads ([`crate::shards`], [`crate::conn`]), dispatch client requests
//! by method and path, and shut down gracefully (stop accepting, drain pools, finish in-flight
//! responses, close idle connections at once).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::affinity::Affinity;
use crate::api::{GATEWAY_FORMAT, Route};
use crate::body::ResponseBody;
use crate::client_io::ClientConn;
use crate::conn::Limits;
use crate::error::{Error, ErrorKind};
use crate::gateway::{AppState, Gateway};
use crate::overload::Overload;
use crate::reload::Reloader;
use crate::respond::error_response;
use crate::shards::Shards;

/// After `shutdown_timeout`, how long connections may take to write the 503s of requests the
/// drain did not finish (so they are answered, not cut off).
const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// HTTP/2 keep-alive pings: how often, and how long an answer may take before the peer is
/// taken for dead and the connection closed.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

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
    overload: Arc<Overload>,
    /// `max_connections` when the config says 0, sized from the open-file limit.
    auto_max_connections: usize,
}

impl Server {
    /// Binds the client listener and starts `threads` serving threads (one per core when 0).
    ///
    /// # Errors
    /// The bind error (address in use, permission), or a thread that could not start.
    pub async fn bind(addr: SocketAddr, threads: usize, state: Arc<AppState>) -> std::io::Result<Self> {
        let auto_max_connections = crate::overload::auto_max_connections(crate::overload::raise_fd_limit());
        let listener = TcpListener::bind(addr).await?;
        let shards = Shards::start(crate::shards::count(threads))?;
        Ok(Self {
            listener,
            admin: None,
            state,
            draining: Arc::new(AtomicBool::new(false)),
            shards,
            overload: Overload::new(),
            auto_max_connections,
        })
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
        let server_cfg = self.state.gateway.load().config.server.clone();
        let limits = Limits {
            header_read_timeout: server_cfg.header_read_timeout,
            idle_timeout: server_cfg.idle_timeout,
            send_timeout: server_cfg.send_timeout,
        };
        let builder = Arc::new(builder());
        let open = self.shards.open_counter();
        let monitor = tokio::spawn(self.overload.clone().monitor(self.state.clone(), open));
        // The browser guard compares `Host` with the address the listener is bound to.
        let unbound = SocketAddr::from(([0, 0, 0, 0], 0));
        let listen = self.listener.local_addr().unwrap_or(server_cfg.listen);
        let admin_task = self.admin.map(|l| {
            let stop = stop_rx.clone();
            let builder = builder.clone();
            let admin_listen = l.local_addr().unwrap_or(unbound);
            tokio::spawn(async move {
                let handler = move |req, _: &ClientConn| crate::admin::dispatch(reloader.clone(), admin_listen, req);
                // The admin API is served on the control runtime, beside reloads and signals.
                accept_loop(l, stopped(stop.clone()), |stream| {
                    tokio::spawn(crate::conn::serve(
                        stream,
                        builder.clone(),
                        Limits { send_timeout: ADMIN_SEND_TIMEOUT, ..limits },
                        stop.clone(),
                        handler.clone(),
                    ));
                })
                .await;
            })
        });
        let state = self.state.clone();
        let draining = self.draining.clone();
        let overload = self.overload.clone();
        let handler = move |req, conn: &ClientConn, here: Affinity| {
            dispatch(state.clone(), draining.clone(), overload.clone(), conn.clone(), listen, here, req)
        };
        let shards = &self.shards;
        let to_shard = |stream: TcpStream| {
            let gw = self.state.gateway.load();
            let cap = match gw.config.server.max_connections {
                0 => self.auto_max_connections,
                n => n,
            };
            if shards.open() >= cap {
                self.overload.refuse(stream, gw.config.server.overload.retry_after_secs());
                return;
            }
            // The socket moves to the shard's own reactor.
            let stream = match stream.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot hand a connection to a serving thread");
                    return;
                }
            };
            let (builder, stop, handler) = (builder.clone(), stop_rx.clone(), handler.clone());
            // Read per connection: a reload changes it for new connections.
            let limits = Limits { send_timeout: gw.config.server.send_timeout, ..limits };
            shards.spawn(move |here| async move {
                // Every request of the connection runs on this shard and says so.
                let handler = move |req, conn: &ClientConn| handler(req, conn, here);
                match TcpStream::from_std(stream) {
                    Ok(stream) => crate::conn::serve(stream, builder, limits, stop, handler).await,
                    Err(e) => tracing::warn!(error = %e, "cannot register a connection on a serving thread"),
                }
            });
        };
        tokio::select! {
            () = accept_loop(self.listener, stopped(stop_rx.clone()), to_shard) => {}
            () = shutdown => {}
        }
        // Connections with nothing in flight close now; the others after their last response.
        let _ = stop_tx.send(true);
        monitor.abort();
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
        let drain_conns = tokio::time::timeout_at(deadline + ANSWER_GRACE, async {
            while self.shards.open() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let (_, conns) = tokio::join!(drain_pools, drain_conns);
        if conns.is_err() {
            tracing::warn!("shutdown timeout reached with connections still open");
        }
        // The spans of the last requests go before the process exits.
        if let Some(tracer) = &gateway.tracer {
            tracer.flush().await;
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

/// hyper's connection settings: HTTP/2 pings that find dead peers (they need hyper's timer).
/// hyper's HTTP/1 head timer is off: it arms a timer per request, and the connection's
/// watchdog ([`crate::conn`]) bounds heads instead, with no per-request cost.
fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().header_read_timeout(None);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(H2_PING_INTERVAL).keep_alive_timeout(H2_PING_TIMEOUT);
    builder
}

/// Methods a CORS preflight may ask for on the client listener.
const API_METHODS: &str = "GET, POST, OPTIONS";

/// The browser guard, then the route; an allowed `Origin` may read the answer, errors included.
async fn dispatch(
    state: Arc<AppState>,
    draining: Arc<AtomicBool>,
    overload: Arc<Overload>,
    conn: ClientConn,
    listen: SocketAddr,
    here: Affinity,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    // One snapshot of the config for the guard and the route.
    let gw = state.gateway.load_full();
    let origin = match crate::browser::admit(&gw.config.server.browser, listen, &req) {
        Ok(origin) => origin,
        Err(e) => return refuse(&req, &e),
    };
    let Some(origin) = origin else { return route(state, gw, draining, overload, conn, here, req).await };
    if crate::browser::is_preflight(&req) {
        return crate::browser::preflight(origin, API_METHODS, req.headers());
    }
    let mut resp = route(state, gw, draining, overload, conn, here, req).await;
    crate::browser::grant(&mut resp, origin);
    resp
}

async fn route(
    state: Arc<AppState>,
    gw: Arc<Gateway>,
    draining: Arc<AtomicBool>,
    overload: Arc<Overload>,
    conn: ClientConn,
    here: Affinity,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    match crate::api::route(req.method(), req.uri().path()) {
        Route::Call(endpoint) => {
            if let Err(e) = crate::browser::require_json(req.headers()) {
                return refuse(&req, &e);
            }
            if let Some(e) = overload.shed(gw.config.server.overload.retry_after_secs()) {
                return refuse(&req, &e);
            }
            crate::pipeline::handle(gw, endpoint, here, req, conn).await
        }
        Route::Relay(label) => {
            if let Some(e) = overload.shed(gw.config.server.overload.retry_after_secs()) {
                return refuse(&req, &e);
            }
            crate::relay::handle(gw, label, here, req).await
        }
        Route::Models => crate::routes::models(&gw),
        Route::Model(id) => crate::routes::model(&gw, id),
        Route::Health => crate::routes::health(),
        Route::Ready => {
            let overload = (overload.shedding(), overload.status(&state));
            crate::routes::ready(&gw, draining.load(Ordering::Relaxed), overload)
        }
        Route::Metrics => crate::routes::metrics(),
        Route::WrongMethod => error_response(
            GATEWAY_FORMAT,
            &Error::new(
                ErrorKind::MethodNotAllowed,
                format!("method {} is not allowed on {}", req.method(), req.uri().path()),
            ),
        ),
        Route::NotFound => error_response(
            GATEWAY_FORMAT,
            &Error::new(ErrorKind::RouteNotFound, format!("no route for {} {}", req.method(), req.uri().path())),
        ),
    }
}

/// The answer to a request refused before the pipeline (browser guard, overload), in its
/// front door's format, else the gateway's. A refused model call is counted in
/// `weir_requests_total` like any other refusal (`provider="none"`). Only on error paths: the
/// route is decided again, once, for requests that pass.
fn refuse(req: &Request<Incoming>, e: &Error) -> Response<ResponseBody> {
    match crate::api::route(req.method(), req.uri().path()) {
        Route::Call(endpoint) => {
            let resp = error_response(endpoint.format, e);
            crate::metrics::record_unrouted(endpoint, e.metric_label(), resp.status().as_u16(), Duration::ZERO);
            resp
        }
        _ => error_response(GATEWAY_FORMAT, e),
    }
}
