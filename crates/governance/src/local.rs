//! One key's counters in this process: the same checks as the Redis script (`redis.rs`), for
//! an instance without Redis and for fail-open while Redis is away (limits then hold per
//! instance).

use std::collections::VecDeque;

use crate::{Ask, Limit, Refusal, Windows};

/// A sliding minute, in milliseconds.
pub(crate) const MINUTE_MS: u64 = 60_000;

/// One key's counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// When each request of the last minute was admitted (ms since the epoch), oldest first.
    admitted: VecDeque<u64>,
    /// The token window (`now / 60 s`) and the tokens counted in it.
    tpm: (u64, u64),
    /// The budget period (`now / period`) and the nano-dollars counted in it.
    spend: (u64, u64),
    /// Requests in flight.
    in_flight: u64,
}

impl Counters {
    /// Checks every limit of `ask` and, if all pass, counts the request.
    pub(crate) fn admit(&mut self, ask: &Ask) -> Result<Windows, Refusal> {
        let now = ask.now_ms;
        let w = ask.windows();
        if let Some(max) = ask.max_concurrent
            && self.in_flight >= max
        {
            return Err(Refusal { limit: Limit::Concurrency, retry_after: 1 });
        }
        if let Some(rpm) = ask.rpm {
            while self.admitted.front().is_some_and(|t| *t + MINUTE_MS <= now) {
                self.admitted.pop_front();
            }
            if self.admitted.len() as u64 >= rpm {
                let oldest = self.admitted.front().copied().unwrap_or(now);
                return Err(Refusal { limit: Limit::Rpm, retry_after: secs_until(oldest + MINUTE_MS, now) });
            }
        }
        if self.tpm.0 != w.minute {
            self.tpm = (w.minute, 0);
        }
        if let Some(tpm) = ask.tpm
            && self.tpm.1 + ask.tokens > tpm
        {
            return Err(Refusal { limit: Limit::Tpm, retry_after: secs_until((w.minute + 1) * MINUTE_MS, now) });
        }
        if self.spend.0 != w.period {
            self.spend = (w.period, 0);
        }
        // Spent is spent, even for a request estimated at nothing (a model without a price).
        if let Some(budget) = ask.budget_nano
            && (self.spend.1 >= budget || self.spend.1 + ask.cost_nano > budget)
        {
            let end = (w.period + 1) * ask.period_s * 1000;
            return Err(Refusal { limit: Limit::Budget, retry_after: secs_until(end, now) });
        }
        if ask.max_concurrent.is_some() {
            self.in_flight += 1;
        }
        if ask.rpm.is_some() {
            self.admitted.push_back(now);
        }
        self.tpm.1 += ask.tokens;
        self.spend.1 += ask.cost_nano;
        Ok(w)
    }

    /// Corrects the windows the request counted in by what it really used, and frees its
    /// concurrency slot.
    pub(crate) fn settle(&mut self, w: Windows, tokens: i64, cost: i64, slot: bool) {
        if slot {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        if self.tpm.0 == w.minute {
            self.tpm.1 = self.tpm.1.saturating_add_signed(tokens);
        }
        if self.spend.0 == w.period {
            self.spend.1 = self.spend.1.saturating_add_signed(cost);
        }
    }

    /// What the current windows hold: requests in the last minute, tokens this minute, spend
    /// this period, in flight.
    pub(crate) fn snapshot(&mut self, now_ms: u64, period_s: u64) -> (u64, u64, u64, u64) {
        while self.admitted.front().is_some_and(|t| *t + MINUTE_MS <= now_ms) {
            self.admitted.pop_front();
        }
        let tpm = if self.tpm.0 == now_ms / MINUTE_MS { self.tpm.1 } else { 0 };
        let spend = if self.spend.0 == now_ms / (period_s.max(1) * 1000) { self.spend.1 } else { 0 };
        (self.admitted.len() as u64, tpm, spend, self.in_flight)
    }
}

/// Whole seconds from `now` until `at` (ms), at least 1.
pub(crate) fn secs_until(at: u64, now: u64) -> u64 {
    at.saturating_sub(now).div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(now_ms: u64) -> Ask {
        Ask {
            now_ms,
            rpm: Some(2),
            tpm: Some(100),
            tokens: 40,
            budget_nano: Some(1000),
            cost_nano: 300,
            period_s: 3600,
            max_concurrent: Some(5),
        }
    }

    #[test]
    fn rpm_slides_and_names_when_a_place_frees() {
        let mut c = Counters::default();
        c.admit(&ask(1_000)).unwrap();
        c.admit(&ask(2_000)).unwrap();
        let r = c.admit(&ask(30_000)).unwrap_err();
        assert_eq!((r.limit, r.retry_after), (Limit::Rpm, 31));
        // The first admission leaves the window at 61 s.
        c.settle(ask(0).windows(), -40, -300, true);
        assert!(c.admit(&ask(61_000)).is_ok());
    }

    #[test]
    fn tokens_and_budget_count_the_estimate_then_the_real_use() {
        let mut c = Counters::default();
        let mut a = ask(0);
        a.rpm = None;
        let w = c.admit(&a).unwrap();
        c.admit(&a).unwrap();
        assert_eq!(c.admit(&a).unwrap_err().limit, Limit::Tpm, "40 + 40 + 40 > 100");
        // The first used only 10 tokens: room for another.
        c.settle(w, -30, 0, true);
        c.admit(&a).unwrap();
        a.tokens = 0;
        assert_eq!(c.admit(&a).unwrap_err().limit, Limit::Budget, "3 x 300 + 300 > 1000");
        a.cost_nano = 100;
        c.admit(&a).unwrap();
        a.cost_nano = 0;
        assert_eq!(c.admit(&a).unwrap_err().limit, Limit::Budget, "a spent budget refuses even a free estimate");
    }

    #[test]
    fn concurrency_counts_in_flight_requests() {
        let mut c = Counters::default();
        let mut a = ask(0);
        (a.rpm, a.tpm, a.budget_nano, a.max_concurrent) = (None, None, None, Some(1));
        let w = c.admit(&a).unwrap();
        assert_eq!(c.admit(&a).unwrap_err().limit, Limit::Concurrency);
        c.settle(w, 0, 0, true);
        c.admit(&a).unwrap();
    }
}
