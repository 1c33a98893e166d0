//! A real `redis-server` on 127.0.0.1 and a free port, with no persistence, that a test can
//! kill and start again on the same port. Killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest `redis-server` may take to answer `PING` after spawn.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running (or killed) `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers.
    ///
    /// # Panics
    /// If `redis-server` is not installed or does not answer within 10 s.
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut r = Self { child: None, port };
        r.spawn().await;
        r
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// SIGKILL, and waits for the process to go.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (`STOP`: it hangs, holding its connections; `CONT`: it goes on).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server is running").id();
        let ok = Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().unwrap().success();
        assert!(ok, "kill -{signal} {pid} failed");
    }

    /// Starts it again on the same port (empty: nothing was persisted).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            if self.ping().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server on port {} did not answer PING within {START_TIMEOUT:?}", self.port);
    }

    /// How many keys it holds (`DBSIZE`).
    pub async fn dbsize(&self) -> u64 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.expect("redis-server answers");
        s.write_all(b"DBSIZE\r\n").await.unwrap();
        let mut buf = [0u8; 32];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await.expect("DBSIZE in time").unwrap();
        let reply = std::str::from_utf8(&buf[..n]).unwrap();
        reply.trim().trim_start_matches(':').parse().unwrap_or_else(|_| panic!("DBSIZE said {reply:?}"))
    }

    /// How many times Redis ran `command` (lower case), scripts' own calls included
    /// (`INFO commandstats`).
    pub async fn calls(&self, command: &str) -> u64 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.expect("redis-server answers");
        s.write_all(b"INFO commandstats\r\n").await.unwrap();
        let mut buf = Vec::new();
        let read = async {
            // A bulk string: `$<len>\r\n<text>\r\n`.
            loop {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "redis-server closed the connection");
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if let Some((head, _)) = text.split_once("\r\n") {
                    let len: usize = head.trim_start_matches('$').parse().unwrap();
                    if buf.len() >= head.len() + 2 + len {
                        return;
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(2), read).await.expect("INFO in time");
        let text = String::from_utf8_lossy(&buf);
        let line = text.lines().find(|l| l.starts_with(&format!("cmdstat_{command}:")));
        line.and_then(|l| l.split("calls=").nth(1)?.split(',').next()?.parse().ok()).unwrap_or(0)
    }

    /// Whether it answers `PING`.
    pub async fn ping(&self) -> bool {
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
            s.write_all(b"PING\r\n").await.ok()?;
            let mut buf = [0u8; 7];
            s.read_exact(&mut buf).await.ok()?;
            Some(&buf == b"+PONG\r\n")
        };
        tokio::time::timeout(Duration::from_secs(1), attempt).await.ok().flatten().unwrap_or(false)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
