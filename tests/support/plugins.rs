//! Plugins for end-to-end tests: paths of the components built from `plugins/` (build them
//! before `cargo test`: `cargo build --manifest-path plugins/Cargo.toml --target wasm32-wasip2
//! --release`; `scripts/test.sh` does) and `[[plugins]]` TOML for them.

use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Path of a built component, e.g. `wasm("pii-redact")`.
///
/// # Panics
/// If it was not built, with the command that builds it.
pub fn wasm(crate_name: &str) -> String {
    let path = root().join(format!("plugins/target/wasm32-wasip2/release/{}.wasm", crate_name.replace('-', "_")));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --manifest-path plugins/Cargo.toml --target wasm32-wasip2 --release`",
        path.display()
    );
    path.display().to_string()
}

/// A `[[plugins]]` table named `name` for component `crate_name`, with `extra` lines (e.g.
/// `on_error = "fail-open"`, `config = {...}`).
pub fn plugin_toml(name: &str, crate_name: &str, extra: &str) -> String {
    format!("\n[[plugins]]\nname = \"{name}\"\npath = {:?}\n{extra}\n", wasm(crate_name))
}

/// `[plugin_runtime]` with a compile cache shared by the test run (each component compiles
/// once, not once per `weir` process).
pub fn runtime_toml() -> String {
    format!("\n[plugin_runtime]\ncache_dir = {:?}\n", root().join("target/weir-test-cache").display().to_string())
}
