//! The live view behind the admin API's recent requests and the dashboard: a bus sink keeps
//! the last request records (a bounded ring), a per-second history of request counts and
//! latency histograms (the last ten minutes), and passes each record on to the dashboards
//! subscribed to the live stream. Process-wide, so it outlives reloads.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::events::{Event, RequestRecord, Sink};

/// Seconds of history kept.
const HISTORY_SECONDS: usize = 600;
/// Latency histogram buckets: bucket `i` holds values from `2^((i-1)/2)` up to `2^(i/2)`
/// microseconds (steps of 41%); the last one everything above ~3 minutes.
const BUCKETS: usize = 56;
/// Records waiting for a slow live-stream subscriber before it misses some.
const STREAM_BACKLOG: usize = 1024;

/// The process's live view.
pub fn live() -> &'static Live {
    static LIVE: OnceLock<Live> = OnceLock::new();
    LIVE.get_or_init(Live::new)
}

/// Recent records, history and subscribers.
pub struct Live {
    recent: Mutex<Recent>,
    history: Mutex<VecDeque<Second>>,
    stream: broadcast::Sender<Arc<str>>,
}

struct Recent {
    records: VecDeque<Arc<RequestRecord>>,
    capacity: usize,
}

/// One second of finished requests.
#[derive(Clone)]
struct Second {
    /// Unix seconds.
    at: u64,
    requests: u64,
    /// 5xx answers.
    errors: u64,
    /// 4xx answers.
    refused: u64,
    latency: [u32; BUCKETS],
    overhead: [u32; BUCKETS],
    ttft: [u32; BUCKETS],
    tokens: u64,
}

impl Second {
    fn new(at: u64) -> Self {
        Self {
            at,
            requests: 0,
            errors: 0,
            refused: 0,
            latency: [0; BUCKETS],
            overhead: [0; BUCKETS],
            ttft: [0; BUCKETS],
            tokens: 0,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn bucket(us: f64) -> usize {
    if us < 1.0 { 0 } else { ((us.log2() * 2.0).floor() as usize + 1).min(BUCKETS - 1) }
}

/// The upper bound of bucket `i`, in microseconds.
fn bucket_top(i: usize) -> f64 {
    2f64.powf(i as f64 / 2.0)
}

/// The `q` quantile of a histogram, in microseconds (the bucket's upper bound).
fn quantile(h: &[u32; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = h.iter().map(|&n| u64::from(n)).sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, &n) in h.iter().enumerate() {
        seen += u64::from(n);
        if seen >= rank {
            return Some(bucket_top(i));
        }
    }
    None
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Filters of `GET /admin/requests`.
#[derive(Default)]
pub struct Filter {
    /// `2xx`, `4xx`, `5xx`, `error` (4xx and 5xx) or an exact status.
    pub status: Option<String>,
    /// Asked or served model, exactly.
    pub model: Option<String>,
    /// Virtual key name, exactly.
    pub key: Option<String>,
    /// Provider, exactly.
    pub provider: Option<String>,
    /// Most records returned.
    pub limit: usize,
}

impl Filter {
    fn matches(&self, r: &RequestRecord) -> bool {
        let status_ok = match self.status.as_deref() {
            None | Some("") => true,
            Some("error") => r.status >= 400,
            Some(s) if s.len() == 3 && s.ends_with("xx") => s.as_bytes()[0] == b'0' + (r.status / 100) as u8,
            Some(s) => s.parse::<u16>().is_ok_and(|n| n == r.status),
        };
        let model_ok =
            self.model.as_deref().is_none_or(|m| m.is_empty() || r.model == m || r.served_model.as_deref() == Some(m));
        let key_ok = self.key.as_deref().is_none_or(|k| k.is_empty() || r.key.as_deref() == Some(k));
        let provider_ok = self.provider.as_deref().is_none_or(|p| p.is_empty() || r.provider.as_deref() == Some(p));
        status_ok && model_ok && key_ok && provider_ok
    }
}

impl Live {
    fn new() -> Self {
        Self {
            recent: Mutex::new(Recent { records: VecDeque::new(), capacity: 500 }),
            history: Mutex::new(VecDeque::with_capacity(HISTORY_SECONDS + 1)),
            stream: broadcast::channel(STREAM_BACKLOG).0,
        }
    }

    /// Sets how many records are kept (`events.recent`).
    pub fn set_capacity(&self, capacity: usize) {
        let mut r = lock(&self.recent);
        r.capacity = capacity;
        while r.records.len() > capacity {
            r.records.pop_front();
        }
    }

    /// Adds one finished request.
    pub fn add(&self, record: RequestRecord) {
        let now = now_secs();
        {
            let mut h = lock(&self.history);
            if h.back().is_none_or(|s| s.at != now) {
                h.push_back(Second::new(now));
                while h.len() > HISTORY_SECONDS {
                    h.pop_front();
                }
            }
            let s = h.back_mut().expect("pushed above");
            s.requests += 1;
            s.errors += u64::from(record.status >= 500);
            s.refused += u64::from((400..500).contains(&record.status));
            s.latency[bucket(record.latency_ms * 1000.0)] += 1;
            s.overhead[bucket(record.overhead_us as f64)] += 1;
            if let Some(t) = record.ttft_ms {
                s.ttft[bucket(t * 1000.0)] += 1;
            }
            s.tokens += record.tokens_in.unwrap_or(0) + record.tokens_out.unwrap_or(0);
        }
        let record = Arc::new(record);
        if self.stream.receiver_count() > 0
            && let Ok(text) = serde_json::to_string(&*record)
        {
            let _ = self.stream.send(Arc::from(text));
        }
        let mut r = lock(&self.recent);
        if r.capacity == 0 {
            return;
        }
        if r.records.len() >= r.capacity {
            r.records.pop_front();
        }
        r.records.push_back(record);
    }

    /// The most recent records matching `f`, newest first.
    pub fn recent(&self, f: &Filter) -> Vec<Arc<RequestRecord>> {
        let r = lock(&self.recent);
        r.records.iter().rev().filter(|rec| f.matches(rec)).take(f.limit).cloned().collect()
    }

    /// One record by request id, if still kept.
    pub fn find(&self, id: &str) -> Option<Arc<RequestRecord>> {
        lock(&self.recent).records.iter().rev().find(|r| r.id == id).cloned()
    }

    /// Each record as it is added (JSON text).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.stream.subscribe()
    }

    /// The history of the last `window` seconds in steps of `step` seconds: per step the
    /// request and error rates (per second) and latency, overhead and time-to-first-token
    /// percentiles, plus the totals of the last 10 seconds.
    pub fn series(&self, window: u64, step: u64) -> Value {
        let step = step.clamp(1, 60);
        let window = window.clamp(step, HISTORY_SECONDS as u64);
        let now = now_secs();
        let first = now.saturating_sub(window) + 1;
        let points = window.div_ceil(step) as usize;
        let mut acc = vec![Second::new(0); points];
        let h = lock(&self.history);
        for s in h.iter().filter(|s| s.at >= first && s.at <= now) {
            let i = ((s.at - first) / step) as usize;
            merge(&mut acc[i.min(points - 1)], s);
        }
        let mut last10 = Second::new(0);
        for s in h.iter().filter(|s| s.at + 10 > now) {
            merge(&mut last10, s);
        }
        drop(h);
        let ms = |v: Option<f64>| v.map(|us| (us / 1000.0 * 100.0).round() / 100.0);
        let per_sec = |n: u64| (n as f64 / step as f64 * 100.0).round() / 100.0;
        let col = |f: &dyn Fn(&Second) -> Value| acc.iter().map(f).collect::<Vec<_>>();
        json!({
            "step_s": step,
            "t": (0..points).map(|i| first + i as u64 * step).collect::<Vec<_>>(),
            "rps": col(&|s| json!(per_sec(s.requests))),
            "error_rate": col(&|s| json!(per_sec(s.errors))),
            "refused_rate": col(&|s| json!(per_sec(s.refused))),
            "latency_p50_ms": col(&|s| json!(ms(quantile(&s.latency, 0.5)))),
            "latency_p95_ms": col(&|s| json!(ms(quantile(&s.latency, 0.95)))),
            "latency_p99_ms": col(&|s| json!(ms(quantile(&s.latency, 0.99)))),
            "overhead_p50_us": col(&|s| json!(quantile(&s.overhead, 0.5))),
            "overhead_p99_us": col(&|s| json!(quantile(&s.overhead, 0.99))),
            "ttft_p50_ms": col(&|s| json!(ms(quantile(&s.ttft, 0.5)))),
            "last_10s": {
                "requests": last10.requests,
                "rps": (last10.requests as f64 / 10.0 * 100.0).round() / 100.0,
                "errors": last10.errors,
                "refused": last10.refused,
                "tokens": last10.tokens,
                "latency_p50_ms": ms(quantile(&last10.latency, 0.5)),
                "latency_p99_ms": ms(quantile(&last10.latency, 0.99)),
                "overhead_p50_us": quantile(&last10.overhead, 0.5),
                "overhead_p99_us": quantile(&last10.overhead, 0.99),
                "ttft_p50_ms": ms(quantile(&last10.ttft, 0.5)),
            },
        })
    }
}

fn merge(into: &mut Second, s: &Second) {
    into.requests += s.requests;
    into.errors += s.errors;
    into.refused += s.refused;
    into.tokens += s.tokens;
    for i in 0..BUCKETS {
        into.latency[i] += s.latency[i];
        into.overhead[i] += s.overhead[i];
        into.ttft[i] += s.ttft[i];
    }
}

/// The bus sink feeding [`live()`].
pub struct LiveSink;

impl Sink for LiveSink {
    fn write(&mut self, event: &Event) -> std::io::Result<()> {
        if let Some(r) = event.record() {
            live().add(r.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, status: u16, model: &str, latency_ms: f64) -> RequestRecord {
        RequestRecord { id: id.into(), status, model: model.into(), latency_ms, ..Default::default() }
    }

    #[test]
    fn the_ring_keeps_the_newest_and_filters() {
        let l = Live::new();
        l.set_capacity(3);
        for (i, s) in [200, 502, 200, 429, 200].into_iter().enumerate() {
            l.add(rec(&format!("r{i}"), s, if i % 2 == 0 { "a" } else { "b" }, 1.0));
        }
        let all = l.recent(&Filter { limit: 10, ..Filter::default() });
        assert_eq!(all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["r4", "r3", "r2"]);
        let errors = l.recent(&Filter { status: Some("4xx".into()), limit: 10, ..Filter::default() });
        assert_eq!(errors.len(), 1);
        let model_a = l.recent(&Filter { model: Some("a".into()), limit: 10, ..Filter::default() });
        assert_eq!(model_a.len(), 2);
        assert!(l.find("r0").is_none() && l.find("r3").is_some());
    }

    #[test]
    fn the_series_counts_requests_and_percentiles() {
        let l = Live::new();
        for i in 0..100 {
            l.add(rec("x", if i < 10 { 500 } else { 200 }, "m", if i < 99 { 2.0 } else { 900.0 }));
        }
        let s = l.series(60, 60);
        assert_eq!(s["last_10s"]["requests"], 100);
        assert_eq!(s["last_10s"]["errors"], 10);
        let p50 = s["last_10s"]["latency_p50_ms"].as_f64().unwrap();
        let p99 = s["last_10s"]["latency_p99_ms"].as_f64().unwrap();
        assert!((2.0..3.0).contains(&p50), "{p50}");
        assert!(p99 < 3.0, "the one slow request is above p99: {p99}");
        assert_eq!(s["rps"].as_array().unwrap().len(), 1);
    }
}
