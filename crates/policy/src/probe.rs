//! Active health checks: one probe of a provider's model list (never a model call), recorded
//! as the pool's health (`/ready`) and, through the breaker, like an attempt: failed probes
//! count toward opening it, and once its cool-down is over a probe can be the half-open trial
//! that closes it, so no client request has to be the one that finds out.

use std::time::Duration;

use tokio::time::Instant;

use crate::breaker::Pass;
use crate::error::{Error, ErrorKind};
use weir_types::secrets::Secrets;

use crate::Target;

/// Probes `target` once, bounded by `timeout`. `None`: its kind has no model list to ask.
pub async fn probe(target: &Target, secrets: &Secrets, timeout: Duration) -> Option<bool> {
    let name = target.pool.name();
    let outcome = match tokio::time::timeout(timeout, target.provider.discover_models(secrets)).await {
        Ok(None) => return None,
        Ok(Some(r)) => r.map(drop),
        Err(_) => Err(Error::new(
            ErrorKind::UpstreamTimeout,
            format!("health check of provider {name} got no answer within {}ms", timeout.as_millis()),
        )),
    };
    let health = target.pool.health();
    match &outcome {
        Ok(()) => health.record_ok(),
        Err(e) => {
            tracing::warn!(provider = %name, error = %e, "health check failed");
            health.record_error(e);
        }
    }
    if let Some(b) = &target.guard.breaker {
        let now = Instant::now();
        let pass = b.pass(now);
        if !matches!(pass, Pass::Refused(_)) {
            b.record(&pass, Some(outcome.is_ok()), now);
        }
        health.set_breaker(b.state() as u8);
    }
    let result = if outcome.is_ok() { "ok" } else { "failed" };
    metrics::counter!("weir_health_checks_total", "provider" => name.to_string(), "result" => result).increment(1);
    Some(outcome.is_ok())
}
