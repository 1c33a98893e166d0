//! Capability `kv`: a bounded, expiring key-value store per plugin (moka), shared by all
//! instances of the plugin and carried over reloads by name. Granted to every plugin with the
//! limits below; a plugin never sees another plugin's keys.
//!
//! With `[state] redis_url` the store is Redis instead (keys `<key_prefix>kv:<plugin>:<key>`),
//! shared by every Weir instance. Its calls are async host functions: the plugin's fiber waits
//! and the serving thread serves other requests (the call moves to the plugin runtime, as any
//! call that waits does). Each waits at most `redis_timeout`. When Redis does not answer,
//! `fail-open` uses this instance's store and `fail-closed` refuses (`get` finds nothing, `set`
//! and `incr` return an error), and for [`REDIS_BACKOFF`] after that failure calls do not try
//! Redis, so a plugin making several calls per request is not held up by each.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use moka::ops::compute::Op;
use moka::sync::Cache;
use wasmtime::component::{HasSelf, Linker};
use weir_state::{OnUnavailable, Redis};

use super::StoreData;
use crate::plugins::bindings::kv;

/// How long kv calls leave Redis alone after it failed to answer.
pub const REDIS_BACKOFF: Duration = Duration::from_secs(1);

/// The shared store, when `[state] redis_url` is set: process-wide, as the per-plugin stores
/// are, and swapped by each gateway snapshot.
static REMOTE: RwLock<Option<Arc<Redis>>> = RwLock::new(None);
/// Until when (ms since [`epoch`]) calls skip Redis after a failure.
static SKIP_UNTIL: AtomicU64 = AtomicU64::new(0);

fn epoch_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Puts every plugin's kv in `redis` (`None`: in this process).
pub fn share_through(redis: Option<Arc<Redis>>) {
    *REMOTE.write().unwrap_or_else(|e| e.into_inner()) = redis;
}

/// Where a kv call goes.
enum Where {
    Here,
    Redis(Arc<Redis>),
    /// Redis is out and `fail-closed` says not to fall back.
    Nowhere,
}

fn route() -> Where {
    let Some(redis) = REMOTE.read().unwrap_or_else(|e| e.into_inner()).clone() else { return Where::Here };
    if epoch_ms() >= SKIP_UNTIL.load(Ordering::Relaxed) {
        return Where::Redis(redis);
    }
    outage_route(&redis)
}

fn outage_route(redis: &Redis) -> Where {
    match redis.mode() {
        OnUnavailable::FailOpen => Where::Here,
        OnUnavailable::FailClosed => Where::Nowhere,
    }
}

/// Redis did not answer: skip it for a while, and say where the call goes instead.
fn failed(redis: &Redis) -> Where {
    SKIP_UNTIL.store(epoch_ms() + REDIS_BACKOFF.as_millis() as u64, Ordering::Relaxed);
    metrics::counter!("weir_plugin_kv_redis_errors_total").increment(1);
    outage_route(redis)
}

const UNAVAILABLE: &str = "the shared kv store (Redis) is unavailable";

/// `INCRBY` with the TTL set only on the key it creates; a non-integer or an overflow comes
/// back as a string, not an error reply (which would count as Redis failing).
const INCR_SCRIPT: &str = "local n = redis.pcall('INCRBY', KEYS[1], ARGV[1]) \
    if type(n) == 'table' then return n.err end \
    redis.call('PEXPIRE', KEYS[1], ARGV[2], 'NX') return n";

/// Longest key; stops unbounded keys.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest value; stops one entry from filling the store.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Longest (and default) TTL: entries never outlive this.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// Total bytes (keys + values) one plugin may keep; least-used entries are evicted beyond it.
pub const CAPACITY_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Clone)]
struct Entry {
    value: Arc<[u8]>,
    ttl: Duration,
    /// `incr` on an existing key keeps its expiry; `set` restarts it.
    keep_expiry: bool,
}

struct PerEntryTtl;

impl moka::Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, value: &Entry, _now: Instant) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Entry,
        _now: Instant,
        current: Option<Duration>,
    ) -> Option<Duration> {
        if value.keep_expiry { current } else { Some(value.ttl) }
    }
}

/// One plugin's store.
pub struct KvStore {
    cache: Cache<String, Entry>,
    /// The plugin's name: its namespace in Redis.
    name: String,
}

impl KvStore {
    /// An empty store bounded to `capacity_bytes`.
    pub fn new(name: &str, capacity_bytes: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|k: &String, v: &Entry| (k.len() + v.value.len() + 32).try_into().unwrap_or(u32::MAX))
            .expire_after(PerEntryTtl)
            .build();
        Self { cache, name: name.to_owned() }
    }

    fn redis_key(&self, redis: &Redis, key: &str) -> String {
        redis.key(&format!("kv:{}:{key}", self.name))
    }

    /// The store of plugin `name`: the same one across reloads while any chain uses it.
    pub fn shared(name: &str) -> Arc<Self> {
        static STORES: OnceLock<Mutex<HashMap<String, Weak<KvStore>>>> = OnceLock::new();
        let mut stores = STORES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        stores.retain(|_, w| w.strong_count() > 0);
        if let Some(store) = stores.get(name).and_then(Weak::upgrade) {
            return store;
        }
        let store = Arc::new(Self::new(name, CAPACITY_BYTES));
        stores.insert(name.to_owned(), Arc::downgrade(&store));
        store
    }
}

fn ttl(ms: u64) -> Duration {
    if ms == 0 { MAX_TTL } else { Duration::from_millis(ms).min(MAX_TTL) }
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(format!("key must be 1..={MAX_KEY_BYTES} bytes"));
    }
    Ok(())
}

/// Per-instance state: a handle on the plugin's store.
pub struct KvState {
    store: Arc<KvStore>,
}

impl KvState {
    /// Access to `store`.
    pub fn new(store: Arc<KvStore>) -> Self {
        Self { store }
    }
}

impl kv::Host for KvState {
    async fn get(&mut self, key: String) -> Option<Vec<u8>> {
        check_key(&key).ok()?;
        let mut at = route();
        if let Where::Redis(r) = &at {
            match r.query::<Option<Vec<u8>>>(redis::cmd("GET").arg(self.store.redis_key(r, &key))).await {
                Ok(v) => return v,
                Err(_) => at = failed(r),
            }
        }
        match at {
            Where::Here => self.store.cache.get(&key).map(|e| e.value.to_vec()),
            _ => None,
        }
    }

    async fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: u64) -> Result<(), String> {
        check_key(&key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!("value larger than {MAX_VALUE_BYTES} bytes"));
        }
        let mut at = route();
        if let Where::Redis(r) = &at {
            let ms = ttl(ttl_ms).as_millis() as u64;
            let cmd = redis::cmd("SET").arg(self.store.redis_key(r, &key)).arg(&value).arg("PX").arg(ms).clone();
            match r.query::<()>(&cmd).await {
                Ok(()) => return Ok(()),
                Err(_) => at = failed(r),
            }
        }
        match at {
            Where::Here => {
                self.store.cache.insert(key, Entry { value: value.into(), ttl: ttl(ttl_ms), keep_expiry: false });
                Ok(())
            }
            _ => Err(UNAVAILABLE.into()),
        }
    }

    async fn incr(&mut self, key: String, delta: i64, ttl_ms: u64) -> Result<i64, String> {
        check_key(&key)?;
        let mut at = route();
        if let Where::Redis(r) = &at {
            let ms = ttl(ttl_ms).as_millis() as u64;
            let name = self.store.redis_key(r, &key);
            let cmd = redis::cmd("EVAL").arg(INCR_SCRIPT).arg(1).arg(name).arg(delta).arg(ms).clone();
            match r.query::<redis::Value>(&cmd).await {
                Ok(redis::Value::Int(n)) => return Ok(n),
                Ok(other) => {
                    let overflow =
                        matches!(&other, redis::Value::BulkString(m) if m.windows(8).any(|w| w == b"overflow"));
                    return Err(if overflow { "integer overflow" } else { "value is not an integer" }.into());
                }
                Err(_) => at = failed(r),
            }
        }
        if !matches!(at, Where::Here) {
            return Err(UNAVAILABLE.into());
        }
        let mut outcome: Result<i64, String> = Err(String::new());
        self.store.cache.entry(key).and_compute_with(|current| {
            let old = match current {
                None => Some(0),
                Some(e) => std::str::from_utf8(&e.into_value().value).ok().and_then(|s| s.parse::<i64>().ok()),
            };
            let Some(old) = old else {
                outcome = Err("value is not an integer".into());
                return Op::Nop;
            };
            let Some(new) = old.checked_add(delta) else {
                outcome = Err("integer overflow".into());
                return Op::Nop;
            };
            outcome = Ok(new);
            Op::Put(Entry { value: new.to_string().into_bytes().into(), ttl: ttl(ttl_ms), keep_expiry: true })
        });
        outcome
    }

    async fn delete(&mut self, key: String) {
        let mut at = route();
        if let Where::Redis(r) = &at {
            match r.query::<()>(redis::cmd("DEL").arg(self.store.redis_key(r, &key))).await {
                Ok(()) => return,
                Err(_) => at = failed(r),
            }
        }
        if let Where::Here = at {
            self.store.cache.invalidate(&key);
        }
    }
}

/// Adds `weir:plugin/kv` to the linker.
///
/// # Errors
/// Only on a linker conflict (a bug).
pub fn add_to_linker(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    kv::add_to_linker::<StoreData, HasSelf<KvState>>(linker, |d| &mut d.kv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::bindings::kv::Host as _;

    fn state() -> KvState {
        KvState::new(Arc::new(KvStore::new("kv-test", CAPACITY_BYTES)))
    }

    #[tokio::test]
    async fn set_then_get_round_trips() {
        let mut kv = state();
        kv.set("k".into(), b"v".to_vec(), 0).await.unwrap();
        assert_eq!(kv.get("k".into()).await, Some(b"v".to_vec()));
        kv.delete("k".into()).await;
        assert_eq!(kv.get("k".into()).await, None);
    }

    #[tokio::test]
    async fn oversized_keys_and_values_are_refused() {
        let mut kv = state();
        assert!(kv.set("k".repeat(MAX_KEY_BYTES + 1), vec![], 0).await.is_err());
        assert!(kv.set(String::new(), vec![], 0).await.is_err());
        assert!(kv.set("k".into(), vec![0; MAX_VALUE_BYTES + 1], 0).await.is_err());
        assert!(kv.incr("k".repeat(MAX_KEY_BYTES + 1), 1, 0).await.is_err());
    }

    #[tokio::test]
    async fn incr_counts_and_refuses_non_integers() {
        let mut kv = state();
        assert_eq!(kv.incr("n".into(), 2, 0).await, Ok(2));
        assert_eq!(kv.incr("n".into(), -5, 0).await, Ok(-3));
        assert_eq!(kv.get("n".into()).await, Some(b"-3".to_vec()));
        kv.set("s".into(), b"abc".to_vec(), 0).await.unwrap();
        assert!(kv.incr("s".into(), 1, 0).await.is_err());
        kv.set("max".into(), i64::MAX.to_string().into_bytes(), 0).await.unwrap();
        assert!(kv.incr("max".into(), 1, 0).await.is_err());
    }

    #[tokio::test]
    async fn entries_expire_after_their_ttl() {
        let mut kv = state();
        kv.set("k".into(), b"v".to_vec(), 30).await.unwrap();
        assert!(kv.get("k".into()).await.is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(kv.get("k".into()).await, None);
    }

    #[tokio::test]
    async fn stores_are_namespaced_per_plugin_and_shared_by_instances() {
        let a = KvStore::shared("kv-test-a");
        let mut a1 = KvState::new(a.clone());
        let mut a2 = KvState::new(KvStore::shared("kv-test-a"));
        let mut b = KvState::new(KvStore::shared("kv-test-b"));
        a1.set("k".into(), b"1".to_vec(), 0).await.unwrap();
        assert_eq!(a2.get("k".into()).await, Some(b"1".to_vec()));
        assert_eq!(b.get("k".into()).await, None);
    }

    #[tokio::test]
    async fn store_is_bounded() {
        let mut kv = KvState::new(Arc::new(KvStore::new("kv-test", 256 * 1024)));
        for i in 0..100 {
            kv.set(format!("k{i}"), vec![0; 32 * 1024], 0).await.unwrap();
        }
        kv.store.cache.run_pending_tasks();
        assert!(kv.store.cache.weighted_size() <= 256 * 1024);
    }
}
