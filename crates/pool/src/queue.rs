//! Pool admission under one lock: a provider's idle workers and the bounded line of requests
//! waiting for one, with the three overflow policies. A request takes an idle worker at once
//! when nobody is ahead of it; otherwise it joins the line, and a worker coming back is handed
//! straight to the oldest live waiter. Critical sections are a few pointer moves under a std
//! mutex; waiting uses a oneshot channel per waiter and `Notify` for line space, so no tokio
//! worker thread is ever blocked.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};

use super::job::JobState;

/// Why a request was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The line is full (`reject`).
    Full,
    /// No space in the line became free within the timeout (`block`).
    Timeout,
    /// The pool is closed (shutdown).
    Closed,
}

/// The outcome of joining: a worker right away, or a place in the line.
pub enum Admit<W> {
    /// An idle worker; nobody was waiting.
    Now(W),
    /// Wait on the ticket.
    Queued(Ticket<W>),
}

/// A request's place in the line: it receives a worker, or its state says why not.
pub struct Ticket<W> {
    /// Receives the worker handed over by [`Queue::release`]. Closed without one when the
    /// waiter was evicted (`drop-oldest`) or the line was drained at the end of a shutdown.
    pub rx: oneshot::Receiver<W>,
    /// Decides, once, between a hand-over and the waiter giving up.
    pub state: JobState,
    /// When the request arrived.
    pub enqueued: Instant,
}

struct Waiter<W> {
    tx: oneshot::Sender<W>,
    state: JobState,
}

struct State<W> {
    idle: Vec<W>,
    line: VecDeque<Waiter<W>>,
    capacity: usize,
    closed: bool,
}

/// Idle workers plus the bounded line in front of them.
pub struct Queue<W> {
    state: Mutex<State<W>>,
    /// Wakes a producer blocked for space in the line (`block`).
    space: Notify,
}

impl<W> Queue<W> {
    /// `workers` idle workers and an empty line of at most `capacity` waiters.
    pub fn new(workers: Vec<W>, capacity: usize) -> Self {
        let line = VecDeque::with_capacity(capacity.min(4096));
        Self { state: Mutex::new(State { idle: workers, line, capacity, closed: false }), space: Notify::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<W>> {
        // Nothing panics while the lock is held (only Vec/VecDeque moves and a oneshot send),
        // so poisoning cannot leave the state half-updated: recover the guard.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Requests waiting in the line now.
    pub fn len(&self) -> usize {
        self.lock().line.len()
    }

    /// Whether nobody is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The fast path: an idle worker when nobody is waiting, `None` otherwise.
    ///
    /// # Errors
    /// [`Refused::Closed`] after shutdown began.
    pub fn take(&self) -> Result<Option<W>, Refused> {
        self.lock().take_idle()
    }

    /// Joins only if the line has space (`reject` policy).
    ///
    /// # Errors
    /// [`Refused::Full`] or [`Refused::Closed`].
    pub fn try_push(&self) -> Result<Admit<W>, Refused> {
        let mut st = self.lock();
        if let Some(now) = st.admit_now()? {
            return Ok(now);
        }
        if st.line.len() >= st.capacity {
            return Err(Refused::Full);
        }
        Ok(st.enqueue())
    }

    /// Joins, evicting the oldest waiter when the line is full (`drop-oldest`). The flag says
    /// whether one was evicted; its ticket closes with [`JobState::evicted`] set.
    ///
    /// # Errors
    /// [`Refused::Closed`] after shutdown began.
    pub fn push_evicting(&self) -> Result<(Admit<W>, bool), Refused> {
        let mut st = self.lock();
        if let Some(now) = st.admit_now()? {
            return Ok((now, false));
        }
        let mut evicted = false;
        while st.line.len() >= st.capacity.max(1) {
            let Some(oldest) = st.line.pop_front() else { break };
            // A waiter that already gave up still held a place; evicting it costs nobody.
            evicted |= oldest.state.evict();
        }
        Ok((st.enqueue(), evicted))
    }

    /// Joins, waiting up to `timeout` for space in the line (`block` policy).
    ///
    /// # Errors
    /// [`Refused::Timeout`] or [`Refused::Closed`].
    pub async fn push_waiting(&self, timeout: Duration) -> Result<Admit<W>, Refused> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                if let Some(now) = st.admit_now()? {
                    return Ok(now);
                }
                if st.line.len() < st.capacity {
                    let ticket = st.enqueue();
                    let more_space = st.line.len() < st.capacity;
                    drop(st);
                    if more_space {
                        // Pass the wake-up on: another blocked producer may fit too.
                        self.space.notify_one();
                    }
                    return Ok(ticket);
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Refused::Timeout);
            }
        }
    }

    /// A worker comes back: handed to the oldest waiter still waiting, else made idle. Works
    /// after [`Queue::close`] too, so a draining pool finishes its line. Returns how many
    /// waiters were skipped because their request was cancelled, and whether the pool is
    /// closed.
    pub fn release(&self, mut worker: W) -> (usize, bool) {
        let mut cancelled = 0;
        let mut popped = false;
        let mut st = self.lock();
        loop {
            let Some(waiter) = st.line.pop_front() else {
                st.idle.push(worker);
                break;
            };
            popped = true;
            if !waiter.state.claim() {
                continue; // Timed out or evicted: its handler already answered.
            }
            match waiter.tx.send(worker) {
                Ok(()) => break,
                Err(back) => {
                    cancelled += 1; // The client left while queued: no upstream call.
                    worker = back;
                }
            }
        }
        let closed = st.closed;
        drop(st);
        if popped {
            self.space.notify_one(); // The line shrank.
        }
        (cancelled, closed)
    }

    /// Takes a waiter that gave up (queue timeout) out of the line.
    pub fn remove(&self, state: &JobState) {
        let mut st = self.lock();
        if let Some(pos) = st.line.iter().position(|w| w.state.same(state)) {
            st.line.remove(pos);
            drop(st);
            self.space.notify_one();
        }
    }

    /// Refuses new requests; waiters already in the line still get workers.
    pub fn close(&self) {
        self.lock().closed = true;
        self.space.notify_waiters();
    }

    /// Empties the line at the end of a shutdown: each waiter's ticket closes without a
    /// worker. Returns how many were still waiting.
    pub fn drain(&self) -> usize {
        let drained: Vec<_> = self.lock().line.drain(..).collect();
        drained.into_iter().filter(|w| w.state.abandon()).count()
    }

    /// Whether every one of `workers` is idle and nobody waits (a drain is complete).
    pub fn quiet(&self, workers: usize) -> bool {
        let st = self.lock();
        st.line.is_empty() && st.idle.len() >= workers
    }
}

impl<W> State<W> {
    /// Closed pools refuse; an idle worker is taken when nobody waits.
    fn take_idle(&mut self) -> Result<Option<W>, Refused> {
        if self.closed {
            return Err(Refused::Closed);
        }
        Ok(if self.line.is_empty() { self.idle.pop() } else { None })
    }

    fn admit_now(&mut self) -> Result<Option<Admit<W>>, Refused> {
        Ok(self.take_idle()?.map(Admit::Now))
    }

    fn enqueue(&mut self) -> Admit<W> {
        let (tx, rx) = oneshot::channel();
        let state = JobState::new();
        self.line.push_back(Waiter { tx, state: state.clone() });
        Admit::Queued(Ticket { rx, state, enqueued: Instant::now() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn queued<W>(a: Admit<W>) -> Ticket<W> {
        match a {
            Admit::Queued(t) => t,
            Admit::Now(_) => panic!("expected to wait"),
        }
    }

    #[test]
    fn idle_worker_is_taken_at_once() {
        let q = Queue::new(vec![7], 2);
        assert_eq!(q.take(), Ok(Some(7)));
        assert_eq!(q.take(), Ok(None));
        q.release(7);
        assert!(matches!(q.try_push(), Ok(Admit::Now(7))));
    }

    #[test]
    fn full_line_rejects() {
        let q = Queue::<u8>::new(vec![], 2);
        let _a = queued(q.try_push().ok().unwrap());
        let _b = queued(q.try_push().ok().unwrap());
        assert!(matches!(q.try_push(), Err(Refused::Full)));
    }

    #[test]
    fn newcomers_queue_behind_waiters_even_when_a_worker_is_idle() {
        let q = Queue::new(vec![], 4);
        let mut first = queued(q.try_push().ok().unwrap());
        // A racing release hands the worker to the waiter, not to a newcomer.
        q.release(1);
        assert_eq!(q.take(), Ok(None));
        assert_eq!(first.rx.try_recv(), Ok(1));
    }

    #[test]
    fn release_skips_cancelled_and_abandoned_waiters() {
        let q = Queue::new(vec![], 4);
        let gone = queued(q.try_push().ok().unwrap());
        drop(gone); // client left
        let timed_out = queued(q.try_push().ok().unwrap());
        assert!(timed_out.state.abandon());
        let mut live = queued(q.try_push().ok().unwrap());
        assert_eq!(q.release(9), (1, false));
        assert_eq!(live.rx.try_recv(), Ok(9));
    }

    #[test]
    fn drop_oldest_evicts_front() {
        let q = Queue::<u8>::new(vec![], 1);
        let mut oldest = queued(q.push_evicting().ok().unwrap().0);
        let (newest, evicted) = q.push_evicting().ok().unwrap();
        assert!(evicted);
        assert!(oldest.state.evicted());
        assert!(oldest.rx.try_recv().is_err(), "an evicted waiter never gets a worker");
        let mut newest = queued(newest);
        q.release(3);
        assert_eq!(newest.rx.try_recv(), Ok(3));
    }

    #[tokio::test(start_paused = true)]
    async fn block_times_out_when_no_space() {
        let q = Queue::<u8>::new(vec![], 1);
        let _first = queued(q.try_push().ok().unwrap());
        assert!(matches!(q.push_waiting(Duration::from_secs(2)).await, Err(Refused::Timeout)));
    }

    #[tokio::test(start_paused = true)]
    async fn block_admits_when_space_frees() {
        let q = Arc::new(Queue::new(vec![], 1));
        let mut first = queued(q.try_push().ok().unwrap());
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.push_waiting(Duration::from_secs(5)).await.map(queued) });
        tokio::time::sleep(Duration::from_millis(100)).await;
        q.release(1);
        assert_eq!(first.rx.try_recv(), Ok(1));
        let mut second = waiter.await.unwrap().ok().unwrap();
        q.release(2);
        assert_eq!(second.rx.try_recv(), Ok(2));
    }

    #[test]
    fn close_refuses_newcomers_but_serves_the_line_then_drains() {
        let q = Queue::new(vec![], 4);
        let mut first = queued(q.try_push().ok().unwrap());
        let mut second = queued(q.try_push().ok().unwrap());
        q.close();
        assert_eq!(q.take(), Err(Refused::Closed));
        assert!(matches!(q.try_push(), Err(Refused::Closed)));
        assert_eq!(q.release(1), (0, true));
        assert_eq!(first.rx.try_recv(), Ok(1));
        assert!(!q.quiet(1));
        assert_eq!(q.drain(), 1);
        assert!(second.rx.try_recv().is_err());
        assert!(!second.state.evicted());
    }
}
