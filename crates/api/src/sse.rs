//! Server-sent events framing for front doors whose streams are SSE: one payload in, one
//! `data:` event out. The upstream side (parsing) is `weir_providers::sse`.

use bytes::Bytes;

/// Frames one payload as an SSE event: `data: <line>\n` per line of the payload, then a blank
/// line. A payload's CR, LF or CRLF each start a new `data:` line, so a client reads back
/// exactly the payload Weir (and its plugins) saw, with `\n` between lines: a line break can
/// neither be lost nor end the event early.
pub fn frame(payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(b"data: ");
    let mut rest = payload;
    while let Some(at) = memchr::memchr2(b'\n', b'\r', rest) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(b"\ndata: ");
        let crlf = rest[at] == b'\r' && rest.get(at + 1) == Some(&b'\n');
        rest = &rest[at + 1 + usize::from(crlf)..];
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_with_line_breaks_is_framed_one_data_line_each() {
        assert_eq!(&frame(b"a\nb\r\nc\rd")[..], b"data: a\ndata: b\ndata: c\ndata: d\n\n");
        assert_eq!(&frame(b"a\n")[..], b"data: a\ndata: \n\n");
        assert_eq!(&frame(b"")[..], b"data: \n\n");
    }

    #[test]
    fn frames_payload() {
        assert_eq!(&frame(b"{}")[..], b"data: {}\n\n");
    }
}
