//! Load time: whether the compiled-plugin cache may be trusted. Loading a cached component
//! maps it as native code without verification, so anyone who can write the cache directory
//! or a file in it can run code inside Weir. On Unix the directory and the file must belong to
//! Weir's user and be writable by no one else; otherwise the cache is left alone and plugins
//! are compiled from their `.wasm` instead.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// The refusal is logged once: every plugin load would otherwise repeat it.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Whether `dir`, and `file` in it when it exists, may be loaded from; logs the first refusal.
pub fn usable(dir: &Path, file: &Path) -> bool {
    match check(dir, file) {
        Ok(()) => true,
        Err(reason) => {
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    dir = %dir.display(),
                    "not using the compiled-plugin cache ({reason}); compiling plugins instead"
                );
            }
            false
        }
    }
}

/// Why `dir` or `file` cannot be trusted, if they cannot. A missing directory is fine (it is
/// created private); so is a missing file (it is written by Weir).
pub fn check(dir: &Path, file: &Path) -> Result<(), String> {
    if !dir.exists() {
        return Ok(());
    }
    private(dir)?;
    if file.exists() { private(file) } else { Ok(()) }
}

#[cfg(unix)]
fn private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    // Follows symlinks: what matters is what gets mapped.
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!("{} is owned by uid {}, not by Weir's user (uid {me})", path.display(), meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!("{} is writable by group or others (mode {:o})", path.display(), meta.mode() & 0o777));
    }
    Ok(())
}

#[cfg(not(unix))]
fn private(_: &Path) -> Result<(), String> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    use super::*;

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("weir-cache-trust-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
            let file = dir.join("a.cwasm");
            std::fs::write(&file, b"x").unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
            Self(dir)
        }

        fn file(&self) -> PathBuf {
            self.0.join("a.cwasm")
        }

        fn chmod(path: &Path, mode: u32) {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_private_cache_is_trusted() {
        let s = Scratch::new("private");
        assert_eq!(check(&s.0, &s.file()), Ok(()));
        assert_eq!(check(&s.0, &s.0.join("missing.cwasm")), Ok(()));
        assert_eq!(check(&s.0.join("not-yet"), &s.0.join("not-yet/a.cwasm")), Ok(()));
        // Read access for others is harmless.
        Scratch::chmod(&s.0, 0o755);
        Scratch::chmod(&s.file(), 0o644);
        assert_eq!(check(&s.0, &s.file()), Ok(()));
    }

    #[test]
    fn a_group_or_world_writable_directory_is_refused() {
        for mode in [0o777, 0o770, 0o702, 0o1777] {
            let s = Scratch::new(&format!("dir{mode:o}"));
            Scratch::chmod(&s.0, mode);
            let err = check(&s.0, &s.file()).unwrap_err();
            assert!(err.contains("writable by group or others"), "{mode:o}: {err}");
            assert!(!usable(&s.0, &s.file()));
        }
    }

    #[test]
    fn a_writable_cached_file_is_refused() {
        let s = Scratch::new("file");
        for mode in [0o666, 0o620, 0o602] {
            Scratch::chmod(&s.file(), mode);
            let err = check(&s.0, &s.file()).unwrap_err();
            assert!(err.contains("a.cwasm") && err.contains("writable"), "{mode:o}: {err}");
        }
    }

    #[test]
    fn a_file_owned_by_another_user_is_refused() {
        let s = Scratch::new("owner");
        let me = rustix::process::geteuid().as_raw();
        let other = if me == 65534 { 65533 } else { 65534 };
        // Only root can give a file away; elsewhere this case is covered by the mode tests.
        if std::os::unix::fs::chown(s.file(), Some(other), None).is_err() {
            eprintln!("skipped: cannot chown as uid {me}");
            return;
        }
        let err = check(&s.0, &s.file()).unwrap_err();
        assert!(err.contains(&format!("owned by uid {other}")), "{err}");
        std::os::unix::fs::chown(&s.0, Some(other), None).unwrap();
        assert!(check(&s.0, &s.0.join("missing")).unwrap_err().contains("owned by uid"));
    }
}
