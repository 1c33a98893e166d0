//! `[[providers]]`: the table as written ([`ProviderFile`], one struct for every kind, so a TOML
//! error keeps its span and key) and the validated form ([`ProviderConfig`]), in which each
//! [`ProviderKind`] holds only the settings that kind reads.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::preset::{AzureConfig, DEFAULT_AZURE_API_VERSION, preset, url_safe};
use super::{BedrockConfig, BreakerConfig, ConfigError, EnvValues, PoolConfig, RetryConfig, check_base_url, values};

/// Connect timeout of an HTTP provider that sets none.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Anthropic's API, when an `anthropic` provider sets no `base_url`.
const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com/v1";
/// The `anthropic-version` header an `anthropic` provider sends by default.
const ANTHROPIC_VERSION: &str = "2023-06-01";
/// `max_tokens` written into requests converted for Anthropic that set none (Anthropic requires it).
const ANTHROPIC_MAX_TOKENS: u64 = 4096;

use crate::kind::KIND_SETTINGS;
pub use crate::kind::Kind;

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
    /// `openai`: base URL of the API, up to and including the version segment (e.g. `.../v1`);
    /// `azure`: the resource endpoint (`https://NAME.openai.azure.com`); presets: their
    /// service's URL unless set.
    /// `bedrock`: of the runtime API (default from `region`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// `azure`: the `api-version` query parameter (default [`DEFAULT_AZURE_API_VERSION`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `azure`: model name -> deployment name; a model not listed uses its own name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployments: Option<BTreeMap<String, String>>,
    /// `openai`: API keys, chosen per request by weighted random choice (`azure`: sent as
    /// `api-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<KeyConfig>>,
    /// Models this provider serves (bare model names are routed by this list).
    #[serde(default)]
    pub models: Vec<String>,
    /// Friendly names mapped to one of this provider's models.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// `openai`, `bedrock`: extra headers sent upstream with every request (values may use `${ENV}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// Ask the provider for its model list in the background (`GET /models`).
    #[serde(default = "default_true")]
    pub discover_models: bool,
    /// How often the model list is refreshed.
    #[serde(default = "default_refresh", with = "values::duration")]
    pub models_refresh: Duration,
    /// `openai`, `bedrock`: TCP/TLS connect timeout (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "values::duration::option")]
    pub connect_timeout: Option<Duration>,
    /// `anthropic`: the `anthropic-version` header sent upstream (default `2023-06-01`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anthropic_version: Option<String>,
    /// `anthropic`: `max_tokens` for requests converted from another format that set none
    /// (Anthropic requires one; default 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_max_tokens: Option<u64>,
    /// `mock`: delay before the response (or the first chunk).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "values::duration::option")]
    pub latency: Option<Duration>,
    /// `mock`: delay between stream chunks.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "values::duration::option")]
    pub chunk_delay: Option<Duration>,
    /// `bedrock`: AWS region (else `AWS_REGION` / `AWS_DEFAULT_REGION`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `bedrock`: AWS access key id (else `AWS_ACCESS_KEY_ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// `bedrock`: AWS secret access key (else `AWS_SECRET_ACCESS_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// `bedrock`: AWS session token of temporary credentials (else `AWS_SESSION_TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
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
            "anthropic_version" => self.anthropic_version.is_some(),
            "default_max_tokens" => self.default_max_tokens.is_some(),
            "api_version" => self.api_version.is_some(),
            "deployments" => self.deployments.is_some(),
            "latency" => self.latency.is_some(),
            "chunk_delay" => self.chunk_delay.is_some(),
            "region" => self.region.is_some(),
            "access_key_id" => self.access_key_id.is_some(),
            "secret_access_key" => self.secret_access_key.is_some(),
            "session_token" => self.session_token.is_some(),
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
    /// `kind = "openai"`, `"azure"` or a preset: an API that speaks OpenAI's format.
    OpenAi(OpenAiConfig),
    /// `kind = "anthropic"`: Anthropic's Messages API.
    Anthropic(AnthropicConfig),
    /// `kind = "mock"`: the built-in echo provider.
    Mock(MockConfig),
    /// `kind = "gemini"`: Google AI's Gemini API.
    Gemini(GeminiConfig),
    /// `kind = "bedrock"`: Amazon Bedrock Runtime.
    Bedrock(Box<BedrockConfig>),
}

impl ProviderKind {
    /// The tag written in the file.
    pub fn kind(&self) -> Kind {
        match self {
            Self::OpenAi(o) => o.kind,
            Self::Anthropic(_) => Kind::Anthropic,
            Self::Mock(_) => Kind::Mock,
            Self::Gemini(_) => Kind::Gemini,
            Self::Bedrock(_) => Kind::Bedrock,
        }
    }

    /// The HTTP settings (base URL, keys, headers) of a kind that has them: what secrets,
    /// `${ENV}` interpolation and redaction read.
    pub fn http(&self) -> Option<&OpenAiConfig> {
        match self {
            Self::OpenAi(o) | Self::Gemini(o) | Self::Anthropic(AnthropicConfig { http: o, .. }) => Some(o),
            Self::Mock(_) | Self::Bedrock(_) => None,
        }
    }

    /// [`ProviderKind::http`], to change.
    pub fn http_mut(&mut self) -> Option<&mut OpenAiConfig> {
        match self {
            Self::OpenAi(o) | Self::Gemini(o) | Self::Anthropic(AnthropicConfig { http: o, .. }) => Some(o),
            Self::Mock(_) | Self::Bedrock(_) => None,
        }
    }
}

/// The settings of an `openai`, `azure` or preset provider.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiConfig {
    /// The kind written: `openai`, `azure` or a preset (what `/admin/config` shows).
    pub kind: Kind,
    /// Base URL of the API, up to and including the version segment (e.g. `.../v1`); for
    /// `azure`, the resource endpoint.
    pub base_url: String,
    /// `azure`: how deployments are addressed (`Some` exactly for `kind = "azure"`).
    pub azure: Option<AzureConfig>,
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

/// The settings of a `gemini` provider: those of an `openai` one, read the same way. Its
/// `base_url` defaults to [`GEMINI_BASE_URL`]; a key goes in the `x-goog-api-key` header, never
/// in the URL, so it stays out of access logs.
pub type GeminiConfig = OpenAiConfig;

/// Google AI's Gemini API, the default `base_url` of a `gemini` provider.
pub const GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta";

/// The settings of an `anthropic` provider.
#[derive(Debug, Clone, PartialEq)]
pub struct AnthropicConfig {
    /// Base URL (default `https://api.anthropic.com/v1`), keys (sent as `x-api-key`), headers
    /// and connect timeout, as an `openai` provider has them.
    pub http: OpenAiConfig,
    /// The `anthropic-version` header.
    pub anthropic_version: String,
    /// `max_tokens` for converted requests that set none.
    pub default_max_tokens: u64,
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
            k @ (Kind::Openai
            | Kind::Azure
            | Kind::Groq
            | Kind::Mistral
            | Kind::Deepseek
            | Kind::Together
            | Kind::Fireworks
            | Kind::Openrouter
            | Kind::Xai
            | Kind::Perplexity
            | Kind::Ollama
            | Kind::Vllm) => ProviderKind::OpenAi(OpenAiConfig {
                kind: k,
                base_url: match (f.base_url.take(), preset(k)) {
                    (Some(url), _) => url,
                    (None, Some(p)) => p.base_url.to_owned(),
                    (None, None) => {
                        return Err(ConfigError::invalid(
                            format!("{key}.base_url"),
                            format!("required for kind = {:?}", k.as_str()),
                        ));
                    }
                },
                azure: (k == Kind::Azure).then(|| AzureConfig {
                    api_version: f.api_version.take().unwrap_or_else(|| DEFAULT_AZURE_API_VERSION.to_owned()),
                    deployments: f.deployments.take().unwrap_or_default(),
                }),
                keys: f.keys.take().unwrap_or_default(),
                headers: f.headers.take().unwrap_or_default(),
                header_env: EnvValues::default(),
                connect_timeout: f.connect_timeout.take().unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            }),
            Kind::Gemini => ProviderKind::Gemini(GeminiConfig {
                kind: Kind::Gemini,
                azure: None,
                base_url: f.base_url.take().unwrap_or_else(|| GEMINI_BASE_URL.to_owned()),
                keys: f.keys.take().unwrap_or_default(),
                headers: f.headers.take().unwrap_or_default(),
                header_env: EnvValues::default(),
                connect_timeout: f.connect_timeout.take().unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            }),
            Kind::Anthropic => ProviderKind::Anthropic(AnthropicConfig {
                http: OpenAiConfig {
                    kind: Kind::Anthropic,
                    azure: None,
                    base_url: f.base_url.take().unwrap_or_else(|| ANTHROPIC_BASE_URL.to_owned()),
                    keys: f.keys.take().unwrap_or_default(),
                    headers: f.headers.take().unwrap_or_default(),
                    header_env: EnvValues::default(),
                    connect_timeout: f.connect_timeout.take().unwrap_or(DEFAULT_CONNECT_TIMEOUT),
                },
                anthropic_version: f.anthropic_version.take().unwrap_or_else(|| ANTHROPIC_VERSION.to_owned()),
                default_max_tokens: f.default_max_tokens.take().unwrap_or(ANTHROPIC_MAX_TOKENS),
            }),
            Kind::Mock => ProviderKind::Mock(MockConfig {
                latency: f.latency.take().unwrap_or_default(),
                chunk_delay: f.chunk_delay.take().unwrap_or_default(),
            }),
            Kind::Bedrock => ProviderKind::Bedrock(Box::new(BedrockConfig::written(
                f.region.take(),
                f.access_key_id.take(),
                f.secret_access_key.take(),
                f.session_token.take(),
                f.base_url.take(),
                f.headers.take(),
                f.connect_timeout.take().unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            ))),
        };
        if let Some(&(name, _)) = KIND_SETTINGS.iter().find(|(name, owner)| f.has(name) && !f.kind.takes(*owner)) {
            let owners: Vec<String> = KIND_SETTINGS
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, k)| match k {
                    Kind::Openai => "\"openai\" (or azure or a preset)".to_owned(),
                    k => format!("{:?}", k.as_str()),
                })
                .collect();
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
        // An Azure deployment's model name routes to it like a listed model.
        let mut models = f.models;
        if let ProviderKind::OpenAi(OpenAiConfig { azure: Some(azure), .. }) = &kind {
            for model in azure.deployments.keys() {
                if !models.contains(model) {
                    models.push(model.clone());
                }
            }
        }
        Ok(Self {
            name: f.name,
            models,
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
            ProviderKind::Gemini(g) => {
                g.validate(&key)?;
                if g.keys.is_empty() {
                    return Err(ConfigError::invalid(key("keys"), "kind = \"gemini\" needs at least one API key"));
                }
            }
            ProviderKind::Anthropic(a) => {
                a.http.validate(&key)?;
                if a.anthropic_version.is_empty() || http::HeaderValue::from_str(&a.anthropic_version).is_err() {
                    return Err(ConfigError::invalid(
                        key("anthropic_version"),
                        "must be a version such as \"2023-06-01\"",
                    ));
                }
                if a.default_max_tokens == 0 {
                    return Err(ConfigError::invalid(key("default_max_tokens"), "must be at least 1"));
                }
            }
            ProviderKind::Bedrock(b) => b.validate(&key)?,
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
        crate::resilience::validate_timeouts(pool, &key)?;
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
        if self.keys.is_empty() && self.needs_key() {
            return Err(ConfigError::invalid(
                key("keys"),
                format!(
                    "required for kind = {:?}: the service refuses requests without an API key",
                    self.kind.as_str()
                ),
            ));
        }
        if let Some(azure) = &self.azure {
            if !url_safe(&azure.api_version) {
                return Err(ConfigError::invalid(key("api_version"), "must be a version such as \"2024-10-21\""));
            }
            for (model, deployment) in &azure.deployments {
                if !url_safe(deployment) {
                    return Err(ConfigError::invalid(
                        key(&format!("deployments.{model}")),
                        "a deployment name is letters, digits, '-', '_' and '.'",
                    ));
                }
            }
        }
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

    /// Whether requests need a key: a preset whose service requires one, or Azure unless a
    /// configured header carries the credentials (an Entra ID `authorization` token).
    fn needs_key(&self) -> bool {
        match self.kind {
            Kind::Azure => !self.headers.keys().any(|h| h.eq_ignore_ascii_case("authorization")),
            k => preset(k).is_some_and(|p| p.needs_key),
        }
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
            api_version: None,
            deployments: None,
            keys: None,
            models: p.models,
            aliases: p.aliases,
            headers: None,
            discover_models: p.discover_models,
            models_refresh: p.models_refresh,
            connect_timeout: None,
            anthropic_version: None,
            default_max_tokens: None,
            latency: None,
            chunk_delay: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            pool: p.pool,
            retry: p.retry,
            breaker: p.breaker,
        };
        match p.kind {
            ProviderKind::OpenAi(o) | ProviderKind::Gemini(o) => {
                f.base_url = Some(o.base_url);
                if let Some(azure) = o.azure {
                    f.api_version = Some(azure.api_version);
                    f.deployments = Some(azure.deployments);
                }
                f.keys = Some(o.keys);
                f.headers = Some(o.headers);
                f.connect_timeout = Some(o.connect_timeout);
            }
            ProviderKind::Anthropic(a) => {
                f.base_url = Some(a.http.base_url);
                f.keys = Some(a.http.keys);
                f.headers = Some(a.http.headers);
                f.connect_timeout = Some(a.http.connect_timeout);
                f.anthropic_version = Some(a.anthropic_version);
                f.default_max_tokens = Some(a.default_max_tokens);
            }
            ProviderKind::Mock(m) => {
                f.latency = Some(m.latency);
                f.chunk_delay = Some(m.chunk_delay);
            }
            ProviderKind::Bedrock(b) => {
                f.base_url = Some(b.base_url);
                f.headers = Some(b.headers);
                f.connect_timeout = Some(b.connect_timeout);
                f.region = Some(b.region);
                f.access_key_id = Some(b.access_key_id);
                f.secret_access_key = Some(b.secret_access_key);
                f.session_token = b.session_token;
            }
        }
        f
    }
}
