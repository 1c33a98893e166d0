//! A JSON tree written as compact text: byte for byte what `serde_json::to_vec` writes, with
//! string content copied in runs (found 8 to 32 bytes a step by the check's scan) where
//! serde_json looks each byte up in its escape table. Writing the translated body was the
//! largest cost of translating a request between formats.

use std::io::Write as _;

use serde_json::{Map, Value};

use super::check::plain_run;

/// `value` as JSON text.
#[must_use]
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_value(&mut out, value);
    out
}

/// `map` as the text of a JSON object.
#[must_use]
pub fn object_to_vec(map: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_object(&mut out, map);
    out
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // A Number's text is what serde_json writes for it (itoa, or ryu for a finite float).
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(out, map),
    }
}

fn write_object(out: &mut Vec<u8>, map: &Map<String, Value>) {
    out.push(b'{');
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, key);
        out.push(b':');
        write_value(out, value);
    }
    out.push(b'}');
}

/// Appends `s` as a JSON string with serde_json's escapes: `"` and `\`, the short forms of
/// backspace, form feed, newline, carriage return and tab, `\u00xx` (lower-case hex) for other
/// control bytes.
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rest = s.as_bytes();
    out.reserve(rest.len() + 2);
    out.push(b'"');
    loop {
        let run = plain_run(rest);
        out.extend_from_slice(&rest[..run]);
        let Some((&b, tail)) = rest[run..].split_first() else { break };
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]),
        }
        rest = tail;
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A small deterministic generator (xorshift), so a failure names its seed.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn string(&mut self) -> String {
            // Plain runs of every length around the scan's 8- and 32-byte steps, broken by
            // every byte that needs an escape and by multi-byte characters.
            const PIECES: [&str; 12] =
                ["\"", "\\", "\u{8}", "\u{c}", "\n", "\r", "\t", "\u{0}", "\u{1f}", "\u{7f}", "é", "🦀"];
            let mut s = String::new();
            for _ in 0..self.below(6) {
                for _ in 0..self.below(70) {
                    s.push(char::from(b'a' + (self.below(26) as u8)));
                }
                if self.below(3) > 0 {
                    s.push_str(PIECES[self.below(PIECES.len() as u64) as usize]);
                }
            }
            s
        }
        fn value(&mut self, depth: u32) -> Value {
            match self.below(if depth > 3 { 6 } else { 8 }) {
                0 => Value::Null,
                1 => Value::Bool(self.below(2) == 1),
                2 => json!(self.next()),
                3 => json!(-(self.below(1 << 40) as i64)),
                4 => json!(f64::from_bits(self.next() >> 2) * if self.below(2) == 1 { 1.0 } else { -1.0 }),
                5 => Value::String(self.string()),
                6 => Value::Array((0..self.below(5)).map(|_| self.value(depth + 1)).collect()),
                _ => Value::Object((0..self.below(5)).map(|_| (self.string(), self.value(depth + 1))).collect()),
            }
        }
    }

    #[test]
    fn writes_what_serde_json_writes_for_generated_trees() {
        for seed in 1..=3000u64 {
            let mut g = Gen(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let v = g.value(0);
            assert_eq!(String::from_utf8(to_vec(&v)).unwrap(), serde_json::to_string(&v).unwrap(), "seed {seed}");
        }
    }

    #[test]
    fn escapes_every_control_byte_quote_and_backslash_as_serde_json_does() {
        let all: String = (0u8..0x80).map(char::from).collect::<String>() + "é🦀\u{2028}";
        for s in [all.clone(), all.repeat(3), format!("{}{all}", "x".repeat(37))] {
            let v = Value::String(s);
            assert_eq!(to_vec(&v), serde_json::to_vec(&v).unwrap());
        }
        let map = json!({"a\"b": [1, 2.5, -3, 1e300, null, true, false, {}, []], "": "\u{0}"});
        assert_eq!(object_to_vec(map.as_object().unwrap()), serde_json::to_vec(&map).unwrap());
    }
}
