//! A queued request and the small atomic state that decides, exactly once, whether a worker
//! runs it or its waiter gave up (queue timeout, eviction, shutdown).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::providers::ProviderRequest;

/// One item of a relayed stream. The worker always ends a stream it finished with `End` (or an
/// `Err`), so a channel that closes without either was cut (the worker was stopped at the end
/// of a shutdown) and the client is told so instead of seeing a normal `[DONE]`.
#[derive(Debug)]
pub enum StreamItem {
    /// One chunk payload (an OpenAI `chat.completion.chunk` JSON).
    Chunk(Bytes),
    /// The upstream stream finished normally.
    End,
}

/// What a worker hands back to the waiting handler.
pub enum Reply {
    /// A whole JSON body.
    Full {
        /// Upstream body.
        body: Bytes,
        /// Time spent in the upstream call.
        upstream: Duration,
    },
    /// A stream of chunk payloads; an `Err` item ends it.
    Stream {
        /// Chunks as the worker reads them; dropping this stops the upstream read.
        chunks: mpsc::Receiver<Result<StreamItem, Error>>,
        /// Time until the upstream response head.
        upstream: Duration,
    },
}

/// One request waiting in a pool's queue.
pub(super) struct Job {
    pub req: ProviderRequest,
    pub reply: oneshot::Sender<Result<Reply, Error>>,
    pub enqueued: Instant,
    pub state: JobState,
}

const QUEUED: u8 = 0;
const CLAIMED: u8 = 1;
const ABANDONED: u8 = 2;

/// Shared between the job and its waiter; one transition out of `QUEUED` wins.
#[derive(Clone)]
pub(super) struct JobState(Arc<AtomicU8>);

impl JobState {
    pub fn new() -> Self {
        Self(Arc::new(AtomicU8::new(QUEUED)))
    }

    /// A worker takes the job; false if the waiter already gave up.
    pub fn claim(&self) -> bool {
        self.0.compare_exchange(QUEUED, CLAIMED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// The waiter (or an eviction) gives up; false if a worker already claimed it.
    pub fn abandon(&self) -> bool {
        self.0.compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Whether two handles are the same job.
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
