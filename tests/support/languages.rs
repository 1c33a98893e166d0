//! Example plugins in other languages (`examples/plugins/<lang>/`): where their build scripts
//! put the components (`build/<file>`), why a language was skipped (`build/SKIPPED`, written
//! when its toolchain cannot be installed), and pre-compiling a component into the shared test
//! cache with `weir plugin inspect` (a 12-18 MB Python/JS guest takes longer to compile than
//! `weir serve` is given to start).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use super::weir::WEIR_BIN;

/// Languages CI must build and run; a missing build of one of these fails its test.
pub const REQUIRED: [&str; 4] = ["python", "js", "c", "go"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The compile cache shared by the test run (same as `plugins::runtime_toml`).
pub fn shared_cache() -> PathBuf {
    root().join("target/weir-test-cache")
}

/// The built component `examples/plugins/<lang>/build/<file>`, or `None` when the language
/// was skipped (the reason is printed).
///
/// # Panics
/// When it is missing and the language is required or no skip reason was recorded.
pub fn example(lang: &str, file: &str) -> Option<String> {
    let dir = root().join(format!("examples/plugins/{lang}"));
    let wasm = dir.join("build").join(file);
    if wasm.exists() {
        return Some(wasm.display().to_string());
    }
    let build = format!("examples/plugins/{lang}/build.sh (scripts/test.sh runs every example's build)");
    match std::fs::read_to_string(dir.join("build/SKIPPED")) {
        Ok(reason) if !REQUIRED.contains(&lang) => {
            eprintln!("SKIPPED {lang} example: {}", reason.trim());
            None
        }
        Ok(reason) => panic!("the {lang} example is required but was skipped: {}; run {build}", reason.trim()),
        Err(_) => panic!("{} is missing: run {build}", wasm.display()),
    }
}

/// Runs `weir plugin inspect --cache-dir <shared cache> <wasm>` (compiles into the cache
/// unless it is there already) and returns its stdout.
///
/// # Panics
/// If inspect fails.
pub fn precompile(wasm: &str) -> String {
    // One at a time: compiling uses every core, and a second test asking for the same
    // component then finds it in the cache instead of compiling it again.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(WEIR_BIN)
        .args(["plugin", "inspect", "--cache-dir"])
        .arg(shared_cache())
        .arg(wasm)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "weir plugin inspect {wasm} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
