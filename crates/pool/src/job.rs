//! What a pool hands back, and the small atomic state that decides, exactly once, whether a
//! waiting request gets a worker or gave up (queue timeout, eviction, shutdown).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::error::Error;

/// One item of a relayed stream. The worker always ends a stream it finished with `End` (or an
/// `Err`), so a channel that closes without either was cut (the pool stopped it at the end of
/// a shutdown) and the client is told so instead of seeing a normal `[DONE]`.
#[derive(Debug)]
pub enum StreamItem {
    /// One chunk payload (an OpenAI `chat.completion.chunk` JSON).
    Chunk(Bytes),
    /// The upstream stream finished normally.
    End,
}

/// What a pool call hands back to the handler (the upstream time is reported apart, by
/// [`super::Pool::run`], for failures too).
pub enum Reply {
    /// A whole JSON body.
    Full {
        /// Upstream body.
        body: Bytes,
        /// The tokens the upstream reports.
        usage: Option<crate::providers::usage::Usage>,
        /// Upstream response headers relayed to the client.
        relay: crate::providers::RelayHeaders,
    },
    /// A stream of chunk payloads; an `Err` item ends it.
    Stream {
        /// Chunks as the worker reads them; dropping this stops the upstream read.
        chunks: mpsc::Receiver<Result<StreamItem, Error>>,
        /// The pool's shutdown deadline: the relay cuts the stream there even while it waits
        /// for its client.
        shutdown: super::ShutdownSignal,
        /// Upstream response headers relayed to the client.
        relay: crate::providers::RelayHeaders,
    },
}

const QUEUED: u8 = 0;
const CLAIMED: u8 = 1;
const ABANDONED: u8 = 2;
const EVICTED: u8 = 3;

/// Shared between a waiter's place in the line and its request; one transition out of
/// `QUEUED` wins.
#[derive(Clone)]
pub struct JobState(Arc<AtomicU8>);

impl JobState {
    pub fn new() -> Self {
        Self(Arc::new(AtomicU8::new(QUEUED)))
    }

    /// A worker is handed over; false if the waiter already gave up.
    pub fn claim(&self) -> bool {
        self.0.compare_exchange(QUEUED, CLAIMED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// The waiter gives up (queue timeout, shutdown); false if a worker already claimed it.
    pub fn abandon(&self) -> bool {
        self.0.compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// A newer request pushes the waiter out of a full line (`drop-oldest`); false if a
    /// worker already claimed it or it gave up.
    pub fn evict(&self) -> bool {
        self.0.compare_exchange(QUEUED, EVICTED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Whether the waiter was evicted.
    pub fn evicted(&self) -> bool {
        self.0.load(Ordering::Acquire) == EVICTED
    }

    /// Whether two handles are the same job.
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
