//! The WIT contract (`wit/`, `weir:plugin@0.2.1`) as Rust types, generated once, and the frozen
//! `weir:plugin@0.1.0` (`wit-legacy/0.1.0/`) that the gateway still loads. Generated types
//! stay inside the `plugins` module; `convert.rs` maps them to gateway types (and 0.1 to 0.2).

mod generated {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "plugin",
        with: {
            "weir:plugin/types.request": super::RequestHandle,
            "weir:plugin/types.response": super::ResponseHandle,
        },
        exports: { default: async },
        // kv may wait on Redis: an async host call, during which the serving thread runs others.
        imports: {
            "weir:plugin/kv.get": async,
            "weir:plugin/kv.set": async,
            "weir:plugin/kv.incr": async,
            "weir:plugin/kv.delete": async,
        },
    });
}

/// `weir:plugin@0.1.0`: the contract before API formats, kept so that components built for it
/// load without a rebuild. Same resources as 0.2 (the host keeps the data either way).
pub mod v0_1 {
    mod generated {
        wasmtime::component::bindgen!({
            path: "wit-legacy/0.1.0",
            world: "plugin",
            with: {
                "weir:plugin/types.request": crate::plugins::bindings::RequestHandle,
                "weir:plugin/types.response": crate::plugins::bindings::ResponseHandle,
            },
            exports: { default: async },
            imports: {
                "weir:plugin/kv.get": async,
                "weir:plugin/kv.set": async,
                "weir:plugin/kv.incr": async,
                "weir:plugin/kv.delete": async,
            },
        });
    }

    pub use generated::Plugin as PluginWorld;
    pub use generated::PluginPre as PluginWorldPre;
    pub use generated::weir::plugin::types::{
        ChunkAction, Endpoint, Hooks, Rejection, Reply, RequestAction, ResponseAction,
    };
    pub use generated::weir::plugin::{clock, kv, log, metrics, types};

    /// The version of the frozen package.
    pub const VERSION: &str = "0.1.0";
}

/// Host-side marker for the `request` resource: the data lives in the store's exchange slot,
/// one request per call, so a handle carries nothing.
pub struct RequestHandle;

/// Host-side marker for the `response` resource (see [`RequestHandle`]).
pub struct ResponseHandle;

pub use generated::Plugin as PluginWorld;
pub use generated::PluginPre as PluginWorldPre;
pub use generated::weir::plugin::types::{ChunkAction, Hooks, Rejection, Reply, RequestAction, ResponseAction};
pub use generated::weir::plugin::{clock, kv, log, metrics, types};

/// The package this gateway implements: `(name, major-compatible version prefix)`.
pub const PACKAGE: &str = "weir:plugin";
/// The version of the package in `wit/`.
pub const VERSION: &str = "0.2.1";

/// Which version of the contract a component was built for: the gateway links and calls each
/// through its own bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// `weir:plugin@0.1.x`: OpenAI-format requests only (its `endpoint` enum and the JSON it
    /// reads are OpenAI's).
    V0_1,
    /// `weir:plugin@0.2.x`: every API format.
    V0_2,
}

impl Contract {
    /// The version the gateway implements for this contract.
    pub fn version(self) -> &'static str {
        match self {
            Self::V0_1 => v0_1::VERSION,
            Self::V0_2 => VERSION,
        }
    }
}
