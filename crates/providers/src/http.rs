//! The upstream HTTP client of HTTP provider kinds: one pooled hyper-util client per provider
//! (keep-alive, HTTP/2 when a TLS server offers it through ALPN, rustls with the Mozilla roots),
//! TCP_NODELAY, a connect timeout, and nothing else between Weir and the socket: no redirect
//! following (a gateway relays the provider's answer; it does not chase a `Location` with the
//! provider's API key attached), no retries (later a policy of the pool), no proxy.
//!
//! Plain `http://` providers (a local vLLM, Ollama or any OpenAI-compatible server on the
//! network) skip that pool: their HTTP/1.1 keep-alive connections are kept per serving thread
//! ([`lanes`]), like nginx's upstream `keepalive`. A request takes an idle one of its own
//! thread: no contended lock, no key lookup, no connector clone and no task spawned per
//! request to return the connection to a pool (all of which the pooled client does on every
//! request). A connection that the provider closed while idle is replaced, and a request that
//! was never written on it is sent again on a new one.
//!
//! Why not reqwest, which wraps this same client: per request it converts the URL to a `Uri`,
//! parses it back into a `Url` twice (its redirect layer and its response), and runs redirect
//! and retry layers even when both are off, which the profile put at 10-14% of the gateway's
//! CPU per proxied request.

pub mod lanes;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::HeaderValue;
use http::header::HOST;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::affinity::Affinity;
use crate::config::check_base_url;
use lanes::Lanes;
pub use lanes::{Conn, Returning};

/// How long an idle upstream connection is kept (pooled client and lanes alike).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A request body: the whole JSON document, sent with a `content-length`.
pub type Body = Full<Bytes>;

/// The pooled client (TLS and HTTP/2 capable).
type Pooled = Client<HttpsConnector<HttpConnector>, Body>;

/// One provider's connections: the pooled client, and for `http://` providers their own idle
/// connections per serving thread.
#[derive(Clone)]
pub struct Upstream {
    /// Swapped for one that keeps no idle connection when the provider retires: dropping the
    /// old one closes its idle connections once no request is waiting for a head on it.
    client: Arc<ArcSwap<Pooled>>,
    connector: HttpsConnector<HttpConnector>,
    direct: Option<Direct>,
}

/// Where a plain-http provider's connections go, the `Host` header they send, and the idle
/// ones.
#[derive(Clone)]
struct Direct {
    host: String,
    port: u16,
    host_header: HeaderValue,
    connect_timeout: Duration,
    lanes: Arc<Lanes>,
}

/// Why a request got no response head.
#[derive(Debug)]
pub struct SendError {
    /// The connect timeout passed or the OS reported a timeout.
    pub timed_out: bool,
    /// The innermost cause, for the client-facing message (never contains the URL).
    pub cause: String,
}

impl Upstream {
    /// A client for the provider at `base` that keeps up to `idle_per_host` idle connections,
    /// for requests on `threads` serving threads.
    pub fn new(base: &Uri, connect_timeout: Duration, idle_per_host: usize, threads: usize) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false); // the TLS layer handles https:// and passes http:// through
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        let connector = HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let client = Arc::new(ArcSwap::from_pointee(pooled(connector.clone(), idle_per_host)));
        let direct = (base.scheme_str() == Some("http")).then(|| base.authority()).flatten().and_then(|a| {
            Some(Direct {
                // An IPv6 literal is bracketed in the URI, not in a socket address.
                host: a.host().trim_start_matches('[').trim_end_matches(']').to_owned(),
                port: a.port_u16().unwrap_or(80),
                host_header: HeaderValue::from_str(a.as_str()).ok()?,
                connect_timeout,
                lanes: Lanes::new(threads, idle_per_host),
            })
        });
        Self { client, connector, direct }
    }

    /// Sends one request through the pooled client; resolves when the response head arrived.
    ///
    /// # Errors
    /// Connecting, writing or reading the head failed.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, SendError> {
        // The future holds its own handle on the client: the swap's guard is not held across
        // the wait.
        let sent = self.client.load().request(req);
        sent.await.map_err(|e| SendError::from_chain(&e))
    }

    /// Sends one request on an idle connection of serving thread `here` or a new one made
    /// there (plain-http providers), or through the pooled client (the others). `req`
    /// carries an absolute URI. With a connection of its own, the exchange holds it until
    /// the caller hands it back ([`Upstream::put_back`]) or drops it (which closes it).
    ///
    /// # Errors
    /// Connecting, writing or reading the head failed.
    pub async fn send_on(
        &self,
        here: Affinity,
        mut req: Request<Body>,
    ) -> Result<(Response<Incoming>, Option<Conn>), SendError> {
        let Some(direct) = &self.direct else { return Ok((self.send(req).await?, None)) };
        // HTTP/1.1 on a direct connection: origin-form target and a Host header.
        if let Some(pq) = req.uri().path_and_query().cloned() {
            *req.uri_mut() = Uri::from(pq);
        }
        req.headers_mut().insert(HOST, direct.host_header.clone());
        // Only a reused connection may fail into a retry; a fresh one's failure is final.
        loop {
            let (mut conn, reused) = match direct.lanes.take(here) {
                Some(conn) => (conn, true),
                None => (Conn::new(direct.connect().await?, here), false),
            };
            if let Err(e) = conn.sender.ready().await {
                if reused {
                    continue; // closed while idle: try the next one, or a fresh one
                }
                return Err(SendError::from_chain(&e));
            }
            match conn.sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Some(conn))),
                Err(mut e) => match e.take_message() {
                    // Never written on a reused connection (it was closing): send it again.
                    Some(back) if reused => req = back,
                    _ => return Err(SendError::from_chain(e.error())),
                },
            }
        }
    }

    /// Keeps the connection of an exchange that ended cleanly for the next request of its
    /// thread.
    pub fn put_back(&self, conn: Option<Conn>) {
        if let (Some(direct), Some(conn)) = (&self.direct, conn) {
            direct.lanes.put_back(conn);
        }
    }

    /// Ties a stream's connection to its lanes, to be handed back when the stream ends cleanly.
    pub fn returning(&self, conn: Option<Conn>) -> Option<Returning> {
        Some(Returning::new(self.direct.as_ref()?.lanes.clone(), conn?))
    }

    /// The provider was replaced or removed by a reload: closes its idle connections now and
    /// keeps none after. A plain-http provider's lanes close theirs; the pooled client is
    /// replaced by one that keeps none, and dropping it closes its idle connections (at once,
    /// or when the last request waiting for a response head on it has its head).
    pub fn retire(&self) {
        if let Some(direct) = &self.direct {
            direct.lanes.retire();
        }
        self.client.store(Arc::new(pooled(self.connector.clone(), 0)));
    }

    /// Idle connections of a plain-http provider (0 for the others).
    pub fn idle(&self) -> usize {
        self.direct.as_ref().map_or(0, |d| d.lanes.idle())
    }
}

/// A pooled client over `connector` keeping up to `idle_per_host` idle connections.
fn pooled(connector: HttpsConnector<HttpConnector>, idle_per_host: usize) -> Pooled {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_max_idle_per_host(idle_per_host)
        .build(connector)
}

impl Direct {
    /// Opens a connection (bounded by the connect timeout) and starts its I/O task, which
    /// ends when the sender is dropped or either side closes.
    async fn connect(&self) -> Result<http1::SendRequest<Body>, SendError> {
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(SendError::from_chain(&e)),
            Err(_) => return Err(SendError { timed_out: true, cause: "connect timed out".into() }),
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(|e| SendError::from_chain(&e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}

impl SendError {
    /// The innermost cause of `e` and whether a timeout is in the chain.
    pub fn from_chain(e: &(dyn std::error::Error + 'static)) -> Self {
        let mut cause = e.to_string();
        let mut timed_out = false;
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = next {
            cause = err.to_string();
            timed_out |=
                err.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
            next = err.source();
        }
        if cause.is_empty() {
            cause = "request failed".into();
        }
        Self { timed_out, cause }
    }
}

/// Builds `base` + `path` as a request target.
///
/// # Errors
/// The result is not an absolute `http(s)://` URI.
pub fn endpoint_uri(base: &str, path: &str) -> Result<Uri, String> {
    let uri: Uri = format!("{}{path}", base.trim_end_matches('/')).parse().map_err(|e| format!("base_url: {e}"))?;
    check_base_url(&uri)?;
    Ok(uri)
}

/// Reads a body whole, up to `cap` bytes (the rest is not read: the caller's JSON check then
/// fails on the truncated document).
///
/// # Errors
/// The connection failed mid-body.
pub async fn read_capped(body: Incoming, size_hint: Option<u64>, cap: usize) -> Result<Bytes, SendError> {
    let mut body = body;
    let mut buf = Vec::with_capacity(size_hint.map_or(4096, |l| (l as usize).min(cap)));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| SendError::from_chain(&e))?;
        let Ok(chunk) = frame.into_data() else { continue };
        if buf.len() + chunk.len() > cap {
            break;
        }
        if buf.is_empty() && chunk.len() == size_hint.unwrap_or(u64::MAX) as usize {
            // The whole body in one frame (the usual case for a small JSON answer): no copy.
            return Ok(chunk);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// Why a whole answer was not read.
#[derive(Debug)]
pub enum ReadError {
    /// The connection failed while reading.
    Send(SendError),
    /// The answer is larger than the cap (by its `content-length`, or by the bytes read).
    TooLarge,
}

/// Reads a whole answer of at most `cap` bytes, refusing a larger one: up front when its
/// `content-length` says so, else as soon as the bytes read pass `cap` (the rest is not read).
/// The bytes held meanwhile are counted in `buffered` until the read ends.
///
/// # Errors
/// [`ReadError::TooLarge`] past `cap`, [`ReadError::Send`] if the connection fails.
pub async fn read_whole(
    body: Incoming,
    content_length: Option<u64>,
    cap: usize,
    buffered: &metrics::Gauge,
) -> Result<Bytes, ReadError> {
    if content_length.is_some_and(|l| l > cap as u64) {
        return Err(ReadError::TooLarge);
    }
    let mut held = Held { gauge: buffered, bytes: 0 };
    let mut body = body;
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ReadError::Send(SendError::from_chain(&e)))?;
        let Ok(chunk) = frame.into_data() else { continue };
        if buf.len() + chunk.len() > cap {
            return Err(ReadError::TooLarge);
        }
        if buf.is_empty() && content_length == Some(chunk.len() as u64) {
            // The whole body in one frame (the usual case for a small JSON answer): no copy.
            return Ok(chunk);
        }
        if buf.is_empty() {
            buf.reserve_exact(content_length.map_or(chunk.len(), |l| l as usize));
        }
        held.add(chunk.len());
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// Bytes counted in a provider's `weir_pool_buffered_bytes` gauge, uncounted when dropped.
struct Held<'a> {
    gauge: &'a metrics::Gauge,
    bytes: usize,
}

impl Held<'_> {
    fn add(&mut self, n: usize) {
        self.bytes += n;
        self.gauge.increment(n as f64);
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.gauge.decrement(self.bytes as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked() {
        assert!(endpoint_uri("http://127.0.0.1:8080/v1/", "/chat/completions").is_ok());
        assert_eq!(
            endpoint_uri("https://api.openai.com/v1", "/models").unwrap().to_string(),
            "https://api.openai.com/v1/models"
        );
        assert!(endpoint_uri("ftp://x/v1", "/models").unwrap_err().contains("http://"));
        assert!(endpoint_uri("http://user:secret@host/v1", "/models").unwrap_err().contains("credentials"));
        assert!(endpoint_uri("http://host/v1?x=1", "").unwrap_err().contains("query"));
        assert!(endpoint_uri("not a url", "/models").is_err());
    }

    #[tokio::test]
    async fn retiring_closes_the_pooled_clients_idle_connections_and_keeps_none_after() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let closed = Arc::new(AtomicUsize::new(0));
        let count = closed.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let answer = hyper::service::service_fn(|_| async {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
                    });
                    let served =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), answer);
                    let _ = served.await;
                    count.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        let wait_closed = |n| {
            let closed = closed.clone();
            tokio::time::timeout(Duration::from_secs(5), async move {
                while closed.load(Ordering::SeqCst) < n {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        // An https provider's requests go through the pooled client (which also speaks plain
        // http, so the test needs no certificate).
        let up = Upstream::new(&"https://127.0.0.1/v1".parse().unwrap(), Duration::from_secs(5), 4, 1);
        assert!(up.direct.is_none());
        let get = || Request::get(format!("http://{addr}/v1/models")).body(Body::default()).unwrap();
        up.send(get()).await.unwrap().into_body().collect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(closed.load(Ordering::SeqCst), 0, "the connection is kept idle for the next request");

        // A clone (as a provider's in-flight work holds) retires the same client.
        up.clone().retire();
        wait_closed(1).await.expect("the idle connection was closed when the provider retired");
        // Requests of the old snapshot still work after, and keep no connection.
        up.send(get()).await.unwrap().into_body().collect().await.unwrap();
        wait_closed(2).await.expect("a retired provider keeps no connection");
    }

    #[test]
    fn send_errors_keep_the_innermost_cause_and_see_timeouts() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = SendError::from_chain(&Outer(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out")));
        assert!(e.timed_out);
        assert_eq!(e.cause, "timed out");
        let e = SendError::from_chain(&Outer(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)));
        assert!(!e.timed_out);
    }
}
