//! Hot-reload test plugin, version 2 (see `../../stamp-v1/src/stamp.rs`).

const VERSION: &str = "v2";
include!("../../stamp-v1/src/stamp.rs");
