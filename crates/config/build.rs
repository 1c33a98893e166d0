//! Embeds the first-party default plugins (`prompt-guard`, `pii-redact`) in the binary, so a
//! copied `weir` runs its default chain wherever it is. They are wasm components built by the
//! separate `plugins/` workspace (target wasm32-wasip2), which this script does not build: a
//! component that is not built yet is left out with a cargo warning, so `cargo build` and
//! `cargo clippy` keep working on a fresh clone, and the binary says at startup which built-in
//! is missing. `scripts/*.sh` build the plugins before `weir`. `WEIR_BUILTIN_PLUGIN_DIR`
//! overrides where the components are read from.

use std::fmt::Write as _;
use std::path::PathBuf;

/// Built-in name (as in `path = "builtin:<name>"`) and the component's file stem.
const BUILTINS: [(&str, &str); 2] = [("prompt-guard", "prompt_guard"), ("pii-redact", "pii_redact")];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-env-changed=WEIR_BUILTIN_PLUGIN_DIR");
    let dir = std::env::var_os("WEIR_BUILTIN_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../../plugins/target/wasm32-wasip2/release"));

    let mut code = String::from("/// Every built-in name, embedded in this binary or not.\n");
    let names: Vec<String> = BUILTINS.iter().map(|(name, _)| format!("{name:?}")).collect();
    writeln!(code, "pub const KNOWN: &[&str] = &[{}];", names.join(", ")).unwrap();
    code.push_str("/// The built-ins embedded in this binary: name and component bytes.\n");
    code.push_str("static EMBEDDED: &[(&str, &[u8])] = &[\n");
    for (name, stem) in BUILTINS {
        let path = dir.join(format!("{stem}.wasm"));
        // A missing file makes cargo run this script again on every build, so the component
        // is picked up as soon as it is built.
        println!("cargo:rerun-if-changed={}", path.display());
        match path.canonicalize() {
            Ok(abs) if abs.is_file() => writeln!(code, "    ({name:?}, include_bytes!({:?})),", abs.display()).unwrap(),
            _ => println!(
                "cargo:warning=built-in plugin {name} not embedded: {} is missing (build the plugins first: \
                 cargo build --manifest-path plugins/Cargo.toml --target wasm32-wasip2 --release)",
                path.display()
            ),
        }
    }
    code.push_str("];\n");
    std::fs::write(out_dir.join("builtin_plugins.rs"), code).expect("write OUT_DIR/builtin_plugins.rs");
}
