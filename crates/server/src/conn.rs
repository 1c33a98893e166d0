//! One client connection from accept to close: hyper serves it, and a watchdog beside hyper
//! closes it when no request came within `header_read_timeout` of opening (or, on HTTP/1, of
//! the end of the last request: the wait for the next head), when no request has been in
//! flight for `idle_timeout`, and at once on shutdown when nothing is in flight (a half-sent
//! head or an idle HTTP/2 connection must not hold the drain). The watchdog, not hyper's
//! per-request head timer, bounds heads, so a request never arms a timer. The socket wrapper
//! ([`Io`]) applies `send_timeout` and gives the error answers hyper writes itself the JSON
//! error shape.

use std::convert::Infallible;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::task::AtomicWaker;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::client_io::{ClientConn, SendTimeout};
use crate::error::Error;
use crate::repoll::Repoll;
use crate::respond::error_http1_bytes;

/// While shutting down, how often a connection with a request in flight checks whether it
/// has become idle (and can be closed).
const STOP_POLL: Duration = Duration::from_millis(20);

/// The connection timeouts the watchdog and the socket wrapper enforce.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// No request at all within this of opening, or on HTTP/1 of the end of the last request:
    /// closed (covers sockets that never send a byte or half a head, and HTTP/2 connections
    /// that never open a stream).
    pub header_read_timeout: Duration,
    /// No request in flight for this long: closed.
    pub idle_timeout: Duration,
    /// A write that makes no progress for this long fails and closes the connection.
    pub send_timeout: Duration,
}

/// What the service, the response bodies and the socket wrapper tell the watchdog.
struct ConnState {
    /// Requests handed to the service whose response body is not yet dropped.
    active: AtomicUsize,
    /// Requests handed to the service so far.
    served: AtomicU64,
    /// When the last request ended, in milliseconds after `opened`.
    idle_since_ms: AtomicU64,
    /// Bytes were written that hyper has not flushed yet (a response still going out).
    unflushed: AtomicBool,
    /// The connection speaks HTTP/2 (its wait between requests is `idle_timeout` only).
    http2: AtomicBool,
    opened: Instant,
}

impl ConnState {
    fn new() -> Self {
        Self {
            active: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            unflushed: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            opened: Instant::now(),
        }
    }

    fn idle(&self) -> bool {
        self.active.load(Ordering::Acquire) == 0 && !self.unflushed.load(Ordering::Acquire)
    }

    /// How long the connection may wait for its next request once one has ended: an HTTP/1
    /// connection is waiting for a head, so `header_read_timeout` bounds it too.
    fn between_requests(&self, limits: &Limits) -> Duration {
        if self.http2.load(Ordering::Relaxed) {
            limits.idle_timeout
        } else {
            limits.idle_timeout.min(limits.header_read_timeout)
        }
    }

    /// When the watchdog should look again, or `None` to close the connection now. Checks
    /// are lazy (a connection is closed within twice its allowed wait at most) so that a
    /// request never touches a timer.
    fn next_check(&self, stopping: bool, limits: &Limits, now: Instant) -> Option<Instant> {
        if stopping {
            return (!self.idle()).then_some(now + STOP_POLL);
        }
        let wait = self.between_requests(limits);
        if !self.idle() {
            return Some(now + wait);
        }
        let due = if self.served.load(Ordering::Acquire) == 0 {
            self.opened + limits.header_read_timeout
        } else {
            self.opened + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire)) + wait
        };
        // A request may start and end before `due`: look again within `wait` at most.
        (now < due).then(|| due.min(now + wait))
    }
}

/// A response body that marks its request finished when hyper drops it.
pub struct Tracked<B> {
    inner: B,
    _active: Active,
}

struct Active(Arc<ConnState>);

impl Drop for Active {
    fn drop(&mut self) {
        let ms = self.0.opened.elapsed().as_millis() as u64;
        self.0.idle_since_ms.store(ms, Ordering::Release);
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `make()`'s future on the heap, written there as it is made. A request's future is ~12 KB
/// (every phase's state, nested), and hyper keeps a slot the size of the service's future for
/// every open connection: boxed, an idle connection does not hold 12 KB. `Box::pin(make())`
/// would build the future on the stack and copy it; `Box::write` into an allocation made first
/// lets the compiler build it in place.
pub(crate) fn boxed_in_place<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    let slot: Box<std::mem::MaybeUninit<F>> = Box::new_uninit();
    Box::into_pin(Box::write(slot, make()))
}

/// Serves one connection to its end (see the module docs). `stop` turning true starts the
/// graceful close: in-flight requests finish, then the connection is closed.
pub fn serve<H, F, B>(
    stream: TcpStream,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    handler: H,
) -> impl Future<Output = ()> + Send + 'static
where
    H: Fn(Request<Incoming>, &ClientConn) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let state = Arc::new(ConnState::new());
    let (send_timeout, client) = SendTimeout::new(limits.send_timeout);
    let service_state = state.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        if req.version() == http::Version::HTTP_2 {
            service_state.http2.store(true, Ordering::Relaxed);
        }
        service_state.active.fetch_add(1, Ordering::AcqRel);
        service_state.served.fetch_add(1, Ordering::AcqRel);
        let active = Active(service_state.clone());
        let fut = boxed_in_place(|| handler(req, &client));
        async move { Ok::<_, Infallible>(fut.await.map(|inner| Tracked { inner, _active: active })) }
    });
    let io = Io { stream, send_timeout, state: state.clone(), heads: 0, pending: None };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
    // Reading a request body makes the connection's task wake itself: poll it again at once
    // rather than through the scheduler (see `repoll`).
    Repoll::new(async move {
        tokio::pin!(conn);
        let check = tokio::time::sleep_until(state.opened + limits.header_read_timeout.min(limits.idle_timeout));
        tokio::pin!(check);
        let mut stopping = *stop.borrow();
        if stopping {
            conn.as_mut().graceful_shutdown();
            check.as_mut().reset(Instant::now());
        }
        let stop = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::pin!(stop);
        let watchdog = Arc::new(WatchdogWake { woken: AtomicBool::new(true), task: AtomicWaker::new() });
        let watchdog_waker = Waker::from(watchdog.clone());
        std::future::poll_fn(|cx| {
            if conn.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            watchdog.task.register(cx.waker());
            // The connection's own wake-ups (every read and write) leave the watchdog alone.
            if !watchdog.woken.swap(false, Ordering::AcqRel) {
                return Poll::Pending;
            }
            let mut watchdog_cx = Context::from_waker(&watchdog_waker);
            if !stopping && stop.as_mut().poll(&mut watchdog_cx).is_ready() {
                stopping = true;
                conn.as_mut().graceful_shutdown();
                check.as_mut().reset(Instant::now());
                // hyper acts on the shutdown when polled again.
                cx.waker().wake_by_ref();
            }
            while check.as_mut().poll(&mut watchdog_cx).is_ready() {
                match state.next_check(stopping, &limits, Instant::now()) {
                    Some(at) => check.as_mut().reset(at),
                    // Dropping hyper's connection closes the socket.
                    None => return Poll::Ready(()),
                }
            }
            Poll::Pending
        })
        .await;
    })
}

/// The waker the watchdog's timer and stop signal get: it notes that they have news, then
/// wakes the connection's task, so that only then are they polled.
struct WatchdogWake {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for WatchdogWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// The client socket as hyper sees it (one wrapper, so a read or write is one call deep). It
/// fails writes that make no progress for `send_timeout`, notes unflushed writes for the
/// watchdog, and replaces the bodiless 400/414/431 hyper answers a head it cannot parse with
/// the same status in the JSON error shape (hyper offers no hook for those answers).
struct Io {
    stream: TcpStream,
    send_timeout: SendTimeout,
    state: Arc<ConnState>,
    /// Final response heads written so far: one per served request, unless hyper made one.
    heads: u64,
    /// A replacement answer still to be written.
    pending: Option<Bytes>,
}

impl Io {
    fn drain_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some(buf) = self.pending.as_mut() {
            let written = Pin::new(&mut self.stream).poll_write(cx, buf);
            let n = ready!(self.send_timeout.check(cx, written))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            buf.advance(n);
            if buf.is_empty() {
                self.pending = None;
            }
        }
        Poll::Ready(Ok(()))
    }

    /// If `first` (the start of a write of `total` bytes) is a response head hyper made
    /// itself, the answer to write instead.
    fn replacement(&mut self, first: &[u8], total: usize) -> Option<Bytes> {
        let status = first.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
        if status[0] == b'1' {
            return None; // an interim answer (100 Continue): not a final head
        }
        if self.state.served.load(Ordering::Acquire) > self.heads {
            self.heads += 1;
            return None;
        }
        // Exactly hyper's shape: a short, bodiless 4xx head written alone.
        let own = status[0] == b'4'
            && total == first.len()
            && total < 512
            && first.ends_with(b"\r\n\r\n")
            && first.windows(19).any(|w| w.eq_ignore_ascii_case(b"content-length: 0\r\n"));
        let code: u16 = std::str::from_utf8(status).ok()?.parse().ok()?;
        own.then(|| error_http1_bytes(&Error::from_parse_status(code)))
    }
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.state.unflushed.store(true, Ordering::Release);
        ready!(this.drain_pending(cx))?;
        let total = bufs.iter().map(|b| b.len()).sum();
        if let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && let Some(answer) = this.replacement(first, total)
        {
            this.pending = Some(answer);
            // Written in full later by `poll_flush` if the socket is busy now.
            if let Poll::Ready(Err(e)) = this.drain_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(total));
        }
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.send_timeout.check(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain_pending(cx))?;
        let flushed = Pin::new(&mut this.stream).poll_flush(cx);
        ready!(this.send_timeout.check(cx, flushed))?;
        // hyper flushes the socket only once its own write buffer is empty.
        this.state.unflushed.store(false, Ordering::Release);
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain_pending(cx))?;
        let shut = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.send_timeout.check(cx, shut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        send_timeout: Duration::from_secs(60),
    };

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_request_closes_at_the_header_timeout() {
        let state = ConnState::new();
        let now = Instant::now();
        assert_eq!(state.next_check(false, &LIMITS, now), Some(now + LIMITS.header_read_timeout));
        assert_eq!(state.next_check(false, &LIMITS, now + LIMITS.header_read_timeout), None);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_is_counted_from_the_end_of_the_last_request() {
        let state = Arc::new(ConnState::new());
        // HTTP/2: the wait between requests is `idle_timeout` alone.
        state.http2.store(true, Ordering::Relaxed);
        state.active.fetch_add(1, Ordering::AcqRel);
        state.served.fetch_add(1, Ordering::AcqRel);
        tokio::time::advance(Duration::from_secs(100)).await;
        let now = Instant::now();
        assert_eq!(state.next_check(false, &LIMITS, now), Some(now + LIMITS.idle_timeout), "in flight: not idle");
        drop(Active(state.clone()));
        assert_eq!(state.next_check(false, &LIMITS, now), Some(now + LIMITS.idle_timeout));
        assert_eq!(state.next_check(false, &LIMITS, now + LIMITS.idle_timeout), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_http1_connection_waits_for_its_next_head_at_most_the_header_timeout() {
        let state = Arc::new(ConnState::new());
        state.active.fetch_add(1, Ordering::AcqRel);
        state.served.fetch_add(1, Ordering::AcqRel);
        let now = Instant::now();
        assert_eq!(state.next_check(false, &LIMITS, now), Some(now + LIMITS.header_read_timeout), "in flight");
        drop(Active(state.clone()));
        assert_eq!(state.next_check(false, &LIMITS, now), Some(now + LIMITS.header_read_timeout));
        assert_eq!(state.next_check(false, &LIMITS, now + LIMITS.header_read_timeout), None);
        state.http2.store(true, Ordering::Relaxed);
        let then = now + LIMITS.header_read_timeout;
        assert_eq!(state.next_check(false, &LIMITS, then), Some(now + LIMITS.idle_timeout), "HTTP/2: idle only");
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_does_not_read_fails_after_send_timeout() {
        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let (send_timeout, conn) = SendTimeout::new(Duration::from_secs(5));
        let mut io = Io { stream, send_timeout, state: Arc::new(ConnState::new()), heads: 0, pending: None };
        let chunk = vec![0u8; 64 * 1024];
        let started = tokio::time::Instant::now();
        let err = loop {
            if let Err(e) = io.write_all(&chunk).await {
                break e;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "writes never blocked");
        };
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(conn.stalled());
        assert!(started.elapsed() >= Duration::from_secs(5));
        drop(peer);
    }

    #[tokio::test(start_paused = true)]
    async fn on_shutdown_only_connections_with_work_in_hand_stay() {
        let state = ConnState::new();
        let now = Instant::now();
        assert_eq!(state.next_check(true, &LIMITS, now), None, "idle: closed at once");
        state.unflushed.store(true, Ordering::Release);
        assert_eq!(state.next_check(true, &LIMITS, now), Some(now + STOP_POLL), "a response still going out");
    }
}
