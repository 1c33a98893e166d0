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
    locate_default_plugins(&mut cfg);
    Ok(cfg)
}

/// The default chain names the first-party plugins by their build path in the repository.
/// Look for them beside the working directory and beside the binary (`target/<profile>/weir`
/// → repository root), and leave out, with a warning, any that are not built: the embedded
/// default must always start.
pub(super) fn locate_default_plugins(cfg: &mut Config) {
    let exe_root = std::env::current_exe().ok().and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()));
    cfg.plugins.retain_mut(|p| {
        let candidates = std::iter::once(p.path.clone()).chain(exe_root.iter().map(|root| root.join(&p.path)));
        for candidate in candidates {
            if candidate.is_file() {
                p.path = candidate;
                return true;
            }
        }
        tracing::warn!(
            plugin = %p.name,
            path = %p.path.display(),
            "default plugin not built; starting without it (scripts/serve.sh builds the plugins)"
        );
        false
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

// Anthropic serves an OpenAI-compatible chat endpoint at /v1; a native kind comes later.
const ANTHROPIC: &str = r#"
[[providers]]
name = "anthropic"
kind = "openai"
base_url = "https://api.anthropic.com/v1"
keys = [{ value = "${ANTHROPIC_API_KEY}", weight = 1 }]
models = ["claude-sonnet-4-5", "claude-haiku-4-5"]
"#;
