//! Server-sent events parsing, per the WHATWG SSE rules: splits an upstream byte stream into
//! `data:` payloads (one stream event's JSON each); `weir_api::sse` writes them back. Lines end
//! in CRLF, LF or CR; an event's `data:` lines are joined with `\n`. Parsing is linear: each
//! byte is searched once, however the upstream splits its reads, and one event is capped.

use bytes::{Buf, Bytes, BytesMut};

/// Largest single event accepted from upstream; a provider that never ends an event cannot
/// make Weir buffer without bound.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// An upstream event grew past the cap without ending.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("an event exceeds {limit} bytes")]
pub struct EventTooLarge {
    /// The cap it exceeded.
    pub limit: usize,
}

/// Incremental SSE parser. Feed bytes as they arrive, take complete events out.
pub struct SseParser {
    /// Bytes read but not parsed: the start of a line whose end has not arrived.
    buf: BytesMut,
    /// How much of `buf` was already searched for a line end: the next search resumes there,
    /// so an event arriving in tiny pieces is not rescanned after every read.
    searched: usize,
    /// The last line ended in CR: an LF that starts the next read belongs to it.
    after_cr: bool,
    /// The current event's first `data:` value, a slice of the read (no copy)...
    data: Option<Bytes>,
    /// ...and all of them joined with `\n` once there is a second.
    joined: Option<BytesMut>,
    /// Bytes of the current event already parsed (its earlier lines).
    event_bytes: usize,
    limit: usize,
    /// Bytes examined by line and field searches (tests check parsing stays linear).
    scanned: u64,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::with_limit(MAX_EVENT_BYTES)
    }
}

/// One parsed event.
#[derive(Debug, PartialEq, Eq)]
pub enum SseEvent {
    /// The `data:` payload (lines joined with `\n`).
    Data(Bytes),
    /// `data: [DONE]`: the end of an OpenAI stream.
    Done,
}

impl SseParser {
    /// A parser that fails on any event larger than `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            searched: 0,
            after_cr: false,
            data: None,
            joined: None,
            event_bytes: 0,
            limit,
            scanned: 0,
        }
    }

    /// Appends bytes read from upstream.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes held that do not yet form a complete line.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Bytes examined so far by the line and field searches.
    pub fn scanned(&self) -> u64 {
        self.scanned
    }

    /// Returns the next complete event, if one is buffered. Events with no `data:` field
    /// (comments, keep-alives) are skipped.
    ///
    /// # Errors
    /// [`EventTooLarge`] once the current event passes the cap; the stream cannot go on.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, EventTooLarge> {
        loop {
            if self.after_cr && !self.buf.is_empty() {
                self.after_cr = false;
                if self.buf[0] == b'\n' {
                    self.buf.advance(1);
                }
            }
            let from = self.searched;
            let Some(at) = memchr::memchr2(b'\n', b'\r', &self.buf[from..]) else {
                self.scanned += (self.buf.len() - from) as u64;
                self.searched = self.buf.len();
                if self.event_bytes + self.buf.len() > self.limit {
                    return Err(EventTooLarge { limit: self.limit });
                }
                return Ok(None);
            };
            self.scanned += at as u64 + 1;
            let end = from + at;
            self.searched = 0;
            // CRLF is one line end; a CR at the end of the read may still get its LF later.
            let ending = match (self.buf[end], self.buf.get(end + 1)) {
                (b'\r', Some(b'\n')) => 2,
                (b'\r', None) => {
                    self.after_cr = true;
                    1
                }
                _ => 1,
            };
            self.event_bytes += end + ending;
            if self.event_bytes > self.limit {
                return Err(EventTooLarge { limit: self.limit });
            }
            if end == 0 {
                self.buf.advance(ending);
                self.event_bytes = 0;
                if let Some(ev) = self.dispatch() {
                    return Ok(Some(ev));
                }
                continue;
            }
            let line = self.buf.split_to(end).freeze();
            self.buf.advance(ending);
            self.field(line);
        }
    }

    /// One non-empty line: `name: value`, `name` alone (an empty value), or `:comment`.
    /// Only `data` matters to a relay; `event`, `id` and `retry` are not used by OpenAI streams.
    fn field(&mut self, line: Bytes) {
        let colon = memchr::memchr(b':', &line);
        self.scanned += colon.map_or(line.len(), |c| c + 1) as u64;
        let (name, value) = match colon {
            Some(0) => return,
            Some(c) => {
                let skip = usize::from(line.get(c + 1) == Some(&b' '));
                (&line[..c], line.slice(c + 1 + skip..))
            }
            None => (&line[..], Bytes::new()),
        };
        if name != b"data" {
            return;
        }
        match (&mut self.data, &mut self.joined) {
            (None, None) => self.data = Some(value),
            (Some(first), None) => {
                let mut all = BytesMut::with_capacity(first.len() + 1 + value.len());
                all.extend_from_slice(first);
                all.extend_from_slice(b"\n");
                all.extend_from_slice(&value);
                self.joined = Some(all);
                self.data = None;
            }
            (_, Some(all)) => {
                all.extend_from_slice(b"\n");
                all.extend_from_slice(&value);
            }
        }
    }

    /// A blank line ends the event: its data, if it had any.
    fn dispatch(&mut self) -> Option<SseEvent> {
        let payload = match (self.data.take(), self.joined.take()) {
            (_, Some(all)) => all.freeze(),
            (Some(one), None) => one,
            (None, None) => return None,
        };
        Some(if payload.as_ref() == b"[DONE]" { SseEvent::Done } else { SseEvent::Data(payload) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(s: &str) -> Option<SseEvent> {
        Some(SseEvent::Data(Bytes::copy_from_slice(s.as_bytes())))
    }

    fn all_events(p: &mut SseParser) -> Vec<SseEvent> {
        std::iter::from_fn(|| p.next_event().unwrap()).collect()
    }

    #[test]
    fn an_event_fed_in_tiny_pieces_is_scanned_once() {
        let mut event = b"data: {\"x\":\"".to_vec();
        event.resize(32 * 1024, b'a');
        event.extend_from_slice(b"\"}\r\ndata: more\n\n");
        let mut p = SseParser::default();
        let mut got = Vec::new();
        for piece in event.chunks(1).chain(event.chunks(7)) {
            p.feed(piece);
            while let Some(ev) = p.next_event().unwrap() {
                got.push(ev);
            }
        }
        assert_eq!(got.len(), 2, "the event twice (once byte by byte, once in 7-byte pieces)");
        let total = 2 * event.len() as u64;
        assert!(p.scanned() <= 2 * total, "{} bytes examined for {total} fed: not linear", p.scanned());
    }

    #[test]
    fn an_event_over_the_cap_is_an_error_not_a_buffer() {
        let mut p = SseParser::with_limit(1024);
        p.feed(b"data: ");
        p.feed(&[b'x'; 1000]);
        assert_eq!(p.next_event(), Ok(None), "under the cap: still waiting for the end");
        p.feed(&[b'x'; 100]);
        assert!(p.next_event().is_err(), "over the cap without an end");
        // Many short lines of one event count too: the cap is per event, not per line.
        let mut p = SseParser::with_limit(1024);
        for _ in 0..200 {
            p.feed(b"data: 12345\n");
        }
        assert!(p.next_event().is_err());
        // An event under the cap, split over many reads, is fine.
        let mut p = SseParser::with_limit(1024);
        p.feed(b"data: ");
        p.feed(&[b'y'; 900]);
        p.feed(b"\n\n");
        assert_eq!(p.next_event().unwrap(), data(&"y".repeat(900)));
    }

    #[test]
    fn cr_lf_and_crlf_all_end_lines() {
        let mut p = SseParser::default();
        p.feed(b"data: a\rdata: b\r\rdata: c\r\n\r\ndata: d\n");
        p.feed(b"data: e\r");
        assert_eq!(p.next_event().unwrap(), data("a\nb"), "a lone CR ends a line, CR CR an event");
        assert_eq!(p.next_event().unwrap(), data("c"));
        assert_eq!(p.next_event().unwrap(), None);
        // The CR that ended `data: e` may be followed by its LF in the next read.
        p.feed(b"\n\r\n");
        assert_eq!(p.next_event().unwrap(), data("d\ne"));
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn fields_follow_the_sse_rules() {
        let mut p = SseParser::default();
        // No space after the colon, only the first space stripped, a bare `data` line is an
        // empty line of data, other fields and comments are ignored, an event with no data is
        // not dispatched.
        p.feed(b"data:x\ndata:  two\ndata\nid: 7\n: note\n\nevent: ping\n\ndata: [DONE]\n\n");
        assert_eq!(p.next_event().unwrap(), data("x\n two\n"));
        assert_eq!(p.next_event().unwrap(), Some(SseEvent::Done));
        assert_eq!(p.next_event().unwrap(), None);
    }

    #[test]
    fn a_framed_payload_parses_back_to_itself() {
        for payload in ["{}", "a\nb", "a\r\nb", "x\ry", "\n", "two\n\nblank", "end\r"] {
            let mut p = SseParser::default();
            p.feed(&weir_api::sse::frame(payload.as_bytes()));
            let want = payload.replace("\r\n", "\n").replace('\r', "\n");
            assert_eq!(all_events(&mut p), vec![SseEvent::Data(Bytes::from(want))], "{payload:?}");
        }
    }

    #[test]
    fn splits_events_across_reads() {
        let mut p = SseParser::default();
        p.feed(b"data: {\"a\":1}\n\ndata: {\"b\"");
        assert_eq!(p.next_event().unwrap(), Some(SseEvent::Data(Bytes::from_static(b"{\"a\":1}"))));
        assert_eq!(p.next_event().unwrap(), None);
        p.feed(b":2}\r\n\r\n: keep-alive\n\ndata: [DONE]\n\n");
        assert_eq!(p.next_event().unwrap(), Some(SseEvent::Data(Bytes::from_static(b"{\"b\":2}"))));
        assert_eq!(p.next_event().unwrap(), Some(SseEvent::Done));
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn joins_multiline_data() {
        let mut p = SseParser::default();
        p.feed(b"event: x\ndata: a\ndata: b\n\n");
        assert_eq!(p.next_event().unwrap(), Some(SseEvent::Data(Bytes::from_static(b"a\nb"))));
    }
}
