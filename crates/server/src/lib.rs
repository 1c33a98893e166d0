//! The gateway server: listeners and serving threads, the request phases, admin API, reload
//! and metrics, built on the other Weir crates (re-exported here under their concern).
//!
//! Follow one request: [`server`] accepts and dispatches (by [`api::route`]) → [`pipeline`]
//! sequences the phases → [`api`] validates at the request's front door → [`plugins`] runs
//! hooks → [`routing`] picks a provider → [`policy`] decides the attempts → [`pool`] admits each
//! → [`providers`] talk upstream (passing the client's format through, or converting it) →
//! [`respond`] turns any [`error`] into HTTP in the front door's format.

pub use weir_api as api;
pub use weir_cache as cache;
pub use weir_config as config;
pub use weir_events as events;
pub use weir_governance as governance;
pub use weir_plugins as plugins;
pub use weir_policy as policy;
pub use weir_policy::routing;
pub use weir_pool as pool;
pub use weir_providers as providers;
pub use weir_state as state;
pub use weir_types::{affinity, body, canonical, error, exchange, format, json, secrets, trace};

pub mod admin;
pub mod admin_keys;
pub mod admin_live;
pub mod browser;
pub mod client_io;
pub mod conn;
pub mod dashboard;
pub mod gateway;
pub mod live;
pub mod metrics;
pub mod overload;
pub mod pipeline;
pub mod probes;
pub mod record;
pub mod relay;
pub mod reload;
pub mod repoll;
pub mod respond;
pub mod routes;
pub mod server;
pub mod shards;
mod spans;
pub mod watch;
