//! One loaded plugin: how to make instances (compile once, `instantiate_pre`, `init`), its
//! pool, and one guarded call per hook (check out, arm guards, call, classify, check in or
//! replace in the background).

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use wasmtime::Store;

use super::bindings::{ChunkAction, Contract, Hooks, RequestAction, ResponseAction};
use super::convert::{self, ChunkDecision, RequestDecision, ResponseDecision};
use super::engine::{self, Runtime};
use super::guard::{self, Failure};
use super::host::{Shared, StoreData, kv::KvStore, log::LogBudget, metrics::CustomMetrics};
use super::instances::{Instance, Pool};
use super::metrics::{Hook, PluginMetrics};
use super::offload;
use super::world::WorldPre;
use crate::affinity::Affinity;
use crate::config::{OnError, PluginConfig};
use crate::exchange::{GatewayRequest, GatewayResponse, JsonBody};
use crate::format::ApiFormat;

mod refill;

/// `init` may take this many times a hook's fuel and deadline (it parses config, builds
/// regexes).
const INIT_FACTOR: u32 = 10;

/// Everything needed to make a fresh instance, at load and when replacing one.
struct Factory {
    runtime: &'static Runtime,
    pre: WorldPre,
    shared: Shared,
    init_config: String,
    fuel: u64,
    timeout: Duration,
    memory_limit: usize,
    max_output: usize,
}

impl Factory {
    /// Instantiates and initialises one instance, under the same guards as hooks (scaled).
    async fn make(&self) -> Result<(Instance, Hooks), String> {
        let data = StoreData::new(&self.shared, self.memory_limit, self.max_output);
        let mut store = Store::new(&self.runtime.engine, data);
        guard::install(&mut store).map_err(|e| e.to_string())?;
        let timeout = (self.timeout * INIT_FACTOR).max(Duration::from_secs(1));
        let fuel = self.fuel.saturating_mul(u64::from(INIT_FACTOR));
        guard::arm(&mut store, fuel, timeout).map_err(|e| e.to_string())?;
        let hard = guard::hard_timeout(timeout);
        let world = match guard::run(self.pre.instantiate_async(&mut store), hard).await {
            Ok(w) => w,
            Err(e) => return Err(format!("instantiation failed: {}", explain(e, store.data()))),
        };
        guard::arm(&mut store, fuel, timeout).map_err(|e| e.to_string())?;
        let init = world.init(&mut store, &self.init_config);
        match guard::run(init, hard).await {
            Ok(Ok(hooks)) => Ok((Instance { store, world, calls: 0 }, hooks)),
            Ok(Err(msg)) => Err(format!("init refused the config: {}", super::host::log::truncate(&msg, 1024))),
            Err(e) => Err(format!("init failed: {}", explain(e, store.data()))),
        }
    }
}

fn explain(e: Option<wasmtime::Error>, data: &StoreData) -> String {
    let f = guard::classify(e, data);
    match f.detail() {
        "" => f.describe().to_owned(),
        d => format!("{}: {d}", f.describe()),
    }
}

/// What an `on-request` call changed.
#[derive(Debug, Clone, Copy)]
pub struct Edits {
    /// The model is now another one (route again).
    pub model_changed: bool,
    /// The body or the model was written to (the client's bytes no longer say the request).
    pub edited: bool,
}

/// A loaded plugin.
pub struct Plugin {
    /// Name from the config.
    pub name: Arc<str>,
    /// Hooks it implements (from `init`).
    pub hooks: Hooks,
    /// Failure policy.
    pub on_error: OnError,
    /// The contract version it was built for.
    pub contract: Contract,
    providers: Vec<String>,
    models: Vec<String>,
    fuel: u64,
    timeout: Duration,
    hard: Duration,
    max_output: usize,
    max_calls: u64,
    factory: Factory,
    pool: Pool,
    /// Configured instances: the size the refill brings the pool back to.
    target: usize,
    refill: refill::Refill,
    metrics: PluginMetrics,
    live: AtomicUsize,
    replaced: AtomicU64,
    last_fuel_used: AtomicU64,
    sha256: String,
    calls: AtomicU64,
    failures: AtomicU64,
    weak: Weak<Plugin>,
}

/// A snapshot of a plugin's pool, for tests, benchmarks and admin views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    /// Plugin name.
    pub name: String,
    /// Live instances (idle + busy).
    pub live: usize,
    /// Idle instances.
    pub idle: usize,
    /// Instances discarded and replaced so far.
    pub replaced: u64,
    /// SHA-256 of the component file (hex), as loaded.
    pub sha256: String,
    /// Hooks the plugin implements.
    pub hooks: Vec<&'static str>,
    /// Hook calls so far (including failed ones).
    pub calls: u64,
    /// Hook calls that failed (trap, fuel, deadline, memory, output cap, no free instance).
    pub failures: u64,
    /// Configured instances.
    pub configured: usize,
    /// The latest attempt to replace an instance failed (instantiation or `init`).
    pub degraded: bool,
    /// Failed replacement attempts so far.
    pub replace_failures: u64,
    /// Median and 99th percentile of hook call times since start, in microseconds.
    pub call_us: [Option<u64>; 2],
}

impl Plugin {
    /// Reads, compiles (through the cache), links and initialises `cfg.instances` instances.
    ///
    /// # Errors
    /// A message (without the plugin name; the caller adds it).
    pub async fn load(
        cfg: &PluginConfig,
        runtime: &'static Runtime,
        cache: Option<PathBuf>,
    ) -> Result<Arc<Self>, String> {
        let bytes = super::builtin::read(&cfg.path).await?;
        let sha256: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        let (component, contract) =
            tokio::task::spawn_blocking(move || engine::compile(runtime, &bytes, cache.as_deref()))
                .await
                .map_err(|e| format!("compile task failed: {e}"))??;
        let pre = runtime.linker.instantiate_pre(&component).map_err(|e| format!("cannot link: {e:#}"))?;
        let pre = WorldPre::new(contract, pre).map_err(|e| format!("not a weir:plugin world: {e:#}"))?;
        if contract == Contract::V0_1 {
            tracing::warn!(
                plugin = %cfg.name,
                "built for weir:plugin@{}: it runs on OpenAI-format requests only (skipped on others); \
                 rebuild it against weir:plugin@{} to run on every API format (`weir plugin inspect` says how)",
                Contract::V0_1.version(),
                Contract::V0_2.version()
            );
        }
        let name: Arc<str> = Arc::from(cfg.name.as_str());
        let secrets = Arc::new(crate::secrets::Secrets::new(cfg.config_env.iter()));
        let factory = Factory {
            runtime,
            pre,
            shared: Shared {
                kv: KvStore::shared(&cfg.name),
                metrics: Arc::new(CustomMetrics::new(name.clone(), secrets.clone())),
                log: Arc::new(LogBudget::new(name.clone(), secrets)),
            },
            init_config: serde_json::to_string(&cfg.config).map_err(|e| format!("config is not JSON: {e}"))?,
            fuel: cfg.fuel,
            timeout: cfg.timeout,
            memory_limit: cfg.memory_limit,
            max_output: cfg.max_output_bytes,
        };
        let mut instances = Vec::with_capacity(cfg.instances);
        let mut hooks = None;
        for _ in 0..cfg.instances {
            let (instance, h) = factory.make().await?;
            if hooks.is_some_and(|first| first != h) {
                return Err("init returned different hooks on different instances".into());
            }
            hooks = Some(h);
            instances.push(instance);
        }
        let hooks = hooks.unwrap_or(Hooks::empty());
        let metrics = PluginMetrics::new(&cfg.name, |h| hooks.contains(h.flag()));
        metrics.instances.set(instances.len() as f64);
        metrics.idle.set(instances.len() as f64);
        let live = AtomicUsize::new(instances.len());
        Ok(Arc::new_cyclic(|weak| Plugin {
            name,
            hooks,
            on_error: cfg.on_error,
            contract,
            providers: cfg.providers.clone(),
            models: cfg.models.clone(),
            fuel: cfg.fuel,
            timeout: cfg.timeout,
            hard: guard::hard_timeout(cfg.timeout),
            max_output: cfg.max_output_bytes,
            max_calls: cfg.max_calls,
            factory,
            pool: Pool::new(instances),
            target: cfg.instances,
            refill: refill::Refill::new(&cfg.name),
            metrics,
            live,
            replaced: AtomicU64::new(0),
            last_fuel_used: AtomicU64::new(0),
            sha256,
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            weak: weak.clone(),
        }))
    }

    /// Whether the plugin runs for a request in this API format, to this provider and model.
    /// A 0.1 plugin knows only OpenAI's JSON, so it is out of scope for any other format.
    pub fn in_scope(&self, format: ApiFormat, provider: Option<&str>, model: &str) -> bool {
        let format_ok = match self.contract {
            Contract::V0_1 => format == ApiFormat::OpenAi,
            Contract::V0_2 => true,
        };
        let provider_ok = self.providers.is_empty() || provider.is_some_and(|p| self.providers.iter().any(|x| x == p));
        format_ok && provider_ok && (self.models.is_empty() || self.models.iter().any(|m| m == model))
    }

    /// Pool counters.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            name: self.name.to_string(),
            live: self.live.load(Ordering::Relaxed),
            idle: self.pool.idle(),
            replaced: self.replaced.load(Ordering::Relaxed),
            sha256: self.sha256.clone(),
            hooks: [
                (Hooks::ON_REQUEST, "on-request"),
                (Hooks::ON_RESPONSE, "on-response"),
                (Hooks::ON_STREAM_CHUNK, "on-stream-chunk"),
            ]
            .into_iter()
            .filter(|(h, _)| self.hooks.contains(*h))
            .map(|(_, n)| n)
            .collect(),
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            configured: self.target,
            degraded: self.refill.degraded(),
            replace_failures: self.refill.failures(),
            call_us: self.metrics.time_quantiles([0.5, 0.99]),
        }
    }

    /// A fail-open plugin was skipped after `failure`.
    pub fn note_skipped(&self, hook: Hook) {
        self.metrics.skipped(hook);
    }

    async fn checkout(&self, hook: Hook, here: Affinity) -> Result<Lease<'_>, Failure> {
        let started = Instant::now();
        // With no instance left and replacements failing, none will come back within the
        // deadline: fail at once rather than make every request wait it out.
        let wait = if self.refill.degraded() && self.live.load(Ordering::Relaxed) == 0 {
            Duration::ZERO
        } else {
            self.timeout
        };
        match self.pool.take(wait).await {
            Some(i) => {
                self.metrics.idle.decrement(1.0);
                Ok(Lease { plugin: self, inst: Some(i), lent: false, here })
            }
            None => {
                self.metrics.call(hook, Failure::Busy.label(), started.elapsed(), 0);
                self.calls.fetch_add(1, Ordering::Relaxed);
                self.failures.fetch_add(1, Ordering::Relaxed);
                Err(Failure::Busy)
            }
        }
    }

    /// Records the call, then returns the instance to the pool or replaces it.
    fn checkin(
        &self,
        mut lease: Lease<'_>,
        hook: Hook,
        started: Instant,
        outcome: &'static str,
        failure: Option<&Failure>,
    ) {
        let mut inst = lease.inst.take().expect("checked in once");
        let fuel_used = self.fuel.saturating_sub(inst.store.get_fuel().unwrap_or(0));
        self.last_fuel_used.store(fuel_used, Ordering::Relaxed);
        self.metrics.call(hook, outcome, started.elapsed(), fuel_used);
        self.calls.fetch_add(1, Ordering::Relaxed);
        if failure.is_some() {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        inst.store.data_mut().exchange.clear();
        inst.calls += 1;
        let reason = match failure {
            Some(f) if f.discards_instance() => Some(f.label()),
            _ if self.max_calls > 0 && inst.calls >= self.max_calls => Some("recycled"),
            _ => None,
        };
        match reason {
            None => {
                self.pool.put(inst);
                self.metrics.idle.increment(1.0);
            }
            Some(reason) => {
                drop(inst);
                self.replace(reason, lease.here);
            }
        }
    }

    /// Runs one hook call on the leased instance under its guards (fresh fuel, deadline, hard
    /// timeout): inline, or on the plugin runtime from its first yield on ([`offload`]). The
    /// instance goes with the call and comes back to the lease.
    async fn guarded<C: HookCall>(&self, lease: &mut Lease<'_>, call: C) -> Result<C::Out, Option<wasmtime::Error>> {
        let mut inst = lease.lend();
        let (fuel, timeout, hard) = (self.fuel, self.timeout, self.hard);
        let here = lease.here;
        let (back, result) = offload::run(
            async move {
                let result = match guard::arm(&mut inst.store, fuel, timeout) {
                    Ok(()) => guard::run(call.call(&mut inst), hard).await,
                    Err(e) => Err(Some(e)),
                };
                (inst, result)
            },
            here,
            &self.metrics.moved,
        )
        .await;
        lease.give_back(back);
        result
    }

    /// Calls `on-request`. The request moves into the instance for the call and comes back
    /// with the plugin's edits; an edited body is re-validated. Returns the decision and what
    /// the plugin edited.
    ///
    /// # Errors
    /// The [`Failure`], after the instance was checked in or discarded.
    pub async fn on_request(
        &self,
        req: &mut GatewayRequest,
        provider: Option<&Arc<str>>,
    ) -> Result<(RequestDecision, Edits), Failure> {
        let mut lease = self.checkout(Hook::Request, req.affinity).await?;
        let started = Instant::now();
        let placeholder = GatewayRequest {
            id: req.id.clone(),
            endpoint: req.endpoint,
            model: String::new(),
            stream: req.stream,
            body: JsonBody::default(),
            headers: HeaderMap::new(),
            affinity: req.affinity,
        };
        let ex = &mut lease.instance().store.data_mut().exchange;
        ex.put_request(std::mem::replace(req, placeholder), provider.cloned());
        let result = self.guarded(&mut lease, OnRequest).await;
        let inst = lease.instance();
        let ex = &mut inst.store.data_mut().exchange;
        if let Some(back) = ex.take_request() {
            *req = back;
        }
        let (body_edited, mut model_changed) = (ex.body_edited, ex.model_edited);
        let edited = body_edited || model_changed;
        let result = result
            .map_err(|e| guard::classify(e, inst.store.data()))
            .and_then(|action| convert::request_action(action, self.max_output))
            .and_then(|decision| {
                if body_edited {
                    let (model, stream) = crate::api::validate(req.endpoint, req.body.map())
                        .map_err(|e| Failure::Invalid(format!("edited request is invalid: {}", e.message)))?;
                    model_changed |= model != req.model;
                    req.model = model;
                    req.stream = stream;
                }
                Ok(decision)
            });
        let outcome = match &result {
            Ok(RequestDecision::Continue) => "ok",
            Ok(RequestDecision::Respond(_)) => "short_circuit",
            Ok(RequestDecision::Reject(_)) => "rejected",
            Err(f) => f.label(),
        };
        self.checkin(lease, Hook::Request, started, outcome, result.as_ref().err());
        result.map(|d| (d, Edits { model_changed, edited }))
    }

    /// Calls `on-response`; setter edits are applied to `resp` in place.
    ///
    /// # Errors
    /// The [`Failure`], after the instance was checked in or discarded.
    pub async fn on_response(
        &self,
        request: &Arc<GatewayRequest>,
        provider: Option<&Arc<str>>,
        resp: &mut GatewayResponse,
    ) -> Result<ResponseDecision, Failure> {
        let mut lease = self.checkout(Hook::Response, request.affinity).await?;
        let started = Instant::now();
        let ex = &mut lease.instance().store.data_mut().exchange;
        ex.put_shared(request.clone(), provider.cloned());
        ex.put_response(std::mem::replace(resp, GatewayResponse::ok(Bytes::new())));
        let result = self.guarded(&mut lease, OnResponse).await;
        let inst = lease.instance();
        if let Some(back) = inst.store.data_mut().exchange.take_response() {
            *resp = back;
        }
        let result = result
            .map_err(|e| guard::classify(e, inst.store.data()))
            .and_then(|action| convert::response_action(action, self.max_output));
        let outcome = result.as_ref().map_or_else(Failure::label, |_| "ok");
        self.checkin(lease, Hook::Response, started, outcome, result.as_ref().err());
        result
    }

    /// Calls `on-stream-chunk` on one chunk payload.
    ///
    /// # Errors
    /// The [`Failure`], after the instance was checked in or discarded.
    pub async fn on_stream_chunk(
        &self,
        request: &Arc<GatewayRequest>,
        provider: Option<&Arc<str>>,
        chunk: Bytes,
    ) -> Result<ChunkDecision, Failure> {
        let mut lease = self.checkout(Hook::StreamChunk, request.affinity).await?;
        let started = Instant::now();
        lease.instance().store.data_mut().exchange.put_shared(request.clone(), provider.cloned());
        let result = self.guarded(&mut lease, OnStreamChunk(chunk)).await;
        let inst = lease.instance();
        let result = result
            .map_err(|e| guard::classify(e, inst.store.data()))
            .and_then(|action| convert::chunk_action(action, self.max_output));
        let outcome = match &result {
            Ok(ChunkDecision::Abort(_)) => "rejected",
            Ok(_) => "ok",
            Err(f) => f.label(),
        };
        self.checkin(lease, Hook::StreamChunk, started, outcome, result.as_ref().err());
        result
    }

    /// Fuel the most recent call used (for `weir plugin test`).
    pub(super) fn last_fuel_used(&self) -> u64 {
        self.last_fuel_used.load(Ordering::Relaxed)
    }

    /// Makes one fresh instance (instantiate + `init`) outside the pool and drops it: what
    /// replacing a discarded instance costs (`weir plugin inspect` and the benches time it).
    ///
    /// # Errors
    /// Why the instance could not be made (instantiation or `init` failed).
    pub(super) async fn make_instance(&self) -> Result<(), String> {
        self.factory.make().await.map(drop)
    }
}

/// What `bench.rs` reaches into; compiled only with the `bench` feature so release builds
/// carry no bench hooks.
#[cfg(feature = "bench")]
impl Plugin {
    /// The plugin's instance pool.
    pub(super) fn instances(&self) -> &Pool {
        &self.pool
    }

    /// A fresh store for this plugin, with the limits its pooled instances get.
    pub(super) fn new_store(&self) -> Store<StoreData> {
        let f = &self.factory;
        Store::new(&f.runtime.engine, StoreData::new(&f.shared, f.memory_limit, f.max_output))
    }

    /// The pre-instantiated component.
    pub(super) fn pre(&self) -> &WorldPre {
        &self.factory.pre
    }
}

/// One hook's call into an instance, for [`Plugin::guarded`]: what differs between the
/// hooks is only which export is called and with what.
trait HookCall: Send + 'static {
    /// What the export returns.
    type Out: Send + 'static;
    /// Starts the call (the request and response are already in the instance's exchange).
    fn call(self, inst: &mut Instance) -> impl Future<Output = wasmtime::Result<Self::Out>> + Send;
}

struct OnRequest;
struct OnResponse;
struct OnStreamChunk(Bytes);

impl HookCall for OnRequest {
    type Out = RequestAction;
    fn call(self, inst: &mut Instance) -> impl Future<Output = wasmtime::Result<RequestAction>> + Send {
        inst.world.on_request(&mut inst.store)
    }
}

impl HookCall for OnResponse {
    type Out = ResponseAction;
    fn call(self, inst: &mut Instance) -> impl Future<Output = wasmtime::Result<ResponseAction>> + Send {
        inst.world.on_response(&mut inst.store)
    }
}

impl HookCall for OnStreamChunk {
    type Out = ChunkAction;
    async fn call(self, inst: &mut Instance) -> wasmtime::Result<ChunkAction> {
        let chunk = self.0;
        inst.world.on_stream_chunk(&mut inst.store, &chunk).await
    }
}

/// An instance checked out for one hook call. Dropped without [`Plugin::checkin`] (the request
/// was cancelled during the call, e.g. its client left), the instance may be stopped inside
/// a guest call, so it is discarded and replaced; without this the pool lost one instance for
/// good each time, until every call waited out its timeout for an instance.
struct Lease<'a> {
    plugin: &'a Plugin,
    inst: Option<Instance>,
    /// The instance is out with a call (which may be running on the plugin runtime).
    lent: bool,
    /// The serving thread of the request the call is for.
    here: Affinity,
}

impl Lease<'_> {
    /// Hands the instance to a call; [`Lease::give_back`] returns it.
    fn lend(&mut self) -> Instance {
        self.lent = true;
        self.inst.take().expect("held until checked in")
    }

    fn give_back(&mut self, inst: Instance) {
        self.lent = false;
        self.inst = Some(inst);
    }

    fn instance(&mut self) -> &mut Instance {
        self.inst.as_mut().expect("held until checked in")
    }
}

/// A lease dropped before check-in (the request was cancelled mid-call, e.g. its client left):
/// the instance may be stopped inside a guest call, or went with an aborted call, so a fresh
/// one replaces it.
impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.inst.take().is_some() || self.lent {
            self.plugin.replace("cancelled", self.here);
        }
    }
}
