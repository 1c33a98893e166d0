//! Per-provider pools: the only way a request reaches a provider. A pool owns `workers`
//! workers, made at start, each with its own upstream connection (a [`Lane`]); at most that
//! many requests are in flight to the provider. Admission ([`Pool::submit`]) gives the request
//! an idle worker, or a place in a bounded line under the overflow policy; the worker then runs
//! the call on the request's own task (no hand-off to a worker task, which cost 15-20% of the
//! gateway's CPU per request) under `request_timeout`, catching provider panics and stopping
//! the upstream call when the client goes away. A worker that comes back is handed to the
//! oldest waiter. A slow provider fills only its own line.

mod health;
mod job;
mod metrics;
mod queue;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use futures_util::StreamExt as _;
use tokio::sync::{Notify, mpsc};

pub use health::{Health, HealthState};
pub use job::{Reply, StreamItem};
use metrics::PoolMetrics;
use queue::Admit;
pub use queue::{Queue, Rank, Refused};

use crate::config::{Overflow, PoolConfig};
use crate::error::{Error, ErrorKind};
use crate::providers::http::{IDLE_TIMEOUT, Lane};
use crate::providers::{ChunkStream, Provider, ProviderRequest, ProviderResponse};

/// Chunks buffered between a streaming worker and the client relay; bounds memory per stream
/// and makes a slow client slow down the upstream read instead of growing a buffer.
const STREAM_BUFFER: usize = 16;

/// How often idle workers are checked for a connection unused for [`IDLE_TIMEOUT`]. One timer
/// per pool: arming one per request cost ~1k instructions.
const IDLE_SWEEP: Duration = Duration::from_secs(30);

/// One provider's pool.
pub struct Pool {
    shared: Arc<Shared>,
    requests: Arc<crate::metrics::RequestMetrics>,
    /// The name as an `x-weir-provider` header value, made once (`None` if the name is not a
    /// valid header value).
    name_header: Option<http::HeaderValue>,
}

/// What running calls and streams need of their pool.
struct Shared {
    name: Arc<str>,
    provider: Arc<Provider>,
    cfg: PoolConfig,
    queue: Queue<Worker>,
    metrics: PoolMetrics,
    health: Health,
    /// Fired at the shutdown deadline: calls still running answer 503 `shutting_down`.
    stop: Arc<Stop>,
    /// Signalled when a worker comes back to a closed pool (a drain waits for all of them).
    returned: Notify,
}

/// One worker: a unit of the provider's concurrency and its own HTTP/1.1 connection
/// (plain-http providers), reused request after request.
struct Worker {
    lane: Lane,
    last_used: tokio::time::Instant,
}

impl Worker {
    /// How well this idle worker suits a request on serving thread `here`: best if its
    /// connection's I/O task runs on that thread (no cross-thread wake-ups), good if it has no
    /// connection yet (it will open one there).
    fn rank(&self, here: Option<usize>) -> Rank {
        if !self.lane.is_open() {
            Rank::Good
        } else if here.is_some() && self.lane.home() == here {
            Rank::Best
        } else {
            Rank::Any
        }
    }
}

impl Pool {
    /// Makes the pool's workers and starts its idle-connection sweeper; `models` (the
    /// provider's configured models and aliases) get a `model` label value of their own in its
    /// request metrics. Must be called inside a tokio runtime.
    pub fn start(name: &str, models: &[&str], provider: Provider, cfg: PoolConfig) -> Arc<Self> {
        let name: Arc<str> = Arc::from(name);
        let now = tokio::time::Instant::now();
        let workers = (0..cfg.workers).map(|_| Worker { lane: Lane::default(), last_used: now }).collect();
        let requests = Arc::new(crate::metrics::RequestMetrics::new(&name, models.iter().copied()));
        let shared = Arc::new(Shared {
            metrics: PoolMetrics::new(&name, cfg.workers),
            queue: Queue::new(workers, cfg.queue),
            provider: Arc::new(provider),
            health: Health::default(),
            stop: Arc::default(),
            returned: Notify::new(),
            name,
            cfg,
        });
        tokio::spawn(sweep_idle(Arc::downgrade(&shared)));
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

    /// The provider behind this pool (for model discovery, which bypasses the line).
    pub fn provider(&self) -> &Arc<Provider> {
        &self.shared.provider
    }

    /// Pool settings.
    pub fn config(&self) -> &PoolConfig {
        &self.shared.cfg
    }

    /// The request metrics `finish` records for this provider.
    pub fn request_metrics(&self) -> &Arc<crate::metrics::RequestMetrics> {
        &self.requests
    }

    /// Health as reported by `/ready`.
    pub fn health(&self) -> &Health {
        &self.shared.health
    }

    /// Requests waiting for a worker.
    pub fn queue_depth(&self) -> usize {
        self.shared.queue.len()
    }

    /// Admits a request (an idle worker, or a place in the line under the overflow policy)
    /// and runs it on its worker. Dropping the returned future (client disconnect) cancels
    /// it: a waiting request leaves the line, a running one stops its upstream call.
    ///
    /// # Errors
    /// `queue_full` (429 + Retry-After), `queue_timeout` / `dropped_from_queue` /
    /// `shutting_down` (503), or whatever the provider call returned.
    pub async fn submit(&self, req: ProviderRequest) -> Result<Reply, Error> {
        let mut upstream = Duration::ZERO;
        self.submit_timed(req, &mut upstream).await
    }

    /// [`Pool::submit`], also setting `upstream` to the time the upstream call took, whatever
    /// its outcome (zero if it never started), so a failed call's wait is not taken for
    /// Weir's own time.
    ///
    /// # Errors
    /// As [`Pool::submit`].
    pub async fn submit_timed(&self, req: ProviderRequest, upstream: &mut Duration) -> Result<Reply, Error> {
        let s = &self.shared;
        let worker = s.admit().await?;
        Shared::run(s, worker, req, upstream).await
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
                if s.queue.quiet(s.cfg.workers) {
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
        self.metrics.workers_gone(self.cfg.workers);
    }
}

fn shutting_down() -> Error {
    Error::new(ErrorKind::ShuttingDown, "Weir is shutting down and could not finish this request").with_retry_after(1)
}

/// Closes connections that idle workers left unused for [`IDLE_TIMEOUT`], as the pooled client
/// closes its idle ones; ends with the pool.
async fn sweep_idle(pool: Weak<Shared>) {
    loop {
        tokio::time::sleep(IDLE_SWEEP).await;
        let Some(s) = pool.upgrade() else { return };
        let now = tokio::time::Instant::now();
        s.queue.for_each_idle(|w| {
            if w.lane.is_open() && now.duration_since(w.last_used) >= IDLE_TIMEOUT {
                w.lane.close();
            }
        });
    }
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

/// A worker checked out by one request. Dropping it hands the worker back (to the oldest
/// waiter, or idle). A call that did not end cleanly (cancelled, timed out, panicked, stopped)
/// may have left its connection mid-exchange, so that connection is closed first.
struct Held {
    pool: Arc<Shared>,
    worker: Option<Worker>,
    /// The exchange on the lane ended cleanly; the connection can be reused.
    clean: bool,
    /// The outcome was accounted for; if not, the request was dropped (the client left).
    counted: bool,
}

impl Held {
    fn lane(&mut self) -> &mut Lane {
        &mut self.worker.as_mut().expect("held until dropped").lane
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(mut worker) = self.worker.take() else { return };
        let s = &self.pool;
        if !self.clean {
            worker.lane.close();
        }
        if !self.counted {
            s.metrics.cancelled.increment(1);
        }
        worker.last_used = tokio::time::Instant::now();
        s.metrics.busy(-1.0);
        let (cancelled, closed) = s.queue.release(worker);
        if cancelled > 0 {
            s.metrics.cancelled.increment(cancelled as u64);
        }
        if closed {
            s.returned.notify_waiters();
        }
    }
}

impl Shared {
    /// Pool admission: an idle worker when nobody is waiting (the fast path, one mutex), else
    /// a place in the line under the overflow policy and the wait for a worker, at most until
    /// `queue_timeout` since arrival.
    async fn admit(&self) -> Result<Worker, Error> {
        let here = crate::shards::current();
        let admitted = match self.queue.take(|w| w.rank(here)) {
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
                self.metrics.queue_wait.record(ticket.enqueued.elapsed().as_secs_f64());
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

    /// Runs one request on `worker`, on the caller's task. A stream keeps the worker until it
    /// ends; its relay runs on a task of its own.
    async fn run(
        pool: &Arc<Self>,
        worker: Worker,
        req: ProviderRequest,
        upstream_time: &mut Duration,
    ) -> Result<Reply, Error> {
        pool.metrics.busy(1.0);
        let mut held = Held { pool: pool.clone(), worker: Some(worker), clean: false, counted: false };
        let started = Instant::now();
        let outcome = {
            let call = std::panic::AssertUnwindSafe(pool.provider.call(req, held.lane())).catch_unwind();
            tokio::select! {
                biased;
                () = pool.stop.wait() => None,
                r = tokio::time::timeout(pool.cfg.request_timeout, call) => Some(r),
            }
        };
        held.counted = true;
        *upstream_time = started.elapsed();
        pool.metrics.upstream_latency.record(upstream_time.as_secs_f64());
        let result = match outcome {
            None => return Err(shutting_down()),
            Some(Err(_)) => {
                pool.metrics.request_timeouts.increment(1);
                Err(pool.timeout_error())
            }
            Some(Ok(Err(panic))) => Err(pool.panicked(&panic)),
            Some(Ok(Ok(r))) => {
                // The provider answered, if only with an error; a stream's connection stays
                // mid-exchange until the stream ends.
                held.clean = !matches!(r, Ok(ProviderResponse::Stream(_)));
                r
            }
        };
        match result {
            Err(e) => {
                pool.health.record_error(&e);
                Err(e)
            }
            Ok(ProviderResponse::Full { body, usage }) => {
                pool.health.record_ok();
                Ok(Reply::Full { body, usage })
            }
            Ok(ProviderResponse::Stream(stream)) => {
                let (tx, rx) = mpsc::channel(STREAM_BUFFER);
                tokio::spawn(pump(held, stream, tx));
                Ok(Reply::Stream { chunks: rx, shutdown: ShutdownSignal(pool.stop.clone()) })
            }
        }
    }

    fn timeout_error(&self) -> Error {
        Error::new(
            ErrorKind::UpstreamTimeout,
            format!(
                "provider {} did not answer within {}ms (request_timeout)",
                self.name,
                self.cfg.request_timeout.as_millis()
            ),
        )
    }

    fn panicked(&self, panic: &(dyn std::any::Any + Send)) -> Error {
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

/// Relays a stream to the client side until it ends, fails, stalls past `request_timeout`,
/// the client side goes away (the client left, or stopped reading for `server.send_timeout`;
/// then the upstream read stops at once), or the shutdown deadline passes (then the channel
/// closes without an end, which the relay reports as cut), even while waiting for the client
/// side to take a chunk. Holds the stream's worker until its last chunk is handed over.
async fn pump(mut held: Held, mut stream: ChunkStream, tx: mpsc::Sender<Result<StreamItem, Error>>) {
    let pool = held.pool.clone();
    let stop = pool.stop.wait();
    tokio::pin!(stop);
    loop {
        let next = std::panic::AssertUnwindSafe(stream.next()).catch_unwind();
        let item = tokio::select! {
            biased;
            () = tx.closed() => {
                pool.metrics.cancelled.increment(1);
                return;
            }
            () = &mut stop => return,
            r = tokio::time::timeout(pool.cfg.request_timeout, next) => r,
        };
        let item = match item {
            Err(_) => {
                pool.metrics.request_timeouts.increment(1);
                Some(Err(pool.timeout_error()))
            }
            Ok(Err(panic)) => Some(Err(pool.panicked(&panic))),
            Ok(Ok(item)) => item,
        };
        match item {
            None => {
                pool.health.record_ok();
                held.clean = true;
                drop(stream);
                drop(held); // The worker is free before the client reads the end.
                let _ = tx.send(Ok(StreamItem::End)).await;
                return;
            }
            Some(Err(e)) => {
                pool.health.record_error(&e);
                drop(stream);
                drop(held); // The worker is free before the client reads the error.
                let _ = tx.send(Err(e)).await;
                return;
            }
            Some(Ok(chunk)) => {
                // Waiting for room is bounded by the relay (send_timeout) and by `stop`.
                let sent = tokio::select! {
                    biased;
                    () = &mut stop => return,
                    sent = tx.send(Ok(StreamItem::Chunk(chunk))) => sent,
                };
                if sent.is_err() {
                    pool.metrics.cancelled.increment(1);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
