//! Weir: an LLM API gateway extended with sandboxed WebAssembly plugins.
//!
//! Follow one request: [`server`] accepts and dispatches → [`pipeline`] sequences the phases →
//! [`api`] validates → [`plugins`] runs hooks → [`routing`] picks a provider → [`policy`]
//! decides the attempts → [`pool`] admits each → [`providers`] talk upstream → [`respond`]
//! turns any [`error`] into HTTP.

pub use weir_api as api;
pub use weir_config as config;
pub use weir_types::{affinity, body, canonical, error, exchange, format, json, secrets};

pub mod admin;
pub mod browser;
pub mod client_io;
pub mod conn;
pub mod gateway;
pub mod metrics;
pub mod overload;
pub mod pipeline;
pub mod plugins;
pub mod policy;
pub mod pool;
pub mod providers;
pub mod reload;
pub mod repoll;
pub mod respond;
pub mod routes;
pub mod routing;
pub mod server;
pub mod shards;
pub mod watch;
