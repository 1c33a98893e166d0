//! The idle HTTP/1.1 connections of one plain-http provider, kept per serving thread
//! ([`Affinity`]), like nginx's upstream `keepalive` per worker. A request takes the most
//! recently used idle connection of its own thread, so the connection's I/O task always runs
//! on the request's thread (no cross-thread wake-ups); each stack's mutex is touched only by
//! its thread and the sweeper, so it is never contended. A connection goes back only after an
//! exchange that ended cleanly ([`Lanes::put_back`]); dropping a checked-out [`Conn`] (the call
//! was cancelled, timed out or failed mid-answer) closes it. A provider that a reload replaced
//! or removed closes its idle ones at once ([`Lanes::retire`]) and keeps none after.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

use super::{Body, IDLE_TIMEOUT};
use crate::affinity::Affinity;

/// How often idle connections are checked for one unused for [`IDLE_TIMEOUT`]. One timer per
/// provider: arming one per request cost ~1k instructions.
const IDLE_SWEEP: Duration = Duration::from_secs(30);

/// One provider's idle connections.
pub struct Lanes {
    /// One stack per serving thread, most recently used last.
    by_thread: Box<[Mutex<Vec<Idle>>]>,
    /// Requests that run on no serving thread (tests, benches).
    other: Mutex<Vec<Idle>>,
    /// Idle connections on all stacks, kept at most `cap` (the provider's pool size: no more
    /// exchanges than that run at once, so no more idle connections are ever needed).
    idle: AtomicUsize,
    cap: usize,
    /// Set once the provider is retired: connections are no longer kept.
    retired: AtomicBool,
}

struct Idle {
    sender: SendRequest<Body>,
    last_used: Instant,
}

/// A connection checked out for one exchange, on the thread it was taken for. Dropping it
/// closes the connection (its I/O task ends once the sender is gone).
pub struct Conn {
    pub(super) sender: SendRequest<Body>,
    here: Affinity,
}

impl Conn {
    pub(super) fn new(sender: SendRequest<Body>, here: Affinity) -> Self {
        Self { sender, here }
    }
}

impl Lanes {
    /// Stacks for `threads` serving threads, keeping at most `cap` idle connections in all,
    /// and (inside a tokio runtime) the sweeper that closes those idle past [`IDLE_TIMEOUT`].
    pub fn new(threads: usize, cap: usize) -> Arc<Self> {
        let lanes = Arc::new(Self {
            by_thread: (0..threads).map(|_| Mutex::default()).collect(),
            other: Mutex::default(),
            idle: AtomicUsize::new(0),
            cap,
            retired: AtomicBool::new(false),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(sweep_idle(Arc::downgrade(&lanes)));
        }
        lanes
    }

    fn stack(&self, here: Affinity) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        let m = here.index().and_then(|i| self.by_thread.get(i)).unwrap_or(&self.other);
        // Only Vec pushes and pops happen under the lock: a poisoned one is still whole.
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The most recently used idle connection of `here` that is still open.
    pub fn take(&self, here: Affinity) -> Option<Conn> {
        let mut stack = self.stack(here);
        while let Some(idle) = stack.pop() {
            self.idle.fetch_sub(1, Ordering::Relaxed);
            if !idle.sender.is_closed() {
                return Some(Conn { sender: idle.sender, here });
            }
        }
        None
    }

    /// Keeps `conn` for the next request of its thread after an exchange that ended cleanly,
    /// unless it closed or the cap is reached.
    pub fn put_back(&self, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        if self.idle.fetch_add(1, Ordering::Relaxed) >= self.cap {
            self.idle.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let mut stack = self.stack(conn.here);
        // Read under the lock `retire` drains this stack with: no connection slips in after.
        if self.retired.load(Ordering::Relaxed) {
            drop(stack);
            self.idle.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        stack.push(Idle { sender: conn.sender, last_used: Instant::now() });
    }

    /// Closes every idle connection and keeps none from now on: a reload replaced or removed
    /// the provider, but requests in flight on the old snapshot keep it alive (for as long as
    /// a stream lasts), and its idle sockets would wait for the sweeper. Those requests finish
    /// on the connections they hold, which close after them.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        for m in self.by_thread.iter().chain(std::iter::once(&self.other)) {
            let drained = std::mem::take(&mut *m.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
            self.idle.fetch_sub(drained.len(), Ordering::Relaxed);
        }
    }

    /// Idle connections now.
    pub fn idle(&self) -> usize {
        self.idle.load(Ordering::Relaxed)
    }

    /// Closes the connections idle for [`IDLE_TIMEOUT`] or closed by the provider.
    fn sweep(&self, now: Instant) {
        for m in self.by_thread.iter().chain(std::iter::once(&self.other)) {
            let mut stack = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let before = stack.len();
            stack.retain(|i| !i.sender.is_closed() && now.duration_since(i.last_used) < IDLE_TIMEOUT);
            self.idle.fetch_sub(before - stack.len(), Ordering::Relaxed);
        }
    }
}

/// A stream's connection: handed back when the stream ended cleanly ([`Returning::done`]),
/// closed when the stream is dropped before (the client left, or the read failed).
pub struct Returning {
    lanes: Arc<Lanes>,
    conn: Conn,
}

impl Returning {
    /// Ties `conn` to `lanes` for the life of a stream.
    pub fn new(lanes: Arc<Lanes>, conn: Conn) -> Self {
        Self { lanes, conn }
    }

    /// The stream ended cleanly: the connection may carry another request.
    pub fn done(self) {
        self.lanes.put_back(self.conn);
    }
}

/// Closes idle connections unused for [`IDLE_TIMEOUT`], as the pooled client closes its idle
/// ones; ends with the provider.
async fn sweep_idle(lanes: Weak<Lanes>) {
    loop {
        tokio::time::sleep(IDLE_SWEEP).await;
        let Some(lanes) = lanes.upgrade() else { return };
        lanes.sweep(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::TokioIo;

    /// A listener that keeps each connection until the client closes it, counting closes.
    async fn server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        use tokio::io::AsyncReadExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let closed = Arc::new(AtomicUsize::new(0));
        let count = closed.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while s.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                    count.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        (addr, closed)
    }

    async fn connect(addr: std::net::SocketAddr, here: Affinity) -> Conn {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        Conn::new(sender, here)
    }

    #[tokio::test]
    async fn a_connection_goes_back_to_its_own_threads_stack() {
        let (addr, _) = server().await;
        let lanes = Lanes::new(2, 4);
        lanes.put_back(connect(addr, Affinity::shard(0)).await);
        assert_eq!(lanes.idle(), 1);
        assert!(lanes.take(Affinity::shard(1)).is_none(), "another thread's connection is not taken");
        assert!(lanes.take(Affinity::NONE).is_none());
        let conn = lanes.take(Affinity::shard(0)).expect("its own thread takes it");
        assert_eq!(lanes.idle(), 0);
        // Off the serving threads (and past the known ones) requests share one stack.
        lanes.put_back(Conn { here: Affinity::shard(7), ..conn });
        assert!(lanes.take(Affinity::NONE).is_some());
    }

    #[tokio::test]
    async fn idle_connections_are_capped_and_a_dropped_one_is_closed() {
        let (addr, closed) = server().await;
        let lanes = Lanes::new(1, 1);
        let (a, b) = (connect(addr, Affinity::shard(0)).await, connect(addr, Affinity::shard(0)).await);
        lanes.put_back(a);
        lanes.put_back(b);
        assert_eq!(lanes.idle(), 1, "at most `cap` idle connections");
        let wait_closed = |n| {
            let closed = closed.clone();
            tokio::time::timeout(Duration::from_secs(5), async move {
                while closed.load(Ordering::SeqCst) < n {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        wait_closed(1).await.expect("the connection over the cap was closed");
        // A checked-out connection dropped (an exchange cancelled mid-way) is closed too.
        drop(lanes.take(Affinity::shard(0)).expect("the kept one"));
        wait_closed(2).await.expect("a dropped connection was closed");
        assert_eq!(lanes.idle(), 0);
    }

    #[tokio::test]
    async fn retired_lanes_close_their_idle_connections_and_keep_no_more() {
        let (addr, closed) = server().await;
        let lanes = Lanes::new(2, 4);
        let in_flight = connect(addr, Affinity::shard(1)).await;
        lanes.put_back(connect(addr, Affinity::shard(0)).await);
        lanes.put_back(connect(addr, Affinity::NONE).await);
        lanes.retire();
        assert_eq!(lanes.idle(), 0);
        let wait_closed = |n| {
            let closed = closed.clone();
            tokio::time::timeout(Duration::from_secs(5), async move {
                while closed.load(Ordering::SeqCst) < n {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        wait_closed(2).await.expect("the idle connections were closed at once");
        // An exchange that was under way when the provider retired still ends cleanly; its
        // connection is closed instead of kept.
        lanes.put_back(in_flight);
        assert_eq!(lanes.idle(), 0);
        wait_closed(3).await.expect("the connection handed back was closed");
    }
}
