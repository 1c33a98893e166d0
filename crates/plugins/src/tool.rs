//! Off the request path: the plugin runtime as the `weir plugin inspect|test` commands use it.
//! Components are compiled, linked, instantiated and called exactly as the gateway does
//! (same engine, linker, guards and conversions); this module only measures and reports.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Map, Value};

use super::bindings::{Contract, Hooks, PACKAGE, VERSION};
use super::convert::{ChunkDecision, RequestDecision, ResponseDecision};
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
    /// For a component built for the legacy `weir:plugin@0.1.0`: what it is limited to and
    /// the steps that move it to the current version, one per line.
    pub upgrade: Option<Vec<String>>,
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

/// A `PluginConfig` for `path` with one instance and `config` as its `config` table, named
/// after the file (its log lines then carry that name, as in the gateway).
///
/// # Errors
/// When `config` is not a JSON object representable as TOML.
pub fn plugin_config(path: &Path, config: Option<&Value>) -> Result<PluginConfig, String> {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin");
    let name = stem.rsplit(':').next().unwrap_or(stem);
    let mut cfg: PluginConfig =
        toml::from_str(&format!("name = {name:?}\npath = {:?}\ninstances = 1\n", path.display().to_string()))
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
    let contract = compiled.as_ref().map(|(_, c)| *c).map_err(Clone::clone);
    // The raw component (even one of another contract version) for the listing.
    let component = match compiled {
        Ok((c, _)) => c,
        Err(e) if e.starts_with("invalid component") => return Err(e),
        Err(_) => wasmtime::component::Component::new(&rt.engine, &bytes).map_err(|e| format!("{e:#}"))?,
    };
    let ty = component.component_type();
    let imports = ty.imports(&rt.engine).map(|(name, _)| (name.to_owned(), grant(name))).collect();
    let target = ty.exports(&rt.engine).map(|(name, _)| name).find(|n| n.starts_with(PACKAGE)).map(str::to_owned);
    let upgrade = matches!(contract, Ok(Contract::V0_1)).then(|| upgrade_steps(calls_legacy_endpoint(&ty, &rt.engine)));
    let loaded = match contract {
        Ok(_) => load_and_time(cfg, dir).await,
        Err(ref e) => Err(e.clone()),
    };
    let contract = contract.map(drop);
    Ok(Inspection { size: bytes.len(), target, contract, upgrade, compile, imports, loaded })
}

/// Whether a component imports `request.endpoint` of `weir:plugin@0.1.x`, which 0.2 replaced.
/// Components list only the functions they call, so this says whether the source uses it.
fn calls_legacy_endpoint(ty: &wasmtime::component::types::Component, engine: &wasmtime::Engine) -> bool {
    use wasmtime::component::types::ComponentItem;
    ty.imports(engine).any(|(name, import)| {
        name.starts_with(&format!("{PACKAGE}/types@0.1."))
            && matches!(&import.ty, ComponentItem::ComponentInstance(i)
                if i.get_export(engine, "[method]request.endpoint").is_some())
    })
}

/// What the owner of a `weir:plugin@0.1.0` component is told: what it is limited to, and what
/// to change to move it to the current contract.
fn upgrade_steps(calls_endpoint: bool) -> Vec<String> {
    let old = Contract::V0_1.version();
    let mut steps = vec![
        format!(
            "built for {PACKAGE}@{old} (legacy, still loaded): it runs on OpenAI-format requests only and is \
             skipped on any other API format"
        ),
        format!("to move it to {PACKAGE}@{VERSION}:"),
    ];
    if calls_endpoint {
        steps.push(
            "- replace request.endpoint() (it calls it) with request.operation(): \"chat\" where it had \
             chat-completions, \"embeddings\" where it had embeddings; treat any other value as not yours"
                .into(),
        );
    }
    steps.push(
        "- where it reads or writes JSON (body, get, set, responses, stream chunks), check first that \
         request.api-format() is \"openai\"; model, set-model, is-stream and prompt-texts work on every format"
            .into(),
    );
    steps.push(format!(
        "- rebuild it against this gateway's wit/ ({PACKAGE}@{VERSION}): Rust: weir-plugin-sdk 0.2; Python: \
         componentize-py -d wit; JavaScript: import from 'weir:plugin/<interface>@{VERSION}'; C and Go: \
         regenerate the bindings with wit-bindgen (`weir plugin new` writes a project with them)"
    ));
    steps
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

/// The contracts this gateway implements, e.g. `weir:plugin@0.2.1, and still loads @0.1.0`.
pub fn contract() -> String {
    format!("{PACKAGE}@{VERSION}, and still loads @{}", Contract::V0_1.version())
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
            Ok((RequestDecision::Reject(e), _)) => Ok(reject(&e, req)),
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

/// What `on-stream-chunk` decided for one event payload.
pub enum ChunkOutcome {
    /// Sent unchanged.
    Pass,
    /// Sent as these bytes instead.
    Rewrite(Bytes),
    /// Not sent.
    Drop,
    /// The stream ends with this error: status and error body.
    Abort(u16, Bytes),
}

impl TestRun {
    /// Runs `on-stream-chunk` on one event payload of `req`'s streamed answer.
    pub async fn on_stream_chunk(&self, req: &GatewayRequest, chunk: Bytes) -> Call<ChunkOutcome> {
        let shared = Arc::new(GatewayRequest {
            id: req.id.clone(),
            endpoint: req.endpoint,
            model: req.model.clone(),
            stream: true,
            body: JsonBody::default(),
            headers: req.headers.clone(),
            affinity: req.affinity,
        });
        let started = Instant::now();
        let result = self.plugin.on_stream_chunk(&shared, None, chunk).await;
        let time = started.elapsed();
        let outcome = match result {
            Ok(ChunkDecision::Pass) => Ok(ChunkOutcome::Pass),
            Ok(ChunkDecision::Rewrite(b)) => Ok(ChunkOutcome::Rewrite(b)),
            Ok(ChunkDecision::Drop) => Ok(ChunkOutcome::Drop),
            Ok(ChunkDecision::Abort(e)) => {
                Ok(ChunkOutcome::Abort(e.status().as_u16(), crate::api::error_body(req.endpoint.format, &e)))
            }
            Err(f) => Err(failure_text(f.describe(), f.detail())),
        };
        Call { outcome, fuel: self.plugin.last_fuel_used(), time }
    }
}

/// The compile cache `weir plugin` uses by default: the gateway's own (`plugin_runtime`'s
/// default, under `$XDG_CACHE_HOME` or `~/.cache`), so a second run does not compile again.
pub fn default_cache_dir() -> Option<PathBuf> {
    crate::config::PluginRuntimeConfig::default().effective_cache_dir()
}

fn reject(e: &Error, req: &GatewayRequest) -> RequestOutcome {
    RequestOutcome::Reject(e.status().as_u16(), crate::api::error_body(req.endpoint.format, e))
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
