//! Bodies at the edges of the request path: reading a client body under a byte limit, and the
//! response body type (a whole buffer, or a stream of SSE events fed by a pool worker). A
//! stream whose producer stops before its last frame (shutdown, a stalled client) fails the
//! body, so hyper aborts the response instead of ending it as if it were complete.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use crate::error::{Error, ErrorKind};

/// Response body: either one buffer, or chunks relayed as they arrive (never buffered whole).
pub enum ResponseBody {
    /// A complete body (JSON responses, errors).
    Full(Option<Bytes>),
    /// Chunks pushed by a producer task. Dropping this body (client went away) closes the
    /// channel, which the producer sees.
    Stream {
        /// The producer's frames.
        rx: mpsc::Receiver<BodyFrame>,
        /// The last frame came: the sender's drop ends the body cleanly.
        ended: bool,
    },
}

/// One frame of a streamed body. The producer ends a complete stream with `Last`; a channel
/// that closes without one was cut, and the body fails with [`StreamCut`].
#[derive(Debug)]
pub enum BodyFrame {
    /// More follows.
    Data(Bytes),
    /// The final frame.
    Last(Bytes),
}

/// A streamed body's producer stopped before its last frame.
#[derive(Debug, thiserror::Error)]
#[error("the response stream was cut before its end")]
pub struct StreamCut;

impl ResponseBody {
    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }

    /// A streamed body fed through `rx`.
    pub fn stream(rx: mpsc::Receiver<BodyFrame>) -> Self {
        Self::Stream { rx, ended: false }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::Full(None)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = StreamCut;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream { rx, ended } => rx.poll_recv(cx).map(|frame| match frame {
                Some(BodyFrame::Data(b)) => Some(Ok(Frame::data(b))),
                Some(BodyFrame::Last(b)) => {
                    *ended = true;
                    Some(Ok(Frame::data(b)))
                }
                None if *ended => None,
                None => Some(Err(StreamCut)),
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Self::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Stream { .. } => SizeHint::default(),
        }
    }
}

/// A body size limit and the setting that sets it, which a 413 names.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// Most bytes accepted.
    pub bytes: usize,
    /// The config key, e.g. `server.max_body_bytes`.
    pub key: &'static str,
}

impl Limit {
    /// The 413 for a body over this limit.
    pub fn exceeded(self) -> Error {
        Error::new(
            ErrorKind::BodyTooLarge,
            format!("request body exceeds the limit of {} bytes ({})", self.bytes, self.key),
        )
    }
}

/// How many times [`read_limited`] looks for a body without a timer.
const PROMPT_LOOKS: u32 = 3;

/// Reads a request body, failing with 413 as soon as it exceeds `limit` bytes (checked against
/// `Content-Length` first, then while reading, so an oversized body is never buffered whole),
/// and with 408 if it has not all arrived within `timeout` (a body that never ends would
/// otherwise hold its buffer and connection for good).
///
/// # Errors
/// [`ErrorKind::BodyTooLarge`] over the limit; [`ErrorKind::BodyTimeout`] past `timeout`;
/// [`ErrorKind::InvalidRequest`] if the client aborts the upload.
pub async fn read_limited<B>(
    body: B,
    content_length: Option<u64>,
    limit: Limit,
    timeout: Duration,
) -> Result<Bytes, Error>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let read = read_within_limit(body, content_length, limit);
    tokio::pin!(read);
    // hyper hands a body over as it reads it, in the same turn of the connection's task: look
    // again (waking the task, so it is polled again at once) a few times before arming a
    // timer, so that a body that is already there costs none.
    let mut looks = 0;
    let prompt = std::future::poll_fn(|cx| match read.as_mut().poll(cx) {
        Poll::Ready(r) => Poll::Ready(Some(r)),
        Poll::Pending if looks < PROMPT_LOOKS => {
            looks += 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        Poll::Pending => Poll::Ready(None),
    })
    .await;
    if let Some(r) = prompt {
        return r;
    }
    tokio::time::timeout(timeout, read).await.map_err(|_| {
        Error::new(
            ErrorKind::BodyTimeout,
            format!("the request body did not arrive within {timeout:?} (server.body_read_timeout)"),
        )
    })?
}

async fn read_within_limit<B>(body: B, content_length: Option<u64>, limit: Limit) -> Result<Bytes, Error>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let too_large = || limit.exceeded();
    if content_length.is_some_and(|len| len > limit.bytes as u64) {
        return Err(too_large());
    }
    let mut body = body;
    let mut first: Option<Bytes> = None;
    let mut buf: Option<BytesMut> = None;
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| Error::new(ErrorKind::InvalidRequest, format!("failed to read request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        total += data.len();
        if total > limit.bytes {
            return Err(too_large());
        }
        // One frame (the common case) is kept as-is with no copy.
        match (&mut first, &mut buf) {
            (None, None) => first = Some(data),
            (Some(f), None) => {
                let mut b = BytesMut::with_capacity(content_length.map_or(f.len() * 2, |l| l as usize));
                b.extend_from_slice(f);
                b.extend_from_slice(&data);
                buf = Some(b);
                first = None;
            }
            (_, Some(b)) => b.extend_from_slice(&data),
        }
    }
    Ok(match (first, buf) {
        (_, Some(b)) => b.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    const LONG: Duration = Duration::from_secs(60);

    fn lim(bytes: usize) -> Limit {
        Limit { bytes, key: "test.limit" }
    }

    #[tokio::test]
    async fn rejects_declared_oversize_without_reading() {
        let body = Full::new(Bytes::from_static(b"{}"));
        let err = read_limited(body, Some(11), lim(10), LONG).await.unwrap_err();
        assert_eq!(err.status(), 413);
    }

    #[tokio::test]
    async fn rejects_streamed_oversize_while_reading() {
        let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
            (0..5).map(|_| Ok(Frame::data(Bytes::from_static(b"0123456789")))).collect();
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        let err = read_limited(body, None, lim(25), LONG).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::BodyTooLarge);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_is_408_at_the_timeout() {
        let first: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
            vec![Ok(Frame::data(Bytes::from_static(b"{")))];
        let body = StreamBody::new(futures_util::StreamExt::chain(
            futures_util::stream::iter(first),
            futures_util::stream::pending(),
        ));
        let started = tokio::time::Instant::now();
        let err = read_limited(body, None, lim(10), Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::BodyTimeout);
        assert_eq!(err.status(), 408);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_stream_ends_cleanly_only_after_its_last_frame() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(BodyFrame::Data(Bytes::from_static(b"a"))).await.unwrap();
        tx.send(BodyFrame::Last(Bytes::from_static(b"b"))).await.unwrap();
        drop(tx);
        assert_eq!(ResponseBody::stream(rx).collect().await.unwrap().to_bytes(), Bytes::from_static(b"ab"));

        let (tx, rx) = mpsc::channel(4);
        tx.send(BodyFrame::Data(Bytes::from_static(b"a"))).await.unwrap();
        drop(tx);
        assert!(ResponseBody::stream(rx).collect().await.is_err(), "cut before its last frame");
    }

    #[tokio::test]
    async fn joins_frames() {
        let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
            vec![Ok(Frame::data(Bytes::from_static(b"ab"))), Ok(Frame::data(Bytes::from_static(b"cd")))];
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        assert_eq!(read_limited(body, None, lim(10), LONG).await.unwrap(), Bytes::from_static(b"abcd"));
    }
}
