//! Connection tasks that wake themselves are polled again at once, not rescheduled.
//!
//! hyper serves a request inside its connection's task, and reading the request body makes
//! that task wake itself (the body asks the connection for data, the connection hands it
//! over). tokio's multi-thread scheduler treats a task woken during its own poll as a yield:
//! it goes to the back of the run queue and an idle worker thread is woken to steal it. On a
//! lightly loaded gateway that is one futex wake-up of a parked thread per request, on the
//! request's critical path, and often the request then finishes on the other thread.
//! [`Repoll`] polls such a task again
//! right away, a bounded number of times, and only then lets the wake go to the scheduler.
//! Wakes from elsewhere (the I/O driver, another task) go to the scheduler as before.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Not being polled: a wake goes to the scheduler.
const IDLE: u8 = 0;
/// Being polled: a wake is noted and answered by polling again.
const POLLING: u8 = 1;
/// Woken during the current poll.
const WOKEN: u8 = 2;

/// Extra polls in a row for a future that keeps waking itself; after that it yields through
/// the scheduler like any task (hyper's dispatcher yields on purpose after 16 turns of its
/// loop, and that fairness is kept).
const MAX_REPOLLS: usize = 4;

/// A future polled again at once when it wakes itself (see the module docs).
pub struct Repoll<F> {
    inner: Pin<Box<F>>,
    signal: Arc<Signal>,
    waker: Waker,
}

struct Signal {
    state: AtomicU8,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        match self.state.compare_exchange(POLLING, WOKEN, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) | Err(WOKEN) => {}
            Err(_) => self.task.wake(),
        }
    }
}

impl<F: Future> Repoll<F> {
    /// Wraps `inner` (two allocations for the connection's lifetime, none per poll).
    pub fn new(inner: F) -> Self {
        let signal = Arc::new(Signal { state: AtomicU8::new(IDLE), task: AtomicWaker::new() });
        let waker = Waker::from(signal.clone());
        Self { inner: Box::pin(inner), signal, waker }
    }
}

impl<F: Future> Future for Repoll<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.signal.task.register(cx.waker());
        let mut inner_cx = Context::from_waker(&this.waker);
        for _ in 0..=MAX_REPOLLS {
            this.signal.state.store(POLLING, Ordering::Release);
            if let Poll::Ready(out) = this.inner.as_mut().poll(&mut inner_cx) {
                this.signal.state.store(IDLE, Ordering::Release);
                return Poll::Ready(out);
            }
            if this.signal.state.compare_exchange(POLLING, IDLE, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                return Poll::Pending;
            }
            // Woken during that poll. With tokio's cooperative budget spent, polling again
            // would only make the runtime's resources wake it once more: yield instead.
            if !tokio::task::coop::has_budget_remaining() {
                break;
            }
        }
        this.signal.state.store(IDLE, Ordering::Release);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Wakes itself on its first `n` polls, then finishes.
    struct SelfWaking {
        left: usize,
        polls: Arc<AtomicUsize>,
    }

    impl Future for SelfWaking {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            if self.left == 0 {
                return Poll::Ready(());
            }
            self.left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// Counts wakes reaching the outer (scheduler's) waker.
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_self_wake_is_answered_by_polling_again_without_the_scheduler() {
        let outer = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(outer.clone());
        let polls = Arc::new(AtomicUsize::new(0));
        let mut fut = std::pin::pin!(Repoll::new(SelfWaking { left: 2, polls: polls.clone() }));
        assert!(fut.as_mut().poll(&mut Context::from_waker(&waker)).is_ready());
        assert_eq!(polls.load(Ordering::Relaxed), 3);
        assert_eq!(outer.0.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_future_that_keeps_waking_itself_still_yields() {
        let outer = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(outer.clone());
        let polls = Arc::new(AtomicUsize::new(0));
        let mut fut = std::pin::pin!(Repoll::new(SelfWaking { left: usize::MAX, polls: polls.clone() }));
        assert!(fut.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), MAX_REPOLLS + 1);
        assert_eq!(outer.0.load(Ordering::Relaxed), 1, "the wake goes to the scheduler after the bound");
    }

    #[tokio::test]
    async fn wakes_from_outside_a_poll_reach_the_scheduler() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let task = tokio::spawn(Repoll::new(rx));
        tokio::task::yield_now().await;
        tx.send(7).unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), task).await.unwrap().unwrap();
        assert_eq!(got.unwrap(), 7);
    }
}
