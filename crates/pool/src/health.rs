//! Provider health for `/ready`, derived from recent call outcomes in the pool's workers.
//! Only provider-side failures count; a client's bad request says nothing about the provider.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use crate::error::{Error, ErrorKind, Origin};

/// Consecutive provider failures after which a provider is reported `failing`.
const FAILING_AFTER: u64 = 3;
/// Consecutive provider failures after which a provider is reported `failed`.
const FAILED_AFTER: u64 = 10;

/// Reported state of one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Last call succeeded (or none yet) and the queue has room.
    Healthy,
    /// Serving, but recent failures or a nearly full queue.
    Degraded,
    /// Several consecutive failures.
    Failing,
    /// Many consecutive failures: treat as down.
    Failed,
}

impl HealthState {
    /// Lower-case name used in `/ready`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Failing => "failing",
            Self::Failed => "failed",
        }
    }
}

/// Outcome counters of one provider.
#[derive(Default)]
pub struct Health {
    consecutive_failures: AtomicU64,
    recent_failures: AtomicU64,
    successes: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// The policy stage's circuit breaker: 0 closed (or none), 1 half-open, 2 open.
    breaker: AtomicU8,
}

impl Health {
    /// A call succeeded.
    pub fn record_ok(&self) {
        self.successes.fetch_add(1, Ordering::Relaxed);
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        // Decay: each success forgets one older failure.
        let _ = self.recent_failures.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// A call failed; counts only if the provider is to blame. An answer over
    /// `max_response_bytes` does not: the provider answered, the request asked for much.
    pub fn record_error(&self, e: &Error) {
        let provider_fault = e.origin == Origin::Provider
            && e.kind != ErrorKind::UpstreamTooLarge
            && !matches!(e.kind, ErrorKind::Upstream { status } if (400..500).contains(&status) && status != 401 && status != 403 && status != 429);
        if !provider_fault {
            return;
        }
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
        self.recent_failures.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.message.to_string());
    }

    /// The provider's circuit breaker changed state (0 closed, 1 half-open, 2 open): an open
    /// breaker reports the provider `failed`, a half-open one `failing`.
    pub fn set_breaker(&self, state: u8) {
        if self.breaker.load(Ordering::Relaxed) != state {
            self.breaker.store(state, Ordering::Relaxed);
        }
    }

    /// Current state; `queue_fill` is the queue's depth over its capacity.
    pub fn state(&self, queue_fill: f64) -> HealthState {
        let consecutive = self.consecutive_failures.load(Ordering::Relaxed);
        let breaker = self.breaker.load(Ordering::Relaxed);
        if consecutive >= FAILED_AFTER || breaker == 2 {
            HealthState::Failed
        } else if breaker == 1 || consecutive >= FAILING_AFTER {
            HealthState::Failing
        } else if consecutive > 0 || self.recent_failures.load(Ordering::Relaxed) > 0 || queue_fill >= 0.8 {
            HealthState::Degraded
        } else {
            HealthState::Healthy
        }
    }

    /// Why the state is not healthy, when it is not.
    pub fn reason(&self, queue_fill: f64) -> Option<String> {
        let consecutive = self.consecutive_failures.load(Ordering::Relaxed);
        let last = self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let breaker = match self.breaker.load(Ordering::Relaxed) {
            2 => "circuit breaker open; ",
            1 => "circuit breaker half-open (probing); ",
            _ => "",
        };
        if !breaker.is_empty() {
            Some(format!("{breaker}last: {}", last.unwrap_or_default()))
        } else if consecutive > 0 {
            Some(format!("{consecutive} consecutive failures; last: {}", last.unwrap_or_default()))
        } else if queue_fill >= 0.8 {
            Some(format!("queue {:.0}% full", queue_fill * 100.0))
        } else if self.recent_failures.load(Ordering::Relaxed) > 0 {
            Some(format!("recovering from recent failures; last: {}", last.unwrap_or_default()))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_escalate_and_success_recovers() {
        let h = Health::default();
        assert_eq!(h.state(0.0), HealthState::Healthy);
        let e = Error::new(ErrorKind::UpstreamUnavailable, "connection refused");
        h.record_error(&e);
        assert_eq!(h.state(0.0), HealthState::Degraded);
        for _ in 0..2 {
            h.record_error(&e);
        }
        assert_eq!(h.state(0.0), HealthState::Failing);
        for _ in 0..7 {
            h.record_error(&e);
        }
        assert_eq!(h.state(0.0), HealthState::Failed);
        assert!(h.reason(0.0).unwrap().contains("connection refused"));
        h.record_ok();
        assert_eq!(h.state(0.0), HealthState::Degraded);
    }

    #[test]
    fn client_errors_do_not_count() {
        let h = Health::default();
        h.record_error(&Error::new(ErrorKind::Upstream { status: 400 }, "bad"));
        assert_eq!(h.state(0.0), HealthState::Healthy);
        assert_eq!(h.state(0.9), HealthState::Degraded);
    }
}
