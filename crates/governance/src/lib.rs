//! Virtual keys (`[[keys]]` and the admin API): `authenticate` finds a request's key before
//! its body is read, the `admit` phase checks its model and every limit (rpm, tpm, budget,
//! in-flight) before the plugins run, and `finish` settles it with the usage the provider
//! reported. With `[state] redis_url` the keys and
//! counters live in Redis, so limits hold across instances: an admission that this instance's
//! grant for the key covers (`lease.rs`) touches no Redis; otherwise one script checks every
//! limit, counts the request and grants a share for the next ones, at most an eighth of what
//! remains, so near a limit admission is one script per request and exact. Without Redis, or
//! while it is away under fail-open, limits are counted in this process.
//!
//! Tokens are admitted on an estimate (the body's bytes / 4, output unknown until the
//! answer) and corrected by the reported usage; cost likewise, from the price table.

mod admin;
mod keys;
mod lease;
mod local;
mod prices;
mod redis;
mod settle;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use weir_config::{Config, OnUnavailable};
use weir_state::Redis;
use weir_types::error::{Error, ErrorKind};

pub use admin::{AdminError, Created, KeyView, NewKey};
pub use keys::{KeyHash, KeySpec, Source, presented};
pub use prices::{Price, PriceTable, Tokens, usd};

use keys::{KeyEntry, Store};
use redis::Admitted;

/// Most times an admission waits for another's grant call before making its own (each wait
/// is at most one round trip).
const MAX_WAITS: u32 = 4;

/// How often an instance asks Redis whether any key exists (keys made on another instance
/// turn admission on here within this).
const POLL: Duration = Duration::from_secs(1);

/// The limit a refusal names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Requests per minute.
    Rpm,
    /// Tokens per minute.
    Tpm,
    /// Requests in flight.
    Concurrency,
    /// Spend per period.
    Budget,
}

/// A limit said no; retry after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// Which.
    pub limit: Limit,
    /// When a retry may pass.
    pub retry_after: u64,
}

/// The windows a request was counted in (its settlement corrects these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Windows {
    /// `now / 60 s`.
    pub minute: u64,
    /// `now / budget period`.
    pub period: u64,
}

/// One admission's question: the key's limits and what the request is estimated to use.
#[derive(Debug, Clone)]
pub(crate) struct Ask {
    pub now_ms: u64,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub tokens: u64,
    pub budget_nano: Option<u64>,
    pub cost_nano: u64,
    pub period_s: u64,
    pub max_concurrent: Option<u64>,
}

impl Ask {
    fn windows(&self) -> Windows {
        Windows { minute: self.now_ms / local::MINUTE_MS, period: self.now_ms / (self.period_s.max(1) * 1000) }
    }
}

/// A key's current windows and totals (admin API).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Usage {
    /// Requests admitted in the last 60 s.
    pub requests_last_minute: u64,
    /// Tokens counted in the current minute window.
    pub tokens_this_minute: u64,
    /// Spend counted in the current budget period, nano-dollars.
    pub spend_this_period_nano: u64,
    /// Requests in flight.
    pub in_flight: u64,
    /// Requests settled, all time.
    pub requests: u64,
    /// Prompt tokens, all time.
    pub prompt_tokens: u64,
    /// Completion tokens, all time.
    pub completion_tokens: u64,
    /// Cost, all time, nano-dollars.
    pub cost_nano: u64,
}

/// What outlives a reload: the keys (with their counters) and what is known about Redis.
#[derive(Debug, Default)]
struct Shared {
    store: Store,
    /// Keys exist somewhere (here or, through Redis, on another instance).
    active: AtomicBool,
    /// A key was made through the admin API: admission stays on even once every key is
    /// revoked (revoking the last key must not open the gateway).
    made: AtomicBool,
    /// Config keys revoked through the admin API without Redis (kept out at reloads).
    revoked: Mutex<HashSet<KeyHash>>,
    /// Grant calls that failed (Redis away): grants taken before the last one are not drawn on.
    failed_grants: AtomicU64,
    /// Random per process: this instance's field in a key's concurrency hash in Redis.
    instance: Arc<str>,
    /// Sends settlements to Redis in batches (started with the first governance).
    settler: std::sync::OnceLock<settle::Settler>,
}

/// Virtual keys, limits, budgets and prices of one gateway snapshot.
#[derive(Debug)]
pub struct Governance {
    shared: Arc<Shared>,
    prices: PriceTable,
    redis: Option<Arc<Redis>>,
}

impl Governance {
    /// The governance of `config`. `previous` (a reload) hands over the keys made through the
    /// admin API and every counter. Must run inside a tokio runtime: with Redis, the config's
    /// keys are written there and a task watches for keys made elsewhere.
    pub fn new(config: &Config, redis: Option<Arc<Redis>>, previous: Option<&Governance>) -> Arc<Self> {
        let shared = previous.map_or_else(
            || Arc::new(Shared { instance: Arc::from(format!("{:016x}", fastrand::u64(..))), ..Shared::default() }),
            |p| p.shared.clone(),
        );
        if redis.is_some() {
            // On the runtime building the gateway (the control runtime), which lives as long
            // as the process.
            shared.settler.get_or_init(settle::Settler::start);
        }
        let revoked = shared.revoked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let mut kept = Vec::new();
        let mut seeds = Vec::new();
        for k in &config.keys {
            let hash = KeyHash::of(&k.value);
            if revoked.contains(&hash) {
                continue;
            }
            kept.push(hash);
            seeds.push(shared.store.put(hash, KeySpec::from_config(k)));
        }
        shared.store.retain_config(&kept);
        let on = !shared.store.is_empty() || shared.made.load(Ordering::Relaxed);
        shared.active.store(on, Ordering::Relaxed);
        let gov = Arc::new(Self { shared, prices: PriceTable::new(&config.prices), redis });
        if let Some(redis) = gov.redis.clone() {
            let weak = Arc::downgrade(&gov);
            tokio::spawn(watch(weak, redis, seeds));
        }
        gov
    }

    /// Whether requests need a key: one atomic load, the whole cost when there are none.
    pub fn enabled(&self) -> bool {
        self.shared.active.load(Ordering::Relaxed)
    }

    /// The price of `model` (the provider's name, else the client's, else its part after `/`).
    pub fn price(&self, model: &str) -> Option<Price> {
        self.prices.get(model).or_else(|| model.split_once('/').and_then(|(_, m)| self.prices.get(m)))
    }

    /// The key a request presents (`headers`), checked before its body is read: `None` when
    /// no key exists (no key needed).
    ///
    /// # Errors
    /// 401 (no key, unknown or revoked), or 503 when this instance never saw the key and
    /// Redis cannot answer.
    pub async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Option<Caller>, Error> {
        if !self.enabled() {
            return Ok(None);
        }
        let Some(secret) = presented(headers) else {
            return Err(unauthorized(
                "a virtual key is required: send it as `Authorization: Bearer <key>` or `x-api-key: <key>`",
            ));
        };
        Ok(Some(Caller(self.find(&KeyHash::of(secret)).await?)))
    }

    /// The `admit` phase: whether `caller` may call `model`, and every limit, counted on an
    /// estimate from the body's size. `lane` is the request's serving thread (its own Redis
    /// connection).
    ///
    /// # Errors
    /// 403 (model not allowed), 401 (revoked since), 429 naming the limit with `Retry-After`,
    /// or 503 when Redis cannot answer and the mode is fail-closed.
    pub async fn admit(
        &self,
        caller: Caller,
        model: &str,
        body_len: usize,
        lane: Option<usize>,
    ) -> Result<Admission, Error> {
        let entry = caller.0;
        let hash = entry.hash;
        if !entry.spec.allows(model) {
            return Err(Error::new(
                ErrorKind::ModelNotAllowed,
                format!("virtual key {:?} may not use model {model:?}", entry.spec.name),
            ));
        }
        let tokens = (body_len as u64).div_ceil(4);
        let cost = self.price(model).map_or(0, |p| p.cost(Tokens { prompt: tokens, completion: 0, cached: 0 }));
        let s = &entry.spec;
        let ask = Ask {
            now_ms: now_ms(),
            rpm: s.rpm,
            tpm: s.tpm,
            tokens,
            budget_nano: s.budget_usd.map(prices::nano),
            cost_nano: cost,
            period_s: s.budget_period_s.unwrap_or(1).max(1),
            max_concurrent: s.max_concurrent,
        };
        let mut shared_state = false;
        let verdict = match &self.redis {
            Some(redis) => match self.through_redis(redis, lane, &entry, &ask).await {
                Ok(Admitted::Yes(g)) => {
                    shared_state = true;
                    Ok(g.windows)
                }
                Ok(Admitted::Refused(r)) => Err(r),
                Ok(Admitted::Gone) => {
                    self.shared.store.remove(&hash);
                    return Err(unauthorized("the virtual key is not valid (unknown or revoked)"));
                }
                Err(_) if redis.mode() == OnUnavailable::FailClosed => {
                    metrics::counter!("weir_keys_state_unavailable_total", "mode" => "fail-closed").increment(1);
                    return Err(state_unavailable());
                }
                Err(_) => {
                    metrics::counter!("weir_keys_state_unavailable_total", "mode" => "fail-open").increment(1);
                    entry.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner).admit(&ask)
                }
            },
            None => entry.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner).admit(&ask),
        };
        match verdict {
            Ok(windows) => {
                entry.totals.requests.fetch_add(1, Ordering::Relaxed);
                Ok(Admission {
                    redis: self.redis.clone().filter(|_| shared_state),
                    shared: self.shared.clone(),
                    entry,
                    windows,
                    tokens,
                    cost,
                    period_s: ask.period_s,
                    settled: false,
                })
            }
            Err(r) => {
                metrics::counter!("weir_keys_refused_total", "limit" => limit_label(r.limit)).increment(1);
                Err(refusal(&entry.spec, r))
            }
        }
    }

    /// Admits `ask` from this instance's grant for the key, else through one script call
    /// that also takes a new grant (handing back what is left of the last one). While a call
    /// for the key is on its way, a miss waits for it (its grant asks for the waiting too)
    /// instead of making its own: one call per key at a time under a burst.
    async fn through_redis(
        &self,
        redis: &Arc<Redis>,
        lane: Option<usize>,
        entry: &Arc<KeyEntry>,
        ask: &Ask,
    ) -> Result<Admitted, weir_state::Unavailable> {
        let lease = || entry.lease.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let failures = || self.shared.failed_grants.load(Ordering::Relaxed);
        let mut waits = 0;
        let (back, want) = loop {
            let notified = {
                let mut l = lease();
                if let Some(windows) = l.take(ask, failures()) {
                    entry.metrics.from_lease.increment(1);
                    return Ok(Admitted::Yes(lease::Granted { windows, ..Default::default() }));
                }
                if !l.pending || waits == MAX_WAITS {
                    break l.prepare(ask.now_ms);
                }
                // Registered before the lock is let go: the call's end cannot be missed.
                let mut notified = Box::pin(entry.granted.notified());
                notified.as_mut().enable();
                l.waiting += 1;
                notified
            };
            let before = failures();
            let waiting = OnDrop(|| lease().waiting -= 1);
            notified.await;
            drop(waiting);
            waits += 1;
            if failures() != before {
                // The call waited for found Redis away: so does this admission.
                return Err(weir_state::Unavailable);
            }
        };
        // A request dropped mid-call (its client left) must not leave the key's call pending.
        let cancelled = OnDrop(|| {
            lease().failed(back);
            entry.granted.notify_waiters();
        });
        let got = redis::admit(redis, lane, entry, ask, &self.shared.instance, want, &back).await;
        std::mem::forget(cancelled);
        let mut l = lease();
        match &got {
            Ok(Admitted::Yes(g)) => {
                entry.metrics.grants.increment(1);
                entry.metrics.from_redis.increment(1);
                if let Some(stale) = l.apply(*g, ask.now_ms, failures()) {
                    drop(l);
                    hand_back(&self.shared, redis, entry, stale);
                }
            }
            Ok(_) => l.reset(),
            Err(_) => {
                self.shared.failed_grants.fetch_add(1, Ordering::Relaxed);
                l.failed(back);
            }
        }
        entry.granted.notify_waiters();
        got
    }

    /// The key with `hash`: known here, else (with Redis) looked up there and remembered.
    async fn find(&self, hash: &KeyHash) -> Result<Arc<KeyEntry>, Error> {
        if let Some(e) = self.shared.store.get(hash) {
            return Ok(e);
        }
        let Some(redis) = &self.redis else {
            return Err(unauthorized("the virtual key is not valid (unknown or revoked)"));
        };
        match redis::lookup(redis, hash).await {
            Ok(Some(spec)) => Ok(self.shared.store.put(*hash, spec)),
            Ok(None) => Err(unauthorized("the virtual key is not valid (unknown or revoked)")),
            // A key never seen here cannot be checked: not even fail-open serves it.
            Err(_) => Err(state_unavailable()),
        }
    }
}

/// Runs a closure when dropped (an await cancelled midway).
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// Keeps the config's keys written in Redis and notes whether keys exist on any instance,
/// until the snapshot is dropped.
async fn watch(gov: Weak<Governance>, redis: Arc<Redis>, seeds: Vec<Arc<KeyEntry>>) {
    let mut seeded = false;
    loop {
        {
            let Some(gov) = gov.upgrade() else { return };
            if !seeded {
                seeded = redis::seed(&redis, &seeds).await.is_ok();
            }
            if let Ok(true) = redis::any(&redis).await {
                gov.shared.made.store(true, Ordering::Relaxed);
                gov.shared.active.store(true, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The key a request presented, found (what `admit` checks the request against).
#[derive(Debug)]
pub struct Caller(Arc<KeyEntry>);

/// A request counted against its key; settle it once it is done (dropping it unsettled frees
/// its slot and leaves the estimate counted).
#[derive(Debug)]
pub struct Admission {
    redis: Option<Arc<Redis>>,
    shared: Arc<Shared>,
    entry: Arc<KeyEntry>,
    windows: Windows,
    tokens: u64,
    cost: u64,
    period_s: u64,
    settled: bool,
}

impl Admission {
    /// The key's name (logs).
    pub fn key_name(&self) -> &str {
        &self.entry.spec.name
    }

    /// Corrects the estimate by what the request used (`None`: no usage was reported, the
    /// estimate stands) and frees its concurrency slot; with Redis, in a task the response
    /// does not wait for.
    pub fn settle(mut self, used: Option<Tokens>, cost: Option<u64>) {
        self.settled = true;
        self.apply(used, cost);
    }

    fn apply(&self, used: Option<Tokens>, cost: Option<u64>) {
        let t = used.unwrap_or(Tokens { prompt: self.tokens, completion: 0, cached: 0 });
        let cost = cost.unwrap_or(self.cost);
        let token_delta = if used.is_some() { t.total() as i64 - self.tokens as i64 } else { 0 };
        let cost_delta = cost as i64 - self.cost as i64;
        self.entry.totals.add(t.prompt, t.completion, cost);
        let m = &self.entry.metrics;
        m.requests.increment(1);
        m.prompt.increment(t.prompt);
        m.completion.increment(t.completion);
        m.cost.increment(cost);
        let spec = &self.entry.spec;
        let slot = spec.max_concurrent.is_some();
        match &self.redis {
            Some(redis) => {
                let idle = self.entry.lease.lock().unwrap_or_else(std::sync::PoisonError::into_inner).release(slot);
                let s = settle::Settlement {
                    names: redis::names(redis, &self.entry),
                    inst: self.shared.instance.clone(),
                    period_s: self.period_s,
                    request: Some(settle::Settled {
                        minute: self.windows.minute,
                        period: self.windows.period,
                        token_delta: if spec.tpm.is_some() { token_delta } else { 0 },
                        cost_delta: if spec.budget_usd.is_some() { cost_delta } else { 0 },
                        prompt: t.prompt,
                        completion: t.completion,
                        cost,
                    }),
                    back: lease::Leftover::default(),
                    idle: idle.map(|generation| (self.entry.clone(), generation)),
                };
                if let Some(settler) = self.shared.settler.get() {
                    settler.send(redis.clone(), s);
                }
            }
            None => self.entry.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner).settle(
                self.windows,
                token_delta,
                cost_delta,
                slot,
            ),
        }
    }
}

/// Queues a grant's unused parts for Redis.
fn hand_back(shared: &Shared, redis: &Arc<Redis>, entry: &KeyEntry, back: lease::Leftover) {
    if let Some(settler) = shared.settler.get() {
        let names = redis::names(redis, entry);
        let period_s = entry.spec.budget_period_s.unwrap_or(1).max(1);
        settler.send(
            redis.clone(),
            settle::Settlement { names, inst: shared.instance.clone(), period_s, request: None, back, idle: None },
        );
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if !self.settled {
            self.apply(None, None);
        }
    }
}

fn limit_label(l: Limit) -> &'static str {
    match l {
        Limit::Rpm => "rpm",
        Limit::Tpm => "tpm",
        Limit::Concurrency => "max_concurrent",
        Limit::Budget => "budget",
    }
}

fn unauthorized(message: &'static str) -> Error {
    Error::new(ErrorKind::Unauthorized, message).with_code("invalid_api_key")
}

fn state_unavailable() -> Error {
    Error::new(
        ErrorKind::StateUnavailable,
        "the shared state store (Redis) did not answer in time; virtual key limits cannot be checked",
    )
    .with_retry_after(1)
}

/// The 429 for `r`, naming the key's limit.
fn refusal(spec: &KeySpec, r: Refusal) -> Error {
    let name = &spec.name;
    let (kind, code, message) = match r.limit {
        Limit::Rpm => (
            ErrorKind::KeyLimit,
            "rpm_limit_exceeded",
            format!("virtual key {name:?}: rpm limit of {} requests per minute reached", spec.rpm.unwrap_or(0)),
        ),
        Limit::Tpm => (
            ErrorKind::KeyLimit,
            "tpm_limit_exceeded",
            format!("virtual key {name:?}: tpm limit of {} tokens per minute reached", spec.tpm.unwrap_or(0)),
        ),
        Limit::Concurrency => (
            ErrorKind::KeyLimit,
            "concurrency_limit_exceeded",
            format!(
                "virtual key {name:?}: max_concurrent limit of {} requests in flight reached",
                spec.max_concurrent.unwrap_or(0)
            ),
        ),
        Limit::Budget => (
            ErrorKind::BudgetExceeded,
            "budget_exceeded",
            format!(
                "virtual key {name:?}: budget of ${} per {}s is spent",
                spec.budget_usd.unwrap_or(0.0),
                spec.budget_period_s.unwrap_or(0)
            ),
        ),
    };
    Error::new(kind, format!("{message}; retry in {}s", r.retry_after)).with_code(code).with_retry_after(r.retry_after)
}

/// `# HELP` lines of the series this crate writes.
pub fn describe_metrics() {
    use metrics::describe_counter;
    describe_counter!("weir_key_requests_total", "Requests settled under a virtual key, by key name");
    describe_counter!(
        "weir_key_tokens_total",
        "Tokens used under a virtual key (reported, else estimated), by key name and kind"
    );
    describe_counter!("weir_key_cost_nano_usd_total", "Cost under a virtual key in nano-dollars, by key name");
    describe_counter!("weir_keys_refused_total", "Requests a virtual key's limit refused, by limit");
    describe_counter!(
        "weir_keys_state_unavailable_total",
        "Admissions that found Redis unavailable, by mode (fail-open: counted in process; fail-closed: 503)"
    );
    describe_counter!(
        "weir_keys_admissions_total",
        "Admissions under a virtual key counted in Redis, by key name and path (lease: from this \
         instance's grant, no round trip; redis: one script call, which also took a new grant)"
    );
    describe_counter!(
        "weir_keys_grants_total",
        "Grants this instance took from Redis (each one script call admitting a request and \
         reserving a share of every limit for the next ones), by key name"
    );
    describe_counter!(
        "weir_keys_settle_lost_total",
        "Settlements Redis did not take (slot leases and window expiry cover them)"
    );
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
