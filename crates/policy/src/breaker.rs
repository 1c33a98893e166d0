//! The circuit breaker of one provider: closed (attempts go through), open (refused at once,
//! for `cooldown`), half-open (up to `probes` attempts go through; one success closes it, one
//! failure opens it again). It opens on `consecutive_failures` failed attempts in a row, or
//! when at least `min_requests` attempts within `window` failed at `failure_rate` or more.
//! Only the provider's own faults count (5xx, timeouts, unreachable, invalid answers); a 4xx
//! or a 429 is an answer. A closed breaker costs an attempt two or three relaxed atomics.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::BreakerConfig;
use crate::error::{Error, ErrorKind};

/// Breaker states, as stored and as `weir_breaker_state` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Attempts go through.
    Closed = 0,
    /// Probes go through.
    HalfOpen = 1,
    /// Attempts are refused.
    Open = 2,
}

impl State {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::HalfOpen,
            2 => Self::Open,
            _ => Self::Closed,
        }
    }
}

/// What the breaker said to one attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Pass {
    /// Closed: go.
    Closed,
    /// Half-open: go as a probe (its outcome decides the state).
    Probe,
    /// Open: refused; the cool-down ends in this long.
    Refused(Duration),
}

/// One provider's breaker.
pub struct Breaker {
    cfg: BreakerConfig,
    epoch: Instant,
    state: AtomicU8,
    consecutive: AtomicU32,
    /// Window number, attempts and failures within it.
    window: AtomicU64,
    attempts: AtomicU32,
    failures: AtomicU32,
    /// When it last opened, in nanoseconds since `epoch`.
    opened_at: AtomicU64,
    probes: AtomicU32,
    gauge: metrics::Gauge,
}

impl Breaker {
    /// A closed breaker for provider `name`.
    pub fn new(name: &str, cfg: BreakerConfig) -> Self {
        let gauge = metrics::gauge!("weir_breaker_state", "provider" => name.to_owned());
        gauge.set(0.0);
        Self {
            cfg,
            epoch: Instant::now(),
            state: AtomicU8::new(State::Closed as u8),
            consecutive: AtomicU32::new(0),
            window: AtomicU64::new(0),
            attempts: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            opened_at: AtomicU64::new(0),
            probes: AtomicU32::new(0),
            gauge,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Whether an attempt now would be refused without a call: open, cool-down not over, or
    /// half-open with every probe taken. Changes nothing (load balancing asks it of every
    /// target).
    pub fn refusing(&self, now: Instant) -> bool {
        match self.state() {
            State::Closed => false,
            State::Open => {
                let since = self.since_epoch(now).saturating_sub(self.opened_at.load(Ordering::Relaxed));
                Duration::from_nanos(since) < self.cfg.cooldown
            }
            State::HalfOpen => self.probes.load(Ordering::Relaxed) >= self.cfg.probes,
        }
    }

    /// Asks to make an attempt now.
    pub fn pass(&self, now: Instant) -> Pass {
        match self.state() {
            State::Closed => Pass::Closed,
            State::Open => {
                let since = self.since_epoch(now).saturating_sub(self.opened_at.load(Ordering::Relaxed));
                let left = self.cfg.cooldown.saturating_sub(Duration::from_nanos(since));
                if !left.is_zero() {
                    return Pass::Refused(left);
                }
                // The first to see the cool-down over moves it to half-open.
                let _ = self.state.compare_exchange(
                    State::Open as u8,
                    State::HalfOpen as u8,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                self.gauge.set(f64::from(State::HalfOpen as u8));
                self.probe()
            }
            State::HalfOpen => self.probe(),
        }
    }

    fn probe(&self) -> Pass {
        let taken =
            self.probes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < self.cfg.probes).then_some(n + 1));
        match taken {
            Ok(_) => Pass::Probe,
            Err(_) => Pass::Refused(Duration::from_secs(1)),
        }
    }

    /// The outcome of an attempt it let through: `Some(true)` the provider answered,
    /// `Some(false)` it failed, `None` no verdict (the attempt never reached the provider, or
    /// was stopped).
    pub fn record(&self, pass: &Pass, ok: Option<bool>, now: Instant) {
        if *pass == Pass::Probe {
            self.probes.fetch_sub(1, Ordering::Relaxed);
            match ok {
                Some(true) => self.close(),
                Some(false) => self.open(now),
                None => {}
            }
            return;
        }
        let Some(ok) = ok else { return };
        let window = self.since_epoch(now) / self.cfg.window.as_nanos().max(1) as u64;
        if self.window.load(Ordering::Relaxed) != window {
            self.window.store(window, Ordering::Relaxed);
            self.attempts.store(0, Ordering::Relaxed);
            self.failures.store(0, Ordering::Relaxed);
        }
        let attempts = self.attempts.fetch_add(1, Ordering::Relaxed) + 1;
        if ok {
            if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Relaxed);
            }
            return;
        }
        let consecutive = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let by_count = self.cfg.consecutive_failures > 0 && consecutive >= self.cfg.consecutive_failures;
        let by_rate = attempts >= self.cfg.min_requests.max(1)
            && f64::from(failures) >= self.cfg.failure_rate * f64::from(attempts);
        if (by_count || by_rate) && self.state() == State::Closed {
            self.open(now);
        }
    }

    fn open(&self, now: Instant) {
        self.opened_at.store(self.since_epoch(now), Ordering::Relaxed);
        self.state.store(State::Open as u8, Ordering::Relaxed);
        self.gauge.set(f64::from(State::Open as u8));
    }

    fn close(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        self.attempts.store(0, Ordering::Relaxed);
        self.state.store(State::Closed as u8, Ordering::Relaxed);
        self.gauge.set(f64::from(State::Closed as u8));
    }

    fn since_epoch(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }
}

/// Whether an attempt's error is the provider's fault, for the breaker.
pub fn provider_fault(e: &Error) -> bool {
    match e.kind {
        ErrorKind::Upstream { status } => status >= 500,
        ErrorKind::UpstreamTimeout | ErrorKind::UpstreamUnavailable | ErrorKind::UpstreamInvalid => true,
        _ => false,
    }
}

/// Whether an attempt's error says anything about the provider (pool refusals and
/// shutdown do not: the attempt never reached it).
pub fn reached_provider(e: &Error) -> bool {
    e.origin == crate::error::Origin::Provider
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(consecutive: u32, rate: f64, min: u32) -> Breaker {
        Breaker::new(
            "t",
            BreakerConfig {
                consecutive_failures: consecutive,
                failure_rate: rate,
                min_requests: min,
                window: Duration::from_secs(10),
                cooldown: Duration::from_secs(5),
                probes: 1,
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_open_it_and_a_probe_after_the_cooldown_closes_it() {
        let b = breaker(3, 2.0, 1);
        let now = Instant::now();
        for _ in 0..2 {
            b.record(&Pass::Closed, Some(false), now);
        }
        b.record(&Pass::Closed, Some(true), now);
        b.record(&Pass::Closed, Some(false), now);
        b.record(&Pass::Closed, Some(false), now);
        assert_eq!(b.state(), State::Closed, "a success in between resets the count");
        b.record(&Pass::Closed, Some(false), now);
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.pass(now), Pass::Refused(Duration::from_secs(5)));

        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = b.pass(Instant::now());
        assert_eq!(probe, Pass::Probe);
        assert_eq!(b.state(), State::HalfOpen);
        assert!(matches!(b.pass(Instant::now()), Pass::Refused(_)), "one probe at a time");
        b.record(&probe, Some(true), Instant::now());
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.pass(Instant::now()), Pass::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_it_again_for_a_full_cooldown() {
        let b = breaker(1, 2.0, 1);
        b.record(&Pass::Closed, Some(false), Instant::now());
        tokio::time::advance(Duration::from_secs(6)).await;
        let probe = b.pass(Instant::now());
        assert_eq!(probe, Pass::Probe);
        b.record(&probe, Some(false), Instant::now());
        assert_eq!(b.state(), State::Open);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(matches!(b.pass(Instant::now()), Pass::Refused(_)));
        // A probe stopped without a verdict gives its place back.
        tokio::time::advance(Duration::from_secs(1)).await;
        let probe = b.pass(Instant::now());
        b.record(&probe, None, Instant::now());
        assert_eq!(b.pass(Instant::now()), Pass::Probe);
    }

    #[tokio::test(start_paused = true)]
    async fn the_failure_rate_opens_it_once_enough_attempts_were_seen() {
        let b = breaker(0, 0.5, 10);
        let now = Instant::now();
        for i in 0..9 {
            b.record(&Pass::Closed, Some(i % 2 == 0), now);
        }
        assert_eq!(b.state(), State::Closed, "9 attempts are below min_requests");
        b.record(&Pass::Closed, Some(false), now);
        assert_eq!(b.state(), State::Open, "5 of 10 failed");
        // A new window starts from nothing.
        let b = breaker(0, 0.5, 4);
        b.record(&Pass::Closed, Some(false), Instant::now());
        b.record(&Pass::Closed, Some(false), Instant::now());
        tokio::time::advance(Duration::from_secs(10)).await;
        b.record(&Pass::Closed, Some(true), Instant::now());
        b.record(&Pass::Closed, Some(true), Instant::now());
        b.record(&Pass::Closed, Some(false), Instant::now());
        b.record(&Pass::Closed, Some(true), Instant::now());
        assert_eq!(b.state(), State::Closed);
    }
}
