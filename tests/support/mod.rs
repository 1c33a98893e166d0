//! Test harness: start `weir` with a config ([`weir`]), a mock upstream provider
//! ([`upstream`]), and small HTTP helpers ([`http`]). Add a harness area as one more `pub mod`.

pub mod anthropic;
pub mod bedrock;
pub mod gemini;
pub mod http;
pub mod languages;
pub mod plugins;
pub mod redis;
pub mod upstream;
mod upstream_bodies;
pub mod weir;

pub use self::http::{Reply, SseReader, chat, client, metric, post};
pub use self::upstream::{MockUpstream, Outcome};
pub use self::weir::{Weir, weir_check};
