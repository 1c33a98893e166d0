//! Hot-reload test plugin, version 1 (see `stamp.rs`).

const VERSION: &str = "v1";
include!("stamp.rs");
