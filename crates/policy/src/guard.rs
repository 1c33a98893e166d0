//! What the policy stage keeps per provider across requests: its retry settings and budget,
//! its circuit breaker, and the series that count retries and fallbacks. Lives as long as the
//! provider's pool (a reload that keeps the provider keeps them).

use crate::budget::Budget;
use crate::config::{ProviderConfig, RetryConfig};
use crate::retry::Reason;

pub use crate::breaker::Breaker;

/// One provider's resilience state.
pub struct Guard {
    /// Retries on this provider.
    pub retry: RetryConfig,
    /// Its retry budget.
    pub budget: Budget,
    /// Its circuit breaker, when configured.
    pub breaker: Option<Breaker>,
    /// `weir_retries_total{provider,reason}`, in [`Reason::ALL`] order.
    retries: [metrics::Counter; 4],
    /// `weir_retry_budget_exhausted_total{provider}`.
    pub exhausted: metrics::Counter,
    /// `weir_fallbacks_total{provider}`: requests that fell back to this provider.
    pub fallbacks: metrics::Counter,
    /// `weir_hedges_total{provider,outcome}`: `sent` and `won` count hedges sent to this
    /// provider and those that answered first; `cancelled`, its attempts that lost a race.
    pub hedges: [metrics::Counter; 3],
    /// Its time to answer, for `latency` routes.
    pub latency: crate::balance::Latency,
}

impl Guard {
    /// The state of provider `p`, its series registered (at 0) once.
    pub fn new(p: &ProviderConfig) -> Self {
        let name = p.name.clone();
        let counter = |metric: &'static str| {
            let c = metrics::counter!(metric, "provider" => name.clone());
            c.increment(0);
            c
        };
        let retries = Reason::ALL.map(|r| {
            let c = metrics::counter!("weir_retries_total", "provider" => name.clone(), "reason" => r.as_str());
            c.increment(0);
            c
        });
        Self {
            retry: p.retry.clone(),
            budget: Budget::new(&p.retry),
            breaker: p.breaker.clone().map(|b| Breaker::new(&p.name, b)),
            retries,
            exhausted: counter("weir_retry_budget_exhausted_total"),
            fallbacks: counter("weir_fallbacks_total"),
            latency: crate::balance::Latency::default(),
            hedges: ["sent", "won", "cancelled"].map(|outcome| {
                let c = metrics::counter!("weir_hedges_total", "provider" => name.clone(), "outcome" => outcome);
                c.increment(0);
                c
            }),
        }
    }

    /// Counts one retry.
    pub fn retried(&self, reason: Reason) {
        self.retries[reason as usize].increment(1);
    }
}
