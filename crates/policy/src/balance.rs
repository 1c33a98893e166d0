//! `[[routes]]`: which of a model's targets a request tries first. The pick skips targets
//! whose breaker refuses; the route's other targets follow as its fallbacks, so a balanced
//! model also fails over. Nothing here runs for a model without a route.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{RouteConfig, Strategy};
use crate::{Step, Target};

/// One route, its providers resolved to indexes.
#[derive(Debug)]
pub(crate) struct Balance {
    strategy: Strategy,
    /// Targets in config order, with their weights.
    targets: Vec<(Step, u32)>,
    /// Hedging delay, when opted in.
    pub(crate) hedge_after: Option<Duration>,
    /// A stream cut after its first byte is continued on the next fallback.
    pub(crate) resume: bool,
}

impl Balance {
    /// The route `r` with providers named as in `providers` (validated: all are there).
    pub(crate) fn new(r: &RouteConfig, providers: &[String]) -> Self {
        let targets = (r.targets.iter())
            .filter_map(|t| {
                let provider = providers.iter().position(|p| *p == t.provider)?;
                Some((Step { provider, model: t.model.clone().unwrap_or_else(|| r.model.clone()) }, t.weight))
            })
            .collect();
        let resume = r.stream_resume == crate::config::StreamResume::Continue;
        Self { strategy: r.strategy, targets, hedge_after: r.hedge_after, resume }
    }

    /// Whether attempts on this route feed the targets' latency averages.
    pub(crate) fn tracks_latency(&self) -> bool {
        self.strategy == Strategy::Latency
    }

    /// The route's targets for one request: the pick first, then the others in config order.
    pub(crate) fn order(&self, targets: &[Target]) -> Vec<Step> {
        let first = self.pick(targets);
        let mut steps = Vec::with_capacity(self.targets.len());
        steps.push(self.targets[first].0.clone());
        steps.extend((self.targets.iter().enumerate()).filter(|(i, _)| *i != first).map(|(_, (s, _))| s.clone()));
        steps
    }

    /// Index (into `self.targets`) of the first attempt's target.
    fn pick(&self, targets: &[Target]) -> usize {
        let now = Instant::now();
        let open = |i: usize| {
            let guard = &targets[self.targets[i].0.provider].guard;
            guard.breaker.as_ref().is_some_and(|b| b.refusing(now))
        };
        let mut candidates: Vec<usize> =
            (0..self.targets.len()).filter(|&i| self.targets[i].1 > 0 && !open(i)).collect();
        if candidates.is_empty() {
            // Every breaker refuses: the attempts then say so (503 circuit_open).
            candidates = (0..self.targets.len()).filter(|&i| self.targets[i].1 > 0).collect();
        }
        let weight = |i: usize| u64::from(self.targets[i].1);
        match self.strategy {
            Strategy::Weighted => {
                let total: u64 = candidates.iter().map(|&i| weight(i)).sum();
                let mut r = fastrand::u64(0..total.max(1));
                for &i in &candidates {
                    if r < weight(i) {
                        return i;
                    }
                    r -= weight(i);
                }
                candidates[0]
            }
            // Load per unit of weight; the scan starts at a random candidate so ties spread.
            Strategy::LeastOutstanding => lowest(&candidates, |i| {
                let load = targets[self.targets[i].0.provider].pool.outstanding() as u64;
                load.saturating_mul(1_000_000) / weight(i)
            }),
            Strategy::Latency => lowest(&candidates, |i| targets[self.targets[i].0.provider].guard.latency.micros()),
        }
    }
}

/// The candidate with the lowest `cost`, ties broken from a random start.
fn lowest(candidates: &[usize], cost: impl Fn(usize) -> u64) -> usize {
    let start = fastrand::usize(0..candidates.len());
    let mut best = candidates[start];
    let mut best_cost = cost(best);
    for k in 1..candidates.len() {
        let i = candidates[(start + k) % candidates.len()];
        let c = cost(i);
        if c < best_cost {
            (best, best_cost) = (i, c);
        }
    }
    best
}

/// A moving average of one provider's time to answer (a stream: to its first event), in
/// microseconds; 0 until measured. Fed only by routes with `strategy = "latency"`.
#[derive(Debug, Default)]
pub struct Latency(AtomicU64);

impl Latency {
    /// The average now.
    pub fn micros(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Adds one attempt that took `took`: an answer moves the average an eighth of the way; a
    /// failure counts as at least four times the average, so a failing target drops behind.
    pub fn record(&self, took: Duration, ok: bool) {
        let sample = took.as_micros().min(u128::from(u64::MAX / 8)) as u64;
        let old = self.micros();
        let sample = if ok { sample } else { sample.max(old.saturating_mul(4)).max(1000) };
        let new = if old == 0 { sample } else { (old * 7 + sample) / 8 };
        // Racing updates may lose one sample: an average does not need every one.
        self.0.store(new.max(1), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latency_average_moves_an_eighth_and_failures_count_as_slow() {
        let l = Latency::default();
        l.record(Duration::from_millis(80), true);
        assert_eq!(l.micros(), 80_000, "the first sample is the average");
        l.record(Duration::from_millis(160), true);
        assert_eq!(l.micros(), 90_000);
        l.record(Duration::from_millis(1), false);
        assert_eq!(l.micros(), (90_000 * 7 + 360_000) / 8);
    }

    #[test]
    fn the_lowest_cost_wins_and_ties_spread() {
        assert_eq!(lowest(&[0, 1, 2], |i| [5, 1, 9][i]), 1);
        let picks: std::collections::HashSet<usize> = (0..200).map(|_| lowest(&[0, 1, 2], |_| 7)).collect();
        assert_eq!(picks.len(), 3, "equal costs spread over every candidate");
    }
}
