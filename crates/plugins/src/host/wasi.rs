//! Capability WASI (for guests whose toolchain imports it: Rust std, Python, JS): a
//! deny-by-default context. No preopened directories, no environment or arguments, no
//! sockets or name lookups, stdin closed; clocks and random are harmless and allowed.
//! stdout/stderr are captured line by line into the log, through the plugin's log budget
//! (bounded line length and rate, control characters escaped; see `log.rs`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView};

use super::StoreData;
use super::log::{LogBudget, MAX_MESSAGE_BYTES};
use crate::plugins::bindings::log::Level;

/// Per-instance WASI state.
pub struct WasiState {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiState {
    /// The deny-by-default context of a plugin whose output goes through `log`.
    pub fn new(log: &Arc<LogBudget>) -> Self {
        let mut b = WasiCtx::builder();
        b.stdout(LogSink { log: log.clone(), level: Level::Info })
            .stderr(LogSink { log: log.clone(), level: Level::Warn })
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        Self { ctx: b.build(), table: ResourceTable::new() }
    }

    /// The view WASI host functions use.
    pub fn view(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.ctx, table: &mut self.table }
    }
}

/// Adds WASI 0.2 to the linker (async flavour: hooks are called with `call_async`).
///
/// # Errors
/// Only on a linker conflict (a bug).
pub fn add_to_linker(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)
}

/// stdout/stderr of one instance, turned into log lines.
#[derive(Clone)]
struct LogSink {
    log: Arc<LogBudget>,
    level: Level,
}

impl IsTerminal for LogSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogSink {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineWriter::new(self.clone()))
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineWriter::new(self.clone()))
    }
}

/// Buffers bytes until a newline (or the line cap) and logs each line.
struct LineWriter {
    sink: LogSink,
    line: Vec<u8>,
}

impl LineWriter {
    fn new(sink: LogSink) -> Self {
        Self { sink, line: Vec::new() }
    }

    fn write_bytes(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = MAX_MESSAGE_BYTES - self.line.len();
            let take = bytes.iter().position(|&b| b == b'\n').map_or(bytes.len().min(room), |p| p.min(room));
            self.line.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            let newline = bytes.first() == Some(&b'\n');
            if newline {
                bytes = &bytes[1..];
            }
            if newline || self.line.len() >= MAX_MESSAGE_BYTES {
                self.flush_line();
            }
        }
    }

    fn flush_line(&mut self) {
        if !self.line.is_empty() {
            self.sink.log.emit(self.sink.level, &String::from_utf8_lossy(&self.line));
            self.line.clear();
        }
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.flush_line();
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.get_mut().write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().flush_line();
        Poll::Ready(Ok(()))
    }
}

// The denials themselves are proven against a real guest: `wasi_is_denied_by_default` in
// `plugins/tests.rs` probes env, files, directories and sockets from inside a component.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_bounded() {
        let log = Arc::new(LogBudget::new("p".into(), Default::default()));
        let mut w = LineWriter::new(LogSink { log, level: Level::Info });
        w.write_bytes(b"hello\nwor");
        assert_eq!(w.line, b"wor");
        w.write_bytes(b"ld\n");
        assert!(w.line.is_empty());
        w.write_bytes(&vec![b'x'; MAX_MESSAGE_BYTES * 3 + 5]);
        assert_eq!(w.line.len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stdout_flood_spends_the_plugins_log_budget() {
        let log = Arc::new(LogBudget::new("p".into(), Default::default()));
        let mut w = LineWriter::new(LogSink { log: log.clone(), level: Level::Info });
        // 6 MiB of output in 4 KiB lines: the burst passes, the rest is dropped.
        for _ in 0..1536 {
            w.write_bytes(&[b'y'; MAX_MESSAGE_BYTES]);
        }
        assert!(!log.admit(1), "the budget the log capability shares is spent");
    }
}
