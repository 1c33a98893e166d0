//! The `upstream_request` phase: the one place that decides a request's attempts, which
//! provider each goes to, and (as the reliability and governance work lands here) which key,
//! whether to try again, whether the budget allows it, whether to answer from a cache or
//! refuse for a limit. Today it makes exactly one attempt, on the routed provider. The pool
//! and the provider below it each make exactly one attempt when asked ([`attempt`]); an
//! attempt is a future, so stopping one (the loser of [`first_ok`], a request whose client
//! left) is dropping it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub mod routing;

use weir_config as config;
use weir_pool as pool;
use weir_providers as providers;
use weir_types::error;

use crate::error::Error;
use crate::pool::{Pool, Reply};
use crate::providers::{Provider, ProviderRequest};

/// Where an attempt can go: a provider and the pool in front of it.
#[derive(Clone)]
pub struct Target {
    /// Admission to the provider (its slots, line, timeouts and metrics).
    pub pool: Arc<Pool>,
    /// The provider the attempt calls.
    pub provider: Arc<Provider>,
}

/// Decides the attempts of each request. Holds what that needs across requests (later: retry
/// budgets, breakers, key state, limits); nothing yet.
#[derive(Debug, Default)]
pub struct Policy {}

impl Policy {
    /// Runs the attempts of one request routed to `targets[routed]`: today one attempt there.
    /// `upstream` is set to the time spent upstream, whatever the outcome. While it makes one
    /// attempt it returns that attempt's future itself: one async layer less to copy the call
    /// future through (see [`Pool::run`]).
    ///
    /// # Errors
    /// The last attempt's error (pool admission or the provider call).
    ///
    /// # Panics
    /// If `routed` is not an index of `targets` (routing only returns configured providers).
    pub fn execute<'a>(
        &'a self,
        targets: &'a [Target],
        routed: usize,
        req: ProviderRequest,
        upstream: &'a mut Duration,
    ) -> impl Future<Output = Result<Reply, Error>> + 'a {
        attempt(&targets[routed], req, upstream)
    }
}

/// One attempt on `target`: admission to its pool, then one provider call on the slot.
/// Dropping the future stops the attempt wherever it is: it leaves the line, or stops the
/// call, frees the slot and closes a connection left mid-exchange. `upstream` is set to the
/// time the call took (zero if it never started).
///
/// # Errors
/// Admission refused (429/503), or the call's error.
pub async fn attempt(target: &Target, req: ProviderRequest, upstream: &mut Duration) -> Result<Reply, Error> {
    let permit = target.pool.admit().await?;
    target.pool.run(permit, || target.provider.call(req), upstream).await
}

/// Runs `a` and `b` at once; the first `Ok` wins and the other is dropped (cancelled) at
/// once. The primitive under hedging and fallback races.
///
/// # Errors
/// Both failed: the error of the one that failed last.
pub async fn first_ok<T, E>(
    a: impl Future<Output = Result<T, E>>,
    b: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let (a, b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (mut a, mut b) = (Some(a), Some(b));
    loop {
        let (failed_a, e) = tokio::select! {
            r = async { a.as_mut().expect("polled while pending").await }, if a.is_some() => match r {
                Ok(v) => return Ok(v),
                Err(e) => (true, e),
            },
            r = async { b.as_mut().expect("polled while pending").await }, if b.is_some() => match r {
                Ok(v) => return Ok(v),
                Err(e) => (false, e),
            },
        };
        if failed_a {
            a = None;
        } else {
            b = None;
        }
        if a.is_none() && b.is_none() {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests;
