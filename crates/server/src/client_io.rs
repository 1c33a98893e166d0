//! nginx's `send_timeout` for a client socket: a write that makes no progress for
//! `server.send_timeout` fails, so hyper closes the connection. A client that stops reading
//! therefore cannot keep its response, or the pool worker streaming it, forever; the stall is
//! noted on the connection so the stream relay counts it as `client_stalled`. The socket
//! wrapper in [`crate::conn`] runs every write result through [`SendTimeout::check`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// What the request handlers know of their connection: whether a write to it timed out.
#[derive(Clone, Default)]
pub struct ClientConn(Arc<AtomicBool>);

impl ClientConn {
    /// Whether the client stopped reading for `send_timeout` and the connection was closed.
    pub fn stalled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// One connection's write timeout: armed when a write cannot make progress, disarmed by any
/// progress.
pub struct SendTimeout {
    timeout: Duration,
    /// Made when a write first waits (most connections never do), then reused.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
    conn: ClientConn,
}

impl SendTimeout {
    /// The timeout of one connection, and the handle its request handlers get.
    pub fn new(timeout: Duration) -> (Self, ClientConn) {
        let conn = ClientConn::default();
        (Self { timeout, timer: None, armed: false, conn: conn.clone() }, conn)
    }

    /// Passes on the result `r` of a write-side poll. A wait arms the timer (must be called
    /// inside a tokio runtime); once it fires, the write fails with `TimedOut`.
    pub fn check<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.armed = false;
            return r;
        }
        if !self.armed {
            let deadline = Instant::now() + self.timeout;
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        let timer = self.timer.as_mut().expect("armed above");
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.armed = false;
        self.conn.0.store(true, Ordering::Relaxed);
        tracing::debug!("client stopped reading for send_timeout; closing its connection");
        Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
    }
}
