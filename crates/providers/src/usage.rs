//! Token usage in an OpenAI-shaped answer (`usage.prompt_tokens`, `usage.completion_tokens`,
//! `usage.prompt_tokens_details.cached_tokens`), for `weir_tokens_total`. A whole answer's is
//! read in the scan that checks the answer is JSON; a stream's from the last chunk carrying one
//! (OpenAI sends it in a final chunk when asked with `stream_options.include_usage`), so no
//! other chunk is parsed.

use std::fmt;

use bytes::Bytes;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Tokens one upstream answer reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// `usage.prompt_tokens`.
    pub prompt: u64,
    /// `usage.completion_tokens`.
    pub completion: u64,
    /// `usage.prompt_tokens_details.cached_tokens` (part of `prompt`).
    pub cached: u64,
}

impl Usage {
    /// The usage object's counts; missing or non-numeric fields count 0.
    fn from_value(v: &Value) -> Option<Self> {
        let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
        let o = v.as_object()?;
        Some(Self {
            prompt: n(o.get("prompt_tokens")),
            completion: n(o.get("completion_tokens")),
            cached: n(o.get("prompt_tokens_details").and_then(|d| d.get("cached_tokens"))),
        })
    }
}

/// Checks that `body` is one JSON value and reads its top-level `usage`, in one pass that
/// skips everything else without building it.
///
/// # Errors
/// `body` is not valid JSON.
pub fn read_answer(body: &[u8]) -> Result<Option<Usage>, serde_json::Error> {
    serde_json::from_slice::<Answer>(body).map(|a| a.0)
}

/// A top-level JSON value: any shape is valid; only an object's `usage` is kept.
struct Answer(Option<Usage>);

/// A top-level key: `usage` or one skipped without allocating.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Key {
    Usage,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for Answer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AnswerVisitor)
    }
}

struct AnswerVisitor;

impl<'de> Visitor<'de> for AnswerVisitor {
    type Value = Answer;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Answer, A::Error> {
        let mut usage = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                // A small object: a tree of it is cheap, and a malformed one is only not counted.
                Key::Usage => usage = Usage::from_value(&map.next_value::<Value>()?),
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Answer(usage))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Answer, A::Error> {
        IgnoredAny.visit_seq(seq).map(|_| Answer(None))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Answer, E> {
        Ok(Answer(None))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Answer, E> {
        Ok(Answer(None))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Answer, E> {
        Ok(Answer(None))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Answer, E> {
        Ok(Answer(None))
    }

    fn visit_str<E>(self, _: &str) -> Result<Answer, E> {
        Ok(Answer(None))
    }

    fn visit_unit<E>(self) -> Result<Answer, E> {
        Ok(Answer(None))
    }
}

/// The usage of a stream, noted chunk by chunk: a substring search per chunk, and a parse of
/// only the last chunk whose `usage` is an object, at the end.
#[derive(Default)]
pub struct StreamUsage {
    last: Option<Bytes>,
}

impl StreamUsage {
    /// Keeps `payload` (a reference, not a copy) when it carries a usage object.
    pub fn note(&mut self, payload: &Bytes) {
        let Some(at) = memchr::memmem::rfind(payload, b"\"usage\"") else { return };
        let mut rest = payload[at + 7..].iter().copied().filter(|b| !b.is_ascii_whitespace());
        if rest.next() == Some(b':') && rest.next() == Some(b'{') {
            self.last = Some(payload.clone());
        }
    }

    /// The usage of the last chunk noted with one.
    pub fn usage(&self) -> Option<Usage> {
        read_answer(self.last.as_ref()?).ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answers_usage_is_read_and_any_json_is_valid() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"\"usage\": {}"}}],
            "usage":{"prompt_tokens":12,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":4}}}"#;
        assert_eq!(read_answer(body).unwrap(), Some(Usage { prompt: 12, completion: 5, cached: 4 }));
        assert_eq!(
            read_answer(br#"{"usage":{"prompt_tokens":3,"total_tokens":3}}"#).unwrap(),
            Some(Usage { prompt: 3, completion: 0, cached: 0 })
        );
        for no_usage in [&br#"{"usage":null}"#[..], br#"{"usage":"lots"}"#, b"[1,2]", b"\"s\"", b"null", b"7"] {
            assert_eq!(read_answer(no_usage).unwrap(), None, "{}", String::from_utf8_lossy(no_usage));
        }
        for invalid in [&b"{\"id\": oops"[..], b"", b"{} {}", b"{\"a\":1,}"] {
            assert!(read_answer(invalid).is_err(), "{}", String::from_utf8_lossy(invalid));
        }
    }

    #[test]
    fn a_streams_usage_is_its_last_chunk_with_a_usage_object() {
        let mut s = StreamUsage::default();
        s.note(&Bytes::from_static(br#"{"choices":[{"delta":{"content":"hi"}}],"usage":null}"#));
        assert_eq!(s.usage(), None);
        s.note(&Bytes::from_static(br#"{"choices":[],"usage" : {"prompt_tokens":9,"completion_tokens":2}}"#));
        s.note(&Bytes::from_static(br#"{"choices":[{"delta":{"content":"\"usage\": {"}}]}"#));
        s.note(&Bytes::from_static(br#"{"choices":[],"usage":null}"#));
        assert_eq!(s.usage(), Some(Usage { prompt: 9, completion: 2, cached: 0 }));
    }
}
