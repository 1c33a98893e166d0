//! A fast, strict check that a document is one JSON object, with where one of its top-level
//! members is: for a provider's whole answer, which Weir only needs to know is JSON and whose
//! `usage` it reads. Checking a 1.1 KB answer with serde_json's generic visitors took ~7.6k
//! instructions; this loop ~5k, then serde_json reads only the member (~1.5k).
//!
//! It never decides alone that a document is *not* JSON, nor accepts what serde_json would
//! refuse: anything unusual (a number with an exponent or many digits, a lone surrogate
//! escape, an escaped top-level key, deep nesting, any error) answers "not sure", and the
//! caller asks serde_json, which gives the verdict and its error message. [`Cursor`] is the
//! same grammar for other walks (the front door's scan of request bodies).

use std::ops::Range;

/// Containers nested inside a member's value at most (serde_json's limit is 128 in all).
const MAX_DEPTH: u32 = 64;

/// Bytes that end a run of plain string content: `"`, `\` and the control bytes.
const STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// `Some(span)` when `doc` is certainly one JSON object: `span` is where the value of its
/// top-level member `name` is (the last one, when repeated), `None` when it has none. `None`
/// when `doc` is anything else or when only serde_json can tell.
#[must_use]
pub fn object_member(doc: &[u8], name: &[u8]) -> Option<Option<Range<usize>>> {
    let mut c = Cursor { doc, at: 0 };
    c.ws();
    c.expect(b'{')?;
    c.ws();
    let mut found = None;
    if c.peek()? == b'}' {
        c.at += 1;
    } else {
        loop {
            c.expect(b'"')?;
            let start = c.at;
            // An escaped name could spell `name`; serde_json reads those.
            if !c.string()? {
                return None;
            }
            let key = &doc[start..c.at - 1];
            c.ws();
            c.expect(b':')?;
            c.ws();
            let value = c.at;
            c.value()?;
            if key == name {
                found = Some(value..c.at);
            }
            c.ws();
            match c.bump()? {
                b',' => c.ws(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    c.ws();
    (c.at == doc.len()).then_some(found)
}

/// A position in a document and the grammar's pieces, each `None` on anything it cannot vouch
/// for (see the module's notes).
pub struct Cursor<'a> {
    /// The document.
    pub doc: &'a [u8],
    /// The next byte to read.
    pub at: usize,
}

impl Cursor<'_> {
    /// The next byte, not consumed.
    #[must_use]
    pub fn peek(&self) -> Option<u8> {
        self.doc.get(self.at).copied()
    }

    /// The next byte, consumed.
    pub fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    /// Consumes `want`, or fails.
    pub fn expect(&mut self, want: u8) -> Option<()> {
        (self.bump()? == want).then_some(())
    }

    /// Skips whitespace.
    pub fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.doc.get(self.at) {
            self.at += 1;
        }
    }

    /// One value, its containers walked with a stack of bits (1: object) rather than by
    /// recursion.
    pub fn value(&mut self) -> Option<()> {
        let (mut kinds, mut depth) = (0u64, 0u32);
        loop {
            match self.bump()? {
                open @ (b'{' | b'[') => {
                    self.ws();
                    let object = open == b'{';
                    if self.peek()? == if object { b'}' } else { b']' } {
                        self.at += 1;
                    } else {
                        if depth == MAX_DEPTH {
                            return None;
                        }
                        kinds = kinds << 1 | u64::from(object);
                        depth += 1;
                        if object {
                            self.key()?;
                        }
                        continue;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                b't' => self.word(b"rue")?,
                b'f' => self.word(b"alse")?,
                b'n' => self.word(b"ull")?,
                _ => {
                    self.at -= 1;
                    self.number()?;
                }
            }
            // After a value: close the containers that end here, or go on to the next value.
            loop {
                if depth == 0 {
                    return Some(());
                }
                self.ws();
                let object = kinds & 1 == 1;
                match (self.bump()?, object) {
                    (b',', true) => {
                        self.ws();
                        self.key()?;
                        break;
                    }
                    (b',', false) => {
                        self.ws();
                        break;
                    }
                    (b'}', true) | (b']', false) => {
                        kinds >>= 1;
                        depth -= 1;
                    }
                    _ => return None,
                }
            }
        }
    }

    /// A member's name and its colon, up to its value.
    fn key(&mut self) -> Option<()> {
        self.expect(b'"')?;
        self.string()?;
        self.ws();
        self.expect(b':')?;
        self.ws();
        Some(())
    }

    /// The rest of a string after its opening quote; `Some(true)` when it has no escapes.
    pub fn string(&mut self) -> Option<bool> {
        let mut plain = true;
        loop {
            self.at += plain_run(&self.doc[self.at..]);
            match self.bump()? {
                b'"' => return Some(plain),
                b'\\' => {
                    plain = false;
                    self.escape()?;
                }
                _ => return None,
            }
        }
    }

    /// The escape after a backslash. A surrogate passes only as a high one followed by an
    /// escaped low one (an emoji as JSON encoders that escape non-ASCII write it); any other
    /// use is left to serde_json, which refuses it.
    fn escape(&mut self) -> Option<()> {
        match self.bump()? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(()),
            b'u' => match self.hex4()? {
                0xd800..=0xdbff => {
                    (self.doc.get(self.at..self.at + 2)? == b"\\u").then_some(())?;
                    self.at += 2;
                    matches!(self.hex4()?, 0xdc00..=0xdfff).then_some(())
                }
                0xdc00..=0xdfff => None,
                _ => Some(()),
            },
            _ => None,
        }
    }

    /// Four hex digits, as a number.
    fn hex4(&mut self) -> Option<u16> {
        let hex = self.doc.get(self.at..self.at + 4)?;
        let mut v = 0u16;
        for &h in hex {
            let digit = match h {
                b'0'..=b'9' => h - b'0',
                b'a'..=b'f' => h - b'a' + 10,
                b'A'..=b'F' => h - b'A' + 10,
                _ => return None,
            };
            v = v << 4 | u16::from(digit);
        }
        self.at += 4;
        Some(v)
    }

    /// The rest of `true`, `false` or `null` after its first letter.
    pub fn word(&mut self, rest: &[u8]) -> Option<()> {
        (self.doc.get(self.at..self.at + rest.len())? == rest).then(|| self.at += rest.len())
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - start
    }

    /// A number without an exponent and of at most 18 characters: serde_json range-checks the
    /// numbers it parses, so others are left to it.
    pub fn number(&mut self) -> Option<()> {
        let start = self.at;
        if self.peek()? == b'-' {
            self.at += 1;
        }
        match self.bump()? {
            b'0' => {}
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        let exponent = matches!(self.peek(), Some(b'e' | b'E'));
        (!exponent && self.at - start <= 18).then_some(())
    }
}

const ONES: u64 = u64::MAX / 255;

/// The high bit of each byte of `w` (read little-endian) that is `"`, `\` or a control byte;
/// exact up to the first such byte, which is all the caller reads.
fn stops(w: u64) -> u64 {
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let found = (quote.wrapping_sub(ONES) & !quote)
        | (backslash.wrapping_sub(ONES) & !backslash)
        | (w.wrapping_sub(ONES * 0x20) & !w);
    found & (ONES << 7)
}

/// How many bytes at the start of `s` are plain string content: 8 bytes at a time, and a long
/// run (a prompt, a model's answer text) 32 at a time in a form the compiler turns into vector
/// compares (16 at a time cost ~0.1 more instructions per byte; 64 walks further back to the
/// stop in text with many escapes).
pub(crate) fn plain_run(s: &[u8]) -> usize {
    let mut i = 0;
    loop {
        let Some(word) = s.get(i..i + 8) else {
            return i + s[i..].iter().position(|&b| STOP[usize::from(b)]).unwrap_or(s.len() - i);
        };
        let found = stops(u64::from_le_bytes(word.try_into().unwrap_or_default()));
        if found != 0 {
            return i + found.trailing_zeros() as usize / 8;
        }
        i += 8;
        if i == 16 {
            for chunk in s[i..].chunks_exact(32) {
                let stop = chunk
                    .iter()
                    .fold(0u8, |any, &b| any | u8::from(b < 0x20) | u8::from(b == b'"') | u8::from(b == b'\\'));
                if stop != 0 {
                    break;
                }
                i += 32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(doc: &str) -> Option<Option<&str>> {
        object_member(doc.as_bytes(), b"usage").map(|r| r.map(|r| &doc[r]))
    }

    #[test]
    fn a_plain_run_ends_at_the_first_quote_backslash_or_control_byte_wherever_it_is() {
        for len in 0..160 {
            for at in 0..=len {
                for stop in [b'"', b'\\', 0, 0x1f] {
                    let mut s: Vec<u8> = (0..len).map(|i| b"ab\xc3\xa9 ~\x7f!"[i % 8]).collect();
                    if at < len {
                        s[at] = stop;
                        // A later stop must not matter.
                        s.extend_from_slice(b"\"x\\");
                    }
                    assert_eq!(plain_run(&s), at, "{s:?}");
                }
            }
        }
    }

    #[test]
    fn finds_the_last_top_level_member_of_an_object() {
        assert_eq!(member(r#"{"a":1,"usage":{"x":[1,2,{"usage":3}]}}"#), Some(Some(r#"{"x":[1,2,{"usage":3}]}"#)));
        assert_eq!(member(r#" { "usage" : 1 , "usage" : [ ] } "#), Some(Some("[ ]")));
        assert_eq!(member(r#"{"a":{"usage":1},"b":["usage"]}"#), Some(None));
        assert_eq!(member("{}"), Some(None));
        let long = format!(r#"{{"text":"{}","usage":null}}"#, "quick brown fox \\n \\u00e9 ".repeat(40));
        assert_eq!(member(&long), Some(Some("null")));
        assert_eq!(member(r#"{"a":"\ud83d\ude00 \uDBFF\uDFFF \u00E9","usage":2}"#), Some(Some("2")));
    }

    #[test]
    fn refuses_what_is_not_json_and_leaves_hard_cases_to_serde_json() {
        for doc in [
            "",
            "[]",
            "{",
            r#"{"a":1,}"#,
            r#"{"a":1 "b":2}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":-}"#,
            r#"{"a":tru}"#,
            r#"{"a":"x}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":"\x"}"#,
            r#"{"a":1} x"#,
            r#"{"a":{"b":1]}"#,
            r#"{"a":1e5}"#,
            r#"{"a":12345678901234567890}"#,
            r#"{"a":"\ud83d"}"#,
            r#"{"a":"\ud83d\u0041"}"#,
            r#"{"a":"\ude00\ud83d"}"#,
            r#"{"a":"\ud83d\ude0"}"#,
            r#"{"a":"\u00g1"}"#,
            r#"{"us\u0061ge":1}"#,
        ] {
            assert_eq!(member(doc), None, "{doc}");
        }
        let deep = format!(r#"{{"a":{}1{}}}"#, "[".repeat(65), "]".repeat(65));
        assert_eq!(member(&deep), None);
        let ok = format!(r#"{{"a":{}1{}}}"#, "[".repeat(64), "]".repeat(64));
        assert_eq!(member(&ok), Some(None));
    }
}
