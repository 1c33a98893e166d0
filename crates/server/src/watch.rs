//! The file watcher trigger of hot reload: watches the config file and every plugin file
//! (through their directories, since editors and `mv` replace files), debounces bursts of
//! events, and asks the [`Reloader`] for a reload.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::reload::Reloader;

/// Starts watching; the watcher lives in the spawned task until the process exits.
///
/// # Errors
/// If the OS watcher cannot be created (e.g. inotify limits).
pub fn spawn(reloader: Arc<Reloader>) -> notify::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<notify::Event>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            let _ = tx.send(ev);
        }
    })?;
    tokio::spawn(async move {
        let mut watched_dirs: HashSet<PathBuf> = HashSet::new();
        let mut files = sync_watches(&reloader, &mut watcher, &mut watched_dirs);
        while let Some(ev) = rx.recv().await {
            if !relevant(&ev, &files) {
                continue;
            }
            // Debounce: wait for the burst to end, then drop what queued up meanwhile.
            tokio::time::sleep(reloader.debounce()).await;
            while rx.try_recv().is_ok() {}
            tracing::info!(path = %ev.paths.first().map(|p| p.display().to_string()).unwrap_or_default(), "file changed; reloading");
            let _ = reloader.reload("watch").await;
            files = sync_watches(&reloader, &mut watcher, &mut watched_dirs);
        }
    });
    Ok(())
}

fn relevant(ev: &notify::Event, files: &HashSet<PathBuf>) -> bool {
    matches!(ev.kind, EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_))
        && ev.paths.iter().any(|p| files.contains(p))
}

/// Watches the directories of the config file and of every plugin of the running snapshot;
/// returns the set of files whose changes trigger a reload.
fn sync_watches(
    reloader: &Reloader,
    watcher: &mut notify::RecommendedWatcher,
    watched_dirs: &mut HashSet<PathBuf>,
) -> HashSet<PathBuf> {
    let gw = reloader.state().gateway.load();
    // Built-in plugins live in the binary: no file to watch.
    let mut files: Vec<PathBuf> = gw
        .config
        .plugins
        .iter()
        .filter(|p| crate::plugins::builtin::name(&p.path).is_none())
        .map(|p| p.path.clone())
        .collect();
    files.extend(reloader.config_path().cloned());
    let mut wanted = HashSet::new();
    let mut out = HashSet::new();
    for f in files {
        let Some((dir, name)) = split(&f) else { continue };
        out.insert(dir.join(name));
        wanted.insert(dir);
    }
    for dir in watched_dirs.difference(&wanted).cloned().collect::<Vec<_>>() {
        let _ = watcher.unwatch(&dir);
        watched_dirs.remove(&dir);
    }
    for dir in wanted {
        if watched_dirs.contains(&dir) {
            continue;
        }
        match watcher.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                watched_dirs.insert(dir);
            }
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory"),
        }
    }
    out
}

/// Canonical directory and file name (the file itself may not exist between writes).
fn split(path: &Path) -> Option<(PathBuf, std::ffi::OsString)> {
    let name = path.file_name()?.to_owned();
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Some((dir.canonicalize().ok()?, name))
}
