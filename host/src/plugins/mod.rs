//! WebAssembly plugins: the `on_request`, `on_response` and `on_stream_chunk` phases.
//! (Stub: the runtime arrives with the plugin issue; an empty chain is a no-op.)

use bytes::Bytes;

use crate::config::PluginConfig;
use crate::error::Error;
use crate::exchange::{GatewayRequest, GatewayResponse};

/// What the pre-request hooks decided.
pub struct PreOutcome {
    /// How many plugins saw the request (their post hooks run, in reverse).
    pub seen: usize,
    /// A plugin answered the request itself (short-circuit): skip the provider.
    pub respond: Option<GatewayResponse>,
}

/// What the stream hooks decided for one chunk.
pub enum ChunkOutcome {
    /// Send this (possibly rewritten) chunk payload.
    Pass(Bytes),
    /// Send nothing for this chunk.
    Drop,
}

/// Per-call context given to hooks.
pub struct HookCtx<'a> {
    /// The request.
    pub request: &'a GatewayRequest,
    /// Provider chosen (None before routing or on a short-circuit).
    pub provider: Option<&'a str>,
}

/// The loaded plugin chain of one config snapshot.
#[derive(Default)]
pub struct Chain {}

impl Chain {
    /// A chain with no plugins.
    pub fn empty() -> Self {
        Self {}
    }

    /// Loads the configured plugins (compile, pre-instantiate, `init`).
    ///
    /// # Errors
    /// A message naming the plugin that failed to load.
    pub async fn load(configs: &[PluginConfig]) -> Result<Self, String> {
        if let Some(p) = configs.first() {
            return Err(format!("plugin {}: the plugin runtime is not built yet", p.name));
        }
        Ok(Self::empty())
    }

    /// Names of the plugins, in chain order.
    pub fn names(&self) -> Vec<String> {
        Vec::new()
    }

    /// Runs `on-request` hooks in order.
    ///
    /// # Errors
    /// A plugin rejected the request, or failed closed.
    pub async fn on_request(&self, _req: &mut GatewayRequest) -> Result<PreOutcome, Error> {
        Ok(PreOutcome { seen: 0, respond: None })
    }

    /// Runs `on-response` hooks of the first `seen` plugins, in reverse.
    ///
    /// # Errors
    /// A plugin failed closed.
    pub async fn on_response(
        &self,
        _ctx: &HookCtx<'_>,
        _seen: usize,
        _resp: &mut GatewayResponse,
    ) -> Result<(), Error> {
        Ok(())
    }

    /// Whether any of the first `seen` plugins has a stream hook (if not, chunks pass untouched).
    pub fn has_stream_hooks(&self, _seen: usize) -> bool {
        false
    }

    /// Runs `on-stream-chunk` hooks of the first `seen` plugins, in reverse.
    ///
    /// # Errors
    /// A plugin aborted the stream, or failed closed.
    pub async fn on_stream_chunk(&self, _ctx: &HookCtx<'_>, _seen: usize, chunk: Bytes) -> Result<ChunkOutcome, Error> {
        Ok(ChunkOutcome::Pass(chunk))
    }
}
