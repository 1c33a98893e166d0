//! One stage's queues (the bus's, or one sink's) and the threads waiting on them. Pushing
//! never blocks on a consumer: a short lock, the policy decides on a full queue, and a sleeping
//! consumer is woken only when none is already being woken.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::config::{Backpressure, Priority, QueueCapacities};
use crate::queue::{Dropped, Rings};
use crate::record::Event;

/// How long a consumer that found its queues empty waits before going to sleep: events that
/// arrive meanwhile are taken in one batch, and a publisher under load never has to wake it
/// (a wake-up is a system call on the request's thread).
const LINGER: Duration = Duration::from_millis(1);

/// Events taken per lock.
pub const BATCH: usize = 128;

/// Bounded queues and their consumers' sleep.
pub struct Stage {
    state: Mutex<State>,
    ready: Condvar,
}

struct State {
    rings: Rings<Arc<Event>>,
    /// Consumers asleep on `ready`.
    sleeping: usize,
    /// A wake-up was sent and not yet taken.
    waking: bool,
    closed: bool,
}

impl Stage {
    /// Empty queues of these capacities.
    pub fn new(caps: &QueueCapacities, policies: [Backpressure; 3]) -> Self {
        let rings = Rings::new(caps, policies);
        Self { state: Mutex::new(State { rings, sleeping: 0, waking: false, closed: false }), ready: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Only queue moves happen under the lock: a poisoned guard holds consistent queues.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `events` (each at its priority); calls `dropped` for each event the policy drops.
    pub fn push<'a>(&self, events: impl IntoIterator<Item = &'a Arc<Event>>, mut dropped: impl FnMut(Dropped)) {
        let mut st = self.lock();
        if st.closed {
            return;
        }
        let mut any = false;
        for ev in events {
            any = true;
            if let Some(d) = st.rings.push(ev.priority, ev.clone()) {
                dropped(d);
            }
        }
        let wake = any && st.sleeping > 0 && !st.waking;
        st.waking |= wake;
        drop(st);
        if wake {
            self.ready.notify_one();
        }
    }

    /// Queues one event.
    pub fn push_one(&self, ev: Event, dropped: impl FnMut(Dropped)) {
        self.push(std::iter::once(&Arc::new(ev)), dropped);
    }

    /// Waits for events and moves up to [`BATCH`] of them into `out`, highest priority first.
    /// `false` once the stage is closed and empty: the consumer ends.
    pub fn pop_batch(&self, out: &mut Vec<Arc<Event>>) -> bool {
        let mut lingered = false;
        let mut st = self.lock();
        loop {
            while out.len() < BATCH {
                match st.rings.pop() {
                    Some(ev) => out.push(ev),
                    None => break,
                }
            }
            if !out.is_empty() {
                return true;
            }
            if st.closed {
                return false;
            }
            if !lingered {
                lingered = true;
                drop(st);
                std::thread::sleep(LINGER);
                st = self.lock();
                continue;
            }
            st.sleeping += 1;
            st = self.ready.wait(st).unwrap_or_else(PoisonError::into_inner);
            st.sleeping -= 1;
            st.waking = false;
            lingered = false;
        }
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.lock().rings.is_empty()
    }

    /// Events waiting, per priority.
    pub fn lens(&self) -> [usize; 3] {
        self.lock().rings.lens()
    }

    /// No more events are taken; consumers end once the queues are empty.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

/// Whether a sink taking events down to `min` takes one of priority `p`.
pub fn accepts(min: Priority, p: Priority) -> bool {
    p <= min
}
