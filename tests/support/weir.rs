//! The real `weir` binary as a child process: config written to a temp dir, started on a free
//! 127.0.0.1 port, stdout/stderr captured for assertions, SIGTERM on demand, killed on drop.

use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest the binary may take to answer `/health` after spawn (generous: CI machines are busy).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of the `weir` binary cargo built for this test run.
pub const WEIR_BIN: &str = env!("CARGO_BIN_EXE_weir");

/// A `weir` process to configure before start.
pub struct WeirBuilder {
    config: String,
    env: Vec<(String, String)>,
    unread_stdout: bool,
}

impl WeirBuilder {
    /// Sets an environment variable for the process (e.g. a key used as `${NAME}`).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Leaves standard output unread (its pipe fills and writes to it block: a stalled
    /// stdout sink); only standard error is captured.
    pub fn unread_stdout(mut self) -> Self {
        self.unread_stdout = true;
        self
    }

    /// Starts `weir serve` and waits until `/health` answers.
    ///
    /// # Panics
    /// If it does not start (with its logs in the message).
    pub async fn start(self) -> Weir {
        // A port picked by binding :0 may be taken again before weir binds it: retry then.
        for _ in 0..5 {
            let dir = TempDir::new();
            let path = dir.path().join("weir.toml");
            std::fs::write(&path, &self.config).unwrap();
            let addr = free_port();
            let mut cmd = Command::new(WEIR_BIN);
            cmd.args(["serve", "--config"]).arg(&path).args(["--listen", &addr.to_string()]);
            // Debug logs: the secret-hygiene test then covers every line weir can print.
            cmd.env("WEIR_LOG", "weir=debug,warn").envs(self.env.iter().map(|(k, v)| (k, v)));
            let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
            let logs = Arc::new(Mutex::new(String::new()));
            let stdout = child.stdout.take();
            let (stdout, unread) = if self.unread_stdout { (None, stdout) } else { (stdout, None) };
            let readers = [capture(stdout, &logs), capture(child.stderr.take(), &logs)];
            let mut weir = Weir { child, addr, logs, readers: Some(readers), _unread: unread, _dir: dir };
            match weir.wait_healthy().await {
                Ok(()) => return weir,
                Err(logs) if logs.contains("cannot listen") => continue,
                Err(logs) => panic!("weir did not start:\n{logs}"),
            }
        }
        panic!("weir could not bind a free port in 5 tries");
    }
}

/// A running `weir serve`.
pub struct Weir {
    child: Child,
    addr: SocketAddr,
    logs: Arc<Mutex<String>>,
    readers: Option<[std::thread::JoinHandle<()>; 2]>,
    /// Standard output kept open and never read (`unread_stdout`).
    _unread: Option<std::process::ChildStdout>,
    _dir: TempDir,
}

impl Weir {
    /// A builder for `weir serve --config <config>`.
    pub fn builder(config: &str) -> WeirBuilder {
        WeirBuilder { config: config.to_owned(), env: Vec::new(), unread_stdout: false }
    }

    /// Starts `weir serve --config <config>` with no extra environment.
    pub async fn start(config: &str) -> Self {
        Self::builder(config).start().await
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The config file the process serves (rewrite it to trigger a reload).
    pub fn config_path(&self) -> std::path::PathBuf {
        self._dir.path().join("weir.toml")
    }

    /// The listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resident memory of the process in bytes, from `/proc/<pid>/statm`.
    pub fn rss_bytes(&self) -> u64 {
        let statm = std::fs::read_to_string(format!("/proc/{}/statm", self.child.id())).unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap();
        pages * 4096
    }

    /// The most resident memory the process has held so far (`VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().strip_suffix("kB"));
        kb.and_then(|v| v.trim().parse::<u64>().ok()).expect("VmHWM in /proc/<pid>/status") * 1024
    }

    /// Everything the process printed so far (stdout and stderr, interleaved).
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, at most `timeout`.
    ///
    /// # Panics
    /// If it is still running then.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the log readers see end-of-file so `logs()` is complete.
                if let Some(readers) = self.readers.take() {
                    readers.into_iter().for_each(|r| r.join().unwrap());
                }
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "weir did not exit within {timeout:?}:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the logs contain `needle` (at most 15 s).
    pub async fn wait_for_log(&self, needle: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !self.logs().contains(needle) {
            assert!(tokio::time::Instant::now() < deadline, "log never showed {needle:?}:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET /metrics` text.
    pub async fn metrics(&self) -> String {
        super::client().get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    /// `GET /ready` as status and JSON.
    pub async fn ready(&self) -> (u16, serde_json::Value) {
        let reply = super::Reply::read(super::client().get(self.url("/ready")).send().await.unwrap()).await;
        (reply.status, reply.json())
    }

    /// Waits (at most 15 s) until `provider`'s queue holds exactly `depth` requests.
    pub async fn wait_queue_depth(&self, provider: &str, depth: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let (_, ready) = self.ready().await;
            let now = ready["providers"][provider]["queue_depth"].as_u64();
            if now == Some(depth) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "queue of {provider} never reached {depth}: {ready}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_healthy(&mut self) -> Result<(), String> {
        let client = super::client();
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                self.wait_exit(Duration::from_secs(1)).await;
                return Err(self.logs());
            }
            if let Ok(resp) = client.get(self.url("/health")).send().await
                && resp.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!("no /health within {START_TIMEOUT:?}\n{}", self.logs()))
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `weir check --config <file with config>` and returns its output.
pub fn weir_check(config: &str, env: &[(&str, &str)]) -> Output {
    let dir = TempDir::new();
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, config).unwrap();
    Command::new(WEIR_BIN).args(["check", "--config"]).arg(&path).envs(env.iter().copied()).output().unwrap()
}

/// A fresh directory under the system temp dir, removed on drop (a failing test's too).
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("weir-e2e-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A 127.0.0.1 port that was free a moment ago.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Copies a child's output into the shared log buffer on a plain thread (the test's runtime
/// may be single-threaded and must not block on pipes).
fn capture(
    pipe: Option<impl std::io::Read + Send + 'static>,
    logs: &Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    let logs = logs.clone();
    std::thread::spawn(move || {
        let Some(mut pipe) = pipe else { return };
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            logs.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
}
