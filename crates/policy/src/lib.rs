//! The `upstream_request` phase: the one place that decides a request's attempts and which
//! provider each goes to. A request goes to its routed provider, then down its fallbacks
//! (`[fallbacks]` or the `x-weir-fallbacks` header), each step with its provider's own
//! attempts: retries on 429, 5xx, resets and timeouts with backoff ([`retry`]), within the
//! provider's retry budget ([`budget`]), past its circuit breaker ([`breaker`]). The pool and
//! the provider below it each make exactly one attempt when asked ([`attempt`]); an attempt is
//! a future, so stopping one (the loser of [`first_ok`], a request whose client left) is
//! dropping it. Every attempt ends before any byte reaches the client: a stream's attempt
//! ends at its first event (read by the pool under `first_token_timeout`).

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub mod balance;
pub mod breaker;
pub mod budget;
pub mod guard;
mod hedge;
pub mod plan;
pub mod probe;
pub mod retry;
pub mod routing;

use weir_config as config;
use weir_pool as pool;
use weir_providers as providers;
use weir_types::error;
use weir_types::trace::{Span, SpanKind};

use crate::breaker::{Breaker, Pass};
use crate::config::{Config, MAX_FALLBACKS, ProviderConfig};
use crate::error::{Error, ErrorKind};
pub use crate::guard::Guard;
pub use crate::plan::Plan;
use crate::pool::{Pool, Reply};
use crate::providers::{Provider, ProviderRequest};
use crate::retry::Verdict;

/// Longest `x-weir-fallbacks` value read.
const MAX_FALLBACK_HEADER: usize = 1024;

/// Where an attempt can go: a provider, the pool in front of it and its resilience state.
#[derive(Clone)]
pub struct Target {
    /// Admission to the provider (its slots, line, timeouts and metrics).
    pub pool: Arc<Pool>,
    /// The provider the attempt calls.
    pub provider: Arc<Provider>,
    /// Its retry budget, breaker and retry settings.
    pub guard: Arc<Guard>,
}

impl Target {
    /// The target of provider `cfg`.
    pub fn new(pool: Arc<Pool>, provider: Arc<Provider>, cfg: &ProviderConfig) -> Self {
        Self { pool, provider, guard: Arc::new(Guard::new(cfg)) }
    }
}

/// One fallback: a provider (its index in the snapshot) and the model asked of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Index of the provider.
    pub provider: usize,
    /// The model name sent to it.
    pub model: String,
}

/// What the attempts of one request came to, for its response headers and `finish`.
#[derive(Debug)]
pub struct Served {
    /// The provider that answered (or was tried last).
    pub target: usize,
    /// Attempts made (`x-weir-attempts`).
    pub attempts: u32,
    /// Time spent upstream and waiting between attempts: not Weir's own time.
    pub upstream: Duration,
    /// The span of the attempt whose stream is being relayed, left open so the relay notes
    /// the first token on it and ends it ([`Span::NONE`] when not traced or not a stream).
    pub stream_attempt: Span,
}

impl Served {
    /// Nothing tried yet; the request is routed to `target`.
    pub fn new(target: usize) -> Self {
        Self { target, attempts: 0, upstream: Duration::ZERO, stream_attempt: Span::NONE }
    }
}

/// Decides the attempts of each request: holds the snapshot's fallback lists (the per-provider
/// state is on each [`Target`], which outlives a reload that keeps its provider).
#[derive(Debug, Default)]
pub struct Policy {
    /// Provider names in config order.
    providers: Vec<String>,
    /// `[fallbacks]`: model as the client names it → steps.
    fallbacks: std::collections::HashMap<String, Vec<Step>>,
    /// `[[routes]]`: model as the client names it → its balanced targets.
    routes: std::collections::HashMap<String, balance::Balance>,
}

impl Policy {
    /// The policy of `config` (its `[fallbacks]` were validated).
    pub fn new(config: &Config) -> Self {
        let providers: Vec<String> = config.providers.iter().map(|p| p.name.clone()).collect();
        let fallbacks = (config.fallbacks.iter())
            .map(|(model, list)| (model.clone(), list.iter().filter_map(|s| step(&providers, s)).collect()))
            .collect();
        let routes = (config.routes.iter()).map(|r| (r.model.clone(), balance::Balance::new(r, &providers))).collect();
        Self { providers, fallbacks, routes }
    }

    /// The fallbacks of a request for `model` (as the client names it): the `x-weir-fallbacks`
    /// header's when it has one (comma-separated `provider/model`s of configured providers),
    /// else `[fallbacks]`'s.
    ///
    /// # Errors
    /// 400 naming the header when it is too long, lists too many, or names an unknown provider.
    pub fn fallbacks<'a>(&'a self, model: &str, header: Option<&[u8]>) -> Result<Cow<'a, [Step]>, Error> {
        let Some(raw) = header else {
            return Ok(Cow::Borrowed(self.fallbacks.get(model).map_or(&[][..], Vec::as_slice)));
        };
        let bad = |why: String| Error::invalid_param("x-weir-fallbacks", format!("header x-weir-fallbacks: {why}"));
        if raw.len() > MAX_FALLBACK_HEADER {
            return Err(bad(format!("longer than {MAX_FALLBACK_HEADER} bytes")));
        }
        let text = std::str::from_utf8(raw).map_err(|_| bad("not UTF-8".into()))?;
        let entries: Vec<&str> = text.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        if entries.len() > MAX_FALLBACKS {
            return Err(bad(format!("at most {MAX_FALLBACKS} entries")));
        }
        let steps = (entries.iter())
            .map(|e| {
                step(&self.providers, e)
                    .ok_or_else(|| bad(format!("{e:?} is not \"provider/model\" with a configured provider")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Cow::Owned(steps))
    }

    /// Runs the attempts of one request by its `plan`: to `targets[plan.routed]`, then down
    /// its fallbacks, until one answers, none is left or the plan's total timeout passes. Each step gets up to `retry.max_retries` retries on
    /// its provider, each within the provider's budget; an open breaker skips its step. An
    /// answer that stands (a 400, a content-policy refusal) ends the attempts at once; a
    /// context-length error goes on, but never to the same model again. `served` says who
    /// answered and after how many attempts.
    ///
    /// # Errors
    /// The last attempt's error (or 503 `circuit_open` when every step's breaker was open).
    ///
    /// # Panics
    /// If `routed` or a step is not an index of `targets` (routing only returns configured
    /// providers).
    pub async fn execute(
        &self,
        targets: &[Target],
        plan: &Plan<'_>,
        req: ProviderRequest,
        served: &mut Served,
    ) -> Result<Reply, Error> {
        let (routed, fallbacks) = (plan.routed, &plan.fallbacks[..]);
        // The clock is read for it only when a total timeout is set.
        let deadline = plan.timeout.map(|t| Instant::now() + t);
        let steps = 1 + fallbacks.len();
        // Kept to resend until the last attempt that could be made takes it.
        let mut original = Some(req);
        let primary_model = if fallbacks.is_empty() { String::new() } else { original_model(&original) };
        let mut too_long: Vec<String> = Vec::new();
        let mut last: Option<Error> = None;
        'steps: for step in 0..steps {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let (t, model) = match step {
                0 => (routed, plan.model.as_ref()),
                i => (fallbacks[i - 1].provider, Some(&fallbacks[i - 1].model)),
            };
            let target = &targets[t];
            let guard = &*target.guard;
            let model_name = model.unwrap_or(&primary_model);
            if too_long.iter().any(|m| m == model_name) {
                continue;
            }
            if step > 0 {
                guard.fallbacks.increment(1);
            }
            guard.budget.deposit(Instant::now());
            let mut retry = 0;
            loop {
                let ticket = Ticket::new(guard.breaker.as_ref(), &target.pool);
                if let Pass::Refused(left) = ticket.pass {
                    last = Some(last.unwrap_or_else(|| circuit_open(target.pool.name(), left)));
                    break;
                }
                served.target = t;
                let last_chance = step + 1 == steps && retry >= guard.retry.max_retries;
                let mut req = if last_chance { original.take() } else { original.as_ref().map(resend) }
                    .expect("the request is taken only by the last attempt");
                if let Some(model) = model.filter(|m| **m != req.model) {
                    req.model.clone_from(model);
                    req.body.forget_raw();
                }
                served.attempts += 1;
                let mut span = attempt_span(&mut req, target, served.attempts);
                let hedge = plan.hedge.filter(|_| step == 0 && retry == 0 && steps > 1);
                let result = match hedge {
                    // The first attempt, raced by the next target's after the delay.
                    Some(delay) => {
                        let backup = &fallbacks[0];
                        let mut copy = original.as_ref().map(resend).expect("kept for the fallbacks");
                        if copy.model != backup.model {
                            copy.model.clone_from(&backup.model);
                            copy.body.forget_raw();
                        }
                        let other = hedge::Backup { index: backup.provider, target: &targets[backup.provider], delay };
                        // Boxed: two attempts inline would make every request's future (moved
                        // whole at each await layer) several times larger.
                        Box::pin(hedge::race(target, req, ticket, other, copy, deadline, served)).await
                    }
                    None => {
                        let mut upstream = Duration::ZERO;
                        let result = attempt(target, req, &mut upstream, deadline).await;
                        served.upstream += upstream;
                        if plan.latency {
                            let ok = result.as_ref().err().is_none_or(|e| !breaker::provider_fault(e));
                            guard.latency.record(upstream, ok);
                        }
                        ticket.done(result.as_ref().err());
                        result
                    }
                };
                let e = match result {
                    Ok(reply) => {
                        span.set("http.response.status_code", 200u16);
                        if matches!(reply, Reply::Stream { .. }) {
                            span.event("response_head");
                            served.stream_attempt = span;
                        } else {
                            span.set_elapsed_ms("weir.time_to_first_token_ms");
                        }
                        return Ok(reply);
                    }
                    Err(e) => e,
                };
                // The provider's own status when it answered, else none (Weir's mapping of a
                // reset or timeout is not something the upstream said).
                if let ErrorKind::Upstream { status } = e.kind {
                    span.set("http.response.status_code", status);
                }
                span.fail(e.metric_label());
                drop(span);
                let reason = match retry::classify(&e) {
                    Verdict::Final => return Err(e),
                    Verdict::ContextLength => {
                        too_long.push(model_name.to_owned());
                        last = Some(e);
                        break;
                    }
                    Verdict::Elsewhere => {
                        last = Some(e);
                        break;
                    }
                    Verdict::Retry(reason) => reason,
                };
                let wait =
                    (retry < guard.retry.max_retries).then(|| retry::wait(&guard.retry, &e, retry + 1)).flatten();
                let Some(wait) = wait else {
                    last = Some(e);
                    break;
                };
                if deadline.is_some_and(|d| Instant::now() + wait >= d) {
                    last = Some(e);
                    break 'steps;
                }
                if !guard.budget.withdraw(Instant::now()) {
                    guard.exhausted.increment(1);
                    last = Some(e);
                    break;
                }
                guard.retried(reason);
                retry += 1;
                let slept = std::time::Instant::now();
                tokio::time::sleep(wait).await;
                served.upstream += slept.elapsed();
            }
        }
        Err(last.unwrap_or_else(|| match deadline {
            Some(_) => Error::new(ErrorKind::UpstreamTimeout, "the request's total timeout passed before an attempt"),
            None => Error::new(ErrorKind::Internal, "no attempt was made"),
        }))
    }
}

/// `provider/model` with a provider of `providers`, as a step.
fn step(providers: &[String], entry: &str) -> Option<Step> {
    let (p, m) = entry.split_once('/')?;
    let provider = providers.iter().position(|n| n == p)?;
    (!m.is_empty()).then(|| Step { provider, model: m.to_owned() })
}

fn original_model(req: &Option<ProviderRequest>) -> String {
    req.as_ref().map(|r| r.model.clone()).unwrap_or_default()
}

/// A copy of `req` to send again: the body's bytes are shared, not copied (a tree a plugin
/// edited is copied).
fn resend(req: &ProviderRequest) -> ProviderRequest {
    req.clone()
}

fn circuit_open(provider: &str, left: Duration) -> Error {
    Error::new(
        ErrorKind::CircuitOpen,
        format!("provider {provider} is failing and its circuit breaker is open; no fallback could serve"),
    )
    .with_retry_after(left.as_secs_f64().ceil().max(1.0) as u64)
}

/// One attempt's pass through its provider's breaker. Dropped without a verdict (the client
/// left mid-attempt), a probe gives its place back.
pub(crate) struct Ticket<'a> {
    breaker: Option<&'a Breaker>,
    pool: &'a Pool,
    pass: Pass,
    open: bool,
}

impl<'a> Ticket<'a> {
    pub(crate) fn new(breaker: Option<&'a Breaker>, pool: &'a Pool) -> Self {
        let pass = breaker.map_or(Pass::Closed, |b| {
            let pass = b.pass(Instant::now());
            pool.health().set_breaker(b.state() as u8);
            pass
        });
        let open = breaker.is_some() && !matches!(pass, Pass::Refused(_));
        Self { breaker, pool, pass, open }
    }

    /// The attempt ended: `None` it succeeded, else its error.
    pub(crate) fn done(mut self, error: Option<&Error>) {
        let ok = match error {
            None => Some(true),
            Some(e) if breaker::reached_provider(e) => Some(!breaker::provider_fault(e)),
            Some(_) => None,
        };
        self.finish(ok);
    }

    fn finish(&mut self, ok: Option<bool>) {
        if !std::mem::take(&mut self.open) {
            return;
        }
        if let Some(b) = self.breaker {
            b.record(&self.pass, ok, Instant::now());
            self.pool.health().set_breaker(b.state() as u8);
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.finish(None);
    }
}

/// The span of attempt number `n` on `target`, a child of the request's span; `req` then
/// carries it, so its queue wait is its child and the `traceparent` sent upstream names it.
fn attempt_span(req: &mut ProviderRequest, target: &Target, n: u32) -> Span {
    let mut span = req.trace.span.child("weir.upstream_attempt", SpanKind::Client);
    if span.is_recording() {
        span.set("weir.provider", Arc::<str>::clone(target.pool.name()));
        span.set("gen_ai.system", target.provider.system_name());
        span.set("gen_ai.request.model", req.model.clone());
        span.set("weir.attempt", n);
        req.trace.span = span.cx();
        req.trace.traceparent = req.trace.span.traceparent();
    }
    span
}

/// One attempt on `target`: admission to its pool, then one provider call on the slot.
/// Dropping the future stops the attempt wherever it is: it leaves the line, or stops the
/// call, frees the slot and closes a connection left mid-exchange. `upstream` is set to the
/// time the call took (zero if it never started). Admission and the call end at `deadline`.
///
/// # Errors
/// Admission refused (429/503), or the call's error.
pub async fn attempt(
    target: &Target,
    req: ProviderRequest,
    upstream: &mut Duration,
    deadline: Option<Instant>,
) -> Result<Reply, Error> {
    let wait = req.trace.span.child("weir.queue_wait", SpanKind::Internal);
    let permit = match deadline {
        None => target.pool.admit().await?,
        Some(d) => tokio::time::timeout_at(d, target.pool.admit()).await.map_err(|_| {
            let name = target.pool.name();
            Error::new(
                ErrorKind::UpstreamTimeout,
                format!("the request's total timeout passed while it waited for a worker of provider {name}"),
            )
        })??,
    };
    drop(wait);
    target.pool.run(permit, || target.provider.call(req), upstream, deadline).await
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
