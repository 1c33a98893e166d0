//! The `kind` of a provider table, and which settings each kind takes.

use serde::{Deserialize, Serialize};

use crate::preset::preset;

/// The `kind = "..."` of a provider table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Any OpenAI-compatible HTTP API (OpenAI, Groq, Mistral, vLLM, Ollama, ...).
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
    /// Azure OpenAI: OpenAI's format at `/openai/deployments/{deployment}/...?api-version=`.
    Azure,
    /// Presets: `openai` with a known `base_url` ([`crate::preset`]).
    Groq,
    /// Mistral's La Plateforme.
    Mistral,
    /// DeepSeek.
    Deepseek,
    /// Together AI.
    Together,
    /// Fireworks AI.
    Fireworks,
    /// OpenRouter.
    Openrouter,
    /// xAI (Grok).
    Xai,
    /// Perplexity (Sonar).
    Perplexity,
    /// A local Ollama server.
    Ollama,
    /// A local vLLM server.
    Vllm,
    /// Built-in provider that echoes the last user message; needs no network or key.
    Mock,
    /// Google AI's Gemini API (`generateContent`), reached with an API key.
    Gemini,
    /// Amazon Bedrock Runtime (Converse API), signed with AWS SigV4.
    Bedrock,
}

impl Kind {
    /// The name written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Anthropic => "anthropic",
            Self::Azure => "azure",
            Self::Groq => "groq",
            Self::Mistral => "mistral",
            Self::Deepseek => "deepseek",
            Self::Together => "together",
            Self::Fireworks => "fireworks",
            Self::Openrouter => "openrouter",
            Self::Xai => "xai",
            Self::Perplexity => "perplexity",
            Self::Ollama => "ollama",
            Self::Vllm => "vllm",
            Self::Mock => "mock",
            Self::Gemini => "gemini",
            Self::Bedrock => "bedrock",
        }
    }

    /// Whether the kind is served by the `openai` implementation: `openai`, `azure` and the
    /// presets.
    pub const fn speaks_openai(self) -> bool {
        matches!(self, Self::Openai | Self::Azure) || preset(self).is_some()
    }

    /// Whether a setting [`KIND_SETTINGS`] gives to `owner` is taken by this kind: settings of
    /// `openai` are taken by every kind that speaks OpenAI.
    pub(crate) fn takes(self, owner: Self) -> bool {
        self == owner || (owner == Self::Openai && self.speaks_openai())
    }
}

/// The settings only some kinds take, and which. A setting written on a provider of another
/// kind is refused by name rather than ignored, since it would silently do nothing.
pub(crate) const KIND_SETTINGS: [(&str, Kind); 25] = [
    ("base_url", Kind::Openai),
    ("keys", Kind::Openai),
    ("headers", Kind::Openai),
    ("connect_timeout", Kind::Openai),
    ("base_url", Kind::Gemini),
    ("keys", Kind::Gemini),
    ("headers", Kind::Gemini),
    ("connect_timeout", Kind::Gemini),
    ("base_url", Kind::Anthropic),
    ("keys", Kind::Anthropic),
    ("headers", Kind::Anthropic),
    ("connect_timeout", Kind::Anthropic),
    ("anthropic_version", Kind::Anthropic),
    ("default_max_tokens", Kind::Anthropic),
    ("api_version", Kind::Azure),
    ("deployments", Kind::Azure),
    ("latency", Kind::Mock),
    ("chunk_delay", Kind::Mock),
    ("base_url", Kind::Bedrock),
    ("headers", Kind::Bedrock),
    ("connect_timeout", Kind::Bedrock),
    ("region", Kind::Bedrock),
    ("access_key_id", Kind::Bedrock),
    ("secret_access_key", Kind::Bedrock),
    ("session_token", Kind::Bedrock),
];
