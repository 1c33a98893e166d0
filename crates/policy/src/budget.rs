//! The retry budget of one provider, in the style of linkerd's and Envoy's: each request
//! deposits `budget_ratio` of a token, each retry takes one, and `budget_min_per_second` tokens
//! per second are always there on top, so a provider outage cannot multiply its traffic by
//! the retry count. Deposits and withdrawals expire after one to two windows (two
//! generations). A deposit is one clock read and two atomics; no lock anywhere.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RetryConfig;

/// A token, in the thousandths the counters keep.
const TOKEN: i64 = 1000;

/// One provider's retry budget.
pub struct Budget {
    /// Deposited per request, in thousandths of a token.
    per_request: i64,
    /// Always available within a window: `budget_min_per_second × window`.
    reserve: i64,
    window: u128,
    epoch: Instant,
    generation: AtomicU64,
    current: AtomicI64,
    previous: AtomicI64,
}

impl Budget {
    /// A full budget (the reserve) for a provider with `cfg`.
    pub fn new(cfg: &RetryConfig) -> Self {
        let window = cfg.budget_window.max(Duration::from_millis(1));
        Self {
            per_request: (cfg.budget_ratio * TOKEN as f64) as i64,
            reserve: (cfg.budget_min_per_second * window.as_secs_f64() * TOKEN as f64) as i64,
            window: window.as_nanos(),
            epoch: Instant::now(),
            generation: AtomicU64::new(0),
            current: AtomicI64::new(0),
            previous: AtomicI64::new(0),
        }
    }

    /// A request (not a retry) was sent: its share of a retry.
    pub fn deposit(&self, now: Instant) {
        self.rotate(now);
        self.current.fetch_add(self.per_request, Ordering::Relaxed);
    }

    /// Takes a token for one retry; `false` when the budget is spent. Two retries racing for
    /// the last token may both get it: the budget is a bound on storms, not an exact count.
    pub fn withdraw(&self, now: Instant) -> bool {
        self.rotate(now);
        let balance = self.previous.load(Ordering::Relaxed) + self.current.load(Ordering::Relaxed) + self.reserve;
        if balance < TOKEN {
            return false;
        }
        self.current.fetch_sub(TOKEN, Ordering::Relaxed);
        true
    }

    /// Moves to the window `now` is in: the current generation becomes the previous one (or,
    /// after a quiet spell of more than a window, both expire).
    fn rotate(&self, now: Instant) {
        let generation = (now.saturating_duration_since(self.epoch).as_nanos() / self.window) as u64;
        let seen = self.generation.load(Ordering::Relaxed);
        if generation <= seen {
            return;
        }
        if self.generation.compare_exchange(seen, generation, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            let last = self.current.swap(0, Ordering::Relaxed);
            self.previous.store(if generation == seen + 1 { last } else { 0 }, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_per_second: f64) -> Budget {
        Budget::new(&RetryConfig {
            budget_ratio: ratio,
            budget_min_per_second: min_per_second,
            budget_window: Duration::from_secs(10),
            ..RetryConfig::default()
        })
    }

    fn retries_allowed(b: &Budget, now: Instant) -> usize {
        (0..10_000).take_while(|_| b.withdraw(now)).count()
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_capped_at_the_ratio_of_requests_plus_the_reserve() {
        let b = budget(0.2, 1.0);
        let now = Instant::now();
        for _ in 0..100 {
            b.deposit(now);
        }
        // 100 requests × 0.2 + 1/s × 10 s.
        assert_eq!(retries_allowed(&b, now), 30);
        b.deposit(now);
        assert!(!b.withdraw(now), "a fifth of a token is not a retry");
        for _ in 0..4 {
            b.deposit(now);
        }
        assert!(b.withdraw(now), "five requests make one retry");
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_after_two_windows() {
        let b = budget(1.0, 0.0);
        for _ in 0..5 {
            b.deposit(Instant::now());
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(retries_allowed(&b, Instant::now()), 5, "the previous window still counts");
        for _ in 0..5 {
            b.deposit(Instant::now());
        }
        tokio::time::advance(Duration::from_secs(25)).await;
        assert_eq!(retries_allowed(&b, Instant::now()), 0, "old deposits are gone");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_provider_keeps_its_reserve_and_no_ratio_means_reserve_only() {
        let b = budget(0.0, 0.5);
        for _ in 0..1000 {
            b.deposit(Instant::now());
        }
        assert_eq!(retries_allowed(&b, Instant::now()), 5);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(retries_allowed(&b, Instant::now()), 5, "the reserve comes back with a new window");
    }
}
