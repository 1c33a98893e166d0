//! The built-in sinks: JSON lines on standard output, and JSON lines in a file rotated by
//! size. Sinks that speak another service's protocol (`otlp`) come from the crate that knows it.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::config::{EventsConfig, SinkConfig, SinkKind};
use crate::{Event, Sink, SinkSpec};

/// Buffer in front of each sink's writes: one system call per batch, not per event.
const BUFFER: usize = 64 * 1024;

/// Makes a sink of a kind this crate does not build (`otlp`).
pub type External<'a> = &'a dyn Fn(&SinkConfig) -> Result<Box<dyn Sink>, String>;

/// The sinks `[[events.sinks]]` configures; `external` makes the `otlp` ones.
///
/// # Errors
/// A file sink's file cannot be opened (the message names the sink and the path), or
/// `external` failed.
pub fn from_config(cfg: &EventsConfig, external: External<'_>) -> Result<Vec<SinkSpec>, String> {
    cfg.sinks
        .iter()
        .map(|s| {
            let sink: Box<dyn Sink> = match s.kind {
                SinkKind::Stdout => Box::new(JsonLines::new(io::stdout())),
                SinkKind::File => Box::new(RotatingFile::open(s).map_err(|e| {
                    format!(
                        "event sink {}: cannot open {}: {e}",
                        s.display_name(),
                        s.path.as_deref().unwrap_or(Path::new("")).display()
                    )
                })?),
                SinkKind::Otlp => external(s)?,
            };
            Ok(SinkSpec { name: s.display_name().to_owned(), min_priority: s.min_priority, queue: s.queue, sink })
        })
        .collect()
}

/// Each event as one JSON line on a writer (standard output).
pub struct JsonLines<W: Write> {
    out: BufWriter<W>,
    line: Vec<u8>,
}

impl<W: Write> JsonLines<W> {
    /// Lines to `out`.
    pub fn new(out: W) -> Self {
        Self { out: BufWriter::with_capacity(BUFFER, out), line: Vec::with_capacity(1024) }
    }
}

impl<W: Write + Send + 'static> Sink for JsonLines<W> {
    fn write(&mut self, event: &Event) -> io::Result<()> {
        self.line.clear();
        event.write_json_line(&mut self.line);
        self.out.write_all(&self.line)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// JSON lines in a file; when the next line would take it past `max_bytes`, the file becomes
/// `<path>.1` (`.1` becomes `.2`, and so on; the oldest past `keep` is deleted) and a new one
/// is started. A line is never split between files.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    out: BufWriter<File>,
    size: u64,
    line: Vec<u8>,
}

impl RotatingFile {
    /// Opens (appends to) the sink's file.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn open(cfg: &SinkConfig) -> io::Result<Self> {
        let path = cfg.path.clone().unwrap_or_default();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            max_bytes: cfg.max_bytes,
            keep: cfg.keep,
            out: BufWriter::with_capacity(BUFFER, file),
            size,
            line: Vec::with_capacity(1024),
        })
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(self.rotated(self.keep));
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
            }
            std::fs::rename(&self.path, self.rotated(1))?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.out = BufWriter::with_capacity(BUFFER, file);
        self.size = 0;
        Ok(())
    }
}

impl Sink for RotatingFile {
    fn write(&mut self, event: &Event) -> io::Result<()> {
        self.line.clear();
        event.write_json_line(&mut self.line);
        let len = self.line.len() as u64;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        self.out.write_all(&self.line)?;
        self.size += len;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
