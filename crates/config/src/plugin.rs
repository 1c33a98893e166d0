//! `[[plugins]]` and `[plugin_runtime]`: which wasm components run in the hook chain, with
//! their guards, and runtime-wide plugin settings (compiled-component cache). Validated here.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Most plugins in one chain (the chain tracks which plugins saw a request in a 64-bit set).
pub const MAX_PLUGINS: usize = 64;
/// Largest `memory_limit`, and the size of one memory slot in the pooling allocator. One
/// bulk-memory instruction (`memory.fill`/`memory.copy`) runs to its end past any deadline.
/// Wasmtime charges it 1 fuel per byte up front, so the call's fuel bounds it (the default
/// 50M: ~50 MB, ~45 ms), and this cap bounds it whatever the fuel: filling 256 MiB of fresh
/// pages takes ~0.15 s on an idle 2-core VM, where a 1 GiB cap let one fill run 1.1-1.6 s past
/// a 100 ms deadline, holding its serving thread and the other requests on it.
pub const MAX_MEMORY_LIMIT: usize = 256 * 1024 * 1024;

/// What a failing plugin does to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// The request fails with 5xx `plugin_error` naming the plugin.
    #[default]
    FailClosed,
    /// The plugin is skipped for this request; logged and counted.
    FailOpen,
}

/// `[[plugins]]`: one wasm component in the hook chain.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Unique name (metrics label, log tag, kv namespace).
    pub name: String,
    /// Path to the `.wasm` component (relative paths are relative to the config file), or
    /// `builtin:<name>` for a first-party plugin embedded in the binary (`builtin:prompt-guard`,
    /// `builtin:pii-redact`).
    pub path: PathBuf,
    /// Passed to the plugin's `init` as JSON. Values taken from `${ENV}` are secrets: redacted
    /// in `GET /admin/config` and scrubbed from everything Weir sends or logs.
    #[serde(default)]
    pub config: toml::Table,
    /// The parts of `config` taken from the environment (filled in at load).
    #[serde(skip)]
    pub config_env: super::EnvValues,
    /// Warm instances kept ready; also the most concurrent calls into this plugin.
    #[serde(default = "default_instances")]
    pub instances: usize,
    /// Fuel (roughly wasm instructions) per hook call; stops runaway loops deterministically.
    #[serde(default = "default_fuel")]
    pub fuel: u64,
    /// Wall-clock deadline per hook call (also the longest wait for a free instance); stops
    /// stalls that fuel cannot see.
    #[serde(default = "default_plugin_timeout", with = "super::values::duration")]
    pub timeout: Duration,
    /// Linear memory cap per instance in bytes (at most 256 MiB); stops memory bombs, and
    /// bounds how long one bulk-memory instruction can run.
    #[serde(default = "default_memory_limit")]
    pub memory_limit: usize,
    /// Largest reply, rewrite, rejection or body edit a plugin may hand back, in bytes; stops a
    /// plugin from inflating responses.
    #[serde(default = "default_max_output_bytes")]
    pub max_output_bytes: usize,
    /// Calls after which an instance is replaced by a fresh one (0: never); bounds state and
    /// memory growth of long-lived instances (GC-language plugins grow).
    #[serde(default = "default_max_calls")]
    pub max_calls: u64,
    /// Fail closed (default) or open.
    #[serde(default)]
    pub on_error: OnError,
    /// Only run for requests routed to these providers (empty: all).
    #[serde(default)]
    pub providers: Vec<String>,
    /// Only run for these models, as requested when the hook runs (empty: all).
    #[serde(default)]
    pub models: Vec<String>,
}

fn default_instances() -> usize {
    4
}
fn default_fuel() -> u64 {
    50_000_000
}
fn default_plugin_timeout() -> Duration {
    Duration::from_millis(100)
}
fn default_memory_limit() -> usize {
    64 * 1024 * 1024
}
fn default_max_output_bytes() -> usize {
    1024 * 1024
}
fn default_max_calls() -> u64 {
    100_000
}

/// `[plugin_runtime]`: settings shared by all plugins.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PluginRuntimeConfig {
    /// Where compiled components are cached (keyed by content hash and engine compatibility
    /// hash), so restarts and reloads skip compilation. Default: `$XDG_CACHE_HOME/weir` or
    /// `~/.cache/weir`. Must be writable only by the gateway's user: cached files are native
    /// code.
    pub cache_dir: Option<PathBuf>,
    /// Turns the disk cache off (every start compiles).
    pub no_cache: bool,
    /// Client headers shown to plugins although their name looks like a credential (e.g.
    /// `["x-session-id"]`; any case). Default: none.
    pub expose_headers: Vec<String>,
    /// More client headers withheld from plugins, beyond the credential-looking ones (any
    /// case). Default: none.
    pub withhold_headers: Vec<String>,
    /// Linear memories the pooling allocator reserves address space for: about 4 GiB each,
    /// virtual, not resident; a plugin instance takes one per memory its component defines
    /// (one for most). Bounds the reservation (1,000 slots would reserve 4.2 TB). Default: sized
    /// from the first config loaded, see [`PluginRuntimeConfig::memory_slots`]. A plugin that
    /// does not fit fails to load (a reload is refused naming it). Takes effect on restart.
    pub max_memories: Option<u32>,
}

/// Memory slots per configured instance when sized from the config: a reload builds the new
/// chain beside the running one (x2), and a component may define a second memory (x2).
const SLOTS_PER_INSTANCE: u32 = 4;
/// Memory slots on top, for plugins added by reloads and admin uploads.
const SPARE_SLOTS: u32 = 32;
/// Most memory slots `max_memories` accepts (as many as the pool has instance slots).
pub const MAX_MEMORY_SLOTS: u32 = 1000;

impl PluginRuntimeConfig {
    /// The pooling allocator's memory slots: `max_memories`, or 4 per configured instance
    /// plus 32.
    pub fn memory_slots(&self, plugins: &[PluginConfig]) -> u32 {
        self.max_memories.unwrap_or_else(|| {
            let instances: usize = plugins.iter().map(|p| p.instances).sum();
            let sized = u32::try_from(instances).unwrap_or(u32::MAX).saturating_mul(SLOTS_PER_INSTANCE);
            sized.saturating_add(SPARE_SLOTS).min(MAX_MEMORY_SLOTS)
        })
    }

    /// The cache directory in effect, or `None` when caching is off or no home is known.
    pub fn effective_cache_dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        if let Some(dir) = &self.cache_dir {
            return Some(dir.clone());
        }
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        env("XDG_CACHE_HOME").or_else(|| env("HOME").map(|h| h.join(".cache"))).map(|base| base.join("weir"))
    }
}

/// Checks the plugin list against the provider names.
///
/// # Errors
/// [`ConfigError::Invalid`] for the first offending key.
pub(super) fn validate(
    plugins: &[PluginConfig],
    runtime: &PluginRuntimeConfig,
    providers: &HashSet<&str>,
) -> Result<(), ConfigError> {
    for (field, list) in [("expose_headers", &runtime.expose_headers), ("withhold_headers", &runtime.withhold_headers)]
    {
        for (i, name) in list.iter().enumerate() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(ConfigError::invalid(format!("plugin_runtime.{field}[{i}]"), "is not a valid header name"));
            }
        }
    }
    if runtime.max_memories.is_some_and(|n| n == 0 || n > MAX_MEMORY_SLOTS) {
        return Err(ConfigError::invalid(
            "plugin_runtime.max_memories",
            format!("must be between 1 and {MAX_MEMORY_SLOTS}"),
        ));
    }
    if plugins.len() > MAX_PLUGINS {
        return Err(ConfigError::invalid("plugins", format!("at most {MAX_PLUGINS} plugins")));
    }
    let mut names = HashSet::new();
    for (i, p) in plugins.iter().enumerate() {
        let key = |field: &str| format!("plugins[{i}].{field}");
        if p.name.is_empty()
            || p.name.len() > 64
            || !p.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::invalid(key("name"), "must be 1-64 characters of [A-Za-z0-9_-]"));
        }
        if !names.insert(p.name.as_str()) {
            return Err(ConfigError::invalid(key("name"), format!("duplicate plugin name {:?}", p.name)));
        }
        if let Some(builtin) = crate::builtin::name(&p.path)
            && !crate::builtin::KNOWN.contains(&builtin)
        {
            let known = crate::builtin::KNOWN.join(", ");
            return Err(ConfigError::invalid(
                key("path"),
                format!("no built-in plugin {builtin:?} (built-ins: {known})"),
            ));
        }
        if p.instances == 0 || p.instances > 1024 {
            return Err(ConfigError::invalid(key("instances"), "must be between 1 and 1024"));
        }
        if p.fuel == 0 {
            return Err(ConfigError::invalid(key("fuel"), "must be above 0"));
        }
        if p.timeout.is_zero() || p.timeout > Duration::from_secs(60) {
            return Err(ConfigError::invalid(key("timeout"), "must be above 0 and at most 60s"));
        }
        if p.memory_limit < 64 * 1024 || p.memory_limit > MAX_MEMORY_LIMIT {
            return Err(ConfigError::invalid(
                key("memory_limit"),
                format!("must be between 65536 (one wasm page) and {MAX_MEMORY_LIMIT}"),
            ));
        }
        if p.max_output_bytes == 0 {
            return Err(ConfigError::invalid(key("max_output_bytes"), "must be above 0"));
        }
        for prov in &p.providers {
            if !providers.contains(prov.as_str()) {
                return Err(ConfigError::invalid(key("providers"), format!("unknown provider {prov:?}")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    const BASE: &str = "[[providers]]\nname = \"mock\"\nkind = \"mock\"\nmodels = [\"m\"]\n";

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::from_toml(&format!("{BASE}{extra}"))
    }

    #[test]
    fn plugin_defaults_are_filled_in() {
        let cfg = parse("[[plugins]]\nname = \"p\"\npath = \"p.wasm\"\n").unwrap();
        let p = &cfg.plugins[0];
        assert_eq!(p.instances, 4);
        assert_eq!(p.on_error, OnError::FailClosed);
        assert_eq!(p.max_output_bytes, 1024 * 1024);
        assert_eq!(p.max_calls, 100_000);
    }

    #[test]
    fn unknown_plugin_provider_is_refused() {
        let err = parse("[[plugins]]\nname = \"p\"\npath = \"p.wasm\"\nproviders = [\"nope\"]\n").unwrap_err();
        assert!(err.to_string().contains("plugins[0].providers"), "{err}");
    }

    #[test]
    fn builtin_paths_must_name_a_builtin_and_stay_as_written() {
        let cfg = parse("[[plugins]]\nname = \"p\"\npath = \"builtin:pii-redact\"\n").unwrap();
        assert_eq!(cfg.plugins[0].path, PathBuf::from("builtin:pii-redact"));
        let err = parse("[[plugins]]\nname = \"p\"\npath = \"builtin:pii\"\n").unwrap_err().to_string();
        assert!(err.contains("plugins[0].path") && err.contains("pii-redact"), "{err}");
    }

    #[test]
    fn oversized_memory_limit_is_refused() {
        let err = parse("[[plugins]]\nname = \"p\"\npath = \"p.wasm\"\nmemory_limit = 4294967296\n").unwrap_err();
        assert!(err.to_string().contains("memory_limit"), "{err}");
        // A cap whose single fill outlasts the deadline many times over.
        let err = parse("[[plugins]]\nname = \"p\"\npath = \"p.wasm\"\nmemory_limit = 1073741824\n").unwrap_err();
        assert!(err.to_string().contains("268435456"), "{err}");
        assert!(parse("[[plugins]]\nname = \"p\"\npath = \"p.wasm\"\nmemory_limit = 268435456\n").is_ok());
    }

    #[test]
    fn plugin_header_lists_must_hold_header_names() {
        let err = parse("[plugin_runtime]\nexpose_headers = [\"x ok\"]\n").unwrap_err();
        assert!(err.to_string().contains("plugin_runtime.expose_headers[0]"), "{err}");
        assert!(parse("[plugin_runtime]\nwithhold_headers = [\"X-Tenant\"]\n").is_ok());
    }

    #[test]
    fn memory_slots_are_sized_from_the_instances_unless_set() {
        let two = "[[plugins]]\nname = \"a\"\npath = \"a.wasm\"\ninstances = 2\n\
                   [[plugins]]\nname = \"b\"\npath = \"b.wasm\"\ninstances = 3\n";
        let cfg = parse(two).unwrap();
        assert_eq!(cfg.plugin_runtime.memory_slots(&cfg.plugins), 4 * 5 + 32);
        let cfg = parse(&format!("[plugin_runtime]\nmax_memories = 10\n{two}")).unwrap();
        assert_eq!(cfg.plugin_runtime.memory_slots(&cfg.plugins), 10);
        let err = parse("[plugin_runtime]\nmax_memories = 0\n").unwrap_err().to_string();
        assert!(err.contains("plugin_runtime.max_memories"), "{err}");
    }

    #[test]
    fn runtime_cache_dir_is_configurable_and_can_be_disabled() {
        let cfg = parse("[plugin_runtime]\ncache_dir = \"/tmp/x\"\n").unwrap();
        assert_eq!(cfg.plugin_runtime.effective_cache_dir(), Some(PathBuf::from("/tmp/x")));
        let cfg = parse("[plugin_runtime]\nno_cache = true\n").unwrap();
        assert_eq!(cfg.plugin_runtime.effective_cache_dir(), None);
    }
}
