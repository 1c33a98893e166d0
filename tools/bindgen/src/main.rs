//! `weir-bindgen c|go <wit-dir> <out-dir>`: writes the guest bindings of world `plugin` with
//! wit-bindgen's C or Go generator. `weir-bindgen adapter <out.wasm>`: writes the WASI
//! preview1 reactor adapter that turns a wasip1 core module (Go, C with WASI) into a component.

use std::path::Path;

use anyhow::{Context as _, bail};
use wit_bindgen_core::Files;
use wit_bindgen_core::wit_parser::Resolve;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["adapter", out] => {
            std::fs::write(out, wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER)
                .with_context(|| format!("cannot write {out}"))
        }
        [lang @ ("c" | "go"), wit, out] => bindgen(lang, Path::new(wit), Path::new(out)),
        _ => bail!("usage: weir-bindgen c|go <wit-dir> <out-dir> | weir-bindgen adapter <out.wasm>"),
    }
}

fn bindgen(lang: &str, wit: &Path, out: &Path) -> anyhow::Result<()> {
    let mut resolve = Resolve::default();
    let (pkg, _) = resolve.push_path(wit).with_context(|| format!("cannot read WIT from {}", wit.display()))?;
    let world = resolve.select_world(&[pkg], Some("plugin"))?;
    let mut generator = match lang {
        "c" => wit_bindgen_c::Opts {
            // build.sh adds the type information with `wasm-tools component embed`.
            no_object_file: true,
            // Borrowed request/response handles are released after each hook returns.
            autodrop_borrows: wit_bindgen_c::Enabled::Yes,
            ..Default::default()
        }
        .build(),
        _ => wit_bindgen_go::Opts::default().build(),
    };
    let mut files = Files::default();
    generator.generate(&mut resolve, world, &mut files)?;
    for (name, bytes) in files.iter() {
        let path = out.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
