//! A copied `weir` binary on its embedded default: no config, run from a directory that is
//! neither the repository nor the binary's, and the default plugin chain still runs.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::weir::WEIR_BIN;
use crate::support::{chat, post};

/// A directory under the system temp dir, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(format!("weir-e2e-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the child on drop, so a failed assertion leaves no process behind.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn copied_binary_runs_the_default_plugin_chain() {
    let bin_dir = Scratch::new("copied-bin");
    let work_dir = Scratch::new("copied-cwd");
    let copied = bin_dir.0.join("weir");
    std::fs::copy(WEIR_BIN, &copied).unwrap();

    let mut child = Command::new(&copied)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(&work_dir.0)
        // The compile cache: shared by test runs (each component compiles once), not in $HOME.
        .env("XDG_CACHE_HOME", PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/weir-test-xdg"))
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env("WEIR_LOG", "weir=info,warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = Killed(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut logs = String::new();
    let listening = loop {
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("no start line:\n{logs}"));
        logs.push_str(&line);
        logs.push('\n');
        if line.contains("weir listening on") {
            break line;
        }
    };
    assert!(!listening.contains("plugins: none"), "{logs}");
    assert!(listening.contains("plugins: prompt-guard -> pii-redact"), "{logs}");
    let addr = listening.split("http://").nth(1).and_then(|r| r.split_whitespace().next()).unwrap();

    let reply =
        post(&format!("http://{addr}/v1/chat/completions"), &chat("mock-1", "mail me at ada@example.com")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["choices"][0]["message"]["content"], "mail me at [email]", "{logs}");
    drop(child);
}
