use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::format::Endpoint;
use crate::providers::http::IDLE_TIMEOUT;
use crate::providers::scripted::{Scripted, counting_upstream, open_connections};
use crate::providers::{Provider, ProviderRequest};
use weir_types::exchange::JsonBody;

fn cfg(workers: usize, queue: usize, overflow: Overflow) -> PoolConfig {
    PoolConfig {
        workers,
        queue,
        overflow,
        queue_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        ..PoolConfig::default()
    }
}

fn req(script: &str) -> ProviderRequest {
    let body = json!({"messages": [{"role": "user", "content": script}]});
    ProviderRequest {
        endpoint: Endpoint::OPENAI_CHAT,
        model: "m".into(),
        body: JsonBody::from_map(body.as_object().cloned().unwrap()),
        stream: false,
        secrets: Default::default(),
        affinity: weir_types::affinity::Affinity::NONE,
        trace: Default::default(),
    }
}

/// A pool and the provider its calls go to.
#[derive(Clone)]
struct P {
    pool: Arc<Pool>,
    provider: Arc<Provider>,
}

impl P {
    /// One call: admission, then the provider's call on the permit.
    async fn submit(&self, req: ProviderRequest) -> Result<Reply, Error> {
        self.submit_by(req, None).await
    }

    /// One call that ends at `deadline` (the request's total timeout).
    async fn submit_by(&self, req: ProviderRequest, deadline: Option<tokio::time::Instant>) -> Result<Reply, Error> {
        let permit = self.pool.admit().await?;
        let mut upstream = Duration::ZERO;
        self.pool.run(permit, || self.provider.call(req), &mut upstream, deadline).await
    }
}

impl std::ops::Deref for P {
    type Target = Pool;
    fn deref(&self) -> &Pool {
        &self.pool
    }
}

fn pool(c: PoolConfig) -> (P, Scripted) {
    let s = Scripted::default();
    (P { pool: Pool::start("p", &[], c), provider: Arc::new(Provider::Scripted(s.clone())) }, s)
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn full_queue_rejects_with_retry_after() {
    let (p, _) = pool(cfg(1, 1, Overflow::Reject));
    let busy = tokio::spawn({
        let p = p.clone();
        async move { p.submit(req("sleep:1000")).await.is_ok() }
    });
    settle().await; // worker took it
    let queued = tokio::spawn({
        let p = p.clone();
        async move { p.submit(req("sleep:1")).await.is_ok() }
    });
    settle().await; // queue now full
    let err = p.submit(req("x")).await.err().unwrap();
    assert_eq!(err.kind, ErrorKind::QueueFull);
    assert_eq!(err.status(), 429);
    assert_eq!(err.retry_after, Some(1));
    assert!(busy.await.unwrap());
    assert!(queued.await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn block_waits_then_times_out_with_503() {
    let mut c = cfg(1, 1, Overflow::Block);
    c.queue_timeout = Duration::from_millis(500);
    let (p, _) = pool(c);
    let _busy = tokio::spawn({
        let p = p.clone();
        async move { p.submit(req("sleep:3000")).await.is_ok() }
    });
    settle().await;
    let err = p.submit(req("x")).await.err().unwrap();
    assert_eq!(err.kind, ErrorKind::QueueTimeout);
    assert_eq!(err.status(), 503);
}

#[tokio::test(start_paused = true)]
async fn drop_oldest_evicts_waiting_request() {
    let (p, s) = pool(cfg(1, 1, Overflow::DropOldest));
    let _busy = tokio::spawn({
        let p = p.clone();
        async move { p.submit(req("sleep:1000")).await.is_ok() }
    });
    settle().await;
    let oldest = tokio::spawn({
        let p = p.clone();
        async move { p.submit(req("oldest")).await }
    });
    settle().await;
    let newest = tokio::spawn({
        let p = p.clone();
        async move { p.submit(req("newest")).await }
    });
    let err = oldest.await.unwrap().err().unwrap();
    assert_eq!(err.kind, ErrorKind::Dropped);
    assert_eq!(err.status(), 503);
    assert!(newest.await.unwrap().is_ok());
    assert_eq!(s.calls.load(Ordering::SeqCst), 2, "evicted request never reached the provider");
}

#[tokio::test(start_paused = true)]
async fn request_timeout_is_504() {
    let mut c = cfg(1, 4, Overflow::Block);
    c.request_timeout = Duration::from_millis(100);
    let (p, _) = pool(c);
    let err = p.submit(req("sleep:1000")).await.err().unwrap();
    assert_eq!(err.kind, ErrorKind::UpstreamTimeout);
    assert_eq!(err.status(), 504);
}

#[tokio::test]
async fn panic_fails_one_request_and_worker_survives() {
    let (p, _) = pool(cfg(1, 4, Overflow::Block));
    let err = p.submit(req("panic")).await.err().unwrap();
    assert_eq!(err.kind, ErrorKind::Internal);
    assert_eq!(err.status(), 500);
    // The single worker is still alive.
    assert!(p.submit(req("ok")).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn cancelled_while_queued_never_reaches_provider() {
    let (p, s) = pool(cfg(1, 4, Overflow::Block));
    let _busy = tokio::spawn({
        let p = p.clone();
        async move { p.submit(req("sleep:500")).await.is_ok() }
    });
    settle().await;
    let queued = tokio::spawn({
        let p = p.clone();
        async move { p.submit(req("queued")).await.is_ok() }
    });
    settle().await;
    queued.abort();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(s.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn cancelled_in_flight_stops_upstream_call() {
    let (p, s) = pool(cfg(1, 4, Overflow::Block));
    let call = tokio::spawn({
        let p = p.clone();
        async move { p.submit(req("sleep:1000")).await.is_ok() }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    call.abort();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(s.calls.load(Ordering::SeqCst), 1);
    assert_eq!(s.completed.load(Ordering::SeqCst), 0, "upstream call was not cancelled");
}

#[tokio::test(start_paused = true)]
async fn dropped_stream_stops_upstream_read() {
    let (p, s) = pool(cfg(1, 4, Overflow::Block));
    let Reply::Stream { mut chunks, .. } = p.submit(req("stream:100")).await.ok().unwrap() else {
        panic!("expected a stream")
    };
    assert!(chunks.recv().await.unwrap().is_ok());
    drop(chunks);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(s.completed.load(Ordering::SeqCst), 0, "stream kept reading after the client left");
    // The worker is free again.
    assert!(p.submit(req("ok")).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_stream_holds_its_worker_until_it_ends() {
    let (p, _) = pool(cfg(1, 4, Overflow::Block));
    let Reply::Stream { mut chunks, .. } = p.submit(req("stream:5")).await.ok().unwrap() else {
        panic!("expected a stream")
    };
    let next = tokio::spawn({
        let p = p.clone();
        async move { p.submit(req("next")).await.is_ok() }
    });
    settle().await;
    assert_eq!(p.queue_depth(), 1, "the second request waits while the stream runs");
    let mut items = 0;
    while let Some(item) = chunks.recv().await {
        if matches!(item, Ok(StreamItem::End)) {
            break;
        }
        items += 1;
    }
    assert_eq!(items, 5);
    assert!(next.await.unwrap(), "the worker went to the waiting request when the stream ended");
}

#[tokio::test(start_paused = true)]
async fn a_worker_comes_back_to_the_oldest_waiter_first() {
    let (p, _) = pool(cfg(1, 4, Overflow::Block));
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let _busy = tokio::spawn({
        let p = p.clone();
        async move { p.submit(req("sleep:100")).await.is_ok() }
    });
    settle().await;
    let mut waiters = Vec::new();
    for i in 0..3 {
        let (p, order) = (p.clone(), order.clone());
        waiters.push(tokio::spawn(async move {
            assert!(p.submit(req("sleep:10")).await.is_ok());
            order.lock().unwrap().push(i);
        }));
        settle().await;
    }
    for w in waiters {
        w.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_queued_work() {
    let (p, s) = pool(cfg(1, 8, Overflow::Block));
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { p.submit(req("sleep:100")).await.is_ok() })
        })
        .collect();
    settle().await;
    p.shutdown(tokio::time::Instant::now() + Duration::from_secs(5)).await;
    for h in handles {
        assert!(h.await.unwrap());
    }
    assert_eq!(s.completed.load(Ordering::SeqCst), 3);
    let err = p.submit(req("late")).await.err().unwrap();
    assert_eq!(err.kind, ErrorKind::ShuttingDown);
}

#[tokio::test(start_paused = true)]
async fn shutdown_deadline_answers_rest_with_503() {
    let (p, _) = pool(cfg(1, 8, Overflow::Block));
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { p.submit(req("sleep:10000")).await.err().map(|e| e.kind) })
        })
        .collect();
    settle().await;
    p.shutdown(tokio::time::Instant::now() + Duration::from_millis(500)).await;
    for h in handles {
        assert_eq!(h.await.unwrap(), Some(ErrorKind::ShuttingDown));
    }
}

/// A one-worker pool of an openai provider at `addr`.
fn upstream_pool(addr: std::net::SocketAddr) -> P {
    let toml = format!(
        "[[providers]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"http://{addr}/v1\"\nmodels = [\"m\"]\ndiscover_models = false\n"
    );
    let config = crate::config::Config::from_toml(&toml).unwrap();
    let provider = Provider::from_config(&config.providers[0], 1).unwrap();
    P { pool: Pool::start("up", &[], cfg(1, 4, Overflow::Block)), provider: Arc::new(provider) }
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_closes_its_connection_and_frees_its_worker() {
    let (addr, open) = counting_upstream(Duration::from_secs(1)).await;
    let p = upstream_pool(addr);
    assert!(p.submit(req("warm")).await.is_ok());
    assert_eq!(open_connections(&open, 1).await, 1, "a clean exchange keeps its connection");
    let call = tokio::spawn({
        let p = p.clone();
        async move { p.submit(req("hi")).await.is_ok() }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    call.abort();
    settle().await;
    assert_eq!(open_connections(&open, 0).await, 0, "a connection left mid-exchange must not be reused");
    assert!(p.submit(req("again")).await.is_ok(), "the worker is free again");
    assert_eq!(open_connections(&open, 1).await, 1);
}

#[tokio::test(start_paused = true)]
async fn idle_lane_connections_are_closed_after_the_idle_timeout() {
    let (addr, open) = counting_upstream(Duration::ZERO).await;
    let p = upstream_pool(addr);
    for _ in 0..3 {
        assert!(p.submit(req("hi")).await.is_ok());
    }
    assert_eq!(open.load(Ordering::SeqCst), 1, "sequential requests share one kept-alive connection");
    // Idle for less than the timeout: kept.
    tokio::time::sleep(IDLE_TIMEOUT / 2).await;
    settle().await;
    assert_eq!(open.load(Ordering::SeqCst), 1);
    // Past it: the sweeper closes the connection, and the next request opens a fresh one.
    tokio::time::sleep(IDLE_TIMEOUT).await;
    assert_eq!(open_connections(&open, 0).await, 0, "the idle connection is still open");
    assert!(p.submit(req("again")).await.is_ok());
    assert_eq!(open.load(Ordering::SeqCst), 1);
}

fn streaming(script: &str) -> ProviderRequest {
    ProviderRequest { stream: true, ..req(script) }
}

/// The items of a stream until its end or error: chunks counted, then the error if any.
async fn drain(reply: Result<Reply, Error>) -> (usize, Option<Error>) {
    let Ok(Reply::Stream { mut chunks, .. }) = reply else { panic!("expected a stream") };
    let mut n = 0;
    while let Some(item) = chunks.recv().await {
        match item {
            Ok(StreamItem::Chunk(_)) => n += 1,
            Ok(StreamItem::End) => return (n, None),
            Err(e) => return (n, Some(e)),
        }
    }
    panic!("the stream closed without an end")
}

#[tokio::test(start_paused = true)]
async fn a_stream_slower_to_its_first_event_than_first_token_timeout_fails_the_call() {
    let mut c = cfg(1, 4, Overflow::Block);
    c.first_token_timeout = Some(Duration::from_millis(5));
    let (p, s) = pool(c);
    let err = p.submit(streaming("stream:3")).await.err().expect("the call fails");
    assert_eq!(err.kind, ErrorKind::UpstreamTimeout);
    assert!(err.message.contains("first_token_timeout"), "{}", err.message);
    assert_eq!(s.completed.load(Ordering::SeqCst), 0, "the stream was dropped");
    assert!(p.submit(req("ok")).await.is_ok(), "the slot came back");
}

#[tokio::test(start_paused = true)]
async fn a_stream_gap_past_idle_timeout_ends_the_stream_with_an_error() {
    let mut c = cfg(1, 4, Overflow::Block);
    c.idle_timeout = Some(Duration::from_millis(5));
    let (p, _) = pool(c);
    let (chunks, err) = drain(p.submit(streaming("stream:3")).await).await;
    assert_eq!(chunks, 1, "the first event came within request_timeout");
    let err = err.expect("an idle error");
    assert!(err.message.contains("idle_timeout"), "{}", err.message);

    // Within the idle bound, the whole stream goes through.
    let mut c = cfg(1, 4, Overflow::Block);
    c.idle_timeout = Some(Duration::from_millis(50));
    let (p, _) = pool(c);
    assert_eq!(drain(p.submit(streaming("stream:5")).await).await.0, 5);
}

#[tokio::test(start_paused = true)]
async fn the_requests_deadline_ends_a_call_and_a_stream() {
    let (p, _) = pool(cfg(1, 4, Overflow::Block));
    let deadline = tokio::time::Instant::now() + Duration::from_millis(35);
    let (chunks, err) = drain(p.submit_by(streaming("stream:100"), Some(deadline)).await).await;
    assert_eq!(chunks, 3, "events at 10, 20 and 30ms");
    assert!(err.expect("cut at the deadline").message.contains("total timeout"));
    let deadline = tokio::time::Instant::now() + Duration::from_millis(20);
    let err = p.submit_by(req("sleep:100"), Some(deadline)).await.err().expect("cut at the deadline");
    assert_eq!(err.kind, ErrorKind::UpstreamTimeout);
}
