//! The pool of warm instances of one plugin. Admission is one function, [`Pool::take`]: an
//! idle instance at once, or wait (bounded) for one to come back. A returned instance is
//! pushed back; a broken one is never returned (its replacement is added when ready).

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Semaphore, TryAcquireError};
use wasmtime::Store;

use super::host::StoreData;
use super::world::World;

/// One instantiated, initialised plugin.
pub struct Instance {
    /// Its store (one per instance; never shared).
    pub store: Store<StoreData>,
    /// Export handles.
    pub world: World,
    /// Hook calls made on it.
    pub calls: u64,
}

/// Idle instances plus a semaphore counting them, so waiting is async and fair.
pub struct Pool {
    idle: Mutex<Vec<Instance>>,
    available: Semaphore,
}

impl Pool {
    /// A pool holding `instances`.
    pub fn new(instances: Vec<Instance>) -> Self {
        let n = instances.len();
        Self { idle: Mutex::new(instances), available: Semaphore::new(n) }
    }

    /// Pool admission: an idle instance, waiting up to `wait` when all are busy (or being
    /// replaced). `None` when none came back in time.
    pub async fn take(&self, wait: Duration) -> Option<Instance> {
        let permit = match self.available.try_acquire() {
            Ok(p) => p,
            Err(TryAcquireError::NoPermits) => tokio::time::timeout(wait, self.available.acquire()).await.ok()?.ok()?,
            Err(TryAcquireError::Closed) => return None,
        };
        permit.forget();
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// Returns (or adds) an instance.
    pub fn put(&self, instance: Instance) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(instance);
        self.available.add_permits(1);
    }

    /// Idle instances right now.
    pub fn idle(&self) -> usize {
        self.idle.lock().map_or(0, |v| v.len())
    }
}
