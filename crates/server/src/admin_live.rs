//! The admin API's live view, read by the dashboard: a snapshot of pools, providers, breakers,
//! plugins and the event bus (`GET /admin/stats`), the recent request records
//! (`GET /admin/requests`, `GET /admin/requests/{id}`), and both live over SSE
//! (`GET /admin/live`). A sampler keeps a short per-provider history and publishes breaker
//! transitions on the event bus.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::body::{BodyFrame, ResponseBody};
use crate::config::Priority;
use crate::error::{Error, ErrorKind};
use crate::events::Event;
use crate::gateway::{AppState, Gateway};
use crate::live::{Filter, live};

/// Samples kept per provider (one a second).
const POOL_HISTORY: usize = 300;
/// Live streams open at once; more are refused (each holds a task and a subscription).
const MAX_STREAMS: usize = 32;
/// A live stream ends after this long; `EventSource` reconnects by itself.
const STREAM_LIFETIME: Duration = Duration::from_secs(600);
/// Most records one `GET /admin/requests` returns.
const MAX_LIMIT: usize = 1000;

/// One second of a provider's pool.
#[derive(Clone, Copy, Default)]
struct Sample {
    at: u64,
    busy: usize,
    queue: usize,
    /// Mean wait in the line of the admissions that waited during the second, in ms.
    wait_ms: f64,
}

#[derive(Default)]
struct Sampled {
    pools: HashMap<String, VecDeque<Sample>>,
    /// Per provider: admissions that waited and their total wait at the last sample.
    waits: HashMap<String, (u64, u64)>,
    breakers: HashMap<String, &'static str>,
}

fn sampled() -> std::sync::MutexGuard<'static, Sampled> {
    static S: OnceLock<Mutex<Sampled>> = OnceLock::new();
    S.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner)
}

fn breaker_name(gw: &Gateway, i: usize) -> &'static str {
    use crate::policy::breaker::State;
    match gw.targets[i].guard.breaker.as_ref().map(|b| b.state()) {
        None => "none",
        Some(State::Closed) => "closed",
        Some(State::HalfOpen) => "half-open",
        Some(State::Open) => "open",
    }
}

/// Samples the pools every second (on the control runtime) while the admin API is on.
pub fn spawn_sampler(state: Arc<AppState>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            sample(&state.gateway.load());
        }
    });
}

fn sample(gw: &Gateway) {
    let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut s = sampled();
    for (i, t) in gw.targets.iter().enumerate() {
        let name = t.pool.name().to_string();
        let (busy, waits, wait_us) = t.pool.live();
        let (w0, us0) = s.waits.insert(name.clone(), (waits, wait_us)).unwrap_or((waits, wait_us));
        let dw = waits.saturating_sub(w0);
        let wait_ms = if dw == 0 { 0.0 } else { wait_us.saturating_sub(us0) as f64 / dw as f64 / 1000.0 };
        let ring = s.pools.entry(name.clone()).or_default();
        ring.push_back(Sample { at, busy, queue: t.pool.queue_depth(), wait_ms });
        while ring.len() > POOL_HISTORY {
            ring.pop_front();
        }
        let now = breaker_name(gw, i);
        let before = s.breakers.insert(name.clone(), now);
        if let (Some(before), Some(bus)) = (before, &gw.events)
            && before != now
        {
            let detail = json!({ "provider": name, "from": before, "to": now });
            bus.publish(Event::fact(Priority::High, "breaker", detail));
        }
    }
}

/// The chart window a query asks for (`window=SECONDS`, 60 to 600; default 300), and its step
/// (60 points a chart).
pub fn window(query: Option<&str>) -> (u64, u64) {
    let asked =
        query_pairs(query.unwrap_or("")).into_iter().find(|(k, _)| k == "window").and_then(|(_, v)| v.parse().ok());
    let window = asked.unwrap_or(300u64).clamp(60, 600);
    (window, (window / 60).max(1))
}

/// `GET /admin/stats?window=SECONDS`: everything the dashboard shows but the request list.
pub fn stats(gw: &Gateway, started: std::time::Instant, (window, step): (u64, u64)) -> Value {
    let s = sampled();
    let providers: Vec<Value> = (gw.targets.iter().enumerate())
        .map(|(i, t)| {
            let pool = &t.pool;
            let fill = pool.queue_depth() as f64 / pool.config().queue.max(1) as f64;
            let (busy, waits, wait_us) = pool.live();
            let workers = pool.config().workers;
            let history = s.pools.get(&**pool.name());
            let col = |f: &dyn Fn(&Sample) -> Value| history.map_or_else(Vec::new, |h| h.iter().map(f).collect());
            json!({
                "name": &**pool.name(),
                "state": pool.health().state(fill).as_str(),
                "reason": pool.health().reason(fill),
                "breaker": breaker_name(gw, i),
                "workers": workers,
                "busy": busy,
                "idle": workers.saturating_sub(busy),
                "queue_depth": pool.queue_depth(),
                "queue_capacity": pool.config().queue,
                "waited": waits,
                "wait_avg_ms": if waits == 0 { 0.0 } else { wait_us as f64 / waits as f64 / 1000.0 },
                "history": {
                    "t": col(&|x| json!(x.at)),
                    "busy": col(&|x| json!(x.busy)),
                    "queue": col(&|x| json!(x.queue)),
                    "wait_ms": col(&|x| json!((x.wait_ms * 100.0).round() / 100.0)),
                },
            })
        })
        .collect();
    drop(s);
    let plugins: Vec<Value> = (gw.plugins.stats().into_iter())
        .map(|p| {
            json!({
                "name": p.name,
                "hooks": p.hooks,
                "calls": p.calls,
                "failures": p.failures,
                "p50_us": p.call_us[0],
                "p99_us": p.call_us[1],
                "instances": { "live": p.live, "idle": p.idle, "busy": p.live.saturating_sub(p.idle), "configured": p.configured },
                "state": if p.degraded { "degraded" } else { "ready" },
            })
        })
        .collect();
    json!({
        "uptime_s": started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
        "providers": providers,
        "plugins": plugins,
        "events": gw.events.as_ref().map(|b| b.stats()),
        "series": live().series(window, step),
    })
}

/// `GET /admin/requests?status=&model=&key=&provider=&limit=`: recent records, newest first.
pub fn requests(query: Option<&str>) -> Value {
    let mut f = Filter { limit: 100, ..Filter::default() };
    for (k, v) in query_pairs(query.unwrap_or("")) {
        match k.as_str() {
            "status" => f.status = Some(v),
            "model" => f.model = Some(v),
            "key" => f.key = Some(v),
            "provider" => f.provider = Some(v),
            "limit" => f.limit = v.parse().unwrap_or(100),
            _ => {}
        }
    }
    f.limit = f.limit.clamp(1, MAX_LIMIT);
    let kept = live().recent(&f);
    let list: Vec<&crate::events::RequestRecord> = kept.iter().map(|r| &**r).collect();
    json!({ "requests": list })
}

/// `GET /admin/requests/{id}`: one record.
///
/// # Errors
/// 404 when it is not (or no longer) kept.
pub fn request(id: &str) -> Result<Value, Error> {
    live().find(id).map(|r| json!(&*r)).ok_or_else(|| {
        Error::new(ErrorKind::RouteNotFound, "no recent request with that id (only the last events.recent are kept)")
    })
}

/// `key=value&...` with `%XX` and `+` decoded.
fn query_pairs(q: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let mut out = Vec::with_capacity(s.len());
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                        Ok(v) => {
                            out.push(v);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

static STREAMS: AtomicUsize = AtomicUsize::new(0);

/// `GET /admin/live?window=SECONDS`: server-sent events: `request` (each record as it finishes) and `stats`
/// (the snapshot, every second).
///
/// # Errors
/// 503 when [`MAX_STREAMS`] are open.
pub fn stream(state: Arc<AppState>, range: (u64, u64)) -> Result<Response<ResponseBody>, Error> {
    if STREAMS.fetch_add(1, Ordering::Relaxed) >= MAX_STREAMS {
        STREAMS.fetch_sub(1, Ordering::Relaxed);
        return Err(Error::new(ErrorKind::Overloaded, format!("at most {MAX_STREAMS} live streams at once")));
    }
    let (tx, rx) = mpsc::channel::<BodyFrame>(16);
    let mut records = live().subscribe();
    tokio::spawn(async move {
        let _open = Open;
        let end = tokio::time::Instant::now() + STREAM_LIFETIME;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let frame = tokio::select! {
                () = tokio::time::sleep_until(end) => break,
                _ = tick.tick() => {
                    let gw = state.gateway.load();
                    sse("stats", &stats(&gw, state.started, range).to_string())
                }
                r = records.recv() => match r {
                    Ok(text) => sse("request", &text),
                    Err(broadcast::error::RecvError::Lagged(n)) => sse("lagged", &n.to_string()),
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            };
            // A dashboard that does not read for 10 s is dropped.
            match tokio::time::timeout(Duration::from_secs(10), tx.send(BodyFrame::Data(frame))).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
        let _ = tx.send(BodyFrame::Last(Bytes::new())).await;
    });
    let mut resp = Response::new(ResponseBody::stream(rx));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    *resp.status_mut() = StatusCode::OK;
    Ok(resp)
}

/// Counts an open stream until dropped.
struct Open;
impl Drop for Open {
    fn drop(&mut self) {
        STREAMS.fetch_sub(1, Ordering::Relaxed);
    }
}

fn sse(event: &str, data: &str) -> Bytes {
    // The JSON is on one line, so one `data:` line carries it.
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_are_decoded() {
        let q = query_pairs("status=5xx&model=gpt%2D4o+mini&limit=3&bad=%zz&&x");
        assert_eq!(q[0], ("status".into(), "5xx".into()));
        assert_eq!(q[1], ("model".into(), "gpt-4o mini".into()));
        assert_eq!(q[3], ("bad".into(), "%zz".into()));
        assert_eq!(q[4], ("x".into(), String::new()));
    }
}
