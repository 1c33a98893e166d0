//! A request's attempts decided up front, before the first one is made: the provider of the
//! first attempt, the fallbacks after it, and the request's total deadline (the routed
//! provider's `total_timeout`, or the client's `x-weir-timeout-ms` up to `max_client_timeout`).

use std::borrow::Cow;
use std::time::Duration;

use http::HeaderMap;

use crate::error::Error;
use crate::{Policy, Step, Target};

/// The request header that sets its total timeout, in milliseconds.
pub const X_WEIR_TIMEOUT_MS: http::HeaderName = http::HeaderName::from_static("x-weir-timeout-ms");
/// The request header that lists its own fallbacks.
pub const X_WEIR_FALLBACKS: http::HeaderName = http::HeaderName::from_static("x-weir-fallbacks");

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
}

impl<'a> Plan<'a> {
    /// A plan to `routed` and then `fallbacks`, with no total timeout.
    pub fn new(routed: usize, fallbacks: &'a [Step]) -> Self {
        Self { routed, model: None, fallbacks: Cow::Borrowed(fallbacks), timeout: None, latency: false, hedge: None }
    }
}

impl Policy {
    /// The plan of a request for `model` (as the client names it) that routing sent to
    /// `targets[routed]`, with the request's `x-weir-fallbacks` and `x-weir-timeout-ms`.
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
        headers: &HeaderMap,
    ) -> Result<Plan<'a>, Error> {
        let header = headers.get(X_WEIR_FALLBACKS).map(http::HeaderValue::as_bytes);
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
            (plan.latency, plan.hedge) = (route.tracks_latency(), route.hedge_after);
        }
        let pool = targets[plan.routed].pool.config();
        plan.timeout = match headers.get(X_WEIR_TIMEOUT_MS) {
            None => pool.total_timeout,
            Some(v) => Some(client_timeout(v.as_bytes())?.min(pool.max_client_timeout)),
        };
        plan.fallbacks = fallbacks;
        Ok(plan)
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
