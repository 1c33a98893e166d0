//! `weir plugin new` as a new plugin author uses it: for each language, scaffold a project into a
//! temp dir, run its `build.sh`, then `weir plugin test` the component on the project's own
//! clean and matching sample requests. Rust and C always run; Python, JavaScript and Go run when
//! the examples step of `scripts/test.sh` left their toolchains in `examples/plugins/`, and are
//! reported as skipped (with the reason) otherwise. The build scripts reuse those tool dirs
//! through `WEIR_PLUGIN_TOOLS`, and the Rust build shares one target dir across runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::weir::{TempDir, WEIR_BIN};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `cmd` with stdout and stderr in `log`, killing it after `limit`. Returns whether it
/// exited with status 0, and what it wrote.
fn run(cmd: &mut Command, limit: Duration, log: &Path) -> (bool, String) {
    let out = std::fs::File::create(log).unwrap();
    let mut child =
        cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out).spawn().expect("cannot start");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status.success(), std::fs::read_to_string(log).unwrap_or_default())
}

/// The tools a language's build needs from `examples/plugins/`, or why they are not there.
fn toolchain(lang: &str) -> Result<(), String> {
    let examples = root().join("examples/plugins");
    let need: &[&str] = match lang {
        "python" => &[".tools/venv/bin/componentize-py"],
        "js" => &["js/node_modules/.bin/componentize-js"],
        "go" => &[".tools/venv/bin/go", ".tools/venv/bin/wasm-tools"],
        _ => &[],
    };
    match need.iter().find(|p| !examples.join(p).exists()) {
        Some(p) => Err(format!("examples/plugins/{p} is missing (run examples/plugins/{lang}/build.sh)")),
        None => Ok(()),
    }
}

/// A tools dir in the layout the scaffolds' build scripts expect, made of links to the tool
/// dirs of `examples/plugins/` (the venv, Go's build cache, componentize-js's node_modules).
fn tools_dir() -> PathBuf {
    let tools = root().join("target/plugin-new-tools");
    std::fs::create_dir_all(&tools).unwrap();
    let examples = root().join("examples/plugins");
    for (link, target) in
        [("venv", ".tools/venv"), ("go-cache", ".tools/go-cache"), ("node_modules", "js/node_modules")]
    {
        let (link, target) = (tools.join(link), examples.join(target));
        // A link left by a checkout at another path points nowhere: make it again.
        if std::fs::symlink_metadata(&link).is_ok() && !link.exists() {
            let _ = std::fs::remove_file(&link);
        }
        if target.exists() && std::fs::symlink_metadata(&link).is_err() {
            // Another test may make the same link at the same time.
            if let Err(e) = std::os::unix::fs::symlink(&target, &link) {
                assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{}: {e}", link.display());
            }
        }
    }
    tools
}

/// What a new author does: `weir plugin new`, `./build.sh`, `weir plugin test` on the samples.
fn scaffold_builds_and_passes_its_samples(lang: &str) {
    if let Err(reason) = toolchain(lang) {
        eprintln!("SKIPPED weir plugin new --lang {lang}: {reason}");
        return;
    }
    let name = format!("new-{lang}-guard");
    // The project and the logs, removed when the test ends (failing too: the logs' text is in
    // the assertion messages).
    let tmp = TempDir::new();
    let dir = tmp.path().join(lang);
    let log = |step: &str| tmp.path().join(format!("{step}.log"));

    let (ok, out) = run(
        Command::new(WEIR_BIN).args(["plugin", "new", &name, "--lang", lang, "--dir"]).arg(&dir),
        Duration::from_secs(30),
        &log("new"),
    );
    assert!(ok && out.contains(&format!("created {}", dir.display())), "{lang}: {out}");

    let mut build = Command::new(dir.join("build.sh"));
    build.env("WEIR_PLUGIN_TOOLS", tools_dir()).env("CARGO_TARGET_DIR", root().join("target/plugin-new-rust"));
    let started = Instant::now();
    let (ok, out) = run(&mut build, Duration::from_secs(900), &log("build"));
    assert!(ok, "{lang}: build.sh failed:\n{out}");
    let wasm = dir.join(format!("build/{name}.wasm"));
    assert!(wasm.exists(), "{lang}: no {}:\n{out}", wasm.display());
    eprintln!(
        "weir plugin new --lang {lang}: built in {:.1}s, {} bytes",
        started.elapsed().as_secs_f64(),
        std::fs::metadata(&wasm).unwrap().len()
    );

    let test = |request: &str| {
        let mut cmd = Command::new(WEIR_BIN);
        cmd.arg("plugin").arg("test").arg(&wasm).args(["--request", request, "--config", "config.json"]);
        // The project's own compile cache, deleted with it: componentize-py/js builds are not
        // byte-identical from run to run, so a shared cache would only grow. The second call
        // loads from it. (A 12-18 MB guest takes a while to compile in a debug build.)
        cmd.arg("--cache-dir").arg(dir.join(".weir-cache"));
        cmd.current_dir(&dir).env("WEIR_LOG", "weir::plugin=info,error");
        run(&mut cmd, Duration::from_secs(400), &log("test"))
    };
    let (ok, out) = test("request.json");
    assert!(ok, "{lang}: {out}");
    assert!(out.contains(&format!("{name} ready with 2 rule(s)")), "{lang}: init log line missing:\n{out}");
    assert!(out.contains("on-request: continue"), "{lang}: the clean request must pass:\n{out}");
    assert!(out.contains(&format!("x-{name}: checked")), "{lang}: response header missing:\n{out}");

    let (ok, out) = test("request-blocked.json");
    assert!(ok, "a rejection is a decision, exit 0 ({lang}): {out}");
    assert!(out.contains("on-request: REJECT with status 400"), "{lang}:\n{out}");
    assert!(out.contains(&format!("prompt rejected by {name}: it matches rule `injection`")), "{lang}:\n{out}");
    assert!(out.contains("\"code\":\"prompt_rejected\""), "{lang}:\n{out}");
    assert!(
        out.contains(&format!("{name} rejected request req_plugin_test: rule `injection` matched")),
        "{lang}:\n{out}"
    );
    assert!(!out.contains("on-response:"), "{lang}: no response after a rejection:\n{out}");
}

#[test]
fn new_rust_plugin_builds_and_passes_its_samples() {
    scaffold_builds_and_passes_its_samples("rust");
}

#[test]
fn new_c_plugin_builds_and_passes_its_samples() {
    scaffold_builds_and_passes_its_samples("c");
}

#[test]
fn new_python_plugin_builds_and_passes_its_samples() {
    scaffold_builds_and_passes_its_samples("python");
}

#[test]
fn new_js_plugin_builds_and_passes_its_samples() {
    scaffold_builds_and_passes_its_samples("js");
}

#[test]
fn new_go_plugin_builds_and_passes_its_samples() {
    scaffold_builds_and_passes_its_samples("go");
}

/// A name that is not a valid plugin name, and a directory that is not empty, are refused with
/// a clear error and a non-zero exit, and nothing is written.
#[test]
fn new_refuses_bad_names_and_non_empty_directories() {
    let tmp = TempDir::new();
    let dir = tmp.path().join("taken");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let log = tmp.path().join("new.log");
    let (ok, out) = run(
        Command::new(WEIR_BIN).args(["plugin", "new", "guard", "--lang", "rust", "--dir"]).arg(&dir),
        Duration::from_secs(30),
        &log,
    );
    assert!(!ok && out.contains("already exists and is not empty"), "{out}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "nothing may be written");
    let (ok, out) = run(
        Command::new(WEIR_BIN).args(["plugin", "new", "Bad_Name", "--lang", "c", "--dir"]).arg(dir.join("x")),
        Duration::from_secs(30),
        &log,
    );
    assert!(!ok && out.contains("invalid plugin name \"Bad_Name\""), "{out}");
    assert!(!dir.join("x").exists());
}
