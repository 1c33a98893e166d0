//! The exact-match response cache (`[cache]`): a successful answer is kept under the hash of
//! the request that got it ([`key`]) and answers the same request again until its TTL ends.
//!
//! Two tiers, read through in order: this process's (moka, at most `max_entries`, least
//! recently used evicted first), then, with `[state] redis_url`, Redis (one `GET` bounded by
//! `redis_timeout`), whose entries every instance shares. An answer is written to both; the
//! Redis write runs on its own task, so no client waits for it.
//!
//! A Redis that does not answer makes a lookup a miss, whatever `[state] on_unavailable` says:
//! a cache outage costs upstream calls, never answers. After a failed round trip, lookups skip
//! Redis for [`REDIS_BACKOFF`] so requests do not each wait `redis_timeout` on a Redis that is
//! down; writes keep trying, and the first that succeeds brings lookups back.

pub mod key;
mod memo;
pub mod replay;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use weir_config::CacheConfig;
use weir_state::Redis;

pub use key::{Key, Request, key};
pub use replay::{Recorder, stream_of};

/// How long lookups leave Redis alone after it failed to answer.
pub const REDIS_BACKOFF: Duration = Duration::from_secs(1);

/// One cached answer: the provider's whole answer in the client's format, and who gave it.
#[derive(Debug, Clone)]
pub struct Cached {
    /// The provider that answered (the `x-weir-provider` of a hit).
    pub provider: Arc<str>,
    /// The answer's body.
    pub body: Bytes,
    /// How long it stays cached from when this copy was made.
    ttl: Duration,
}

impl Cached {
    /// An answer to keep for `ttl`.
    pub fn new(provider: Arc<str>, body: Bytes, ttl: Duration) -> Self {
        Self { provider, body, ttl }
    }

    /// The Redis value: the provider's name, a newline, the body.
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.provider.len() + 1 + self.body.len());
        v.extend_from_slice(self.provider.as_bytes());
        v.push(b'\n');
        v.extend_from_slice(&self.body);
        v
    }

    fn decode(v: Vec<u8>, ttl: Duration) -> Option<Self> {
        let nl = v.iter().position(|&b| b == b'\n')?;
        let provider = Arc::from(std::str::from_utf8(&v[..nl]).ok()?);
        let body = Bytes::from(v).slice(nl + 1..);
        Some(Self { provider, body, ttl })
    }
}

struct PerEntryTtl;

impl moka::Expiry<[u8; 32], Cached> for PerEntryTtl {
    fn expire_after_create(&self, _key: &[u8; 32], value: &Cached, _now: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The cache of one gateway snapshot (kept across reloads that leave `[cache]` and `[state]`
/// alone).
pub struct ResponseCache {
    cfg: CacheConfig,
    local: Cache<[u8; 32], Cached>,
    redis: Option<Arc<Redis>>,
    /// Shared with the Redis writes, whose success ends it.
    backoff: Arc<Backoff>,
    /// Keys of bodies seen before ([`ResponseCache::key`]).
    memo: memo::KeyMemo,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache").field("cfg", &self.cfg).field("redis", &self.redis).finish_non_exhaustive()
    }
}

impl ResponseCache {
    /// The cache `cfg` describes, or `None` when it is off.
    pub fn new(cfg: &CacheConfig, redis: Option<Arc<Redis>>) -> Option<Arc<Self>> {
        if !cfg.enabled {
            return None;
        }
        // Both bounds in one weight: an answer weighs its size in units of `max_bytes /
        // max_entries` (at least 1), and the cache holds `max_entries` units. So it never holds
        // more than `max_entries` answers nor more than `max_bytes` of them.
        let unit = (cfg.max_bytes / cfg.max_entries).max(1);
        let local = Cache::builder()
            .max_capacity(cfg.max_entries)
            .weigher(move |_k: &[u8; 32], v: &Cached| {
                u32::try_from((v.body.len() as u64 + 64).div_ceil(unit).max(1)).unwrap_or(u32::MAX)
            })
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(PerEntryTtl)
            .build();
        let backoff = Arc::new(Backoff { until: AtomicU64::new(0), epoch: Instant::now() });
        let memo = memo::KeyMemo::new(cfg.ttl);
        Some(Arc::new(Self { cfg: cfg.clone(), local, redis, backoff, memo }))
    }

    /// The key of `req` ([`key`]); a body sent before as the same bytes on the same route
    /// finds its key without being parsed and hashed again.
    pub fn key(&self, req: &Request<'_>) -> Option<Key> {
        self.memo.key(req)
    }

    /// The settings it was made with.
    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    /// Whether this cache was made for `cfg` and `redis` (so a reload can keep it).
    pub fn same(&self, cfg: &CacheConfig, redis: Option<&Arc<Redis>>) -> bool {
        self.cfg == *cfg
            && match (&self.redis, redis) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }

    /// The answer cached for `key`: this process's copy, else Redis's (then kept here for the
    /// rest of its TTL). Waits at most `redis_timeout`.
    pub async fn get(&self, key: &Key) -> Option<Cached> {
        if let Some(hit) = self.local.get(&key.hash) {
            return Some(hit);
        }
        let redis = self.redis.as_ref()?;
        if self.backoff.active() {
            return None;
        }
        let name = redis.key(&format!("cache:{}", key.hex()));
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&name).cmd("PTTL").arg(&name);
        match redis.pipeline::<(Option<Vec<u8>>, i64)>(&pipe).await {
            Ok((Some(v), ttl_ms)) if ttl_ms > 0 => {
                let hit = Cached::decode(v, Duration::from_millis(ttl_ms as u64))?;
                self.local.insert(key.hash, hit.clone());
                Some(hit)
            }
            Ok(_) => None,
            Err(_) => {
                metrics::counter!("weir_cache_redis_errors_total", "op" => "get").increment(1);
                self.backoff.start();
                None
            }
        }
    }

    /// Keeps `body`, the answer `provider` gave to `key`'s request, unless it is larger than
    /// `max_entry_bytes`. Returns at once: the Redis write runs on its own task.
    pub fn put(&self, key: &Key, provider: Arc<str>, body: Bytes) {
        if body.len() as u64 > self.cfg.max_entry_bytes {
            return;
        }
        let entry = Cached::new(provider, body, self.cfg.ttl);
        if let Some(redis) = &self.redis {
            let name = redis.key(&format!("cache:{}", key.hex()));
            let mut cmd = redis::cmd("SET");
            cmd.arg(name).arg(entry.encode()).arg("PX").arg(self.cfg.ttl.as_millis() as u64);
            let (redis, backoff) = (redis.clone(), self.backoff.clone());
            tokio::spawn(async move {
                match redis.query::<()>(&cmd).await {
                    Ok(()) => backoff.clear(),
                    Err(_) => {
                        metrics::counter!("weir_cache_redis_errors_total", "op" => "set").increment(1);
                        backoff.start();
                    }
                }
            });
        }
        self.local.insert(key.hash, entry);
        // Applies the `max_entries` bound now rather than at moka's next housekeeping; a store
        // follows an upstream call, so this is never on a hit's path.
        self.local.run_pending_tasks();
    }
}

/// When lookups may use Redis again after it failed to answer.
struct Backoff {
    /// Milliseconds since `epoch`; 0 when Redis answered last.
    until: AtomicU64,
    epoch: Instant,
}

impl Backoff {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn active(&self) -> bool {
        self.now_ms() < self.until.load(Ordering::Relaxed)
    }

    fn start(&self) {
        self.until.store(self.now_ms() + REDIS_BACKOFF.as_millis() as u64, Ordering::Relaxed);
    }

    fn clear(&self) {
        self.until.store(0, Ordering::Relaxed);
    }
}

/// Counts one request's dealing with the cache: `hit`, `miss` or `bypass` (the client's
/// `cache-control` said not to use it).
pub fn count(result: &'static str) {
    metrics::counter!("weir_cache_total", "result" => result).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_types::exchange::JsonBody;
    use weir_types::format::{ApiFormat, Endpoint, Operation};

    fn key_of(text: &str) -> Key {
        let body = JsonBody::from_raw(Bytes::from(text.to_owned()));
        let endpoint = Endpoint { format: ApiFormat::OpenAi, op: Operation::Chat };
        key::key(&Request { endpoint, provider: "p", model: "m", body: &body, owner: None }).unwrap()
    }

    fn cache(max_entries: u64, ttl: Duration) -> Arc<ResponseCache> {
        ResponseCache::new(&CacheConfig { enabled: true, max_entries, ttl, ..Default::default() }, None).unwrap()
    }

    #[tokio::test]
    async fn a_put_answer_is_got_back_and_expires() {
        let c = cache(10, Duration::from_millis(50));
        let k = key_of(r#"{"messages":[]}"#);
        assert!(c.get(&k).await.is_none());
        c.put(&k, Arc::from("p"), Bytes::from_static(b"{}"));
        let hit = c.get(&k).await.unwrap();
        assert_eq!((&*hit.provider, &hit.body[..]), ("p", &b"{}"[..]));
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(c.get(&k).await.is_none());
    }

    #[tokio::test]
    async fn the_least_recently_used_goes_past_max_entries() {
        let c = cache(2, Duration::from_secs(60));
        let keys: Vec<Key> = (0..3).map(|i| key_of(&format!(r#"{{"n":{i}}}"#))).collect();
        for k in &keys {
            c.put(k, Arc::from("p"), Bytes::from_static(b"{}"));
        }
        assert!(c.get(&keys[0]).await.is_none(), "the oldest went");
        assert!(c.get(&keys[2]).await.is_some());
    }

    #[test]
    fn an_oversized_answer_is_not_kept_and_off_means_no_cache() {
        let c =
            ResponseCache::new(&CacheConfig { enabled: true, max_entry_bytes: 4, ..Default::default() }, None).unwrap();
        let k = key_of("{}");
        c.put(&k, Arc::from("p"), Bytes::from_static(b"12345"));
        assert!(c.local.get(&k.hash).is_none());
        assert!(ResponseCache::new(&CacheConfig::default(), None).is_none());
    }

    #[tokio::test]
    async fn max_bytes_bounds_the_cache_too() {
        let cfg = CacheConfig { enabled: true, max_entries: 100, max_bytes: 10_000, ..Default::default() };
        let c = ResponseCache::new(&cfg, None).unwrap();
        for i in 0..10 {
            c.put(&key_of(&format!(r#"{{"n":{i}}}"#)), Arc::from("p"), Bytes::from(vec![b' '; 3_000]));
        }
        let kept = c.local.iter().map(|(_, v)| v.body.len()).sum::<usize>();
        assert!(kept <= 10_000, "{kept} bytes kept");
        assert!(c.get(&key_of(r#"{"n":9}"#)).await.is_some(), "the newest stays");
    }

    #[test]
    fn a_redis_value_round_trips() {
        let e = Cached::new(Arc::from("openai"), Bytes::from_static(b"{\"a\":\"x\ny\"}"), Duration::from_secs(1));
        let back = Cached::decode(e.encode(), Duration::from_secs(1)).unwrap();
        assert_eq!((&*back.provider, &back.body[..]), ("openai", &b"{\"a\":\"x\ny\"}"[..]));
    }
}
