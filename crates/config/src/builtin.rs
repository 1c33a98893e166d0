//! Load time: the first-party plugins compiled into the binary by `build.rs`, named in a
//! config as `path = "builtin:<name>"` (the embedded default chain uses them).

use std::borrow::Cow;
use std::path::Path;

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// The prefix of a built-in plugin's `path`.
pub const PREFIX: &str = "builtin:";

/// The built-in name in a plugin `path` such as `builtin:pii-redact`, if it is one.
pub fn name(path: &Path) -> Option<&str> {
    path.to_str()?.strip_prefix(PREFIX)
}

/// The component bytes of built-in `name`, if this binary embeds it.
pub fn component(name: &str) -> Option<&'static [u8]> {
    EMBEDDED.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
}

/// A plugin's component: the embedded bytes for a `builtin:` path, else the file's contents.
///
/// # Errors
/// A message naming the path: the file cannot be read, or the built-in is unknown or was not
/// embedded when this binary was built.
pub async fn read(path: &Path) -> Result<Cow<'static, [u8]>, String> {
    if let Some(name) = name(path) {
        return embedded(name).map(Cow::Borrowed);
    }
    tokio::fs::read(path).await.map(Cow::Owned).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (first-party plugins: cargo build --manifest-path plugins/Cargo.toml --target wasm32-wasip2 --release)"
        } else {
            ""
        };
        format!("cannot read {}: {e}{hint}", path.display())
    })
}

/// The embedded bytes of `name`, or why there are none.
///
/// # Errors
/// `name` is not a built-in, or this binary was built before the plugins were.
pub fn embedded(name: &str) -> Result<&'static [u8], String> {
    if !KNOWN.contains(&name) {
        return Err(format!("{PREFIX}{name} is not a built-in plugin (built-ins: {})", KNOWN.join(", ")));
    }
    component(name).ok_or_else(|| {
        format!(
            "this weir binary was built without the built-in {name}: build the plugins, then weir \
             (cargo build --manifest-path plugins/Cargo.toml --target wasm32-wasip2 --release)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_paths_are_recognised_by_their_prefix() {
        assert_eq!(name(Path::new("builtin:pii-redact")), Some("pii-redact"));
        assert_eq!(name(Path::new("plugins/pii_redact.wasm")), None);
    }

    #[test]
    fn unknown_builtins_are_refused_with_the_list() {
        let err = embedded("nope").unwrap_err();
        assert!(err.contains("builtin:nope") && err.contains("prompt-guard, pii-redact"), "{err}");
    }

    #[test]
    fn embedded_builtins_are_components() {
        // Only what this build embedded; the end-to-end tests need both.
        for (name, bytes) in EMBEDDED {
            assert!(KNOWN.contains(name));
            assert!(bytes.starts_with(b"\0asm"), "{name} is not wasm");
        }
    }
}
