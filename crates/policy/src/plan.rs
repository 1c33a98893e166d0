//! A request's attempts decided up front, before the first one is made: the provider of the
//! first attempt, the fallbacks after it, and the request's total deadline (the routed
//! provider's `total_timeout`, or the client's `x-weir-timeout-ms` up to `max_client_timeout`).

use std::borrow::Cow;
use std::time::Duration;

use weir_types::relay::AskedHeaders;
pub use weir_types::relay::{X_WEIR_FALLBACKS, X_WEIR_TIMEOUT_MS};

use crate::error::Error;
use crate::{Policy, Step, Target};

/// What [`Policy::execute`] does with one request.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    /// The provider (index of the snapshot's targets) of the first attempt.
    pub routed: usize,
    /// The model asked of it, when not the request's own.
    pub model: Option<String>,
    /// Where the request goes when `routed` cannot answer.
    pub fallbacks: Cow<'a, [Step]>,
    /// Bound on the whole request: every attempt, the waits and a stream to its end.
    pub timeout: Option<Duration>,
    /// Attempts feed the targets' latency averages (a `latency` route).
    pub latency: bool,
    /// Hedge the first attempt on the next target after this long.
    pub hedge: Option<Duration>,
    /// A stream cut after its first byte is continued on the next fallback (the route's
    /// `stream_resume = "continue"`).
    pub resume: bool,
}

impl<'a> Plan<'a> {
    /// A plan to `routed` and then `fallbacks`, with no total timeout.
    pub fn new(routed: usize, fallbacks: &'a [Step]) -> Self {
        Self {
            routed,
            model: None,
            fallbacks: Cow::Borrowed(fallbacks),
            timeout: None,
            latency: false,
            hedge: None,
            resume: false,
        }
    }
}

impl Policy {
    /// The plan of a request for `model` (as the client names it) that routing sent to
    /// `targets[routed]`, with the request's `x-weir-fallbacks` and `x-weir-timeout-ms`
    /// (`asked`).
    ///
    /// # Errors
    /// 400 naming the header when one of them is malformed.
    ///
    /// # Panics
    /// If `routed` is not an index of `targets`.
    pub fn plan<'a>(
        &'a self,
        targets: &[Target],
        model: &str,
        routed: usize,
        asked: &AskedHeaders<'_>,
    ) -> Result<Plan<'a>, Error> {
        let header = asked.fallbacks.map(http::HeaderValue::as_bytes);
        let mut fallbacks = self.fallbacks(model, header)?;
        let mut plan = Plan::new(routed, &[]);
        // No hash of the model when no route is configured.
        if let Some(route) = (!self.routes.is_empty()).then(|| self.routes.get(model)).flatten() {
            // The pick first, the route's other targets next, then the model's fallbacks (a
            // request's own list replaces both).
            let mut order = route.order(targets);
            let first = order.remove(0);
            if header.is_none() {
                order.extend(fallbacks.iter().cloned());
                fallbacks = Cow::Owned(order);
            }
            (plan.routed, plan.model) = (first.provider, Some(first.model));
            (plan.latency, plan.hedge, plan.resume) = (route.tracks_latency(), route.hedge_after, route.resume);
        }
        let pool = targets[plan.routed].pool.config();
        plan.timeout = match asked.timeout_ms {
            None => pool.total_timeout,
            Some(v) => Some(client_timeout(v.as_bytes())?.min(pool.max_client_timeout)),
        };
        plan.fallbacks = fallbacks;
        Ok(plan)
    }
}

impl Plan<'_> {
    /// The plan that continues a stream `targets[failed]` was serving as `failed_model` (the
    /// request's own model is `primary_model`): the steps after that one, never the same
    /// provider and model again, within `left` of the total timeout. No hedging. `None` when
    /// no step is left.
    pub fn after(
        &self,
        failed: usize,
        failed_model: &str,
        primary_model: &str,
        left: Option<Duration>,
    ) -> Option<Plan<'static>> {
        let first =
            Step { provider: self.routed, model: self.model.clone().unwrap_or_else(|| primary_model.to_owned()) };
        let steps: Vec<&Step> = std::iter::once(&first).chain(self.fallbacks.iter()).collect();
        let same = |s: &Step| s.provider == failed && s.model == failed_model;
        let from = steps.iter().position(|s| same(s)).map_or(0, |i| i + 1);
        let mut rest = steps[from..].iter().filter(|s| !same(s)).map(|s| (*s).clone());
        let next = rest.next()?;
        Some(Plan {
            routed: next.provider,
            model: Some(next.model),
            fallbacks: Cow::Owned(rest.collect()),
            timeout: left,
            latency: false,
            hedge: None,
            resume: false,
        })
    }
}

/// The value of `x-weir-timeout-ms`: a whole number of milliseconds above 0.
fn client_timeout(raw: &[u8]) -> Result<Duration, Error> {
    let ms = std::str::from_utf8(raw).ok().and_then(|s| s.trim().parse::<u64>().ok()).filter(|ms| *ms > 0);
    ms.map(Duration::from_millis).ok_or_else(|| {
        Error::invalid_param(
            "x-weir-timeout-ms",
            "header x-weir-timeout-ms: must be a whole number of milliseconds above 0",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_continuation_goes_to_the_steps_after_the_failed_one() {
        let fallbacks = [Step { provider: 1, model: "b".into() }, Step { provider: 2, model: "c".into() }];
        let plan = Plan::new(0, &fallbacks);
        let next = plan.after(0, "a", "a", Some(Duration::from_secs(3))).unwrap();
        assert_eq!((next.routed, next.model.as_deref(), next.fallbacks.len()), (1, Some("b"), 1));
        assert_eq!(next.timeout, Some(Duration::from_secs(3)));
        let next = plan.after(1, "b", "a", None).unwrap();
        assert_eq!((next.routed, next.model.as_deref(), next.fallbacks.len()), (2, Some("c"), 0));
        assert!(plan.after(2, "c", "a", None).is_none(), "the last step has nothing after it");
        let alone = Plan::new(0, &[]);
        assert!(alone.after(0, "a", "a", None).is_none());
    }

    #[test]
    fn the_client_timeout_is_whole_milliseconds_above_zero() {
        assert_eq!(client_timeout(b"1500").unwrap(), Duration::from_millis(1500));
        assert_eq!(client_timeout(b" 20 ").unwrap(), Duration::from_millis(20));
        for bad in [&b"0"[..], b"-5", b"1.5", b"soon", b"", b"\xff"] {
            let e = client_timeout(bad).unwrap_err();
            assert_eq!(e.status(), 400);
            assert!(e.message.contains("x-weir-timeout-ms"), "{}", e.message);
        }
    }
}
