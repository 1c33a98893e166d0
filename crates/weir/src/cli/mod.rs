//! Subcommands of the `weir` binary beyond `serve` and `check` (kept out of `main.rs`).

pub mod new;
pub mod plugin;
