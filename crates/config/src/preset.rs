//! The kinds that speak OpenAI's API besides `openai` itself: Azure OpenAI (its own addressing
//! and auth header, [`AzureConfig`]) and the services whose only difference is a known base URL
//! ([`preset`]). All of them are [`crate::ProviderKind::OpenAi`]: keys, headers, secrets and
//! redaction work the same.

use std::collections::BTreeMap;

use super::Kind;

/// `api_version` of an `azure` provider that sets none: the latest GA version of Azure OpenAI's
/// data-plane inference API.
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";

/// What a preset kind fills in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// `base_url` when the table sets none.
    pub base_url: &'static str,
    /// The service refuses requests without an API key, so `keys` is required.
    pub needs_key: bool,
}

/// The preset of `kind`, `None` for `openai`, `azure` and kinds of other formats.
pub const fn preset(kind: Kind) -> Option<Preset> {
    let (base_url, needs_key) = match kind {
        Kind::Groq => ("https://api.groq.com/openai/v1", true),
        Kind::Mistral => ("https://api.mistral.ai/v1", true),
        Kind::Deepseek => ("https://api.deepseek.com/v1", true),
        Kind::Together => ("https://api.together.xyz/v1", true),
        Kind::Fireworks => ("https://api.fireworks.ai/inference/v1", true),
        Kind::Openrouter => ("https://openrouter.ai/api/v1", true),
        Kind::Xai => ("https://api.x.ai/v1", true),
        Kind::Perplexity => ("https://api.perplexity.ai", true),
        // Local servers: no key unless they were started with one.
        Kind::Ollama => ("http://127.0.0.1:11434/v1", false),
        Kind::Vllm => ("http://127.0.0.1:8000/v1", false),
        Kind::Openai | Kind::Azure | Kind::Anthropic | Kind::Gemini | Kind::Bedrock | Kind::Mock => return None,
    };
    Some(Preset { base_url, needs_key })
}

/// How an `azure` provider addresses its deployments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureConfig {
    /// The `api-version` query parameter of every request.
    pub api_version: String,
    /// Model name (as clients and routing know it) -> deployment name. A model not in the map
    /// is sent to the deployment of its own name.
    pub deployments: BTreeMap<String, String>,
}

impl AzureConfig {
    /// The deployment that serves `model`.
    pub fn deployment<'a>(&'a self, model: &'a str) -> &'a str {
        self.deployments.get(model).map_or(model, String::as_str)
    }
}

/// Whether `s` can stand in a URL path segment or query value as it is: Azure deployment names
/// and API versions are letters, digits, `-`, `_` and `.`.
pub fn url_safe(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, ProviderKind};

    fn parse(table: &str) -> Result<Config, crate::ConfigError> {
        Config::from_toml(&format!("[[providers]]\nname = \"p\"\n{table}"))
    }

    fn openai(cfg: &Config) -> &crate::OpenAiConfig {
        let ProviderKind::OpenAi(o) = &cfg.providers[0].kind else { panic!("not an OpenAI kind") };
        o
    }

    #[test]
    fn a_preset_fills_in_its_base_url_and_keeps_an_override() {
        let cfg = parse("kind = \"groq\"\nkeys = [{ value = \"gsk-1\" }]\n").unwrap();
        assert_eq!(openai(&cfg).base_url, "https://api.groq.com/openai/v1");
        assert_eq!(cfg.providers[0].kind.kind(), Kind::Groq);
        let cfg =
            parse("kind = \"mistral\"\nbase_url = \"http://127.0.0.1:9/v1\"\nkeys = [{ value = \"k-1\" }]\n").unwrap();
        assert_eq!(openai(&cfg).base_url, "http://127.0.0.1:9/v1");
        for kind in ["ollama", "vllm"] {
            let cfg = parse(&format!("kind = \"{kind}\"\n")).unwrap();
            assert!(openai(&cfg).base_url.starts_with("http://127.0.0.1:"), "{kind}");
        }
    }

    #[test]
    fn a_preset_whose_service_needs_a_key_refuses_a_table_without_one() {
        for kind in ["groq", "mistral", "deepseek", "together", "fireworks", "openrouter", "xai", "perplexity"] {
            let err = parse(&format!("kind = \"{kind}\"\n")).unwrap_err().to_string();
            assert!(err.contains("providers[0].keys") && err.contains(kind), "{kind}: {err}");
        }
    }

    #[test]
    fn azure_takes_its_deployments_and_version_and_routes_their_models() {
        let cfg = parse(
            "kind = \"azure\"\nbase_url = \"https://res.openai.azure.com\"\nkeys = [{ value = \"az-key-1\" }]\n\
             deployments = { gpt-4o = \"prod-4o\" }\n",
        )
        .unwrap();
        let azure = openai(&cfg).azure.as_ref().unwrap();
        assert_eq!(azure.api_version, DEFAULT_AZURE_API_VERSION);
        assert_eq!((azure.deployment("gpt-4o"), azure.deployment("other")), ("prod-4o", "other"));
        assert_eq!(cfg.providers[0].models, ["gpt-4o"]);
        let shown = serde_json::to_value(cfg.redacted()).unwrap();
        assert_eq!(shown["providers"][0]["kind"], "azure");
        assert_eq!(shown["providers"][0]["deployments"]["gpt-4o"], "prod-4o");
        let again = Config::from_toml(&toml::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(again.providers, cfg.providers);
    }

    #[test]
    fn azure_refuses_a_missing_key_a_bad_deployment_and_settings_of_others() {
        let base = "kind = \"azure\"\nbase_url = \"https://res.openai.azure.com\"\n";
        let err = parse(base).unwrap_err().to_string();
        assert!(err.contains("providers[0].keys"), "{err}");
        // An Entra ID token in the headers is credentials enough.
        assert!(parse(&format!("{base}headers = {{ authorization = \"Bearer tok\" }}\n")).is_ok());
        let err =
            parse(&format!("{base}keys = [{{ value = \"k-1\" }}]\ndeployments = {{ m = \"a/b\" }}\n")).unwrap_err();
        assert!(err.to_string().contains("providers[0].deployments.m"), "{err}");
        let err = parse(&format!("{base}keys = [{{ value = \"k-1\" }}]\napi_version = \"x y\"\n")).unwrap_err();
        assert!(err.to_string().contains("providers[0].api_version"), "{err}");
        let err = parse("kind = \"openai\"\nbase_url = \"http://x/v1\"\napi_version = \"2024-10-21\"\n").unwrap_err();
        assert!(err.to_string().contains("only kind = \"azure\""), "{err}");
        let err = parse("kind = \"mock\"\nmodels = [\"a\"]\nkeys = [{ value = \"k-1\" }]\n").unwrap_err();
        assert!(err.to_string().contains("or azure or a preset"), "{err}");
    }
}
