//! The WIT contract (`wit/`, `weir:plugin@0.1.0`) as Rust types, generated once. Generated
//! types stay inside the `plugins` module; `convert.rs` maps them to gateway types.

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        with: {
            "weir:plugin/types.request": super::RequestHandle,
            "weir:plugin/types.response": super::ResponseHandle,
        },
        exports: { default: async },
    });
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
pub const VERSION: &str = "0.1.0";
