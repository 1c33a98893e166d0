//! What an attempt's error means for the next one: retry on the same provider (429, 5xx,
//! connection refused or reset, timeouts), go on to the next fallback, or stop; and how long
//! to wait before a retry (exponential backoff with full jitter, or the upstream's
//! `Retry-After` up to `max_retry_after`).

use std::time::Duration;

use crate::config::RetryConfig;
use crate::error::{Error, ErrorKind};

/// Why an attempt is retried: the `reason` label of `weir_retries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// 429.
    RateLimited,
    /// 5xx.
    ServerError,
    /// Connection refused, reset or closed before the answer.
    Unavailable,
    /// No answer within `request_timeout` (or the connect timeout).
    Timeout,
}

impl Reason {
    /// Every reason, in label order.
    pub const ALL: [Self; 4] = [Self::RateLimited, Self::ServerError, Self::Unavailable, Self::Timeout];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::ServerError => "server_error",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The same request may succeed on the same provider.
    Retry(Reason),
    /// Not here, but another provider or model may serve it.
    Elsewhere,
    /// The same request to a smaller model will fail again; a model with a larger context
    /// may serve it (never the same model again).
    ContextLength,
    /// The answer stands: the client's error, a refusal, or Weir stopping.
    Final,
}

/// Codes with which providers refuse content; never laundered through a fallback.
const CONTENT_POLICY: [&str; 3] = ["content_policy_violation", "content_filter", "content_policy"];
/// Codes saying the request is longer than the model's context.
const CONTEXT_LENGTH: [&str; 2] = ["context_length_exceeded", "string_above_max_length"];

/// Classifies an attempt's error.
pub fn classify(e: &Error) -> Verdict {
    let code = e.code.as_deref().unwrap_or_default();
    if CONTENT_POLICY.contains(&code) {
        return Verdict::Final;
    }
    if CONTEXT_LENGTH.contains(&code) {
        return Verdict::ContextLength;
    }
    match e.kind {
        ErrorKind::Upstream { status: 429 } => Verdict::Retry(Reason::RateLimited),
        ErrorKind::Upstream { status } if status >= 500 => Verdict::Retry(Reason::ServerError),
        ErrorKind::UpstreamUnavailable => Verdict::Retry(Reason::Unavailable),
        ErrorKind::UpstreamTimeout => Verdict::Retry(Reason::Timeout),
        // Weir's credentials or the model's name are wrong there: perhaps not elsewhere.
        ErrorKind::Upstream { status: 401 | 403 | 404 } => Verdict::Elsewhere,
        ErrorKind::UpstreamInvalid
        | ErrorKind::QueueFull
        | ErrorKind::QueueTimeout
        | ErrorKind::Dropped
        | ErrorKind::CircuitOpen => Verdict::Elsewhere,
        _ => Verdict::Final,
    }
}

/// How long to wait before retry number `retry` (1 for the first) after `e`: the upstream's
/// `Retry-After` when it sent one, else a random wait up to `base_backoff × 2^(retry-1)`
/// (at most `max_backoff`). `None`: the `Retry-After` is longer than `max_retry_after`, so
/// this provider is not retried.
pub fn wait(cfg: &RetryConfig, e: &Error, retry: u32) -> Option<Duration> {
    if let Some(secs) = e.retry_after {
        let asked = Duration::from_secs(secs);
        return (asked <= cfg.max_retry_after).then_some(asked);
    }
    let ceiling = cfg.base_backoff.saturating_mul(1u32 << retry.saturating_sub(1).min(20)).min(cfg.max_backoff);
    Some(ceiling.mul_f64(fastrand::f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(status: u16) -> Error {
        Error::new(ErrorKind::Upstream { status }, "x")
    }

    #[test]
    fn retries_on_429_5xx_resets_and_timeouts_never_on_other_4xx() {
        assert_eq!(classify(&upstream(429)), Verdict::Retry(Reason::RateLimited));
        assert_eq!(classify(&upstream(503)), Verdict::Retry(Reason::ServerError));
        assert_eq!(classify(&Error::new(ErrorKind::UpstreamUnavailable, "reset")), Verdict::Retry(Reason::Unavailable));
        assert_eq!(classify(&Error::new(ErrorKind::UpstreamTimeout, "slow")), Verdict::Retry(Reason::Timeout));
        assert_eq!(classify(&upstream(400)), Verdict::Final);
        assert_eq!(classify(&upstream(422)), Verdict::Final);
        assert_eq!(classify(&upstream(401)), Verdict::Elsewhere);
        assert_eq!(classify(&Error::new(ErrorKind::ShuttingDown, "bye")), Verdict::Final);
    }

    #[test]
    fn context_length_may_go_elsewhere_but_content_policy_stands() {
        let e = upstream(400).with_upstream_code("context_length_exceeded");
        assert_eq!(classify(&e), Verdict::ContextLength);
        let e = upstream(400).with_upstream_code("content_policy_violation");
        assert_eq!(classify(&e), Verdict::Final);
    }

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_ceiling_and_retry_after_is_capped() {
        let cfg = RetryConfig {
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            max_retry_after: Duration::from_secs(3),
            ..RetryConfig::default()
        };
        let e = upstream(503);
        for (retry, ceiling) in [(1, 100), (2, 200), (3, 350), (30, 350)] {
            let waits: Vec<Duration> = (0..200).map(|_| wait(&cfg, &e, retry).unwrap()).collect();
            assert!(waits.iter().all(|w| *w <= Duration::from_millis(ceiling)), "retry {retry}");
            assert!(waits.iter().any(|w| *w > Duration::from_millis(ceiling / 2)), "retry {retry}: jitter spans");
            assert!(waits.iter().any(|w| *w < Duration::from_millis(ceiling / 2)), "retry {retry}: jitter spans");
        }
        assert_eq!(wait(&cfg, &upstream(429).with_retry_after(2), 1), Some(Duration::from_secs(2)));
        assert_eq!(wait(&cfg, &upstream(429).with_retry_after(4), 1), None, "longer than max_retry_after");
    }
}
