//! WebAssembly plugins: the `on_request`, `on_response` and `on_stream_chunk` phases.
//!
//! Chain semantics (also in `wit/handler.wit`): pre hooks run in configured order, post hooks
//! in reverse; a plugin that answers or refuses stops the chain, and the post hooks of every
//! plugin that saw the request (itself included) run on the answer, in reverse. Plugins out
//! of scope (provider/model lists; a `weir:plugin@0.1.0` plugin on a request in another API
//! format than OpenAI's) are skipped and do not "see" the request. A failing plugin
//! fails the request (`fail-closed`, 500 `plugin_error` naming it) or is skipped for it
//! (`fail-open`, logged and counted).
//!
//! A [`Chain`] is built whole by [`Chain::load`] (compile through the disk cache, link,
//! pre-instantiate, `init` every instance) before it serves anything, so a reload can build a
//! new chain beside the running one and swap it in; requests in flight finish on the old one.

#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench;
mod bindings;
pub use weir_config::builtin;
mod cache_trust;
mod convert;
mod engine;
mod guard;
mod host;
mod instances;
pub(crate) use weir_types::json::pointer as json;
mod metrics;
mod offload;
mod plugin;
mod ticker;
pub mod tool;
mod world;

use crate as plugins;
use weir_api as api;
use weir_config as config;
use weir_types::trace::{Span, SpanCx, SpanKind};
use weir_types::{affinity, error, exchange, format, secrets};

use std::sync::Arc;

use bytes::Bytes;

use self::bindings::Hooks;
use self::convert::{ChunkDecision, RequestDecision, ResponseDecision};
pub use self::engine::release_freed_heap;
use self::guard::Failure;
pub use self::host::kv::share_through as share_kv_through;
use self::metrics::Hook;
pub use self::metrics::describe as describe_metrics;
use self::plugin::Plugin;
pub use self::plugin::PoolStats;
use crate::config::{OnError, PluginConfig, PluginRuntimeConfig};
use crate::error::{Error, ErrorKind};
use crate::exchange::{GatewayRequest, GatewayResponse};

/// The plugins that saw a request (bit i = plugin i), so exactly they get its post hooks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen(u64);

impl Seen {
    fn insert(&mut self, i: usize) {
        self.0 |= 1 << i;
    }
    fn remove(&mut self, i: usize) {
        self.0 &= !(1 << i);
    }
    fn contains(self, i: usize) -> bool {
        self.0 & (1 << i) != 0
    }
}

/// What the pre-request hooks decided.
pub struct PreOutcome {
    /// Plugins that saw the request (their post hooks run, in reverse).
    pub seen: Seen,
    /// A plugin answered the request itself (short-circuit): skip the provider.
    pub respond: Option<GatewayResponse>,
    /// A plugin changed the model: route again.
    pub model_changed: bool,
    /// A plugin wrote to the body or the model: the client's bytes no longer say the request.
    pub edited: bool,
}

/// What the stream hooks decided for one chunk.
pub enum ChunkOutcome {
    /// Send this (possibly rewritten) chunk payload.
    Pass(Bytes),
    /// Send nothing for this chunk.
    Drop,
}

/// Per-request context given to post hooks: the request's metadata (its body has gone
/// upstream) and the provider.
pub struct HookCtx {
    /// The request.
    pub request: Arc<GatewayRequest>,
    /// Provider chosen (None on a short-circuit).
    pub provider: Option<Arc<str>>,
    /// Where the `on_response` hook spans go ([`SpanCx::NONE`] when not traced).
    pub trace: SpanCx,
}

/// The loaded plugin chain of one config snapshot.
#[derive(Default)]
pub struct Chain {
    plugins: Vec<Arc<Plugin>>,
}

impl Chain {
    /// A chain with no plugins.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Loads the configured plugins: compile (through the disk cache, on a blocking thread),
    /// link, pre-instantiate and `init` every instance. Nothing is shared with a running
    /// chain except compiled code in the cache and each plugin's kv store.
    ///
    /// # Errors
    /// A message naming the plugin that failed to load and why (unreadable file, invalid
    /// component, unsupported contract version, unsatisfied import, `init` refused its
    /// config or failed).
    pub async fn load(configs: &[PluginConfig], runtime: &PluginRuntimeConfig) -> Result<Self, String> {
        if configs.is_empty() {
            return Ok(Self::empty());
        }
        engine::size_pool(runtime.memory_slots(configs));
        let rt = engine::runtime()?;
        let cache = runtime.effective_cache_dir();
        let mut plugins = Vec::with_capacity(configs.len());
        for cfg in configs {
            let p = Plugin::load(cfg, rt, cache.clone()).await.map_err(|e| format!("plugin {}: {e}", cfg.name))?;
            plugins.push(p);
        }
        Ok(Self { plugins })
    }

    /// Names of the plugins, in chain order.
    pub fn names(&self) -> Vec<String> {
        self.plugins.iter().map(|p| p.name.to_string()).collect()
    }

    /// Whether the chain has no plugins.
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// Whether some plugin has an `on-request` hook (and so may read the request body).
    pub fn has_request_hooks(&self) -> bool {
        self.plugins.iter().any(|p| p.hooks.contains(Hooks::ON_REQUEST))
    }

    /// The names of the plugins in `seen`, in chain order (for the request record).
    pub fn seen_names(&self, seen: Seen) -> Vec<String> {
        (self.plugins.iter().enumerate()).filter(|(i, _)| seen.contains(*i)).map(|(_, p)| p.name.to_string()).collect()
    }

    /// Pool counters of every plugin, in chain order.
    pub fn stats(&self) -> Vec<PoolStats> {
        self.plugins.iter().map(|p| p.stats()).collect()
    }

    /// Runs `on-request` hooks in order (the `on_request` phase). `provider` is where the
    /// model routes before the chain runs (for provider-scoped plugins).
    ///
    /// # Errors
    /// A plugin rejected the request (`PluginRejected`), or failed closed (`PluginFailed`).
    pub async fn on_request(&self, req: &mut GatewayRequest, provider: Option<&Arc<str>>) -> Result<PreOutcome, Error> {
        self.on_request_traced(req, provider, &SpanCx::NONE).await
    }

    /// [`Chain::on_request`] with each hook call a child span of `trace`.
    ///
    /// # Errors
    /// As [`Chain::on_request`].
    pub async fn on_request_traced(
        &self,
        req: &mut GatewayRequest,
        provider: Option<&Arc<str>>,
        trace: &SpanCx,
    ) -> Result<PreOutcome, Error> {
        let mut out = PreOutcome { seen: Seen::default(), respond: None, model_changed: false, edited: false };
        for (i, p) in self.plugins.iter().enumerate() {
            if !p.in_scope(req.endpoint.format, provider.map(|p| &**p), &req.model) {
                continue;
            }
            out.seen.insert(i);
            if !p.hooks.contains(Hooks::ON_REQUEST) {
                continue;
            }
            let mut span = hook_span(trace, p, Hook::Request);
            match p.on_request(req, provider).await {
                Ok((decision, edits)) => {
                    out.model_changed |= edits.model_changed;
                    out.edited |= edits.edited;
                    match decision {
                        RequestDecision::Continue => span.set("weir.plugin.decision", "continue"),
                        RequestDecision::Respond(resp) => {
                            span.set("weir.plugin.decision", "respond");
                            out.respond = Some(resp);
                            return Ok(out);
                        }
                        RequestDecision::Reject(e) => {
                            span.set("weir.plugin.decision", "reject");
                            return Err(e);
                        }
                    }
                }
                Err(f) => {
                    span.fail(f.label());
                    failed(p, Hook::Request, &f, &req.id)?;
                    out.seen.remove(i);
                    // A call that failed may have written to the request before it stopped:
                    // the client's bytes can no longer be trusted to say it.
                    out.edited = true;
                }
            }
        }
        Ok(out)
    }

    /// Runs `on-response` hooks of the plugins in `seen`, in reverse (the last hooks of a
    /// request, so a fail-open failure here has nothing left to skip).
    ///
    /// # Errors
    /// A plugin failed closed.
    pub async fn on_response(&self, ctx: &HookCtx, seen: Seen, resp: &mut GatewayResponse) -> Result<(), Error> {
        for (i, p) in self.plugins.iter().enumerate().rev() {
            if !seen.contains(i) || !p.hooks.contains(Hooks::ON_RESPONSE) {
                continue;
            }
            let mut span = hook_span(&ctx.trace, p, Hook::Response);
            match p.on_response(&ctx.request, ctx.provider.as_ref(), resp).await {
                Ok(ResponseDecision::Pass) => {}
                Ok(ResponseDecision::Replace(r)) => *resp = r,
                Err(f) => {
                    span.fail(f.label());
                    failed(p, Hook::Response, &f, &ctx.request.id)?;
                }
            }
        }
        Ok(())
    }

    /// Whether any plugin in `seen` has a stream hook (if not, chunks pass untouched).
    pub fn has_stream_hooks(&self, seen: Seen) -> bool {
        self.plugins.iter().enumerate().any(|(i, p)| seen.contains(i) && p.hooks.contains(Hooks::ON_STREAM_CHUNK))
    }

    /// Runs `on-stream-chunk` hooks of the plugins in `seen`, in reverse, on one chunk. A
    /// fail-open plugin whose call failed leaves `seen`, so it is skipped for the rest of the
    /// stream: a plugin spinning to its deadline costs the stream one deadline, not one per
    /// chunk.
    ///
    /// # Errors
    /// A plugin aborted the stream, or failed closed.
    pub async fn on_stream_chunk(&self, ctx: &HookCtx, seen: &mut Seen, chunk: Bytes) -> Result<ChunkOutcome, Error> {
        let mut chunk = chunk;
        for (i, p) in self.plugins.iter().enumerate().rev() {
            if !seen.contains(i) || !p.hooks.contains(Hooks::ON_STREAM_CHUNK) {
                continue;
            }
            match p.on_stream_chunk(&ctx.request, ctx.provider.as_ref(), chunk.clone()).await {
                Ok(ChunkDecision::Pass) => {}
                Ok(ChunkDecision::Rewrite(b)) => chunk = b,
                Ok(ChunkDecision::Drop) => return Ok(ChunkOutcome::Drop),
                Ok(ChunkDecision::Abort(e)) => return Err(e),
                Err(f) => {
                    failed(p, Hook::StreamChunk, &f, &ctx.request.id)?;
                    seen.remove(i);
                }
            }
        }
        Ok(ChunkOutcome::Pass(chunk))
    }
}

/// The span of one hook call of plugin `p` (stream chunk hooks have none: a span per chunk
/// would outnumber the request's other spans a hundredfold).
fn hook_span(trace: &SpanCx, p: &Plugin, hook: Hook) -> Span {
    let mut span = trace.child(
        match hook {
            Hook::Request => "weir.plugin.on_request",
            Hook::Response => "weir.plugin.on_response",
            Hook::StreamChunk => "weir.plugin.on_stream_chunk",
        },
        SpanKind::Internal,
    );
    span.set_with("weir.plugin.name", || Arc::clone(&p.name));
    span
}

/// Applies the plugin's failure policy: `Err` (fail closed) or log-and-skip (fail open; the
/// caller then drops the plugin from the request's [`Seen`], so its later hooks are skipped).
fn failed(p: &Plugin, hook: Hook, f: &Failure, request_id: &str) -> Result<(), Error> {
    tracing::warn!(
        plugin = %p.name, hook = hook.label(), outcome = f.label(), request_id, detail = f.detail(),
        policy = ?p.on_error, "plugin call failed"
    );
    match p.on_error {
        OnError::FailClosed => Err(Error::new(
            ErrorKind::PluginFailed,
            format!("plugin `{}` {} in {}", p.name, f.describe(), hook.label()),
        )),
        OnError::FailOpen => {
            p.note_skipped(hook);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
