//! A call's timers, one `Sleep` per call reset from phase to phase: the answer (or a stream's
//! response head) within `request_timeout`, a stream's first event within
//! `first_token_timeout`, each later gap within `idle_timeout`, and all of it before the
//! request's total deadline. The stream pump relays a stream's events to the client side.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use crate::error::{Error, ErrorKind};
use crate::providers::ChunkStream;
use crate::{Permit, Shared, StreamItem};

/// Which bound a call missed: the `phase` label of `weir_timeouts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The answer, or a stream's response head (`request_timeout`).
    Response,
    /// A stream's first event (`first_token_timeout`).
    FirstToken,
    /// A gap between a stream's events (`idle_timeout`).
    Idle,
    /// The request's total deadline (`total_timeout`, `x-weir-timeout-ms`).
    Total,
}

impl Phase {
    /// Every phase, in label order.
    pub const ALL: [Self; 4] = [Self::Response, Self::FirstToken, Self::Idle, Self::Total];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Response => "response",
            Self::FirstToken => "first_token",
            Self::Idle => "idle",
            Self::Total => "total",
        }
    }
}

/// `base + bound`, but never past the request's `deadline`.
pub(crate) fn until(base: Instant, bound: Duration, deadline: Option<Instant>) -> Instant {
    let at = base + bound;
    deadline.map_or(at, |d| at.min(d))
}

impl Shared {
    /// The error of a call that missed `phase`'s bound (the total one when `deadline` passed),
    /// counted.
    pub(crate) fn timed_out(&self, phase: Phase, deadline: Option<Instant>) -> Error {
        let phase = if deadline.is_some_and(|d| Instant::now() >= d) { Phase::Total } else { phase };
        self.metrics.request_timeouts.increment(1);
        self.metrics.timeouts[phase as usize].increment(1);
        let cfg = &self.cfg;
        let ms = |d: Option<Duration>| d.unwrap_or(cfg.request_timeout).as_millis();
        let message = match phase {
            Phase::Response => {
                format!("provider {} did not answer within {}ms (request_timeout)", self.name, ms(None))
            }
            Phase::FirstToken => format!(
                "provider {} sent no stream event within {}ms (first_token_timeout)",
                self.name,
                ms(cfg.first_token_timeout)
            ),
            Phase::Idle => format!(
                "provider {} sent nothing for {}ms mid-stream (idle_timeout); the stream is cut",
                self.name,
                ms(cfg.idle_timeout)
            ),
            Phase::Total => {
                format!("the request's total timeout passed while waiting for provider {}", self.name)
            }
        };
        Error::new(ErrorKind::UpstreamTimeout, message)
    }

    /// Waits for a stream's first event, until `sleep` (reset to the first-token bound) fires.
    /// `None`: the shutdown deadline passed.
    pub(crate) async fn first_event(
        &self,
        events: &mut ChunkStream,
        mut sleep: Pin<&mut Sleep>,
        started: Instant,
        deadline: Option<Instant>,
    ) -> Option<Result<Option<Bytes>, Error>> {
        let bound = self.cfg.first_token_timeout.unwrap_or(self.cfg.request_timeout);
        sleep.as_mut().reset(until(started, bound, deadline));
        let next = std::panic::AssertUnwindSafe(events.next()).catch_unwind();
        let item = tokio::select! {
            biased;
            () = self.stop.wait() => return None,
            r = next => r,
            () = sleep => return Some(Err(self.timed_out(Phase::FirstToken, deadline))),
        };
        Some(match item {
            Err(panic) => Err(self.panicked(&panic)),
            Ok(None) => Ok(None),
            Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
            Ok(Some(Err(e))) => Err(e),
        })
    }
}

/// Relays a stream to the client side, its `first` event already read, until it ends, fails,
/// stalls past `idle_timeout` or the request's `deadline`, the client side goes away (the
/// client left, or stopped reading for `server.send_timeout`; then the upstream read stops at
/// once), or the shutdown deadline passes (then the channel closes without an end, which the
/// relay reports as cut), even while waiting for the client side to take a chunk. Holds the
/// stream's slot until its last chunk is handed over. One timer, reset after each event.
pub(crate) async fn pump(
    held: Permit,
    mut stream: ChunkStream,
    first: Bytes,
    tx: mpsc::Sender<Result<StreamItem, Error>>,
    deadline: Option<Instant>,
) {
    let pool = held.pool.clone();
    let idle = pool.cfg.idle_timeout.unwrap_or(pool.cfg.request_timeout);
    let stop = pool.stop.wait();
    tokio::pin!(stop);
    if !forward(&pool, &tx, stop.as_mut(), first).await {
        return;
    }
    let sleep = tokio::time::sleep_until(until(Instant::now(), idle, deadline));
    tokio::pin!(sleep);
    loop {
        let next = std::panic::AssertUnwindSafe(stream.next()).catch_unwind();
        let item = tokio::select! {
            biased;
            () = tx.closed() => {
                pool.metrics.cancelled.increment(1);
                return;
            }
            () = &mut stop => return,
            r = next => match r {
                Err(panic) => Some(Err(pool.panicked(&panic))),
                Ok(item) => item,
            },
            () = &mut sleep => Some(Err(pool.timed_out(Phase::Idle, deadline))),
        };
        match item {
            None => {
                pool.health.record_ok();
                drop(stream);
                drop(held); // The slot is free before the client reads the end.
                let _ = tx.send(Ok(StreamItem::End)).await;
                return;
            }
            Some(Err(e)) => {
                pool.health.record_error(&e);
                drop(stream);
                drop(held); // The slot is free before the client reads the error.
                let _ = tx.send(Err(e)).await;
                return;
            }
            Some(Ok(chunk)) => {
                if !forward(&pool, &tx, stop.as_mut(), chunk).await {
                    return;
                }
                // Later, so the timer's entry only moves (no new registration).
                sleep.as_mut().reset(until(Instant::now(), idle, deadline));
            }
        }
    }
}

/// Hands one chunk to the client side; false when it is gone or the shutdown deadline passed.
/// Waiting for room is bounded by the relay (`send_timeout`) and by `stop`.
async fn forward(
    pool: &Shared,
    tx: &mpsc::Sender<Result<StreamItem, Error>>,
    stop: Pin<&mut impl std::future::Future<Output = ()>>,
    chunk: Bytes,
) -> bool {
    let sent = tokio::select! {
        biased;
        () = stop => return false,
        sent = tx.send(Ok(StreamItem::Chunk(chunk))) => sent,
    };
    if sent.is_err() {
        pool.metrics.cancelled.increment(1);
    }
    sent.is_ok()
}
