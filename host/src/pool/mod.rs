//! Per-provider pools: the only way a request reaches a provider. Each pool owns `workers`
//! pre-spawned tokio tasks draining a bounded [`Queue`]; admission ([`Pool::submit`]) applies
//! the overflow policy, workers apply `request_timeout`, catch provider panics, and stop
//! upstream work when the client goes away. A slow provider fills only its own queue.

mod health;
mod job;
mod metrics;
mod queue;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use health::{Health, HealthState};
use job::{Job, JobState};
pub use job::{Reply, StreamItem};
use metrics::PoolMetrics;
pub use queue::{Queue, Refused};

use crate::config::{Overflow, PoolConfig};
use crate::error::{Error, ErrorKind};
use crate::providers::http::{IDLE_TIMEOUT, Lane};
use crate::providers::{ChunkStream, Provider, ProviderRequest, ProviderResponse};

/// Chunks buffered between a streaming worker and the client relay; bounds memory per stream
/// and makes a slow client slow down the upstream read instead of growing a buffer.
const STREAM_BUFFER: usize = 16;

/// One provider's pool.
pub struct Pool {
    name: Arc<str>,
    provider: Arc<Provider>,
    cfg: PoolConfig,
    queue: Arc<Queue<Job>>,
    metrics: Arc<PoolMetrics>,
    health: Arc<Health>,
    requests: Arc<crate::metrics::RequestMetrics>,
    workers: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    /// Spawns the pool's workers. Must be called inside a tokio runtime.
    pub fn start(name: &str, provider: Provider, cfg: PoolConfig) -> Arc<Self> {
        let name: Arc<str> = Arc::from(name);
        let metrics = Arc::new(PoolMetrics::new(&name, cfg.workers));
        let requests = Arc::new(crate::metrics::RequestMetrics::new(&name));
        let pool = Arc::new(Self {
            name,
            provider: Arc::new(provider),
            queue: Arc::new(Queue::new(cfg.queue)),
            metrics,
            health: Arc::new(Health::default()),
            requests,
            workers: std::sync::Mutex::new(Vec::new()),
            cfg,
        });
        let handles = (0..pool.cfg.workers)
            .map(|_| {
                let w = Worker {
                    name: pool.name.clone(),
                    provider: pool.provider.clone(),
                    queue: pool.queue.clone(),
                    metrics: pool.metrics.clone(),
                    health: pool.health.clone(),
                    request_timeout: pool.cfg.request_timeout,
                };
                tokio::spawn(w.run())
            })
            .collect();
        *pool.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = handles;
        pool
    }

    /// Provider name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The provider behind this pool (for model discovery, which bypasses the queue).
    pub fn provider(&self) -> &Arc<Provider> {
        &self.provider
    }

    /// Pool settings.
    pub fn config(&self) -> &PoolConfig {
        &self.cfg
    }

    /// The request metrics `finish` records for this provider.
    pub fn request_metrics(&self) -> &Arc<crate::metrics::RequestMetrics> {
        &self.requests
    }

    /// Health as reported by `/ready`.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Requests waiting for a worker.
    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// Admits a request under the overflow policy and waits for its reply (pool admission).
    /// Dropping the returned future (client disconnect) cancels the job: a queued job is
    /// skipped, an in-flight one stops its upstream call.
    ///
    /// # Errors
    /// `queue_full` (429 + Retry-After), `queue_timeout` / `dropped_from_queue` /
    /// `shutting_down` (503), or whatever the provider call returned.
    pub async fn submit(&self, req: ProviderRequest) -> Result<Reply, Error> {
        let enqueued = Instant::now();
        let (tx, mut rx) = oneshot::channel();
        let state = JobState::new();
        let job = Job { req, reply: tx, enqueued, state: state.clone() };
        let admitted = match self.cfg.overflow {
            Overflow::Reject => self.queue.try_push(job),
            Overflow::Block => self.queue.push_waiting(job, self.cfg.queue_timeout).await,
            Overflow::DropOldest => match self.queue.push_evicting(job) {
                Ok(Some(evicted)) => {
                    if evicted.state.abandon() {
                        self.metrics.dropped.increment(1);
                        let _ = evicted.reply.send(Err(Error::new(
                            ErrorKind::Dropped,
                            format!(
                                "evicted from provider {}'s full queue by a newer request (drop-oldest)",
                                self.name
                            ),
                        )
                        .with_retry_after(1)));
                    }
                    Ok(())
                }
                Ok(None) => Ok(()),
                Err(refused) => Err(refused),
            },
        };
        if let Err(refused) = admitted {
            return Err(self.refused_error(refused));
        }
        self.metrics.queue_depth.set(self.queue.len() as f64);

        // Wait for a worker to claim the job, at most until queue_timeout since arrival.
        let remaining = self.cfg.queue_timeout.saturating_sub(enqueued.elapsed());
        match tokio::time::timeout(remaining, &mut rx).await {
            Ok(reply) => return reply.unwrap_or_else(|_| Err(self.lost())),
            Err(_) if state.abandon() => {
                let token = state.clone();
                self.queue.remove_where(|j| j.state.same(&token));
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
            Err(_) => {} // A worker claimed it just now: the request_timeout bounds the rest.
        }
        rx.await.unwrap_or_else(|_| Err(self.lost()))
    }

    fn refused_error(&self, refused: Refused<Job>) -> Error {
        match refused {
            Refused::Full(_) => {
                self.metrics.rejected.increment(1);
                Error::new(
                    ErrorKind::QueueFull,
                    format!("provider {} is at capacity ({} queued); retry later", self.name, self.cfg.queue),
                )
                .with_retry_after(1)
            }
            Refused::Timeout(_) => {
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
            Refused::Closed(_) => shutting_down(),
        }
    }

    fn lost(&self) -> Error {
        // The worker dropped the job without answering: only at the end of a shutdown.
        shutting_down()
    }

    /// Graceful drain: refuse new work, let workers finish queued and in-flight jobs until
    /// `deadline`, then answer whatever is left with 503 and stop the workers.
    pub async fn shutdown(&self, deadline: tokio::time::Instant) {
        self.queue.close();
        let handles = std::mem::take(&mut *self.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let aborts: Vec<_> = handles.iter().map(JoinHandle::abort_handle).collect();
        let all = futures_util::future::join_all(handles);
        if tokio::time::timeout_at(deadline, all).await.is_err() {
            for job in self.queue.drain() {
                if job.state.abandon() {
                    let _ = job.reply.send(Err(shutting_down()));
                }
            }
            // Aborting drops in-flight jobs: their reply senders close and the waiting
            // handlers answer 503 `shutting_down`.
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
        }
    }
}

/// A pool dropped by a reload (its provider was removed or re-sized) stops taking work once
/// the last request holding its snapshot is done; its workers finish what is queued, then exit.
impl Drop for Pool {
    fn drop(&mut self) {
        self.queue.close();
    }
}

fn shutting_down() -> Error {
    Error::new(ErrorKind::ShuttingDown, "Weir is shutting down and could not finish this request").with_retry_after(1)
}

/// One pre-spawned worker: takes jobs from the queue and runs them against the provider.
struct Worker {
    name: Arc<str>,
    provider: Arc<Provider>,
    queue: Arc<Queue<Job>>,
    metrics: Arc<PoolMetrics>,
    health: Arc<Health>,
    request_timeout: Duration,
}

impl Worker {
    async fn run(self) {
        // This worker's own upstream connection (plain-http providers), reused job after job.
        let mut lane = Lane::default();
        // An open connection left idle for IDLE_TIMEOUT is closed, as the pooled client closes
        // its idle ones. One timer per worker, re-armed only when it fires: arming one per job
        // cost ~1k instructions per request.
        let idle = tokio::time::sleep(IDLE_TIMEOUT);
        tokio::pin!(idle);
        let mut last_job = tokio::time::Instant::now();
        loop {
            let job = tokio::select! {
                biased;
                job = self.queue.pop() => job,
                () = &mut idle, if lane.is_open() => {
                    let due = last_job + IDLE_TIMEOUT;
                    if tokio::time::Instant::now() >= due {
                        lane.close();
                    } else {
                        idle.as_mut().reset(due);
                    }
                    continue;
                }
            };
            let Some(job) = job else { break };
            self.metrics.queue_depth.set(self.queue.len() as f64);
            if !job.state.claim() {
                continue; // Timed out or evicted: its handler already answered.
            }
            if job.reply.is_closed() {
                self.metrics.cancelled.increment(1);
                continue; // Client left while queued: no upstream call.
            }
            self.metrics.queue_wait.record(job.enqueued.elapsed().as_secs_f64());
            self.metrics.busy(1.0);
            self.handle(job, &mut lane).await;
            last_job = tokio::time::Instant::now();
            self.metrics.busy(-1.0);
        }
        self.metrics.worker_exited();
    }

    async fn handle(&self, job: Job, lane: &mut Lane) {
        let Job { req, mut reply, .. } = job;
        let started = Instant::now();
        let call = std::panic::AssertUnwindSafe(self.provider.call(req, lane)).catch_unwind();
        let outcome = tokio::select! {
            biased;
            () = reply.closed() => {
                self.metrics.cancelled.increment(1);
                return;
            }
            r = tokio::time::timeout(self.request_timeout, call) => r,
        };
        let upstream = started.elapsed();
        self.metrics.upstream_latency.record(upstream.as_secs_f64());
        let result = match outcome {
            Err(_) => {
                self.metrics.request_timeouts.increment(1);
                Err(self.timeout_error())
            }
            Ok(Err(panic)) => Err(self.panicked(&panic)),
            Ok(Ok(r)) => r,
        };
        match result {
            Err(e) => {
                self.health.record_error(&e);
                let _ = reply.send(Err(e));
            }
            Ok(ProviderResponse::Full(body)) => {
                self.health.record_ok();
                let _ = reply.send(Ok(Reply::Full { body, upstream }));
            }
            Ok(ProviderResponse::Stream(stream)) => {
                let (tx, rx) = mpsc::channel(STREAM_BUFFER);
                if reply.send(Ok(Reply::Stream { chunks: rx, upstream })).is_err() {
                    self.metrics.cancelled.increment(1);
                    return;
                }
                self.pump(stream, tx).await;
            }
        }
    }

    /// Relays a stream to the client side until it ends, fails, stalls past
    /// `request_timeout`, or the client goes away (then the upstream read stops at once).
    async fn pump(&self, mut stream: ChunkStream, tx: mpsc::Sender<Result<StreamItem, Error>>) {
        loop {
            let next = std::panic::AssertUnwindSafe(stream.next()).catch_unwind();
            let item = tokio::select! {
                biased;
                () = tx.closed() => {
                    self.metrics.cancelled.increment(1);
                    return;
                }
                r = tokio::time::timeout(self.request_timeout, next) => r,
            };
            let item = match item {
                Err(_) => {
                    self.metrics.request_timeouts.increment(1);
                    Some(Err(self.timeout_error()))
                }
                Ok(Err(panic)) => Some(Err(self.panicked(&panic))),
                Ok(Ok(item)) => item,
            };
            match item {
                None => {
                    self.health.record_ok();
                    let _ = tx.send(Ok(StreamItem::End)).await;
                    return;
                }
                Some(Err(e)) => {
                    self.health.record_error(&e);
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                Some(Ok(chunk)) => {
                    if tx.send(Ok(StreamItem::Chunk(chunk))).await.is_err() {
                        self.metrics.cancelled.increment(1);
                        return;
                    }
                }
            }
        }
    }

    fn timeout_error(&self) -> Error {
        Error::new(
            ErrorKind::UpstreamTimeout,
            format!(
                "provider {} did not answer within {}ms (request_timeout)",
                self.name,
                self.request_timeout.as_millis()
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

#[cfg(test)]
mod tests;
