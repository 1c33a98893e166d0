//! Server-sent events framing: splits an upstream byte stream into `data:` payloads
//! (one OpenAI chunk JSON each) without buffering more than one event.

use bytes::{Buf, Bytes, BytesMut};

/// Incremental SSE parser. Feed bytes as they arrive, take complete events out.
#[derive(Default)]
pub struct SseParser {
    buf: BytesMut,
}

/// Largest single event accepted from upstream; a provider that never ends an event cannot
/// make Weir buffer without bound.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// One parsed event.
#[derive(Debug, PartialEq, Eq)]
pub enum SseEvent {
    /// The `data:` payload (lines joined with `\n`).
    Data(Bytes),
    /// `data: [DONE]`: the end of an OpenAI stream.
    Done,
}

impl SseParser {
    /// Appends bytes read from upstream.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes held that do not yet form a complete event.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Returns the next complete event, if one is buffered. Events with no `data:` field
    /// (comments, keep-alives) are skipped.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            let (end, sep) = find_boundary(&self.buf)?;
            let raw = self.buf.split_to(end).freeze();
            self.buf.advance(sep);
            if let Some(ev) = parse_event(raw) {
                return Some(ev);
            }
        }
    }
}

fn find_boundary(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some((i, 2));
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, 3));
            }
        }
        i += 1;
    }
    None
}

fn parse_event(raw: Bytes) -> Option<SseEvent> {
    let mut data: Option<Bytes> = None;
    let mut joined: Option<Vec<u8>> = None;
    let mut start = 0;
    while start < raw.len() {
        let end = raw[start..].iter().position(|&b| b == b'\n').map_or(raw.len(), |p| start + p);
        let mut line = raw.slice(start..end);
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        start = end + 1;
        let Some(rest) = line.strip_prefix(b"data:") else { continue };
        let skip = usize::from(rest.first() == Some(&b' '));
        let value = line.slice(5 + skip..);
        match (&mut data, &mut joined) {
            (None, None) => data = Some(value),
            (Some(first), None) => {
                let mut v = first.to_vec();
                v.push(b'\n');
                v.extend_from_slice(&value);
                joined = Some(v);
            }
            (_, Some(v)) => {
                v.push(b'\n');
                v.extend_from_slice(&value);
            }
        }
    }
    let payload = match joined {
        Some(v) => Bytes::from(v),
        None => data?,
    };
    if payload.as_ref() == b"[DONE]" { Some(SseEvent::Done) } else { Some(SseEvent::Data(payload)) }
}

/// Frames one payload as an SSE event: `data: <payload>\n\n`.
pub fn frame(payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// The final event of an OpenAI stream.
pub const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_reads() {
        let mut p = SseParser::default();
        p.feed(b"data: {\"a\":1}\n\ndata: {\"b\"");
        assert_eq!(p.next_event(), Some(SseEvent::Data(Bytes::from_static(b"{\"a\":1}"))));
        assert_eq!(p.next_event(), None);
        p.feed(b":2}\r\n\r\n: keep-alive\n\ndata: [DONE]\n\n");
        assert_eq!(p.next_event(), Some(SseEvent::Data(Bytes::from_static(b"{\"b\":2}"))));
        assert_eq!(p.next_event(), Some(SseEvent::Done));
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn joins_multiline_data() {
        let mut p = SseParser::default();
        p.feed(b"event: x\ndata: a\ndata: b\n\n");
        assert_eq!(p.next_event(), Some(SseEvent::Data(Bytes::from_static(b"a\nb"))));
    }

    #[test]
    fn frames_payload() {
        assert_eq!(&frame(b"{}")[..], b"data: {}\n\n");
    }
}
