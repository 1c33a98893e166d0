//! The embedded default configuration used by `weir serve` without `--config`: a built-in
//! `mock` provider (no key, no network) plus OpenAI / Anthropic when their keys are set.

use super::{Config, ConfigError};

/// The default TOML, shipped inside the binary.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Builds the embedded default config, adding real providers for the API keys found in the
/// environment (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`).
///
/// # Errors
/// Only if the embedded TOML is broken (a bug caught by the tests).
pub fn embedded_default() -> Result<Config, ConfigError> {
    let mut text = String::from(DEFAULT_TOML);
    let has = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty());
    if has("OPENAI_API_KEY") {
        text.push_str(OPENAI);
    }
    if has("ANTHROPIC_API_KEY") {
        text.push_str(ANTHROPIC);
    }
    let mut cfg = Config::from_toml(&text)?;
    keep_embedded_plugins(&mut cfg, crate::builtin::embedded);
    Ok(cfg)
}

/// The default chain names the first-party plugins embedded in the binary (`builtin:`). A
/// binary built before the plugins were has none: leave them out with a warning, since the
/// embedded default must always start.
pub(super) fn keep_embedded_plugins(cfg: &mut Config, embedded: impl Fn(&str) -> Result<&'static [u8], String>) {
    cfg.plugins.retain(|p| {
        let Some(name) = crate::builtin::name(&p.path) else { return true };
        match embedded(name) {
            Ok(_) => true,
            Err(reason) => {
                tracing::warn!(plugin = %p.name, "default plugin left out: {reason}");
                false
            }
        }
    });
}

const OPENAI: &str = r#"
[[providers]]
name = "openai"
kind = "openai"
base_url = "https://api.openai.com/v1"
keys = [{ value = "${OPENAI_API_KEY}", weight = 1 }]
models = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
"#;

// The native Messages API: an Anthropic client's bytes pass through (prompt caching intact),
// OpenAI clients are translated.
const ANTHROPIC: &str = r#"
[[providers]]
name = "anthropic"
kind = "anthropic"
keys = [{ value = "${ANTHROPIC_API_KEY}", weight = 1 }]
models = ["claude-sonnet-4-5", "claude-haiku-4-5"]
"#;
