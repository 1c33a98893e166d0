//! Configuration: the TOML file (or the embedded default) parsed into plain `serde` structs
//! ([`ConfigFile`]), each provider's settings sorted by its kind, `${ENV}` secrets
//! interpolated, then validated. The result is immutable and shared as an
//! `Arc<Config>` snapshot; a reload builds a new one, it never mutates in place.

mod balance;
mod bedrock;
pub mod builtin;
mod cache;
mod defaults;
mod env;
mod events;
mod keys;
mod kind;
mod otel;
mod plugin;
pub mod preset;
mod provider;
mod resilience;
mod server;
mod state;
mod url;
mod values;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use balance::{MAX_ROUTE_TARGETS, RouteConfig, RouteTarget, Strategy, StreamResume};
pub use bedrock::BedrockConfig;
pub use cache::{CacheConfig, MAX_CACHE_ENTRIES};
pub use defaults::embedded_default;
pub use env::EnvValues;
pub use events::{
    Backpressure, EventsConfig, LogConfig, LogFormat, MAX_QUEUE_CAPACITY, Priority, QueueCapacities, SinkConfig,
    SinkKind,
};
pub use keys::{BudgetConfig, PriceConfig, VirtualKeyConfig, parse_duration, valid_key_name};
pub use otel::TracingConfig;
pub use plugin::{MAX_MEMORY_LIMIT, MAX_PLUGINS, OnError, PluginConfig, PluginRuntimeConfig};
pub use provider::{
    AnthropicConfig, GEMINI_BASE_URL, GeminiConfig, KeyConfig, Kind, MockConfig, OpenAiConfig, ProviderConfig,
    ProviderFile, ProviderKind,
};
pub use resilience::{BreakerConfig, MAX_FALLBACKS, RetryConfig};
pub use server::{BrowserConfig, MAX_THREADS, OverloadConfig, ServerConfig};
pub use state::{OnUnavailable, StateConfig};
pub use url::check_base_url;
pub use values::parse_listen;

/// Why a configuration could not be loaded. The message names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// Path that was read.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error("invalid config: {0}")]
    Parse(String),
    /// A value is well-formed but not acceptable.
    #[error("invalid config: `{key}`: {reason}")]
    Invalid {
        /// Dotted path of the offending key, e.g. `providers[0].pool.workers`.
        key: String,
        /// Why it was refused.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid { key: key.into(), reason: reason.into() }
    }
}

/// The whole gateway configuration, validated (built from a [`ConfigFile`]).
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The client-facing listener.
    pub server: ServerConfig,
    /// Upstream providers, in routing priority order (first match wins for bare models).
    pub providers: Vec<ProviderConfig>,
    /// Plugins, in chain order (pre hooks run in this order, post hooks in reverse).
    pub plugins: Vec<PluginConfig>,
    /// Settings shared by all plugins (compiled-component cache).
    pub plugin_runtime: PluginRuntimeConfig,
    /// The admin API and reload behaviour.
    pub admin: AdminConfig,
    /// Per model (as the client names it), the `provider/model`s tried in order when its
    /// provider cannot answer.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub fallbacks: BTreeMap<String, Vec<String>>,
    /// Where state shared between instances lives (Redis, or this process).
    pub state: StateConfig,
    /// The event bus and its sinks.
    pub events: EventsConfig,
    /// Weir's own log lines.
    pub log: LogConfig,
    /// Virtual keys (`[[keys]]`): once any exists, every model call needs one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<VirtualKeyConfig>,
    /// Per model (or glob), its token prices over the bundled table.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub prices: BTreeMap<String, PriceConfig>,
    /// Models served by several providers, balanced by a strategy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// `[tracing]`: OpenTelemetry traces; `None` makes no span at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingConfig>,
    /// The response cache.
    pub cache: CacheConfig,
}

/// The configuration file as written: [`Config`] with each provider table holding the
/// settings of every kind ([`ProviderFile`]), so that serde reports unknown keys and wrong
/// types with their span, before the kinds are sorted out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[server]`.
    #[serde(default)]
    pub server: ServerConfig,
    /// `[[providers]]`.
    #[serde(default)]
    pub providers: Vec<ProviderFile>,
    /// `[[plugins]]`.
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
    /// `[plugin_runtime]`.
    #[serde(default)]
    pub plugin_runtime: PluginRuntimeConfig,
    /// `[admin]`.
    #[serde(default)]
    pub admin: AdminConfig,
    /// `[fallbacks]`.
    #[serde(default)]
    pub fallbacks: BTreeMap<String, Vec<String>>,
    /// `[state]`.
    #[serde(default)]
    pub state: StateConfig,
    /// `[events]`.
    #[serde(default)]
    pub events: EventsConfig,
    /// `[log]`.
    #[serde(default)]
    pub log: LogConfig,
    /// `[[keys]]`.
    #[serde(default)]
    pub keys: Vec<VirtualKeyConfig>,
    /// `[prices]`.
    #[serde(default)]
    pub prices: BTreeMap<String, PriceConfig>,
    /// `[[routes]]`.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// `[tracing]`.
    #[serde(default)]
    pub tracing: Option<TracingConfig>,
    /// `[cache]`.
    #[serde(default)]
    pub cache: CacheConfig,
}

impl TryFrom<ConfigFile> for Config {
    type Error = ConfigError;

    /// Gives each provider the settings of its kind.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming a setting of another kind, or a missing one.
    fn try_from(f: ConfigFile) -> Result<Self, ConfigError> {
        let providers = (f.providers.into_iter().enumerate())
            .map(|(i, p)| ProviderConfig::from_file(p, &format!("providers[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            server: f.server,
            providers,
            plugins: f.plugins,
            plugin_runtime: f.plugin_runtime,
            admin: f.admin,
            fallbacks: f.fallbacks,
            state: f.state,
            events: f.events,
            log: f.log,
            keys: f.keys,
            prices: f.prices,
            routes: f.routes,
            tracing: f.tracing,
            cache: f.cache,
        })
    }
}

/// `[admin]`: the admin API (a separate listener) and hot reload.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin listener (keep it on loopback or a private network).
    #[serde(deserialize_with = "values::listen")]
    pub listen: SocketAddr,
    /// Bearer token required on every admin request (usually `${WEIR_ADMIN_TOKEN}`).
    /// Unset or empty: the admin API is off.
    pub token: Option<String>,
    /// Where `PUT /admin/plugins/{name}` stores uploads of plugins not in the config
    /// (default: `plugins/` beside the config file).
    pub plugin_dir: Option<PathBuf>,
    /// Watch the config file and plugin files and reload on change.
    pub watch: bool,
    /// Quiet period after a file change before reloading (editors write in bursts).
    #[serde(with = "values::duration")]
    pub watch_debounce: Duration,
    /// Largest plugin upload (`PUT /admin/plugins/{name}`); Python and JS components are
    /// 12-18 MB. An upload is streamed to disk, so this bounds the file, not memory.
    pub max_upload_bytes: usize,
}

impl AdminConfig {
    /// A warning when the admin API would be reachable beyond this machine: it can replace
    /// plugins (code), so a token alone should not be all that guards it.
    pub fn exposure_warning(&self) -> Option<String> {
        let on = self.token.as_deref().is_some_and(|t| !t.is_empty());
        (on && !self.listen.ip().is_loopback()).then(|| {
            format!(
                "admin.listen = \"{}\" is not a loopback address: the admin API (which can replace plugins) \
                 is reachable from the network, guarded only by admin.token; prefer 127.0.0.1",
                self.listen
            )
        })
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            token: None,
            plugin_dir: None,
            watch: true,
            watch_debounce: Duration::from_millis(300),
            max_upload_bytes: 128 * 1024 * 1024,
        }
    }
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("plugin_dir", &self.plugin_dir)
            .field("watch", &self.watch)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .finish()
    }
}

/// What a full queue does with a new request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// Wait for space up to `queue_timeout`, then 503 `queue_timeout`.
    Block,
    /// Answer at once with 429 `queue_full` and `Retry-After`.
    Reject,
    /// Evict the oldest waiting request (503 `dropped_from_queue`) and admit the new one.
    DropOldest,
}

/// `[providers.pool]`: workers, queue and timeouts of one provider.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Workers, made at start, each with its own upstream connection: the most requests in
    /// flight to this provider at once.
    pub workers: usize,
    /// Requests that may wait for a worker; bounds memory under a flood.
    pub queue: usize,
    /// What happens when the queue is full.
    pub overflow: Overflow,
    /// Longest a request may wait, for queue space (`block`) and then for a worker.
    #[serde(with = "values::duration")]
    pub queue_timeout: Duration,
    /// Longest one upstream call may take: a whole answer, or a stream's first event (unless
    /// `first_token_timeout`) and each gap between events (unless `idle_timeout`).
    #[serde(with = "values::duration")]
    pub request_timeout: Duration,
    /// A stream's first event, from the call's start (default `request_timeout`); missed, the
    /// attempt fails before any byte reached the client, so it is retried or falls back.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "values::duration::option")]
    pub first_token_timeout: Option<Duration>,
    /// Longest gap between a stream's events after the first (default `request_timeout`);
    /// past it the client's stream ends with an error event.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "values::duration::option")]
    pub idle_timeout: Option<Duration>,
    /// A request routed here, whole: every attempt, the waits between them and a stream to its
    /// end (default: no bound beyond the others). `x-weir-timeout-ms` replaces it per request.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "values::duration::option")]
    pub total_timeout: Option<Duration>,
    /// Largest `x-weir-timeout-ms` honoured for a request routed here; a larger one is cut to it.
    #[serde(with = "values::duration")]
    pub max_client_timeout: Duration,
    /// Active health checks: probe the provider's model list at start and this often (off
    /// unless set); a probe feeds `/ready` and the circuit breaker like an attempt.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "values::duration::option")]
    pub health_check_interval: Option<Duration>,
    /// Longest a health probe may take.
    #[serde(with = "values::duration")]
    pub health_check_timeout: Duration,
    /// Adaptive workers: the most `workers` may grow to under load (off unless set; `workers`
    /// is then the starting count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_workers: Option<usize>,
    /// Adaptive workers: the fewest they shrink to when idle (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_workers: Option<usize>,
    /// Adaptive workers: grow when the line is at least this share of `queue` full ...
    pub scale_up_queue_fill: f64,
    /// ... or a request waited this long for a worker.
    #[serde(with = "values::duration")]
    pub scale_up_wait: Duration,
    /// Adaptive workers: least time between two changes; shrink after this long with nobody
    /// waiting and at most half the workers busy.
    #[serde(with = "values::duration")]
    pub scale_cooldown: Duration,
    /// Largest whole (non-stream) answer read from the provider; a larger one is a 502
    /// `upstream_response_too_large`. Bounds the memory one answer holds per worker.
    pub max_response_bytes: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            workers: 64,
            queue: 1024,
            overflow: Overflow::Block,
            queue_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(60),
            first_token_timeout: None,
            idle_timeout: None,
            total_timeout: None,
            max_client_timeout: Duration::from_secs(600),
            health_check_interval: None,
            health_check_timeout: Duration::from_secs(5),
            max_workers: None,
            min_workers: None,
            scale_up_queue_fill: 0.1,
            scale_up_wait: Duration::from_millis(100),
            scale_cooldown: Duration::from_secs(2),
            max_response_bytes: 16 * 1024 * 1024,
        }
    }
}

impl Config {
    /// Reads, interpolates and validates a config file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mut cfg = Self::from_toml(&text)?;
        if let Some(dir) = path.parent() {
            for p in &mut cfg.plugins {
                if p.path.is_relative() && crate::builtin::name(&p.path).is_none() {
                    p.path = dir.join(&p.path);
                }
            }
            if let Some(cache) = cfg.plugin_runtime.cache_dir.as_mut().filter(|c| c.is_relative()) {
                *cache = dir.join(&*cache);
            }
            for sink in &mut cfg.events.sinks {
                if let Some(p) = sink.path.as_mut().filter(|p| p.is_relative()) {
                    *p = dir.join(&*p);
                }
            }
            let plugin_dir = cfg.admin.plugin_dir.get_or_insert_with(|| PathBuf::from("plugins"));
            if plugin_dir.is_relative() {
                *plugin_dir = dir.join(&*plugin_dir);
            }
        }
        Ok(cfg)
    }

    /// Parses, interpolates `${ENV}` and validates TOML text.
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending key.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| match values::type_hint(e.message()) {
            Some(hint) => ConfigError::Parse(format!("{e}hint: {hint}")),
            None => ConfigError::Parse(e.to_string()),
        })?;
        let mut cfg = Config::try_from(file)?;
        env::interpolate_all(&mut cfg, |name| std::env::var(name).ok())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for the first offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        if self.providers.is_empty() {
            return Err(ConfigError::invalid("providers", "at least one provider is required"));
        }
        let mut names = HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            p.validate(i, &mut names)?;
        }
        plugin::validate(&self.plugins, &self.plugin_runtime, &names)?;
        resilience::validate_fallbacks(&self.fallbacks, &names)?;
        self.state.validate()?;
        self.events.validate()?;
        keys::validate(&self.keys, &self.prices)?;
        let fallbacks = self.fallbacks.keys().map(String::as_str).collect();
        balance::validate_routes(&self.routes, &names, &fallbacks)?;
        if let Some(t) = &self.tracing {
            t.validate()?;
        }
        self.cache.validate()?;
        Ok(())
    }

    /// The config with every secret (keys, header values, the admin token, plugin-config
    /// strings that took a value from `${ENV}`) replaced by `<redacted>`.
    pub fn redacted(&self) -> Self {
        let mut c = self.clone();
        for p in &mut c.providers {
            if let ProviderKind::Bedrock(b) = &mut p.kind {
                b.redact();
            }
            if let Some(o) = p.kind.http_mut() {
                o.redact();
            }
        }
        for k in &mut c.keys {
            k.value = "<redacted>".into();
        }
        if c.admin.token.is_some() {
            c.admin.token = Some("<redacted>".into());
        }
        if let Some(t) = &mut c.tracing {
            t.redact();
        }
        c.events.redact();
        for p in &mut c.plugins {
            for (_, v) in p.config.iter_mut() {
                redact_env(v, &p.config_env);
            }
        }
        c
    }
}

/// Replaces every string in `v` that holds a value taken from the environment.
fn redact_env(v: &mut toml::Value, env: &EnvValues) {
    match v {
        toml::Value::String(s) if env.found_in(s) => *s = "<redacted>".into(),
        toml::Value::Array(items) => items.iter_mut().for_each(|item| redact_env(item, env)),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, item)| redact_env(item, env)),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
