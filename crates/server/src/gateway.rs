//! One immutable snapshot of the running gateway: config, provider pools, routing table and
//! plugin chain. Requests load the current snapshot once and use it start to finish; a reload
//! builds a new snapshot off to the side and swaps it in (`arc-swap`).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::cache::ResponseCache;
use crate::config::Config;
use crate::events::Bus;
use crate::exchange::HeaderRule;
use crate::governance::Governance;
use crate::plugins::Chain;
use crate::policy::{Policy, Target};
use crate::pool::Pool;
use crate::providers::Provider;
use crate::routing::Router;
use crate::secrets::Secrets;
use crate::state::Redis;
use weir_otel::Tracer;

/// Longest one background model-discovery call may take.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A consistent set of everything a request needs.
pub struct Gateway {
    /// The config this snapshot was built from.
    pub config: Arc<Config>,
    /// Each provider and its pool, in config order (indexes match `Route::provider`).
    pub targets: Vec<Target>,
    /// Decides each request's attempts (the `upstream_request` phase).
    pub policy: Policy,
    /// Model routing.
    pub router: Router,
    /// Plugin chain.
    pub plugins: Arc<Chain>,
    /// Every secret value of `config`, scrubbed from all Weir sends or logs.
    pub secrets: Arc<Secrets>,
    /// Which client headers plugins see.
    pub plugin_headers: HeaderRule,
    /// The shared state store (`[state] redis_url`), `None` for per-instance state.
    pub redis: Option<Arc<Redis>>,
    /// The event bus, when anything takes its events (a sink, or the admin API's live view).
    pub events: Option<Arc<Bus>>,
    /// Virtual keys, their limits and budgets, and the price table (the `admit` phase).
    pub governance: Arc<Governance>,
    /// `[tracing]`: makes each request's root span; `None` when off (no span at all).
    pub tracer: Option<Arc<Tracer>>,
    /// The response cache (`[cache] enabled`).
    pub cache: Option<Arc<ResponseCache>>,
}

impl Gateway {
    /// Builds providers, pools and the plugin chain. Must run inside a tokio runtime.
    ///
    /// With `previous` (a reload), a provider whose config did not change keeps its pool, so
    /// its queue and in-flight work carry over untouched; a changed or new provider gets a new
    /// pool, and the old one drains once the last request on the old snapshot is done.
    ///
    /// # Errors
    /// A message naming the provider or plugin that could not be built, scrubbed of the
    /// config's secrets (a plugin's `init` error may quote its config). Nothing that was
    /// running is touched in that case.
    pub async fn build(config: Config, previous: Option<&Gateway>) -> Result<Arc<Self>, String> {
        let secrets = Arc::new(Secrets::from_config(&config));
        let scrubbed = |e: String| secrets.scrub(&e).into_owned();
        let plugins = Chain::load(&config.plugins, &config.plugin_runtime).await.map_err(scrubbed)?;
        // The connection carries over a reload that keeps `[state]`.
        let redis = match previous.filter(|prev| prev.config.state == config.state) {
            Some(prev) => prev.redis.clone(),
            None => Redis::connect(&config.state)?,
        };
        let governance = Governance::new(&config, redis.clone(), previous.map(|p| &*p.governance));
        // Cached answers carry over a reload that keeps `[cache]` and the Redis connection.
        let cache = match previous.and_then(|prev| prev.cache.as_ref()) {
            Some(c) if c.same(&config.cache, redis.as_ref()) => Some(c.clone()),
            _ => ResponseCache::new(&config.cache, redis.clone()),
        };
        let mut targets = Vec::with_capacity(config.providers.len());
        let threads = crate::shards::count(config.server.threads);
        for p in &config.providers {
            let reused = previous.and_then(|prev| {
                let i = prev.config.providers.iter().position(|old| old == p)?;
                Some(prev.targets[i].clone())
            });
            let target = match reused {
                Some(reused) => reused,
                None => {
                    let provider =
                        Provider::from_config(p, threads).map_err(|e| scrubbed(format!("provider {}: {e}", p.name)))?;
                    let models: Vec<&str> = p.models.iter().chain(p.aliases.keys()).map(String::as_str).collect();
                    Target::new(Pool::start(&p.name, &models, p.pool.clone()), Arc::new(provider), p)
                }
            };
            targets.push(target);
        }
        let events = events_bus(&config, previous).map_err(scrubbed)?;
        // A reload with the same `[tracing]` keeps the tracer and its export thread.
        let tracer = match &config.tracing {
            None => None,
            Some(t) => match previous.and_then(|p| p.tracer.as_ref()).filter(|old| old.config() == t) {
                Some(old) => Some(old.clone()),
                None => Some(Tracer::start(t).map_err(scrubbed)?),
            },
        };
        let gw = Arc::new(Self {
            tracer,
            events,
            router: Router::new(&config.providers).with_routes(&config.routes),
            policy: Policy::new(&config),
            secrets,
            plugin_headers: HeaderRule::new(&config.plugin_runtime),
            config: Arc::new(config),
            targets,
            plugins: Arc::new(plugins),
            redis,
            governance,
            cache,
        });
        // Plugins' kv lives where this snapshot's shared state does.
        crate::plugins::share_kv_through(gw.redis.clone());
        gw.start_discovery();
        crate::probes::start(&gw);
        Ok(gw)
    }

    /// Refreshes each provider's model list in the background; stops when the snapshot is
    /// dropped. A failing provider is logged and keeps its last known list.
    fn start_discovery(self: &Arc<Self>) {
        for (i, p) in self.config.providers.iter().enumerate() {
            if !p.discover_models {
                continue;
            }
            let weak: Weak<Self> = Arc::downgrade(self);
            let every = p.models_refresh.max(Duration::from_secs(1));
            tokio::spawn(async move {
                loop {
                    let Some(gw) = weak.upgrade() else { return };
                    let provider = gw.targets[i].provider.clone();
                    let name = gw.targets[i].pool.name().clone();
                    let result = tokio::time::timeout(DISCOVERY_TIMEOUT, provider.discover_models(&gw.secrets)).await;
                    match result {
                        Ok(Some(Ok(models))) => {
                            tracing::debug!(provider = %name, count = models.len(), "discovered models");
                            gw.router.set_discovered(i, &models);
                        }
                        Ok(Some(Err(e))) => tracing::warn!(provider = %name, error = %e, "model discovery failed"),
                        Ok(None) => return,
                        Err(_) => tracing::warn!(provider = %name, "model discovery timed out"),
                    }
                    drop(gw);
                    tokio::time::sleep(every).await;
                }
            });
        }
    }

    /// Retires the providers of this snapshot that `next` (the snapshot replacing it) does not
    /// keep, so their idle upstream connections close now rather than when this snapshot's
    /// last request is done.
    pub fn retire_replaced(&self, next: &Gateway) {
        for t in &self.targets {
            if !next.targets.iter().any(|n| Arc::ptr_eq(&n.provider, &t.provider)) {
                t.provider.retire();
            }
        }
    }

    /// Drains every pool until `deadline`.
    pub async fn shutdown(&self, deadline: tokio::time::Instant) {
        futures_util::future::join_all(self.targets.iter().map(|t| t.pool.shutdown(deadline))).await;
    }
}

/// The bus of `config`: the previous snapshot's when its `[events]` (and whether the admin
/// API, which reads the live view, is on) did not change; none when nothing would take events.
fn events_bus(config: &Config, previous: Option<&Gateway>) -> Result<Option<Arc<Bus>>, String> {
    let live = config.admin.token.as_deref().is_some_and(|t| !t.is_empty()) && config.events.recent > 0;
    if let Some(prev) = previous {
        let prev_live =
            prev.config.admin.token.as_deref().is_some_and(|t| !t.is_empty()) && prev.config.events.recent > 0;
        if prev.config.events == config.events && prev_live == live {
            return Ok(prev.events.clone());
        }
    }
    if config.events.sinks.is_empty() && !live {
        return Ok(None);
    }
    let mut sinks = crate::events::sinks::from_config(&config.events, &weir_otel::logs::sink)?;
    if live {
        crate::live::live().set_capacity(config.events.recent);
        sinks.push(crate::events::SinkSpec {
            name: "live".into(),
            min_priority: crate::config::Priority::Low,
            queue: config.events.recent.max(1024),
            sink: Box::new(crate::live::LiveSink),
        });
    }
    let bus = Bus::start(&config.events, sinks).map_err(|e| format!("cannot start the event bus: {e}"))?;
    Ok(Some(bus))
}

/// Process-wide state shared by every connection.
pub struct AppState {
    /// The current snapshot.
    pub gateway: ArcSwap<Gateway>,
    /// When the process started.
    pub started: Instant,
}

impl AppState {
    /// Wraps the first snapshot.
    pub fn new(gateway: Arc<Gateway>) -> Arc<Self> {
        Arc::new(Self { gateway: ArcSwap::new(gateway), started: Instant::now() })
    }
}
