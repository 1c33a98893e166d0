//! `[[providers]]`: the table as written ([`ProviderFile`], one struct for every kind, so a TOML
//! error keeps its span and key) and the validated form ([`ProviderConfig`]), in which each
//! [`ProviderKind`] holds only the settings that kind reads.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{BreakerConfig, ConfigError, EnvValues, PoolConfig, RetryConfig, check_base_url, values};

/// Connect timeout of an `openai` provider that sets none.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `kind = "..."` of a provider table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Any OpenAI-compatible HTTP API (OpenAI, Groq, Mistral, vLLM, Ollama, ...).
    Openai,
    /// Built-in provider that echoes the last user message; needs no network or key.
    Mock,
}

impl Kind {
    /// The name written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Mock => "mock",
        }
    }
}

/// The settings only some kinds take, and which. A setting written on a provider of another
/// kind is refused by name rather than ignored, since it would silently do nothing.
const KIND_SETTINGS: [(&str, Kind); 6] = [
    ("base_url", Kind::Openai),
    ("keys", Kind::Openai),
    ("headers", Kind::Openai),
    ("connect_timeout", Kind::Openai),
    ("latency", Kind::Mock),
    ("chunk_delay", Kind::Mock),
];

/// One `[[providers]]` table as written: the settings of every kind, checked against `kind`
/// when [`ProviderConfig`] is built from it. Kind-specific settings are `Option`s so that
/// "written" can be told from "left out".
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderFile {
    /// Unique name; also the prefix for explicit routing (`name/model`).
    pub name: String,
    /// Implementation.
    pub kind: Kind,
    /// `openai`: base URL of the API, up to and including the version segment (e.g. `.../v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// `openai`: API keys, chosen per request by weighted random choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<KeyConfig>>,
    /// Models this provider serves (bare model names are routed by this list).
    #[serde(default)]
    pub models: Vec<String>,
    /// Friendly names mapped to one of this provider's models.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// `openai`: extra headers sent upstream with every request (values may use `${ENV}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// Ask the provider for its model list in the background (`GET /models`).
    #[serde(default = "default_true")]
    pub discover_models: bool,
    /// How often the model list is refreshed.
    #[serde(default = "default_refresh", with = "values::duration")]
    pub models_refresh: Duration,
    /// `openai`: TCP/TLS connect timeout (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "values::duration::option")]
    pub connect_timeout: Option<Duration>,
    /// `mock`: delay before the response (or the first chunk).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "values::duration::option")]
    pub latency: Option<Duration>,
    /// `mock`: delay between stream chunks.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "values::duration::option")]
    pub chunk_delay: Option<Duration>,
    /// The provider's worker pool.
    #[serde(default)]
    pub pool: PoolConfig,
    /// Retries on this provider and their budget.
    #[serde(default)]
    pub retry: RetryConfig,
    /// The provider's circuit breaker (off unless written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerConfig>,
}

fn default_true() -> bool {
    true
}
fn default_refresh() -> Duration {
    Duration::from_secs(300)
}

impl ProviderFile {
    /// Whether the kind-specific setting `name` (from [`KIND_SETTINGS`]) is written.
    fn has(&self, name: &str) -> bool {
        match name {
            "base_url" => self.base_url.is_some(),
            "keys" => self.keys.is_some(),
            "headers" => self.headers.is_some(),
            "connect_timeout" => self.connect_timeout.is_some(),
            "latency" => self.latency.is_some(),
            "chunk_delay" => self.chunk_delay.is_some(),
            _ => false,
        }
    }
}

/// `[[providers]]`, validated: one upstream provider, its routing names and its pool.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(into = "ProviderFile")]
pub struct ProviderConfig {
    /// Unique name; also the prefix for explicit routing (`name/model`).
    pub name: String,
    /// Models this provider serves (bare model names are routed by this list).
    pub models: Vec<String>,
    /// Friendly names mapped to one of this provider's models.
    pub aliases: BTreeMap<String, String>,
    /// Ask the provider for its model list in the background (`GET /models`).
    pub discover_models: bool,
    /// How often the model list is refreshed.
    pub models_refresh: Duration,
    /// The provider's worker pool.
    pub pool: PoolConfig,
    /// Retries on this provider and their budget.
    pub retry: RetryConfig,
    /// The provider's circuit breaker, when on.
    pub breaker: Option<BreakerConfig>,
    /// The implementation and the settings only it reads.
    pub kind: ProviderKind,
}

/// Which implementation talks to a provider, with its own settings.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderKind {
    /// `kind = "openai"`: any OpenAI-compatible HTTP API.
    OpenAi(OpenAiConfig),
    /// `kind = "mock"`: the built-in echo provider.
    Mock(MockConfig),
}

impl ProviderKind {
    /// The tag written in the file.
    pub fn kind(&self) -> Kind {
        match self {
            Self::OpenAi(_) => Kind::Openai,
            Self::Mock(_) => Kind::Mock,
        }
    }
}

/// The settings of an `openai` provider.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiConfig {
    /// Base URL of the API, up to and including the version segment (e.g. `.../v1`).
    pub base_url: String,
    /// API keys, chosen per request by weighted random choice.
    pub keys: Vec<KeyConfig>,
    /// Extra headers sent upstream with every request (values may use `${ENV}`). A value is a
    /// secret (scrubbed from everything Weir sends or logs) when its name looks like a
    /// credential or it came from `${ENV}`.
    pub headers: BTreeMap<String, String>,
    /// The parts of `headers` values taken from the environment (filled in at load).
    pub header_env: EnvValues,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
}

/// The settings of a `mock` provider.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MockConfig {
    /// Delay before the response (or the first chunk).
    pub latency: Duration,
    /// Delay between stream chunks.
    pub chunk_delay: Duration,
}

/// One API key and its weight in the random choice.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The key (usually `${ENV_VAR}`). Never logged.
    pub value: String,
    /// Relative weight; 0 disables the key.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

impl std::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyConfig").field("value", &"<redacted>").field("weight", &self.weight).finish()
    }
}

impl ProviderConfig {
    /// Builds the validated form of the table at `key` (`providers[i]`): the kind takes the
    /// settings it reads, and any kind-specific setting left over is refused by name.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming a setting of another kind, or a missing `base_url`.
    pub(super) fn from_file(mut f: ProviderFile, key: &str) -> Result<Self, ConfigError> {
        let kind = match f.kind {
            Kind::Openai => ProviderKind::OpenAi(OpenAiConfig {
                base_url: f
                    .base_url
                    .take()
                    .ok_or_else(|| ConfigError::invalid(format!("{key}.base_url"), "required for kind = \"openai\""))?,
                keys: f.keys.take().unwrap_or_default(),
                headers: f.headers.take().unwrap_or_default(),
                header_env: EnvValues::default(),
                connect_timeout: f.connect_timeout.take().unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            }),
            Kind::Mock => ProviderKind::Mock(MockConfig {
                latency: f.latency.take().unwrap_or_default(),
                chunk_delay: f.chunk_delay.take().unwrap_or_default(),
            }),
        };
        if let Some(&(name, _)) = KIND_SETTINGS.iter().find(|(name, _)| f.has(name)) {
            let owners: Vec<String> =
                KIND_SETTINGS.iter().filter(|(n, _)| *n == name).map(|(_, k)| format!("{:?}", k.as_str())).collect();
            return Err(ConfigError::invalid(
                format!("{key}.{name}"),
                format!(
                    "only kind = {} takes this setting; provider {:?} is kind = {:?}",
                    owners.join(" or "),
                    f.name,
                    f.kind.as_str()
                ),
            ));
        }
        Ok(Self {
            name: f.name,
            models: f.models,
            aliases: f.aliases,
            discover_models: f.discover_models,
            models_refresh: f.models_refresh,
            pool: f.pool,
            retry: f.retry,
            breaker: f.breaker,
            kind,
        })
    }

    /// Checks the values of the provider at `providers[i]` that parse but make no sense.
    /// `names` collects provider names, to refuse a duplicate.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for the first offending key.
    pub(super) fn validate<'a>(&'a self, i: usize, names: &mut HashSet<&'a str>) -> Result<(), ConfigError> {
        let key = |field: &str| format!("providers[{i}].{field}");
        if self.name.is_empty() || self.name.contains('/') {
            return Err(ConfigError::invalid(key("name"), "must be non-empty and contain no '/'"));
        }
        if !names.insert(self.name.as_str()) {
            return Err(ConfigError::invalid(key("name"), format!("duplicate provider name {:?}", self.name)));
        }
        match &self.kind {
            ProviderKind::OpenAi(o) => o.validate(&key)?,
            ProviderKind::Mock(_) => {
                if self.models.is_empty() {
                    return Err(ConfigError::invalid(key("models"), "a mock provider needs at least one model"));
                }
                // Only the mock serves a fixed list; an upstream may serve more than `models`.
                for (alias, target) in &self.aliases {
                    if !self.models.contains(target) {
                        return Err(ConfigError::invalid(
                            key(&format!("aliases.{alias}")),
                            format!("targets {target:?}, which is not in this provider's models"),
                        ));
                    }
                }
            }
        }
        let pool = &self.pool;
        if pool.workers == 0 || pool.workers > 100_000 {
            return Err(ConfigError::invalid(key("pool.workers"), "must be between 1 and 100000"));
        }
        if pool.queue == 0 || pool.queue > 10_000_000 {
            return Err(ConfigError::invalid(key("pool.queue"), "must be between 1 and 10000000"));
        }
        if pool.request_timeout.is_zero() {
            return Err(ConfigError::invalid(key("pool.request_timeout"), "must be above 0"));
        }
        if pool.max_response_bytes == 0 {
            return Err(ConfigError::invalid(key("pool.max_response_bytes"), "must be at least 1"));
        }
        self.retry.validate(&key)?;
        if let Some(breaker) = &self.breaker {
            breaker.validate(&key)?;
        }
        Ok(())
    }
}

impl OpenAiConfig {
    fn validate(&self, key: &impl Fn(&str) -> String) -> Result<(), ConfigError> {
        let url = &self.base_url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::invalid(key("base_url"), "must start with http:// or https://"));
        }
        let uri: http::Uri = url.parse().map_err(|_| ConfigError::invalid(key("base_url"), "is not a valid URL"))?;
        check_base_url(&uri).map_err(|e| ConfigError::invalid(key("base_url"), e))?;
        if !self.keys.is_empty() && self.keys.iter().all(|k| k.weight == 0) {
            return Err(ConfigError::invalid(key("keys"), "at least one key needs a weight above 0"));
        }
        for (j, k) in self.keys.iter().enumerate() {
            if k.value.is_empty() {
                return Err(ConfigError::invalid(key(&format!("keys[{j}].value")), "is empty"));
            }
        }
        for name in self.headers.keys() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(ConfigError::invalid(key(&format!("headers.{name}")), "is not a valid header name"));
            }
        }
        Ok(())
    }

    /// Replaces every key and header value by `<redacted>`.
    pub(super) fn redact(&mut self) {
        for k in &mut self.keys {
            k.value = "<redacted>".into();
        }
        for v in self.headers.values_mut() {
            *v = "<redacted>".into();
        }
    }
}

/// The table as it would be written: what `/admin/config` and the redacted config show. Only
/// the provider's own kind's settings appear, so the output loads again as a config.
impl From<ProviderConfig> for ProviderFile {
    fn from(p: ProviderConfig) -> Self {
        let mut f = Self {
            name: p.name,
            kind: p.kind.kind(),
            base_url: None,
            keys: None,
            models: p.models,
            aliases: p.aliases,
            headers: None,
            discover_models: p.discover_models,
            models_refresh: p.models_refresh,
            connect_timeout: None,
            latency: None,
            chunk_delay: None,
            pool: p.pool,
            retry: p.retry,
            breaker: p.breaker,
        };
        match p.kind {
            ProviderKind::OpenAi(o) => {
                f.base_url = Some(o.base_url);
                f.keys = Some(o.keys);
                f.headers = Some(o.headers);
                f.connect_timeout = Some(o.connect_timeout);
            }
            ProviderKind::Mock(m) => {
                f.latency = Some(m.latency);
                f.chunk_delay = Some(m.chunk_delay);
            }
        }
        f
    }
}
