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

/// A copied `weir serve` on the embedded default, started in a scratch working directory.
struct Started {
    child: Killed,
    /// `127.0.0.1:PORT`.
    addr: String,
    /// Its log lines up to the start line.
    logs: String,
    _dirs: [Scratch; 2],
}

fn start_copied_default(label: &str) -> Started {
    let bin_dir = Scratch::new(&format!("{label}-bin"));
    let work_dir = Scratch::new(&format!("{label}-cwd"));
    let copied = bin_dir.0.join("weir");
    std::fs::copy(WEIR_BIN, &copied).unwrap();

    let mut child = Command::new(&copied)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(&work_dir.0)
        // The compile cache: shared by test runs (each component compiles once), not in $HOME.
        .env("XDG_CACHE_HOME", PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/weir-test-xdg"))
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("WEIR_PLUGIN_ALLOCATOR")
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
    let addr = listening.split("http://").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_owned();
    Started { child, addr, logs, _dirs: [bin_dir, work_dir] }
}

#[tokio::test]
async fn copied_binary_runs_the_default_plugin_chain() {
    let weir = start_copied_default("copied");
    let logs = &weir.logs;
    assert!(!logs.contains("plugins: none"), "{logs}");
    assert!(logs.contains("plugins: prompt-guard -> pii-redact"), "{logs}");

    let url = format!("http://{}/v1/chat/completions", weir.addr);
    let reply = post(&url, &chat("mock-1", "mail me at ada@example.com")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["choices"][0]["message"]["content"], "mail me at [email]", "{logs}");
}

/// The pooling allocator reserved ~4 GiB of address space for each of 1,000 memory slots
/// (4.2 TB), whatever the config; the default chain's four instances need a few dozen.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn default_serve_reserves_address_space_sized_from_its_config() {
    const MAX_KB: u64 = 256 * 1024 * 1024; // 256 GiB
    let weir = start_copied_default("vmsize");
    let status = std::fs::read_to_string(format!("/proc/{}/status", weir.child.0.id())).unwrap();
    let vm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(vm_kb <= MAX_KB, "VmSize {vm_kb} kB is over {MAX_KB} kB:\n{}", weir.logs);
}
