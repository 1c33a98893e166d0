//! Off the request path: the plugin runtime as the `weir plugin inspect|test` commands use it.
//! Components are compiled, linked, instantiated and called exactly as the gateway does
//! (same engine, linker, guards and conversions); this module only measures and reports.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Map, Value};

use super::bindings::{Hooks, PACKAGE, VERSION};
use super::convert::{RequestDecision, ResponseDecision};
use super::engine;
use super::plugin::Plugin;
use crate::config::PluginConfig;
use crate::error::Error;
use crate::exchange::{GatewayRequest, GatewayResponse, JsonBody};
use crate::format::Endpoint;

/// How the compiled code was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompileSource {
    /// Compiled now.
    Compiled,
    /// Loaded from the compile cache.
    Cache,
}

/// What `weir plugin inspect` reports.
#[derive(Debug)]
pub struct Inspection {
    /// Component size in bytes.
    pub size: usize,
    /// The `weir:plugin/handler` export it targets (name with version), if any.
    pub target: Option<String>,
    /// The contract version check: `Ok` or why the gateway refuses it.
    pub contract: Result<(), String>,
    /// Compile (or cache load) time and which it was.
    pub compile: (Duration, CompileSource),
    /// Imports and what Weir grants for each.
    pub imports: Vec<(String, &'static str)>,
    /// Hooks returned by `init` and the time of one instantiate + `init`, or why loading failed.
    pub loaded: Result<(Vec<&'static str>, Duration), String>,
}

/// What Weir grants for an import (by interface name).
pub fn grant(import: &str) -> &'static str {
    let iface = import.split('@').next().unwrap_or(import);
    match iface {
        i if i.starts_with("weir:plugin/") => "granted",
        "wasi:filesystem/types" | "wasi:filesystem/preopens" => "linked; no directories are preopened",
        "wasi:cli/environment" => "linked; empty environment and arguments",
        "wasi:cli/stdin" => "linked; stdin is empty",
        "wasi:cli/stdout" | "wasi:cli/stderr" => "linked; lines go to the gateway log",
        i if i.starts_with("wasi:sockets/") => "linked; all network access is denied",
        i if i.starts_with("wasi:") => "granted",
        _ => "NOT provided: the gateway will refuse to load this component",
    }
}

/// A `PluginConfig` for `path` with one instance and `config` as its `config` table.
///
/// # Errors
/// When `config` is not a JSON object representable as TOML.
pub fn plugin_config(path: &Path, config: Option<&Value>) -> Result<PluginConfig, String> {
    let mut cfg: PluginConfig = toml::from_str(&format!("name = \"plugin\"\npath = {:?}\ninstances = 1\n", path))
        .map_err(|e| format!("internal: {e}"))?;
    if let Some(v) = config {
        cfg.config = serde_json::from_value(v.clone()).map_err(|e| format!("config must be a JSON object: {e}"))?;
    }
    Ok(cfg)
}

/// Compiles (through `cache`, if any), checks the contract, lists imports, then loads one
/// instance (instantiate + `init` under the gateway's guards) and times it.
///
/// # Errors
/// The file cannot be read or is not a component at all.
pub async fn inspect(cfg: &PluginConfig, cache: Option<&Path>) -> Result<Inspection, String> {
    let rt = engine::runtime()?;
    let bytes = super::builtin::read(&cfg.path).await?;
    // Without a cache dir, compile into a private temporary one so loading does not compile again.
    let tmp = TempCache::new(cache);
    let dir = tmp.dir();
    let source = if engine::cache_path(&rt.engine, &bytes, dir).exists() {
        CompileSource::Cache
    } else {
        CompileSource::Compiled
    };
    let started = Instant::now();
    let (b, d) = (bytes.clone(), dir.to_path_buf());
    let compiled = tokio::task::spawn_blocking(move || engine::compile(rt, &b, Some(&d)))
        .await
        .map_err(|e| format!("compile task failed: {e}"))?;
    let compile = (started.elapsed(), source);
    let contract = compiled.as_ref().map(|_| ()).map_err(Clone::clone);
    // The raw component (even one of another contract version) for the listing.
    let component = match compiled {
        Ok(c) => c,
        Err(e) if e.starts_with("invalid component") => return Err(e),
        Err(_) => wasmtime::component::Component::new(&rt.engine, &bytes).map_err(|e| format!("{e:#}"))?,
    };
    let ty = component.component_type();
    let imports = ty.imports(&rt.engine).map(|(name, _)| (name.to_owned(), grant(name))).collect();
    let target = ty.exports(&rt.engine).map(|(name, _)| name).find(|n| n.starts_with(PACKAGE)).map(str::to_owned);
    let loaded = match contract {
        Ok(()) => load_and_time(cfg, dir).await,
        Err(ref e) => Err(e.clone()),
    };
    Ok(Inspection { size: bytes.len(), target, contract, compile, imports, loaded })
}

async fn load_and_time(cfg: &PluginConfig, cache: &Path) -> Result<(Vec<&'static str>, Duration), String> {
    let plugin = Plugin::load(cfg, engine::runtime()?, Some(cache.to_path_buf())).await?;
    // Instantiate + init a few more instances and keep the best: the first pays for page faults.
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        plugin.make_instance().await?;
        best = best.min(started.elapsed());
    }
    Ok((hook_names(plugin.hooks), best))
}

/// The names of a hook set.
pub fn hook_names(hooks: Hooks) -> Vec<&'static str> {
    [
        (Hooks::ON_REQUEST, "on-request"),
        (Hooks::ON_RESPONSE, "on-response"),
        (Hooks::ON_STREAM_CHUNK, "on-stream-chunk"),
    ]
    .into_iter()
    .filter(|(h, _)| hooks.contains(*h))
    .map(|(_, n)| n)
    .collect()
}

/// The contract this gateway implements, e.g. `weir:plugin@0.1.0`.
pub fn contract() -> String {
    format!("{PACKAGE}@{VERSION}")
}

/// A plugin loaded for offline hook runs (`weir plugin test`).
pub struct TestRun {
    plugin: Arc<Plugin>,
    _cache: TempCache,
}

/// One hook call's result.
pub struct Call<T> {
    /// What the plugin decided, or why the call failed (trap, fuel, deadline, memory, ...).
    pub outcome: Result<T, String>,
    /// Fuel the call used.
    pub fuel: u64,
    /// Wall time of the call (checkout, guards, call, conversion).
    pub time: Duration,
}

/// What `on-request` decided, in plain terms.
pub enum RequestOutcome {
    /// Continue to the provider with this (possibly edited) request body.
    Continue(Map<String, Value>),
    /// The plugin answered itself.
    Respond(GatewayResponse),
    /// The plugin refused: status and OpenAI-style error body.
    Reject(u16, Bytes),
}

impl TestRun {
    /// Loads `cfg` (one instance) as the gateway would.
    ///
    /// # Errors
    /// Why it cannot load (same messages as the gateway's).
    pub async fn load(cfg: &PluginConfig, cache: Option<&Path>) -> Result<Self, String> {
        let tmp = TempCache::new(cache);
        let plugin = Plugin::load(cfg, engine::runtime()?, Some(tmp.dir().to_path_buf())).await?;
        Ok(Self { plugin, _cache: tmp })
    }

    /// The hooks `init` returned.
    pub fn hooks(&self) -> Vec<&'static str> {
        hook_names(self.plugin.hooks)
    }

    /// Whether the plugin implements `on-request` / `on-response`.
    pub fn has(&self, hook: &str) -> bool {
        self.hooks().contains(&hook)
    }

    /// Runs `on-request` on `req` (edited in place).
    pub async fn on_request(&self, req: &mut GatewayRequest) -> Call<RequestOutcome> {
        let started = Instant::now();
        let result = self.plugin.on_request(req, None).await;
        let time = started.elapsed();
        let outcome = match result {
            Ok((RequestDecision::Continue, _)) => Ok(RequestOutcome::Continue(req.body.clone().into_map())),
            Ok((RequestDecision::Respond(r), _)) => Ok(RequestOutcome::Respond(r)),
            Ok((RequestDecision::Reject(e), _)) => Ok(reject(&e)),
            Err(f) => Err(failure_text(f.describe(), f.detail())),
        };
        Call { outcome, fuel: self.plugin.last_fuel_used(), time }
    }

    /// Runs `on-response` on `resp` (edited in place, or replaced).
    pub async fn on_response(&self, req: &GatewayRequest, resp: &mut GatewayResponse) -> Call<()> {
        let shared = Arc::new(GatewayRequest {
            id: req.id.clone(),
            endpoint: req.endpoint,
            model: req.model.clone(),
            stream: req.stream,
            body: JsonBody::default(),
            headers: req.headers.clone(),
            affinity: req.affinity,
        });
        let started = Instant::now();
        let result = self.plugin.on_response(&shared, None, resp).await;
        let time = started.elapsed();
        let outcome = match result {
            Ok(ResponseDecision::Pass) => Ok(()),
            Ok(ResponseDecision::Replace(r)) => {
                *resp = r;
                Ok(())
            }
            Err(f) => Err(failure_text(f.describe(), f.detail())),
        };
        Call { outcome, fuel: self.plugin.last_fuel_used(), time }
    }
}

fn reject(e: &Error) -> RequestOutcome {
    RequestOutcome::Reject(e.status().as_u16(), e.body())
}

fn failure_text(describe: &str, detail: &str) -> String {
    if detail.is_empty() { describe.to_owned() } else { format!("{describe}: {detail}") }
}

/// A request as the gateway would hand it to plugins, from an OpenAI-style JSON body.
///
/// # Errors
/// The body is not an object or fails the gateway's validation.
pub fn request(endpoint: Endpoint, body: Value, headers: HeaderMap) -> Result<GatewayRequest, String> {
    let Value::Object(body) = body else { return Err("the request must be a JSON object".into()) };
    let (model, stream) = crate::api::validate(endpoint, &body).map_err(|e| e.message.to_string())?;
    Ok(GatewayRequest {
        id: "req_plugin_test".into(),
        endpoint,
        model,
        stream,
        body: JsonBody::from_map(body),
        headers,
        affinity: crate::affinity::Affinity::NONE,
    })
}

/// A compile cache directory: the given one, or a private temporary one removed on drop.
struct TempCache {
    dir: PathBuf,
    owned: bool,
}

impl TempCache {
    fn new(given: Option<&Path>) -> Self {
        match given {
            Some(d) => Self { dir: d.to_path_buf(), owned: false },
            None => {
                let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                let dir = std::env::temp_dir().join(format!("weir-plugin-{}-{}", std::process::id(), n.as_nanos()));
                Self { dir, owned: true }
            }
        }
    }

    fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TempCache {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
