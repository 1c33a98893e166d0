//! Capability `kv`: a bounded, expiring key-value store per plugin (moka), shared by all
//! instances of the plugin and carried over reloads by name. Granted to every plugin with the
//! limits below; a plugin never sees another plugin's keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use moka::ops::compute::Op;
use moka::sync::Cache;
use wasmtime::component::{HasSelf, Linker};

use super::StoreData;
use crate::plugins::bindings::kv;

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
}

impl KvStore {
    /// An empty store bounded to `capacity_bytes`.
    pub fn new(capacity_bytes: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|k: &String, v: &Entry| (k.len() + v.value.len() + 32).try_into().unwrap_or(u32::MAX))
            .expire_after(PerEntryTtl)
            .build();
        Self { cache }
    }

    /// The store of plugin `name`: the same one across reloads while any chain uses it.
    pub fn shared(name: &str) -> Arc<Self> {
        static STORES: OnceLock<Mutex<HashMap<String, Weak<KvStore>>>> = OnceLock::new();
        let mut stores = STORES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        stores.retain(|_, w| w.strong_count() > 0);
        if let Some(store) = stores.get(name).and_then(Weak::upgrade) {
            return store;
        }
        let store = Arc::new(Self::new(CAPACITY_BYTES));
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
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        check_key(&key).ok()?;
        self.store.cache.get(&key).map(|e| e.value.to_vec())
    }

    fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: u64) -> Result<(), String> {
        check_key(&key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!("value larger than {MAX_VALUE_BYTES} bytes"));
        }
        self.store.cache.insert(key, Entry { value: value.into(), ttl: ttl(ttl_ms), keep_expiry: false });
        Ok(())
    }

    fn incr(&mut self, key: String, delta: i64, ttl_ms: u64) -> Result<i64, String> {
        check_key(&key)?;
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

    fn delete(&mut self, key: String) {
        self.store.cache.invalidate(&key);
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
        KvState::new(Arc::new(KvStore::new(CAPACITY_BYTES)))
    }

    #[test]
    fn set_then_get_round_trips() {
        let mut kv = state();
        kv.set("k".into(), b"v".to_vec(), 0).unwrap();
        assert_eq!(kv.get("k".into()), Some(b"v".to_vec()));
        kv.delete("k".into());
        assert_eq!(kv.get("k".into()), None);
    }

    #[test]
    fn oversized_keys_and_values_are_refused() {
        let mut kv = state();
        assert!(kv.set("k".repeat(MAX_KEY_BYTES + 1), vec![], 0).is_err());
        assert!(kv.set(String::new(), vec![], 0).is_err());
        assert!(kv.set("k".into(), vec![0; MAX_VALUE_BYTES + 1], 0).is_err());
        assert!(kv.incr("k".repeat(MAX_KEY_BYTES + 1), 1, 0).is_err());
    }

    #[test]
    fn incr_counts_and_refuses_non_integers() {
        let mut kv = state();
        assert_eq!(kv.incr("n".into(), 2, 0), Ok(2));
        assert_eq!(kv.incr("n".into(), -5, 0), Ok(-3));
        assert_eq!(kv.get("n".into()), Some(b"-3".to_vec()));
        kv.set("s".into(), b"abc".to_vec(), 0).unwrap();
        assert!(kv.incr("s".into(), 1, 0).is_err());
        kv.set("max".into(), i64::MAX.to_string().into_bytes(), 0).unwrap();
        assert!(kv.incr("max".into(), 1, 0).is_err());
    }

    #[test]
    fn entries_expire_after_their_ttl() {
        let mut kv = state();
        kv.set("k".into(), b"v".to_vec(), 30).unwrap();
        assert!(kv.get("k".into()).is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(kv.get("k".into()), None);
    }

    #[test]
    fn stores_are_namespaced_per_plugin_and_shared_by_instances() {
        let a = KvStore::shared("kv-test-a");
        let mut a1 = KvState::new(a.clone());
        let mut a2 = KvState::new(KvStore::shared("kv-test-a"));
        let mut b = KvState::new(KvStore::shared("kv-test-b"));
        a1.set("k".into(), b"1".to_vec(), 0).unwrap();
        assert_eq!(a2.get("k".into()), Some(b"1".to_vec()));
        assert_eq!(b.get("k".into()), None);
    }

    #[test]
    fn store_is_bounded() {
        let mut kv = KvState::new(Arc::new(KvStore::new(256 * 1024)));
        for i in 0..100 {
            kv.set(format!("k{i}"), vec![0; 32 * 1024], 0).unwrap();
        }
        kv.store.cache.run_pending_tasks();
        assert!(kv.store.cache.weighted_size() <= 256 * 1024);
    }
}
