//! Bodies at the edges of the request path: reading a client body under a byte limit, and the
//! response body type (a whole buffer, or a stream of SSE events fed by a pool worker).

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
    /// Chunks pushed by a producer task; the stream ends when the sender is dropped.
    /// Dropping this body (client went away) closes the channel, which the producer sees.
    Stream(mpsc::Receiver<Bytes>),
}

impl ResponseBody {
    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::Full(None)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Self::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Stream(_) => SizeHint::default(),
        }
    }
}

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
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, Error>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    // A body already in hand completes on the first poll, before the timer is registered.
    tokio::time::timeout(timeout, read_within_limit(body, content_length, limit)).await.map_err(|_| {
        Error::new(
            ErrorKind::BodyTimeout,
            format!("the request body did not arrive within {timeout:?} (server.body_read_timeout)"),
        )
    })?
}

async fn read_within_limit<B>(body: B, content_length: Option<u64>, limit: usize) -> Result<Bytes, Error>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let too_large = || {
        Error::new(
            ErrorKind::BodyTooLarge,
            format!("request body exceeds the limit of {limit} bytes (server.max_body_bytes)"),
        )
    };
    if content_length.is_some_and(|len| len > limit as u64) {
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
        if total > limit {
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

    #[tokio::test]
    async fn rejects_declared_oversize_without_reading() {
        let body = Full::new(Bytes::from_static(b"{}"));
        let err = read_limited(body, Some(11), 10, LONG).await.unwrap_err();
        assert_eq!(err.status(), 413);
    }

    #[tokio::test]
    async fn rejects_streamed_oversize_while_reading() {
        let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
            (0..5).map(|_| Ok(Frame::data(Bytes::from_static(b"0123456789")))).collect();
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        let err = read_limited(body, None, 25, LONG).await.unwrap_err();
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
        let err = read_limited(body, None, 10, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::BodyTimeout);
        assert_eq!(err.status(), 408);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn joins_frames() {
        let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
            vec![Ok(Frame::data(Bytes::from_static(b"ab"))), Ok(Frame::data(Bytes::from_static(b"cd")))];
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        assert_eq!(read_limited(body, None, 10, LONG).await.unwrap(), Bytes::from_static(b"abcd"));
    }
}
