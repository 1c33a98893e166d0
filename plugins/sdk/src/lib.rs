//! Write a Weir gateway plugin in Rust: implement [`Plugin`] and call [`export!`].
//!
//! ```ignore
//! use weir_plugin_sdk::{Hooks, Plugin, Request, RequestAction, export};
//!
//! struct Shout;
//!
//! impl Plugin for Shout {
//!     const HOOKS: Hooks = Hooks::ON_REQUEST;
//!     fn init(_config: &str) -> Result<Self, String> {
//!         Ok(Shout)
//!     }
//!     fn on_request(&mut self, req: &Request) -> RequestAction {
//!         weir_plugin_sdk::log::info(&format!("model {}", req.model()));
//!         RequestAction::Continue
//!     }
//! }
//!
//! export!(Shout);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release`; the `.wasm` in
//! `target/wasm32-wasip2/release/` is the component to point `[[plugins]] path` at.
//! `weir plugin new <name> --lang rust` makes a project that builds on a copy of this crate.
//!
//! One value of your type lives per instance; the gateway keeps several warm instances and
//! reuses them across requests, so fields persist between calls on the same instance.

#[doc(hidden)]
pub mod bindings {
    //! Generated from `wit/` (package `weir:plugin@0.2.1`). Use the re-exports instead.
    #![allow(missing_docs)]
    // The generated canonical-ABI glue is unsafe by nature; it is the only unsafe code here.
    #![allow(unsafe_code)]
    wit_bindgen::generate!({
        // The repository's wit/ from plugins/sdk, and a project's own wit/ from the copy
        // `weir plugin new` writes to vendor/weir-plugin-sdk.
        path: "../../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__weir_export_world",
        default_bindings_module: "weir_plugin_sdk::bindings",
    });
}

use serde::de::DeserializeOwned;

pub use bindings::exports::weir::plugin::handler::Guest as __Guest;
pub use bindings::weir::plugin::types::{
    ChunkAction, Hooks, Rejection, Reply, Request, RequestAction, Response, ResponseAction,
};

/// Values of [`Request::api_format`]: the API format the client spoke, which shapes the JSON of
/// the body, the response and stream chunks. More may come; treat others as "not mine".
pub mod api_format {
    /// OpenAI's chat completions and embeddings API.
    pub const OPENAI: &str = "openai";
    /// Anthropic's Messages API (`/v1/messages`): instructions in a top-level `system`.
    pub const ANTHROPIC: &str = "anthropic";
    /// OpenAI's Responses API (`/v1/responses`): `instructions` and `input` items.
    pub const OPENAI_RESPONSES: &str = "openai-responses";
}

/// Values of [`Request::operation`]: what was asked, the same on every API format (this
/// replaces 0.1's `endpoint()`). More may come; treat others as "not mine".
pub mod operation {
    /// A chat turn (OpenAI: `/v1/chat/completions`).
    pub const CHAT: &str = "chat";
    /// Embeddings (OpenAI: `/v1/embeddings`).
    pub const EMBEDDINGS: &str = "embeddings";
}

/// A plugin: one value per instance, made by `init`, then called for each hook it declares.
pub trait Plugin: Sized + 'static {
    /// The hooks this plugin implements; the gateway calls only these.
    const HOOKS: Hooks;

    /// The hooks this instance implements, decided after `init` (default [`Plugin::HOOKS`]);
    /// override to drop hooks the config turns off, so the gateway never calls them.
    fn hooks(&self) -> Hooks {
        Self::HOOKS
    }

    /// Builds the plugin from its config (the `[plugins.config]` table as JSON text; see
    /// [`parse_config`]). An error stops the gateway from loading the plugin.
    ///
    /// # Errors
    /// A message the gateway shows when loading fails.
    fn init(config: &str) -> Result<Self, String>;

    /// Before the request goes upstream. Default: continue unchanged.
    fn on_request(&mut self, _req: &Request) -> RequestAction {
        RequestAction::Continue
    }

    /// On a whole response. Default: pass.
    fn on_response(&mut self, _req: &Request, _resp: &Response) -> ResponseAction {
        ResponseAction::Pass
    }

    /// On each stream chunk (one event payload in the request's API format; for "openai" an
    /// SSE `data:` payload, a JSON object). Default: pass.
    fn on_stream_chunk(&mut self, _req: &Request, _chunk: &[u8]) -> ChunkAction {
        ChunkAction::Pass
    }
}

/// Parses the config JSON into your type; an empty config is `{}`.
///
/// # Errors
/// The serde error as text, e.g. `unknown field "x"`.
pub fn parse_config<T: DeserializeOwned>(config: &str) -> Result<T, String> {
    let text = if config.trim().is_empty() { "{}" } else { config };
    serde_json::from_str(text).map_err(|e| format!("invalid config: {e}"))
}

/// A `reject` action with the default code `plugin_rejected`.
pub fn reject(status: u16, message: impl Into<String>) -> RequestAction {
    RequestAction::Reject(Rejection { status, message: message.into(), code: None })
}

/// A `respond` action with a JSON body.
pub fn respond(status: u16, body: &serde_json::Value) -> RequestAction {
    RequestAction::Respond(Reply { status, headers: Vec::new(), body: body.to_string() })
}

/// Reads a JSON value from the request body by JSON pointer and deserializes it.
pub fn get_json<T: DeserializeOwned>(req: &Request, pointer: &str) -> Option<T> {
    req.get(pointer).and_then(|text| serde_json::from_str(&text).ok())
}

/// Writes a serializable value into the request body at a JSON pointer.
///
/// # Errors
/// The host's message (missing parent, post hook, invalid JSON).
pub fn set_json<T: serde::Serialize>(req: &Request, pointer: &str, value: &T) -> Result<(), String> {
    let text = serde_json::to_string(value).map_err(|e| e.to_string())?;
    req.set(pointer, &text)
}

pub mod chat;

/// Logging into the gateway's log, tagged with the plugin name.
pub mod log {
    pub use crate::bindings::weir::plugin::log::Level;
    use crate::bindings::weir::plugin::log::log;

    /// Logs at debug level.
    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }
    /// Logs at info level.
    pub fn info(message: &str) {
        log(Level::Info, message);
    }
    /// Logs at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        log(Level::Error, message);
    }
    /// Logs at any level.
    pub fn at(level: Level, message: &str) {
        log(level, message);
    }
}

/// The gateway's key-value store (namespaced per plugin, bounded, entries expire).
pub mod kv {
    pub use crate::bindings::weir::plugin::kv::{delete, get, incr, set};
}

/// Plugin metrics, exported as `weir_plugin_custom_<name>{plugin="..."}`.
pub mod metrics {
    pub use crate::bindings::weir::plugin::metrics::{counter, histogram};
}

/// Milliseconds since the Unix epoch, from the gateway.
pub fn now_ms() -> u64 {
    bindings::weir::plugin::clock::now()
}

#[doc(hidden)]
pub mod __private {
    //! Used by [`export!`](crate::export); not part of the API.
    use std::cell::RefCell;

    pub use crate::bindings::exports::weir::plugin::handler::Guest;

    /// Runs `f` on the instance's plugin value.
    ///
    /// # Panics
    /// If a hook runs before `init` succeeded (the gateway never does that): the panic traps,
    /// and the gateway discards the instance.
    pub fn with<P: 'static, R>(
        slot: &'static std::thread::LocalKey<RefCell<Option<P>>>,
        f: impl FnOnce(&mut P) -> R,
    ) -> R {
        slot.with(|cell| {
            let mut guard = cell.borrow_mut();
            let plugin = guard.as_mut().expect("weir plugin hook called before init");
            f(plugin)
        })
    }
}

/// Exports a [`Plugin`] type as the component's `weir:plugin/handler`.
#[macro_export]
macro_rules! export {
    ($ty:ty) => {
        // The component exports wit-bindgen generates are `unsafe` ABI glue.
        #[allow(unsafe_code)]
        const _: () = {
            ::std::thread_local! {
                static __WEIR_PLUGIN: ::std::cell::RefCell<::core::option::Option<$ty>> =
                    const { ::std::cell::RefCell::new(::core::option::Option::None) };
            }

            struct __WeirComponent;

            impl $crate::__private::Guest for __WeirComponent {
                fn init(config: ::std::string::String) -> ::core::result::Result<$crate::Hooks, ::std::string::String> {
                    let plugin = <$ty as $crate::Plugin>::init(&config)?;
                    let hooks = $crate::Plugin::hooks(&plugin);
                    __WEIR_PLUGIN.with(|cell| *cell.borrow_mut() = ::core::option::Option::Some(plugin));
                    ::core::result::Result::Ok(hooks)
                }

                fn on_request(req: &$crate::Request) -> $crate::RequestAction {
                    $crate::__private::with(&__WEIR_PLUGIN, |p| $crate::Plugin::on_request(p, req))
                }

                fn on_response(req: &$crate::Request, resp: &$crate::Response) -> $crate::ResponseAction {
                    $crate::__private::with(&__WEIR_PLUGIN, |p| $crate::Plugin::on_response(p, req, resp))
                }

                fn on_stream_chunk(req: &$crate::Request, chunk: ::std::vec::Vec<u8>) -> $crate::ChunkAction {
                    $crate::__private::with(&__WEIR_PLUGIN, |p| $crate::Plugin::on_stream_chunk(p, req, &chunk))
                }
            }

    $crate::bindings::__weir_export_world!(__WeirComponent with_types_in $crate::bindings);
        };
    };
}
