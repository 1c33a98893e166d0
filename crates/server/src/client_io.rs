//! The client socket as hyper sees it, with nginx's `send_timeout`: a write that makes no
//! progress for `server.send_timeout` fails, so hyper closes the connection. A client that
//! stops reading therefore cannot keep its response, or the pool worker streaming it, forever;
//! the stall is noted on the connection so the stream relay counts it as `client_stalled`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_io_timeout::TimeoutWriter;

/// What the request handlers know of their connection: whether a write to it timed out.
#[derive(Clone, Default)]
pub struct ClientConn(Arc<AtomicBool>);

impl ClientConn {
    /// Whether the client stopped reading for `send_timeout` and the connection was closed.
    pub fn stalled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A client connection's socket; writes time out after `send_timeout` without progress.
pub struct ClientIo {
    // Boxed once per connection: the timer inside is not `Unpin`, and hyper wants `Unpin` I/O.
    io: Pin<Box<TimeoutWriter<TcpStream>>>,
    conn: ClientConn,
}

impl ClientIo {
    /// Wraps an accepted socket. Must be called inside a tokio runtime (the timer is made here).
    pub fn new(stream: TcpStream, send_timeout: Duration) -> (Self, ClientConn) {
        let mut io = TimeoutWriter::new(stream);
        io.set_timeout(Some(send_timeout));
        let conn = ClientConn::default();
        (Self { io: Box::pin(io), conn: conn.clone() }, conn)
    }

    fn note<T>(&self, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(e)) = &r
            && e.kind() == io::ErrorKind::TimedOut
        {
            self.conn.0.store(true, Ordering::Relaxed);
            tracing::debug!("client stopped reading for send_timeout; closing its connection");
        }
        r
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.io.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = self.io.as_mut().poll_write(cx, buf);
        self.note(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = self.io.as_mut().poll_write_vectored(cx, bufs);
        self.note(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = self.io.as_mut().poll_flush(cx);
        self.note(r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = self.io.as_mut().poll_shutdown(cx);
        self.note(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_does_not_read_fails_after_send_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (mut io, conn) = ClientIo::new(server, Duration::from_secs(5));
        let chunk = vec![0u8; 64 * 1024];
        let started = tokio::time::Instant::now();
        let err = loop {
            if let Err(e) = io.write_all(&chunk).await {
                break e;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "writes never blocked");
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(conn.stalled());
        assert!(started.elapsed() >= Duration::from_secs(5));
        drop(peer);
    }
}
