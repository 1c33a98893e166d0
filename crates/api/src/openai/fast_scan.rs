//! The front door's scan of the usual body on the answer check's loop
//! ([`Cursor`](crate::json::check::Cursor)) instead of serde_json's visitors: the same
//! [`Scanned`] for fewer instructions. It vouches only for bodies it fully understands (a JSON
//! object without a repeated or escaped key, numbers without exponents, nesting under 64
//! levels, at most 128 keys open at once); for anything else it answers `None` and
//! [`super::scan`] runs serde_json, which decides and words any error.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{Deserializer, Visitor};

use super::scan::{Input, Kind, Message, Messages, Scanned, Top};
use crate::json::check::Cursor;
use crate::json::index::{Field, FieldValue, Text};

/// Containers nested inside a value that is not a prompt's at most.
const MAX_DEPTH: usize = 64;

/// Keys of the objects open at once at most (each checked against its object's others).
const MAX_KEYS: usize = 128;

/// Where a prompt text goes.
#[derive(Clone, Copy)]
enum List {
    Chat,
    Input,
    System,
}

/// [`super::scan::scan_for`] of `text` (already checked as UTF-8), or `None` when only
/// serde_json can tell.
pub(super) fn scan(text: &str, index: bool, system: bool) -> Option<Scanned<'_>> {
    u32::try_from(text.len()).ok()?;
    let mut w = Walk {
        c: Cursor { doc: text.as_bytes(), at: 0 },
        text,
        index,
        system,
        keys: [(0, 0); MAX_KEYS],
        live: 0,
        chat_texts: Vec::new(),
        input_texts: Vec::new(),
        system_texts: Vec::new(),
    };
    let top = w.top()?;
    w.c.ws();
    (w.c.at == text.len()).then_some(Scanned {
        top: Some(top),
        repeated: false,
        chat_texts: w.chat_texts,
        input_texts: w.input_texts,
        system_texts: w.system_texts,
    })
}

struct Walk<'de> {
    c: Cursor<'de>,
    text: &'de str,
    index: bool,
    system: bool,
    /// The keys of the objects open now, innermost last, as spans of `text`.
    keys: [(u32, u32); MAX_KEYS],
    live: usize,
    chat_texts: Vec<Text>,
    input_texts: Vec<Text>,
    system_texts: Vec<Text>,
}

impl<'de> Walk<'de> {
    /// The body's object: the fields validation reads and, with `index`, every field.
    fn top(&mut self) -> Option<Top<'de>> {
        let text = self.text;
        let mut top = Top::default();
        self.c.ws();
        if self.c.peek()? != b'{' {
            return None;
        }
        if !self.open(b'}')? {
            return Some(top);
        }
        loop {
            let key = self.key(0)?;
            let name = &text[key.clone()];
            let value = match name {
                "messages" => {
                    top.messages = Some(self.messages()?);
                    FieldValue::Composite
                }
                "input" => {
                    top.input = Some(self.input()?);
                    FieldValue::Composite
                }
                "system" if self.system => {
                    top.system = Some(self.content(List::System)?);
                    FieldValue::Composite
                }
                _ => {
                    let kind = self.kind(self.index || name == "model")?;
                    let value = if self.index { self.field_value(&kind) } else { FieldValue::Composite };
                    top.keep(name, kind);
                    value
                }
            };
            if self.index {
                top.fields.push(Field { key: Text::Span(key), value });
            }
            if !self.more(b'}')? {
                return Some(top);
            }
        }
    }

    /// `messages`.
    fn messages(&mut self) -> Option<Messages<'de>> {
        if self.c.peek()? != b'[' {
            self.kind(false)?;
            return Some(Messages::NotArray);
        }
        let mut items = Vec::with_capacity(4);
        if self.open(b']')? {
            loop {
                items.push(self.message()?);
                if !self.more(b']')? {
                    break;
                }
            }
        }
        Some(Messages::Items(items))
    }

    /// One element of `messages`.
    fn message(&mut self) -> Option<Message<'de>> {
        if self.c.peek()? != b'{' {
            self.kind(false)?;
            return Some(Message::default());
        }
        let text = self.text;
        let mut m = Message { object: true, ..Message::default() };
        let start = self.live;
        if self.open(b'}')? {
            loop {
                match &text[self.key(start)?] {
                    "role" => m.role = Some(self.kind(true)?),
                    "content" => m.content = Some(self.content(List::Chat)?),
                    _ => {
                        self.kind(false)?;
                    }
                }
                if !self.more(b'}')? {
                    break;
                }
            }
        }
        self.live = start;
        Some(m)
    }

    /// A message's `content` (or a top-level `system`): a string or the text parts of an
    /// array are prompt texts.
    fn content(&mut self, list: List) -> Option<Kind<'de>> {
        match self.c.peek()? {
            b'"' => {
                let s = self.string()?;
                self.push(list, s)?;
                Some(Kind::Str(None))
            }
            b'[' => {
                if self.open(b']')? {
                    loop {
                        self.part(list)?;
                        if !self.more(b']')? {
                            break;
                        }
                    }
                }
                Some(Kind::Array)
            }
            _ => self.kind(false),
        }
    }

    /// One content part: `{"type": "text", "text": ...}` is a prompt text.
    fn part(&mut self, list: List) -> Option<()> {
        if self.c.peek()? != b'{' {
            return self.kind(false).map(drop);
        }
        let text = self.text;
        let (mut is_text, mut part_text) = (false, None);
        let start = self.live;
        if self.open(b'}')? {
            loop {
                let name = &text[self.key(start)?];
                let keep = self.index && (name == "type" || name == "text");
                match (name, self.kind(keep)?) {
                    ("type", Kind::Str(Some(t))) => is_text = t == "text",
                    ("text", Kind::Str(Some(t))) => part_text = Some(self.cow_text(t)),
                    _ => {}
                }
                if !self.more(b'}')? {
                    break;
                }
            }
        }
        self.live = start;
        if let (true, Some(t)) = (is_text, part_text) {
            self.list(list).push(t);
        }
        Some(())
    }

    /// `input` (embeddings).
    fn input(&mut self) -> Option<Input> {
        match self.c.peek()? {
            b'"' => {
                let s = self.string()?;
                self.push(List::Input, s)?;
                Some(Input::Str)
            }
            b'[' => {
                let (mut len, mut ok) = (0, true);
                if self.open(b']')? {
                    loop {
                        len += 1;
                        ok &= self.input_item()?;
                        if !self.more(b']')? {
                            break;
                        }
                    }
                }
                Some(Input::Array { len, ok })
            }
            _ => self.kind(false).map(|_| Input::Other),
        }
    }

    /// One item of an `input` array: whether it is a string, a token or an array of tokens.
    fn input_item(&mut self) -> Option<bool> {
        match self.c.peek()? {
            b'"' => {
                let s = self.string()?;
                self.push(List::Input, s)?;
                Some(true)
            }
            b'[' => {
                let mut ok = true;
                if self.open(b']')? {
                    loop {
                        ok &= self.kind(false)?.as_u64().is_some();
                        if !self.more(b']')? {
                            break;
                        }
                    }
                }
                Some(ok)
            }
            _ => Some(self.kind(false)?.as_u64().is_some()),
        }
    }

    /// Any value, summarised; `keep` keeps a string's text.
    fn kind(&mut self, keep: bool) -> Option<Kind<'de>> {
        Some(match self.c.peek()? {
            b'{' => {
                self.skip()?;
                Kind::Object
            }
            b'[' => {
                self.skip()?;
                Kind::Array
            }
            b'"' => {
                let (span, plain) = self.string()?;
                Kind::Str(if keep { Some(self.cow(span, plain)?) } else { None })
            }
            b't' => {
                self.c.at += 1;
                self.c.word(b"rue")?;
                Kind::Bool(true)
            }
            b'f' => {
                self.c.at += 1;
                self.c.word(b"alse")?;
                Kind::Bool(false)
            }
            b'n' => {
                self.c.at += 1;
                self.c.word(b"ull")?;
                Kind::Null
            }
            _ => {
                let start = self.c.at;
                self.c.number()?;
                let number = &self.text[start..self.c.at];
                if number.bytes().all(|b| b.is_ascii_digit()) {
                    // At most 18 digits: no overflow.
                    Kind::U64(number.bytes().fold(0, |v, d| v * 10 + u64::from(d - b'0')))
                } else {
                    number_kind(number)?
                }
            }
        })
    }

    /// Any value (the cursor at its first byte), checking every object it holds for repeated
    /// keys; containers walked with a stack of bits (1: object) rather than by recursion.
    fn skip(&mut self) -> Option<()> {
        let (mut kinds, mut depth) = (0u64, 0usize);
        let mut starts = [0usize; MAX_DEPTH];
        loop {
            match self.c.bump()? {
                open @ (b'{' | b'[') => {
                    self.c.ws();
                    let object = open == b'{';
                    if self.c.peek()? == if object { b'}' } else { b']' } {
                        self.c.at += 1;
                    } else {
                        if depth == MAX_DEPTH {
                            return None;
                        }
                        kinds = kinds << 1 | u64::from(object);
                        starts[depth] = self.live;
                        depth += 1;
                        if object {
                            self.key(self.live)?;
                        }
                        continue;
                    }
                }
                b'"' => {
                    self.c.string()?;
                }
                b't' => self.c.word(b"rue")?,
                b'f' => self.c.word(b"alse")?,
                b'n' => self.c.word(b"ull")?,
                _ => {
                    self.c.at -= 1;
                    self.c.number()?;
                }
            }
            // After a value: close the containers that end here, or go on to the next value.
            loop {
                if depth == 0 {
                    return Some(());
                }
                self.c.ws();
                let object = kinds & 1 == 1;
                match (self.c.bump()?, object) {
                    (b',', true) => {
                        self.c.ws();
                        self.key(starts[depth - 1])?;
                        break;
                    }
                    (b',', false) => {
                        self.c.ws();
                        break;
                    }
                    (b'}', true) | (b']', false) => {
                        self.live = starts[depth - 1];
                        kinds >>= 1;
                        depth -= 1;
                    }
                    _ => return None,
                }
            }
        }
    }

    /// Enters the container whose first byte is next: `Some(false)` when it closes with
    /// `close` at once, `Some(true)` when a first member or element follows.
    fn open(&mut self, close: u8) -> Option<bool> {
        self.c.at += 1;
        self.c.ws();
        if self.c.peek()? == close {
            self.c.at += 1;
            return Some(false);
        }
        Some(true)
    }

    /// After a member or element: `Some(true)` when another follows, `Some(false)` when the
    /// container closes with `close`.
    fn more(&mut self, close: u8) -> Option<bool> {
        self.c.ws();
        match self.c.bump()? {
            b',' => {
                self.c.ws();
                Some(true)
            }
            b if b == close => Some(false),
            _ => None,
        }
    }

    /// A member's name and colon: its span, once checked against the other keys of its object
    /// (those from `object` on); an escaped name or a repeat is serde_json's to read.
    fn key(&mut self, object: usize) -> Option<Range<usize>> {
        let (span, plain) = self.string()?;
        let bytes = self.text.as_bytes();
        let name = &bytes[span.clone()];
        let repeated =
            self.keys[object..self.live].iter().any(|&(s, e)| bytes.get(s as usize..e as usize) == Some(name));
        if !plain || repeated || self.live == MAX_KEYS {
            return None;
        }
        // The body's length fits in u32 (checked once).
        self.keys[self.live] = (span.start as u32, span.end as u32);
        self.live += 1;
        self.c.ws();
        self.c.expect(b':')?;
        self.c.ws();
        Some(span)
    }

    /// A string (the cursor at its quote): its content's span and whether it has no escapes.
    fn string(&mut self) -> Option<(Range<usize>, bool)> {
        self.c.expect(b'"')?;
        let start = self.c.at;
        let plain = self.c.string()?;
        Some((start..self.c.at - 1, plain))
    }

    /// A string's text: borrowed when it has no escapes, else unescaped by serde_json.
    fn cow(&self, span: Range<usize>, plain: bool) -> Option<Cow<'de, str>> {
        let text = self.text;
        if plain {
            return Some(Cow::Borrowed(&text[span]));
        }
        serde_json::from_str::<String>(&text[span.start - 1..=span.end]).ok().map(Cow::Owned)
    }

    /// Where a kept string is, as the index records it.
    fn cow_text(&self, v: Cow<'_, str>) -> Text {
        match v {
            Cow::Borrowed(s) => {
                let start = s.as_ptr() as usize - self.text.as_ptr() as usize;
                Text::Span(start..start + s.len())
            }
            Cow::Owned(s) => Text::Owned(s.into()),
        }
    }

    /// A top-level value as the index keeps it.
    fn field_value(&self, kind: &Kind<'de>) -> FieldValue {
        kind.field_value(|t| self.cow_text(t.clone()))
    }

    fn list(&mut self, list: List) -> &mut Vec<Text> {
        match list {
            List::Chat => &mut self.chat_texts,
            List::Input => &mut self.input_texts,
            List::System => &mut self.system_texts,
        }
    }

    /// Records a prompt text (with `index`).
    fn push(&mut self, list: List, (span, plain): (Range<usize>, bool)) -> Option<()> {
        if self.index {
            let text = match self.cow(span, plain)? {
                Cow::Borrowed(s) => self.cow_text(Cow::Borrowed(s)),
                Cow::Owned(s) => Text::Owned(s.into()),
            };
            self.list(list).push(text);
        }
        Some(())
    }
}

/// A number other than a plain non-negative integer, as serde_json reads it (which kind `-0`
/// is, how a fraction rounds).
fn number_kind(number: &str) -> Option<Kind<'static>> {
    struct NumberKind;
    impl Visitor<'_> for NumberKind {
        type Value = Kind<'static>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number")
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Kind::U64(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Kind::I64(v))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Kind::F64(v))
        }
    }
    serde_json::Deserializer::from_str(number).deserialize_any(NumberKind).ok()
}
