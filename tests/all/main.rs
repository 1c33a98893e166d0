//! End-to-end tests: the real `weir` binary against a mock upstream on 127.0.0.1.
//! One test binary (cuts link time); the harness lives in `tests/support/`.

#[path = "../support/mod.rs"]
mod support;

mod adaptive_workers;
mod admin_live;
mod anthropic;
mod bad_input;
mod balance;
mod bedrock;
mod browser;
mod cache;
mod cancel;
mod chat;
mod check;
mod events;
mod first_run;
mod gemini;
mod headers;
mod health_checks;
mod hedging;
mod key_rotation;
mod keys;
mod languages;
mod limits;
mod metrics;
mod mock_bounds;
mod openai_kinds;
mod overflow;
mod plugin_cli;
mod plugin_new;
mod plugin_sandbox_edits;
mod plugin_sandbox_runtime;
mod plugin_secrets;
mod plugins;
mod readiness;
mod relay;
mod reload;
mod resilience;
mod resilience_routes;
mod responses;
mod secrets;
mod shared_cache;
mod shared_state;
mod shutdown;
mod status;
mod stream_resume;
mod streams;
mod threads;
mod timeouts;
mod traces;
mod upstream_errors;
mod upstream_size;
