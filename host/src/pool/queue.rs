//! The bounded wait queue in front of a provider's workers, with the three overflow policies.
//! Critical sections are a few pointer moves under a std mutex; waiting uses `Notify`, so no
//! tokio worker thread is ever blocked.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

/// Why an item was not admitted; the item is handed back so its owner can answer it.
pub enum Refused<T> {
    /// The queue is full (`reject`).
    Full(T),
    /// No space became free within the timeout (`block`).
    Timeout(T),
    /// The queue is closed (shutdown).
    Closed(T),
}

struct State<T> {
    items: VecDeque<T>,
    capacity: usize,
    closed: bool,
}

/// A bounded multi-producer multi-consumer queue.
pub struct Queue<T> {
    state: Mutex<State<T>>,
    /// Wakes a consumer when an item arrives (or the queue closes).
    items: Notify,
    /// Wakes a blocked producer when space frees up.
    space: Notify,
}

impl<T> Queue<T> {
    /// An empty queue holding at most `capacity` items.
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State { items: VecDeque::with_capacity(capacity.min(4096)), capacity, closed: false }),
            items: Notify::new(),
            space: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        // A panic never happens while the lock is held (only VecDeque moves), so poisoning
        // cannot leave the state half-updated: recover the guard.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Items waiting now.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether no item is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Admits `item` only if there is space (`reject` policy).
    ///
    /// # Errors
    /// [`Refused::Full`] or [`Refused::Closed`], handing the item back.
    pub fn try_push(&self, item: T) -> Result<(), Refused<T>> {
        let mut st = self.lock();
        if st.closed {
            return Err(Refused::Closed(item));
        }
        if st.items.len() >= st.capacity {
            return Err(Refused::Full(item));
        }
        st.items.push_back(item);
        drop(st);
        self.items.notify_one();
        Ok(())
    }

    /// Admits `item`, evicting and returning the oldest waiting item if full (`drop-oldest`).
    ///
    /// # Errors
    /// [`Refused::Closed`] after shutdown.
    pub fn push_evicting(&self, item: T) -> Result<Option<T>, Refused<T>> {
        let mut st = self.lock();
        if st.closed {
            return Err(Refused::Closed(item));
        }
        let evicted = if st.items.len() >= st.capacity { st.items.pop_front() } else { None };
        st.items.push_back(item);
        drop(st);
        self.items.notify_one();
        Ok(evicted)
    }

    /// Admits `item`, waiting up to `timeout` for space (`block` policy).
    ///
    /// # Errors
    /// [`Refused::Timeout`] or [`Refused::Closed`], handing the item back.
    pub async fn push_waiting(&self, item: T, timeout: Duration) -> Result<(), Refused<T>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut item = Some(item);
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                let it = item.take().expect("item present until admitted");
                if st.closed {
                    return Err(Refused::Closed(it));
                }
                if st.items.len() < st.capacity {
                    st.items.push_back(it);
                    let more_space = st.items.len() < st.capacity;
                    drop(st);
                    self.items.notify_one();
                    if more_space {
                        // Pass the wake-up on: another blocked producer may fit too.
                        self.space.notify_one();
                    }
                    return Ok(());
                }
                item = Some(it);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Refused::Timeout(item.take().expect("item present")));
            }
        }
    }

    /// Takes the oldest item, waiting for one. `None` once the queue is closed and empty.
    pub async fn pop(&self) -> Option<T> {
        loop {
            let notified = self.items.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                if let Some(it) = st.items.pop_front() {
                    let more = !st.items.is_empty();
                    drop(st);
                    self.space.notify_one();
                    if more {
                        self.items.notify_one();
                    }
                    return Some(it);
                }
                if st.closed {
                    drop(st);
                    // Let the other consumers see the close too.
                    self.items.notify_one();
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Removes the first item matching `pred` (a waiter that gave up).
    pub fn remove_where(&self, pred: impl Fn(&T) -> bool) -> Option<T> {
        let mut st = self.lock();
        let pos = st.items.iter().position(pred)?;
        let it = st.items.remove(pos);
        drop(st);
        self.space.notify_one();
        it
    }

    /// Refuses new items; consumers drain what is queued, then see `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.items.notify_waiters();
        self.items.notify_one();
        self.space.notify_waiters();
    }

    /// Takes every waiting item (to answer them at the end of a shutdown).
    pub fn drain(&self) -> Vec<T> {
        self.lock().items.drain(..).collect()
    }

    /// Changes the capacity (a reload); items already queued are kept even if over it.
    pub fn set_capacity(&self, capacity: usize) {
        self.lock().capacity = capacity;
        self.space.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn full_queue_rejects() {
        let q = Queue::new(2);
        assert!(q.try_push(1).is_ok());
        assert!(q.try_push(2).is_ok());
        assert!(matches!(q.try_push(3), Err(Refused::Full(3))));
    }

    #[test]
    fn drop_oldest_evicts_front() {
        let q = Queue::new(2);
        assert!(matches!(q.push_evicting(1), Ok(None)));
        assert!(matches!(q.push_evicting(2), Ok(None)));
        assert!(matches!(q.push_evicting(3), Ok(Some(1))));
        assert_eq!(q.drain(), vec![2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn block_times_out_when_no_space() {
        let q = Queue::new(1);
        q.try_push(1).ok().unwrap();
        let r = q.push_waiting(2, Duration::from_secs(2)).await;
        assert!(matches!(r, Err(Refused::Timeout(2))));
    }

    #[tokio::test(start_paused = true)]
    async fn block_admits_when_space_frees() {
        let q = Arc::new(Queue::new(1));
        q.try_push(1).ok().unwrap();
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.push_waiting(2, Duration::from_secs(5)).await.is_ok() });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(q.pop().await, Some(1));
        assert!(waiter.await.unwrap());
        assert_eq!(q.pop().await, Some(2));
    }

    #[tokio::test]
    async fn close_drains_then_ends() {
        let q = Queue::new(4);
        q.try_push(1).ok().unwrap();
        q.close();
        assert!(matches!(q.try_push(2), Err(Refused::Closed(2))));
        assert_eq!(q.pop().await, Some(1));
        assert_eq!(q.pop().await, None);
    }
}
