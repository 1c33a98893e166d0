//! Token usage in an answer, for `weir_tokens_total`: OpenAI's (`usage.prompt_tokens`,
//! `usage.completion_tokens`, `usage.prompt_tokens_details.cached_tokens`) or Anthropic's
//! (`usage.input_tokens` plus the cache reads and writes it leaves out, `output_tokens`,
//! `cache_read_input_tokens`). A whole answer's is
//! read beside the check that the answer is JSON; a stream's from the last chunk carrying one
//! (OpenAI sends it in a final chunk when asked with `stream_options.include_usage`), so no
//! other chunk is parsed.

use std::fmt;

use bytes::Bytes;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use weir_types::json::check;

use crate::format::ApiFormat;

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

/// Checks that `body` is one JSON value and reads its top-level `usage`, in one pass that
/// skips everything else without building it.
///
/// # Errors
/// `body` is not valid JSON.
pub fn read_answer(body: &[u8]) -> Result<Option<Usage>, serde_json::Error> {
    // The usual answer: checked by the fast loop, only its `usage` read by serde_json.
    match check::object_member(body, b"usage") {
        Some(None) => return Ok(None),
        Some(Some(usage)) => {
            if let Ok(read) = serde_json::from_slice::<Read<UsageObject>>(&body[usage]) {
                return Ok(read.0);
            }
        }
        None => {}
    }
    serde_json::from_slice::<Read<Answer>>(body).map(|a| a.0)
}

/// A key of the answer or of its usage object: those read, or one skipped without allocating.
enum Key {
    Usage,
    PromptTokens,
    CompletionTokens,
    PromptTokensDetails,
    InputTokensDetails,
    CachedTokens,
    InputTokens,
    OutputTokens,
    CacheReadInputTokens,
    CacheCreationInputTokens,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // As bytes: compared, not checked for UTF-8 first (skipped keys are not either).
        d.deserialize_bytes(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_bytes<E>(self, key: &[u8]) -> Result<Key, E> {
        Ok(Key::of(key))
    }

    fn visit_str<E>(self, key: &str) -> Result<Key, E> {
        Ok(Key::of(key.as_bytes()))
    }
}

impl Key {
    fn of(key: &[u8]) -> Self {
        match key {
            b"usage" => Key::Usage,
            b"prompt_tokens" => Key::PromptTokens,
            b"completion_tokens" => Key::CompletionTokens,
            b"prompt_tokens_details" => Key::PromptTokensDetails,
            b"input_tokens_details" => Key::InputTokensDetails,
            b"cached_tokens" => Key::CachedTokens,
            b"input_tokens" => Key::InputTokens,
            b"output_tokens" => Key::OutputTokens,
            b"cache_read_input_tokens" => Key::CacheReadInputTokens,
            b"cache_creation_input_tokens" => Key::CacheCreationInputTokens,
            _ => Key::Other,
        }
    }
}

/// What one part of the answer reads when it has the expected shape; any other JSON value is
/// skipped (still checked) and reads as `None`: a malformed usage is only not counted.
struct Read<T: Part>(Option<T::Out>);

/// A part of the answer: the answer itself, its usage object, `prompt_tokens_details`, a count.
trait Part: Sized {
    type Out;
    /// The part's value read from a JSON object.
    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Option<Self::Out>, A::Error>;
    /// The part's value read from a JSON unsigned integer.
    fn from_u64(_: u64) -> Option<Self::Out> {
        None
    }
}

impl<'de, T: Part> Deserialize<'de> for Read<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PartVisitor::<T>(std::marker::PhantomData))
    }
}

struct PartVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Part> Visitor<'de> for PartVisitor<T> {
    type Value = Read<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Read<T>, A::Error> {
        T::from_map(map).map(Read)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Read<T>, A::Error> {
        IgnoredAny.visit_seq(seq).map(|_| Read(None))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Read<T>, E> {
        Ok(Read(None))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Read<T>, E> {
        Ok(Read(None))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Read<T>, E> {
        Ok(Read(T::from_u64(n)))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Read<T>, E> {
        Ok(Read(None))
    }

    fn visit_str<E>(self, _: &str) -> Result<Read<T>, E> {
        Ok(Read(None))
    }

    fn visit_unit<E>(self) -> Result<Read<T>, E> {
        Ok(Read(None))
    }
}

/// The whole answer: any JSON value; an object's `usage` is read.
struct Answer;

impl Part for Answer {
    type Out = Usage;

    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Option<Usage>, A::Error> {
        let mut usage = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Usage => usage = map.next_value::<Read<UsageObject>>()?.0,
                _ => skip(&mut map)?,
            }
        }
        Ok(usage)
    }
}

/// The `usage` object, read in place rather than as a `Value` tree; missing or non-numeric
/// fields count 0.
struct UsageObject;

impl Part for UsageObject {
    type Out = Usage;

    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Option<Usage>, A::Error> {
        let mut c = Counts::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::PromptTokens => c.prompt = count(&mut map)?,
                Key::CompletionTokens => c.completion = count(&mut map)?,
                Key::PromptTokensDetails => c.cached = map.next_value::<Read<Details>>()?.0.unwrap_or(0),
                Key::InputTokens => c.input = count(&mut map)?,
                Key::InputTokensDetails => c.details = Some(map.next_value::<Read<Details>>()?.0.unwrap_or(0)),
                Key::OutputTokens => c.output = Some(count(&mut map)?),
                Key::CacheReadInputTokens => c.read = count(&mut map)?,
                Key::CacheCreationInputTokens => c.written = count(&mut map)?,
                _ => skip(&mut map)?,
            }
        }
        Ok(Some(c.usage()))
    }
}

/// A usage object's counts as read, before each format's rule combines them.
#[derive(Default)]
struct Counts {
    /// OpenAI Chat's.
    prompt: u64,
    completion: u64,
    cached: u64,
    /// Anthropic's: its input leaves out the cached tokens, which OpenAI's includes.
    input: u64,
    read: u64,
    written: u64,
    output: Option<u64>,
    /// OpenAI Responses': `input_tokens` includes the cached ones, named in its details.
    details: Option<u64>,
}

impl Counts {
    fn usage(self) -> Usage {
        match (self.output, self.details) {
            (Some(output), Some(cached)) => Usage { prompt: self.input, completion: output, cached },
            (Some(output), None) => {
                let prompt = self.input.saturating_add(self.read).saturating_add(self.written);
                Usage { prompt, completion: output, cached: self.read }
            }
            (None, _) => Usage { prompt: self.prompt, completion: self.completion, cached: self.cached },
        }
    }
}

/// `prompt_tokens_details`: its `cached_tokens`.
struct Details;

impl Part for Details {
    type Out = u64;

    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Option<u64>, A::Error> {
        let mut cached = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::CachedTokens => cached = map.next_value::<Read<Count>>()?.0,
                _ => skip(&mut map)?,
            }
        }
        Ok(cached)
    }
}

/// A token count: a JSON unsigned integer.
struct Count;

impl Part for Count {
    type Out = u64;

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Option<u64>, A::Error> {
        IgnoredAny.visit_map(map).map(|_| None)
    }

    fn from_u64(n: u64) -> Option<u64> {
        Some(n)
    }
}

/// The value of the key just read as a count; 0 when it is not one.
fn count<'de, A: MapAccess<'de>>(map: &mut A) -> Result<u64, A::Error> {
    map.next_value::<Read<Count>>().map(|c| c.0.unwrap_or(0))
}

/// Checks and skips the value of the key just read.
fn skip<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value::<IgnoredAny>().map(|_| ())
}

/// The usage of a stream in the client's format, noted event by event: a substring search per
/// event, and a parse at the end of only the events that carry one. OpenAI reports it once, in
/// the last chunk with a `usage` object; Anthropic reports the input in `message_start`
/// (`message.usage`) and the output so far in each `message_delta`.
#[derive(Default)]
pub struct StreamUsage {
    anthropic: bool,
    /// Responses: the usage is in the last event's `response.usage`.
    responses: bool,
    /// Anthropic: the first event with usage (`message_start`).
    first: Option<Bytes>,
    last: Option<Bytes>,
}

impl StreamUsage {
    /// Usage of a stream of `format` events.
    pub fn new(format: ApiFormat) -> Self {
        Self { anthropic: format == ApiFormat::Anthropic, responses: format == ApiFormat::Responses, ..Self::default() }
    }

    /// Keeps `payload` (a reference, not a copy) when it carries a usage object.
    pub fn note(&mut self, payload: &Bytes) {
        let Some(at) = memchr::memmem::rfind(payload, b"\"usage\"") else { return };
        let mut rest = payload[at + 7..].iter().copied().filter(|b| !b.is_ascii_whitespace());
        if rest.next() == Some(b':') && rest.next() == Some(b'{') {
            if self.anthropic && self.first.is_none() {
                self.first = Some(payload.clone());
            } else {
                self.last = Some(payload.clone());
            }
        }
    }

    /// The usage of the stream so far.
    pub fn usage(&self) -> Option<Usage> {
        if self.responses {
            let v: serde_json::Value = serde_json::from_slice(self.last.as_ref()?).ok()?;
            let u = v.pointer("/response/usage").filter(|u| u.is_object())?;
            let n = |p: &str| u.pointer(p).and_then(serde_json::Value::as_u64).unwrap_or(0);
            return Some(Usage {
                prompt: n("/input_tokens"),
                completion: n("/output_tokens"),
                cached: n("/input_tokens_details/cached_tokens"),
            });
        }
        if !self.anthropic {
            return read_answer(self.last.as_ref()?).ok().flatten();
        }
        let object = |b: &Option<Bytes>, pointer: &str| -> Option<serde_json::Value> {
            let v: serde_json::Value = serde_json::from_slice(b.as_ref()?).ok()?;
            v.pointer(pointer).filter(|u| u.is_object()).cloned()
        };
        let start = object(&self.first, "/message/usage");
        let delta = object(&self.last, "/usage");
        if start.is_none() && delta.is_none() {
            return None;
        }
        let count = |u: &Option<serde_json::Value>, key: &str| u.as_ref().and_then(|u| u.get(key)?.as_u64());
        // A `message_delta` that repeats the input counts has the final ones.
        let input = if count(&delta, "input_tokens").is_some() { &delta } else { &start };
        let read = count(input, "cache_read_input_tokens").unwrap_or(0);
        let prompt =
            count(input, "input_tokens").unwrap_or(0) + read + count(input, "cache_creation_input_tokens").unwrap_or(0);
        let completion = count(&delta, "output_tokens").or_else(|| count(&start, "output_tokens")).unwrap_or(0);
        Some(Usage { prompt, completion, cached: read })
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
        assert_eq!(
            read_answer(br#"{"usage":{"prompt_tokens":"9","completion_tokens":-1,"prompt_tokens_details":[1]}}"#)
                .unwrap(),
            Some(Usage::default()),
            "non-numeric counts count 0"
        );
        assert_eq!(
            read_answer(
                br#"{"prompt_tokens":5,"usage":{"completion_tokens":2.5,"prompt_tokens":{"a":1},
                "prompt_tokens_details":{"cached_tokens":3,"audio_tokens":1}}}"#
            )
            .unwrap(),
            Some(Usage { prompt: 0, completion: 0, cached: 3 }),
            "only the usage object's own fields count"
        );
        for no_usage in [&br#"{"usage":null}"#[..], br#"{"usage":"lots"}"#, b"[1,2]", b"\"s\"", b"null", b"7"] {
            assert_eq!(read_answer(no_usage).unwrap(), None, "{}", String::from_utf8_lossy(no_usage));
        }
        for invalid in [&b"{\"id\": oops"[..], b"", b"{} {}", b"{\"a\":1,}", br#"{"usage":{"prompt_tokens":1,}}"#] {
            assert!(read_answer(invalid).is_err(), "{}", String::from_utf8_lossy(invalid));
        }
    }

    /// Random JSON, the same every run (a seeded generator).
    struct Gen(fastrand::Rng);

    impl Gen {
        fn below(&mut self, n: usize) -> usize {
            self.0.usize(..n)
        }

        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.below(from.len())]
        }

        fn value(&mut self, depth: u32, out: &mut String) {
            match self.below(if depth > 3 { 4 } else { 7 }) {
                0 => out.push_str(self.pick(&["null", "true", "false", "0", "7", "-12", "3.25", "250", "1e3", "-0.5"])),
                // What only serde_json decides, now and then.
                1 if self.below(10) == 0 => {
                    out.push_str(self.pick(&["12345678901234567890", "2.5E-3", "\"\\ud83d\"", "\"\\ude00\\ud83d\""]))
                }
                1 => out.push_str(self.pick(&["450", "0.0", "-3"])),
                2 | 3 => {
                    out.push('"');
                    for _ in 0..self.below(4) {
                        let long = "lorem ipsum dolor ".repeat(self.below(40));
                        out.push_str(self.pick(&[
                            "abc",
                            "\\n",
                            "\\\"",
                            "\\u00e9",
                            "\\/",
                            "é",
                            "usage",
                            "\\ud83d\\ude00",
                            "\\uDBFF\\uDFFF",
                            &long,
                        ]));
                    }
                    out.push('"');
                }
                4 | 5 => self.object(depth, out),
                _ => {
                    out.push('[');
                    for i in 0..self.below(4) {
                        out.push_str(if i > 0 { "," } else { "" });
                        self.value(depth + 1, out);
                    }
                    out.push(']');
                }
            }
        }

        /// Mostly a usage object of one format or another, with odd values now and then.
        fn usage(&mut self, depth: u32, out: &mut String) {
            if self.below(5) == 0 {
                return self.value(depth, out);
            }
            out.push('{');
            for i in 0..self.below(6) {
                out.push_str(if i > 0 { "," } else { "" });
                let key = self.pick(&[
                    "prompt_tokens",
                    "completion_tokens",
                    "input_tokens",
                    "output_tokens",
                    "cache_read_input_tokens",
                    "cache_creation_input_tokens",
                    "prompt_tokens_details",
                    "input_tokens_details",
                    "total_tokens",
                ]);
                out.push_str(&format!("\"{key}\":"));
                match (key.ends_with("details"), self.below(4)) {
                    (true, 0) => self.value(depth + 1, out),
                    (true, _) => {
                        let (n, m) = (self.below(100), self.below(100));
                        out.push_str(&format!(r#"{{"cached_tokens":{n},"audio_tokens":1,"cached_tokens":{m}}}"#));
                    }
                    (false, 0) => self.value(depth + 1, out),
                    (false, _) => out.push_str(&self.below(5000).to_string()),
                }
            }
            out.push('}');
        }

        fn object(&mut self, depth: u32, out: &mut String) {
            out.push('{');
            for i in 0..self.below(5) {
                out.push_str(if i > 0 { ", " } else { "" });
                let keys = [
                    "usage",
                    "prompt_tokens",
                    "completion_tokens",
                    "cached_tokens",
                    "prompt_tokens_details",
                    "input_tokens",
                    "output_tokens",
                    "cache_read_input_tokens",
                    "input_tokens_details",
                    "a",
                ];
                let key = self.pick(&keys);
                out.push_str(&format!("\"{key}\": "));
                if self.below(30) == 0 {
                    out.push_str(r#""us\u0061ge":"#);
                }
                if key == "usage" {
                    self.usage(depth + 1, out);
                } else {
                    self.value(depth + 1, out);
                }
            }
            out.push('}');
        }
    }

    /// Bytes inserted into documents: structure, escapes, a control byte, a byte never in UTF-8.
    const INSERTED: &[u8] = b"{}[],:\"\\0a \x01\xff";

    #[test]
    fn the_fast_answer_check_agrees_with_serde_json_on_random_and_broken_documents() {
        let mut g = Gen(fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15));
        let (mut sure, mut docs) = (0, 0);
        for _ in 0..4000 {
            let mut doc = String::from(r#"{"id":"x","usage":"#);
            g.usage(1, &mut doc);
            doc.push_str(r#","rest":"#);
            g.object(1, &mut doc);
            doc.push('}');
            let mut variants = vec![doc.clone().into_bytes()];
            for _ in 0..4 {
                let mut v = doc.clone().into_bytes();
                // Most edits land next to structure, where a lax check would show.
                let marks: Vec<usize> = (0..v.len()).filter(|&i| b"{}[],:\"".contains(&v[i])).collect();
                let at = if g.below(4) == 0 { g.below(v.len() + 1) } else { marks[g.below(marks.len())] };
                match g.below(5) {
                    0 if at < v.len() => drop(v.remove(at)),
                    1 => v.insert(at, INSERTED[g.below(INSERTED.len())]),
                    2 => v.truncate(at),
                    3 => v.insert(at, b','),
                    _ => v.insert(at, b' '),
                }
                variants.push(v);
            }
            for (i, v) in variants.iter().enumerate() {
                let fast = weir_types::json::check::object_member(v, b"usage");
                let slow = serde_json::from_slice::<Read<Answer>>(v).map(|a| a.0);
                let text = String::from_utf8_lossy(v);
                // The member's own value is read by serde_json; everything else must be JSON.
                if fast.is_some() {
                    assert!(serde_json::from_slice::<IgnoredAny>(v).is_ok(), "accepted what is not JSON: {text}");
                }
                if fast == Some(None) {
                    assert!(matches!(slow, Ok(None)), "{text}");
                }
                assert_eq!(read_answer(v).ok(), slow.as_ref().ok().copied(), "{text}");
                assert_eq!(read_answer(v).is_err(), slow.is_err(), "{text}");
                if i == 0 {
                    docs += 1;
                    sure += usize::from(fast.is_some());
                }
            }
        }
        // Most well-formed documents are decided by the fast loop (the rest hold exponents,
        // long numbers, surrogates or escaped names).
        assert!(sure * 10 > docs * 6, "{sure} of {docs}");
    }

    #[test]
    fn anthropic_usage_counts_cached_input_as_input() {
        let body = br#"{"id":"msg_1","type":"message","content":[],"usage":{"input_tokens":10,
            "cache_creation_input_tokens":3,"cache_read_input_tokens":4,"output_tokens":7}}"#;
        assert_eq!(read_answer(body).unwrap(), Some(Usage { prompt: 17, completion: 7, cached: 4 }));
    }

    #[test]
    fn an_anthropic_streams_usage_is_its_start_input_and_last_delta_output() {
        let mut s = StreamUsage::new(ApiFormat::Anthropic);
        s.note(&Bytes::from_static(
            br#"{"type":"message_start","message":{"id":"m","usage":{"input_tokens":25,"cache_read_input_tokens":5,"output_tokens":1}}}"#,
        ));
        s.note(&Bytes::from_static(
            br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\"usage\": {"}}"#,
        ));
        s.note(&Bytes::from_static(
            br#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}"#,
        ));
        assert_eq!(s.usage(), Some(Usage { prompt: 30, completion: 15, cached: 5 }));
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
