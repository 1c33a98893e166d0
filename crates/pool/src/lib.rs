//! Per-provider pools: bounded admission in front of a provider. A pool has `workers` slots;
//! at most that many calls are in flight to the provider. Admission ([`Pool::admit`]) gives
//! the request a free slot, or a place in a bounded line under the overflow policy; the
//! [`Permit`] then runs one call ([`Pool::run`]) on the request's own task (no hand-off to a
//! worker task, which cost 15-20% of the gateway's CPU per request) under `request_timeout`,
//! catching panics and stopping the call when the request is dropped. A slot that comes back
//! is handed to the oldest waiter. A slow provider fills only its own line. The pool does not
//! know what the call does: connections are the provider's, attempts the policy's.

mod health;
mod job;
mod metrics;
mod queue;
pub mod requests;
mod scale;
mod stream;

use weir_config as config;
use weir_providers as providers;
use weir_types::{error, format};

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

pub use health::{Health, HealthState};
pub use job::{Reply, StreamItem};
use metrics::PoolMetrics;
use queue::Admit;
pub use queue::{Queue, Refused};
pub use stream::Phase;

use crate::config::{Overflow, PoolConfig};
use crate::error::{Error, ErrorKind};
use crate::providers::ProviderResponse;

/// Chunks buffered between a streaming worker and the client relay; bounds memory per stream
/// and makes a slow client slow down the upstream read instead of growing a buffer.
const STREAM_BUFFER: usize = 16;

/// One provider's pool.
pub struct Pool {
    shared: Arc<Shared>,
    requests: Arc<crate::requests::RequestMetrics>,
    /// The name as an `x-weir-provider` header value, made once (`None` if the name is not a
    /// valid header value).
    name_header: Option<http::HeaderValue>,
}

/// What running calls and streams need of their pool.
struct Shared {
    name: Arc<str>,
    cfg: PoolConfig,
    queue: Queue<Slot>,
    metrics: PoolMetrics,
    health: Health,
    /// Fired at the shutdown deadline: calls still running answer 503 `shutting_down`.
    stop: Arc<Stop>,
    /// Signalled when a slot comes back to a closed pool (a drain waits for all of them).
    returned: Notify,
    /// Requests waiting for a slot or holding one (what `least_outstanding` balancing reads).
    outstanding: AtomicUsize,
    /// Slots now: `workers`, or what adaptive scaling made of it.
    workers: AtomicUsize,
    /// Longest wait in the line since the scaler last looked, in microseconds (adaptive
    /// pools only).
    longest_wait_us: std::sync::atomic::AtomicU64,
}

/// One unit of the provider's concurrency ("worker" in the config and metrics).
struct Slot;

impl Pool {
    /// Makes the pool of provider `name`; `models` (the provider's configured models and
    /// aliases) get a `model` label value of their own in its request metrics.
    pub fn start(name: &str, models: &[&str], cfg: PoolConfig) -> Arc<Self> {
        let name: Arc<str> = Arc::from(name);
        let slots = (0..cfg.workers).map(|_| Slot).collect();
        let requests = Arc::new(crate::requests::RequestMetrics::new(&name, models.iter().copied()));
        let shared = Arc::new(Shared {
            metrics: PoolMetrics::new(&name, cfg.workers),
            queue: Queue::new(slots, cfg.queue),
            health: Health::default(),
            stop: Arc::default(),
            returned: Notify::new(),
            outstanding: AtomicUsize::new(0),
            workers: AtomicUsize::new(cfg.workers),
            longest_wait_us: Default::default(),
            name,
            cfg,
        });
        if shared.cfg.max_workers.is_some() {
            tokio::spawn(scale::run(Arc::downgrade(&shared)));
        }
        let name_header = http::HeaderValue::from_str(&shared.name).ok();
        Arc::new(Self { shared, requests, name_header })
    }

    /// Provider name.
    pub fn name(&self) -> &Arc<str> {
        &self.shared.name
    }

    /// Provider name as a response header value (`x-weir-provider`), if it is a valid one.
    pub fn name_header(&self) -> Option<&http::HeaderValue> {
        self.name_header.as_ref()
    }

    /// The pool's shutdown deadline, for a stream that does not come from a provider call (a
    /// cached answer replayed) but must end like one.
    pub fn shutdown_signal(&self) -> ShutdownSignal {
        ShutdownSignal(self.shared.stop.clone())
    }

    /// Pool settings.
    pub fn config(&self) -> &PoolConfig {
        &self.shared.cfg
    }

    /// The request metrics `finish` records for this provider.
    pub fn request_metrics(&self) -> &Arc<crate::requests::RequestMetrics> {
        &self.requests
    }

    /// Health as reported by `/ready`.
    pub fn health(&self) -> &Health {
        &self.shared.health
    }

    /// Slots now (adaptive pools grow and shrink between `min_workers` and `max_workers`).
    pub fn workers(&self) -> usize {
        self.shared.workers.load(Ordering::Relaxed)
    }

    /// Requests waiting for a slot.
    pub fn queue_depth(&self) -> usize {
        self.shared.queue.len()
    }

    /// Workers busy now, and the admissions that waited in the line with their total wait
    /// (microseconds) since the pool started: the admin API's live view.
    pub fn live(&self) -> (usize, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let m = &self.shared.metrics;
        (m.busy_now.load(Relaxed).max(0) as usize, m.waits.load(Relaxed), m.wait_us.load(Relaxed))
    }

    /// Admits a request: a free slot, or a place in the line under the overflow policy and
    /// the wait for a slot, at most until `queue_timeout` since arrival. Dropping the future
    /// leaves the line; dropping the permit frees the slot.
    ///
    /// # Errors
    /// `queue_full` (429 + Retry-After), `queue_timeout` / `dropped_from_queue` /
    /// `shutting_down` (503).
    pub async fn admit(&self) -> Result<Permit, Error> {
        let waiting = Outstanding::new(&self.shared.outstanding);
        let slot = self.shared.admit().await?;
        std::mem::forget(waiting); // The permit counts it from here.
        self.shared.metrics.busy(1.0);
        Ok(Permit { pool: self.shared.clone(), slot: Some(slot), counted: false })
    }

    /// Requests waiting for a slot or holding one, streams included.
    pub fn outstanding(&self) -> usize {
        self.shared.outstanding.load(Ordering::Relaxed)
    }

    /// Runs one call, made by `call`, on `permit`'s slot, on the caller's task, under
    /// `request_timeout` (a stream: until its first event, under `first_token_timeout` when
    /// set, so a stream that is slow to start fails here, before any byte went to the client),
    /// the request's `deadline` and the shutdown deadline, catching a panic. Sets `upstream` to the time the call took,
    /// whatever its outcome, so a failed call's wait is not taken for Weir's own time. A
    /// stream keeps the slot until it ends; its pump runs on a task of its own. Dropping the
    /// returned future (the client left, or the policy stopped the attempt) drops `call`
    /// wherever it is and frees the slot.
    ///
    /// # Errors
    /// `upstream_timeout` (504), `shutting_down` (503), `internal` (a panic), or whatever the
    /// call returned.
    ///
    /// The call is made here, not passed in, and this is not an `async fn` of its own: an
    /// unpolled call future is as large as its deepest state, and each move or async layer
    /// copies it whole (about 9k instructions per request when it was passed through two).
    pub fn run<'a, C, F>(
        &'a self,
        permit: Permit,
        call: C,
        upstream: &'a mut Duration,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Reply, Error>> + 'a
    where
        C: FnOnce() -> F + 'a,
        F: Future<Output = Result<ProviderResponse, Error>> + 'a,
    {
        debug_assert!(Arc::ptr_eq(&permit.pool, &self.shared), "a permit runs on its own pool");
        Shared::run(&self.shared, permit, call, upstream, deadline)
    }

    /// Graceful drain: refuse new requests, let running and waiting ones finish until
    /// `deadline`, then answer whatever is left with 503.
    pub async fn shutdown(&self, deadline: tokio::time::Instant) {
        let s = &self.shared;
        s.queue.close();
        let all_back = async {
            loop {
                let back = s.returned.notified();
                tokio::pin!(back);
                back.as_mut().enable();
                if s.queue.quiet(s.workers.load(Ordering::Relaxed)) {
                    return;
                }
                back.await;
            }
        };
        if tokio::time::timeout_at(deadline, all_back).await.is_err() {
            // Waiters see their ticket close, running calls see `stop`: each answers 503.
            s.queue.drain();
            s.stop.fire();
        }
    }
}

/// A pool dropped by a reload (its provider was removed or re-sized) is gone once no request
/// holds its snapshot and its last stream has ended.
impl Drop for Shared {
    fn drop(&mut self) {
        self.metrics.workers_gone(self.workers.load(Ordering::Relaxed));
    }
}

fn shutting_down() -> Error {
    Error::new(ErrorKind::ShuttingDown, "Weir is shutting down and could not finish this request").with_retry_after(1)
}

/// The pool's shutdown deadline, for a stream relay blocked on its client: once it fires,
/// the relay ends the stream instead of waiting for the client to read.
#[derive(Clone)]
pub struct ShutdownSignal(Arc<Stop>);

impl ShutdownSignal {
    /// Resolves once the pool's shutdown deadline has passed.
    pub async fn fired(&self) {
        self.0.wait().await;
    }
}

/// The shutdown deadline, as a future every running call waits on.
#[derive(Default)]
struct Stop {
    fired: AtomicBool,
    notify: Notify,
}

impl Stop {
    fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    async fn wait(&self) {
        let fired = self.notify.notified();
        tokio::pin!(fired);
        fired.as_mut().enable();
        if self.fired.load(Ordering::Acquire) {
            return;
        }
        fired.await;
    }
}

/// A slot admitted for one call. Dropping it hands the slot back (to the oldest waiter, or
/// free).
pub struct Permit {
    pool: Arc<Shared>,
    slot: Option<Slot>,
    /// The outcome was accounted for; if not, the request was dropped (the client left).
    counted: bool,
}

/// One request counted in `outstanding` while it waits for a slot.
struct Outstanding<'a>(&'a AtomicUsize);

impl<'a> Outstanding<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else { return };
        let s = &self.pool;
        s.outstanding.fetch_sub(1, Ordering::Relaxed);
        if !self.counted {
            s.metrics.cancelled.increment(1);
        }
        s.metrics.busy(-1.0);
        let (cancelled, closed) = s.queue.release(slot);
        if cancelled > 0 {
            s.metrics.cancelled.increment(cancelled as u64);
        }
        if closed {
            s.returned.notify_waiters();
        }
    }
}

impl Shared {
    /// Pool admission: a free slot when nobody is waiting (the fast path, one mutex), else a
    /// place in the line under the overflow policy and the wait for a slot, at most until
    /// `queue_timeout` since arrival.
    async fn admit(&self) -> Result<Slot, Error> {
        let admitted = match self.queue.take() {
            Ok(Some(w)) => Ok(Admit::Now(w)),
            Err(refused) => Err(refused),
            Ok(None) => match self.cfg.overflow {
                Overflow::Reject => self.queue.try_push(),
                Overflow::Block => self.queue.push_waiting(self.cfg.queue_timeout).await,
                Overflow::DropOldest => self.queue.push_evicting().map(|(admit, evicted)| {
                    if evicted {
                        self.metrics.dropped.increment(1);
                    }
                    admit
                }),
            },
        };
        let mut ticket = match admitted {
            Ok(Admit::Now(w)) => {
                self.metrics.queue_wait.record(0.0);
                return Ok(w);
            }
            Ok(Admit::Queued(t)) => t,
            Err(refused) => return Err(self.refused_error(refused)),
        };
        self.metrics.queue_depth.set(self.queue.len() as f64);
        let remaining = self.cfg.queue_timeout.saturating_sub(ticket.enqueued.elapsed());
        let handed = match tokio::time::timeout(remaining, &mut ticket.rx).await {
            Ok(handed) => handed,
            Err(_) if ticket.state.abandon() => {
                self.queue.remove(&ticket.state);
                self.metrics.queue_depth.set(self.queue.len() as f64);
                self.metrics.queue_timeouts.increment(1);
                return Err(Error::new(
                    ErrorKind::QueueTimeout,
                    format!(
                        "request waited {}ms for a worker of provider {} (queue_timeout)",
                        self.cfg.queue_timeout.as_millis(),
                        self.name
                    ),
                )
                .with_retry_after(1));
            }
            // A worker was handed over just now: the request_timeout bounds the rest.
            Err(_) => ticket.rx.await,
        };
        self.metrics.queue_depth.set(self.queue.len() as f64);
        match handed {
            Ok(w) => {
                let waited = ticket.enqueued.elapsed();
                self.metrics.waited(waited);
                if self.cfg.max_workers.is_some() {
                    self.longest_wait_us.fetch_max(waited.as_micros() as u64, Ordering::Relaxed);
                }
                Ok(w)
            }
            Err(_) if ticket.state.evicted() => Err(Error::new(
                ErrorKind::Dropped,
                format!("evicted from provider {}'s full queue by a newer request (drop-oldest)", self.name),
            )
            .with_retry_after(1)),
            Err(_) => Err(shutting_down()),
        }
    }

    fn refused_error(&self, refused: Refused) -> Error {
        match refused {
            Refused::Full => {
                self.metrics.rejected.increment(1);
                Error::new(
                    ErrorKind::QueueFull,
                    format!("provider {} is at capacity ({} queued); retry later", self.name, self.cfg.queue),
                )
                .with_retry_after(1)
            }
            Refused::Timeout => {
                self.metrics.queue_timeouts.increment(1);
                Error::new(
                    ErrorKind::QueueTimeout,
                    format!(
                        "no queue space for provider {} within {}ms (queue_timeout)",
                        self.name,
                        self.cfg.queue_timeout.as_millis()
                    ),
                )
                .with_retry_after(1)
            }
            Refused::Closed => shutting_down(),
        }
    }

    /// Runs one call on `held`'s slot, on the caller's task.
    async fn run<C, F>(
        pool: &Arc<Self>,
        mut held: Permit,
        call: C,
        upstream_time: &mut Duration,
        deadline: Option<Instant>,
    ) -> Result<Reply, Error>
    where
        C: FnOnce() -> F,
        F: Future<Output = Result<ProviderResponse, Error>>,
    {
        let started = Instant::now();
        // One timer for the call, reset for a stream's first event.
        let sleep = tokio::time::sleep_until(stream::until(started, pool.cfg.request_timeout, deadline));
        tokio::pin!(sleep);
        let outcome = {
            let call = std::panic::AssertUnwindSafe(call()).catch_unwind();
            tokio::select! {
                biased;
                () = pool.stop.wait() => None,
                r = call => Some(r),
                () = &mut sleep => Some(Ok(Err(pool.timed_out(stream::Phase::Response, deadline)))),
            }
        };
        // A stream's first event is read here: `None` then means it ended without one.
        let result = match outcome {
            None => Err(shutting_down()),
            Some(Err(panic)) => Err(pool.panicked(&panic)),
            Some(Ok(Ok(ProviderResponse::Stream { mut events, relay }))) => {
                match pool.first_event(&mut events, sleep, started, deadline).await {
                    None => Err(shutting_down()),
                    Some(Ok(first)) => Ok((ProviderResponse::Stream { events, relay }, first)),
                    Some(Err(e)) => Err(e),
                }
            }
            Some(Ok(r)) => r.map(|r| (r, None)),
        };
        held.counted = true;
        *upstream_time = started.elapsed();
        pool.metrics.upstream_latency.record(upstream_time.as_secs_f64());
        match result {
            Err(e) => {
                if e.kind != ErrorKind::ShuttingDown {
                    pool.health.record_error(&e);
                }
                Err(e)
            }
            Ok((ProviderResponse::Full { body, usage, relay }, _)) => {
                pool.health.record_ok();
                Ok(Reply::Full { body, usage, relay })
            }
            Ok((ProviderResponse::Stream { events, relay }, first)) => {
                let (tx, rx) = mpsc::channel(STREAM_BUFFER);
                match first {
                    Some(first) => {
                        tokio::spawn(stream::pump(held, events, first, tx, deadline));
                    }
                    None => {
                        pool.health.record_ok();
                        drop(held);
                        let _ = tx.try_send(Ok(StreamItem::End));
                    }
                }
                Ok(Reply::Stream { chunks: rx, shutdown: ShutdownSignal(pool.stop.clone()), relay })
            }
        }
    }

    pub(crate) fn panicked(&self, panic: &(dyn std::any::Any + Send)) -> Error {
        self.metrics.panics.increment(1);
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(provider = %self.name, panic = %what, "provider code panicked; request failed, worker continues");
        Error::new(ErrorKind::Internal, format!("internal error in provider {}", self.name))
    }
}

#[cfg(test)]
mod tests;
