//! One pass over a request body that checks what the front door needs without building a
//! `serde_json::Value` tree: the JSON grammar (the same deserializer as [`crate::json::parse_body`],
//! so the same limits and error messages), repeated keys at any depth, and a summary of the
//! fields [`super::validate`] reads. A tree costs a `String` per key and string and a B-tree
//! node per object, then as much again to free; most requests never need one (nothing reads
//! their fields after validation, and the client's bytes go upstream as they are).
//!
//! A body the fast scan ([`super::fast_scan`]) vouches for never reaches serde_json here; the
//! visitors below decide the rest (repeated or escaped keys, exponents, every error).

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

pub use super::summary::{Input, Kind, Message, Messages, Top};
use crate::json::index::{Field, FieldValue, Text};

/// Objects with more keys than this check repeats in a hash set instead of a list.
const LINEAR_KEYS: usize = 16;

/// The scan's result.
#[derive(Debug)]
pub struct Scanned<'de> {
    /// `None` when the body is valid JSON but not an object.
    pub top: Option<Top<'de>>,
    /// Whether some object in the body repeats a key.
    pub repeated: bool,
    /// With `index`: the chat prompt texts (`messages[].content` strings and text parts).
    pub chat_texts: Vec<Text>,
    /// With `index`: the embeddings prompt texts (`input` strings).
    pub input_texts: Vec<Text>,
    /// With `index` and `system`: the texts of a top-level `system` (Anthropic's instructions:
    /// a string or text blocks), which come before the messages' texts whatever the key order.
    pub system_texts: Vec<Text>,
}

/// Scans `body` (the same grammar as `serde_json::from_slice::<Value>`); with `index`, also
/// records where its prompt texts and top-level fields are.
///
/// # Errors
/// serde_json's error for malformed JSON.
pub fn scan(body: &[u8], index: bool) -> Result<Scanned<'_>, serde_json::Error> {
    scan_for(body, index, false)
}

/// [`scan`]; with `system`, a top-level `system` is summarised and its texts recorded too
/// (formats that keep instructions there).
///
/// # Errors
/// serde_json's error for malformed JSON.
pub fn scan_for(body: &[u8], index: bool, system: bool) -> Result<Scanned<'_>, serde_json::Error> {
    // One UTF-8 check of the whole body instead of one per string: both scans then read
    // strings unchecked (~1.6k of ~70k instructions per proxied request).
    let Ok(text) = std::str::from_utf8(body) else { return Err(not_utf8(body)) };
    // The usual body takes the fast scan (~3k instructions fewer for a 1 KB chat body).
    match super::fast_scan::scan(text, index, system) {
        Some(scanned) => Ok(scanned),
        None => by_serde(text, index, system),
    }
}

/// [`scan_for`] by serde_json's deserializer, for any body (`text` is the body, checked as
/// UTF-8): the reference the fast scan agrees with, and the one that words errors.
///
/// # Errors
/// serde_json's error for malformed JSON.
pub(super) fn by_serde(text: &str, index: bool, system: bool) -> Result<Scanned<'_>, serde_json::Error> {
    let cx = Cx {
        system,
        system_texts: RefCell::default(),
        repeated: Cell::new(false),
        base: text.as_ptr() as usize,
        len: text.len(),
        index,
        chat_texts: RefCell::default(),
        input_texts: RefCell::default(),
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let top = TopSeed(&cx).deserialize(&mut de)?;
    de.end()?;
    let (chat_texts, input_texts) = (cx.chat_texts.into_inner(), cx.input_texts.into_inner());
    let system_texts = cx.system_texts.into_inner();
    Ok(Scanned { top, repeated: cx.repeated.get(), chat_texts, input_texts, system_texts })
}

/// The error serde_json gives for `body`, which is not UTF-8: the same message and position
/// as a scan of the bytes would (both check each string as they reach it).
#[cold]
fn not_utf8(body: &[u8]) -> serde_json::Error {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Err(e) => e,
        // Unreachable: bytes outside strings are ASCII grammar, and every string is checked.
        Ok(_) => serde::de::Error::custom("request body is not UTF-8"),
    }
}

/// What every seed of one scan shares.
struct Cx {
    /// Some object repeated a key.
    repeated: Cell<bool>,
    /// The body's address and length: a borrowed string's span is its address minus `base`.
    base: usize,
    len: usize,
    /// Whether to record prompt texts and top-level fields (for plugins).
    index: bool,
    /// `messages[].content` strings and text parts, in order.
    chat_texts: RefCell<Vec<Text>>,
    /// `input` strings, in order.
    input_texts: RefCell<Vec<Text>>,
    /// Whether a top-level `system` holds prompt texts.
    system: bool,
    /// `system` string or text blocks, in order.
    system_texts: RefCell<Vec<Text>>,
}

impl Cx {
    /// Where `v` is: its span when it was borrowed from the body, else a copy.
    fn text(&self, v: &str, borrowed: bool) -> Text {
        match (v.as_ptr() as usize).checked_sub(self.base) {
            Some(start) if borrowed && start + v.len() <= self.len => Text::Span(start..start + v.len()),
            _ => Text::Owned(v.into()),
        }
    }

    #[allow(clippy::ptr_arg)] // whether the text was borrowed is the point
    fn cow_text(&self, v: &Cow<'_, str>) -> Text {
        self.text(v, matches!(v, Cow::Borrowed(_)))
    }

    /// A top-level value as the index keeps it.
    fn field_value(&self, kind: &Kind<'_>) -> FieldValue {
        kind.field_value(|t| self.cow_text(t))
    }

    fn push_text(&self, list: &RefCell<Vec<Text>>, v: &str, borrowed: bool) {
        if self.index {
            list.borrow_mut().push(self.text(v, borrowed));
        }
    }
}

/// An object key, borrowed from the body when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The keys of one object seen so far.
#[derive(Default)]
struct Keys<'de> {
    list: Vec<Cow<'de, str>>,
    set: Option<HashSet<Cow<'de, str>>>,
}

impl<'de> Keys<'de> {
    /// Records `key`, noting on `repeated` when the object already had it.
    fn note(&mut self, key: Cow<'de, str>, cx: &Cx) {
        let fresh = match &mut self.set {
            Some(set) => set.insert(key),
            None if self.list.contains(&key) => false,
            None => {
                self.list.push(key);
                if self.list.len() > LINEAR_KEYS {
                    self.set = Some(self.list.drain(..).collect());
                }
                true
            }
        };
        if !fresh {
            cx.repeated.set(true);
        }
    }
}

/// Walks the rest of an object, checking its keys and values.
fn skip_map<'de, A: MapAccess<'de>>(mut access: A, cx: &Cx) -> Result<(), A::Error> {
    let mut keys = Keys::default();
    while let Some(Key(key)) = access.next_key()? {
        keys.note(key, cx);
        access.next_value_seed(Any { keep: false, cx })?;
    }
    Ok(())
}

/// Walks the rest of an array, checking its values.
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A, cx: &Cx) -> Result<(), A::Error> {
    while seq.next_element_seed(Any { keep: false, cx })?.is_some() {}
    Ok(())
}

/// Implements `DeserializeSeed` for a seed that is its own visitor (of any JSON value).
macro_rules! seed_by_visitor {
    ($seed:ident) => {
        impl<'de> DeserializeSeed<'de> for $seed<'_> {
            type Value = <Self as Visitor<'de>>::Value;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
        }
    };
}

/// Implements the scalar visits of a seed whose value is the scalar's [`Kind`].
macro_rules! scalar_kinds {
    () => {
        fn visit_bool<E>(self, v: bool) -> Result<Kind<'de>, E> {
            Ok(Kind::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Kind<'de>, E> {
            Ok(Kind::I64(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Kind<'de>, E> {
            Ok(Kind::U64(v))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Kind<'de>, E> {
            Ok(Kind::F64(v))
        }
        fn visit_unit<E>(self) -> Result<Kind<'de>, E> {
            Ok(Kind::Null)
        }
    };
}

/// Any value, summarised as a [`Kind`]; `keep` keeps a string's text.
#[derive(Clone, Copy)]
struct Any<'a> {
    keep: bool,
    cx: &'a Cx,
}

seed_by_visitor!(Any);

impl<'de> Visitor<'de> for Any<'_> {
    type Value = Kind<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    scalar_kinds!();
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Kind<'de>, E> {
        Ok(Kind::Str(self.keep.then_some(Cow::Borrowed(v))))
    }
    fn visit_str<E>(self, v: &str) -> Result<Kind<'de>, E> {
        Ok(Kind::Str(self.keep.then(|| Cow::Owned(v.to_owned()))))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Kind<'de>, A::Error> {
        skip_seq(seq, self.cx)?;
        Ok(Kind::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Kind<'de>, A::Error> {
        skip_map(access, self.cx)?;
        Ok(Kind::Object)
    }
}

/// Implements the scalar visits of a seed whose value is `$other` for any scalar.
macro_rules! scalars_are {
    ($other:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($other)
        }
    };
    ($other:expr, strings too) => {
        scalars_are!($other);
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($other)
        }
    };
}

/// The body: an object's fields, or `None` for any other value.
struct TopSeed<'a>(&'a Cx);

seed_by_visitor!(TopSeed);

impl<'de> Visitor<'de> for TopSeed<'_> {
    type Value = Option<Top<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    scalars_are!(None, strings too);
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        skip_seq(seq, self.0)?;
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let cx = self.0;
        let mut top = Top::default();
        let mut keys = Keys::default();
        while let Some(Key(key)) = access.next_key()? {
            let value = match &*key {
                "messages" => {
                    top.messages = Some(access.next_value_seed(MessagesSeed(cx))?);
                    FieldValue::Composite
                }
                "input" => {
                    top.input = Some(access.next_value_seed(InputSeed(cx))?);
                    FieldValue::Composite
                }
                "system" if cx.system => {
                    top.system = Some(access.next_value_seed(ContentSeed(cx, &cx.system_texts))?);
                    FieldValue::Composite
                }
                name => {
                    let kind = access.next_value_seed(Any { keep: cx.index || name == "model", cx })?;
                    let value = if cx.index { cx.field_value(&kind) } else { FieldValue::Composite };
                    top.keep(name, kind);
                    value
                }
            };
            if cx.index {
                top.fields.push(Field { key: cx.cow_text(&key), value });
            }
            keys.note(key, cx);
        }
        Ok(Some(top))
    }
}

/// `messages`.
struct MessagesSeed<'a>(&'a Cx);

seed_by_visitor!(MessagesSeed);

impl<'de> Visitor<'de> for MessagesSeed<'_> {
    type Value = Messages<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of messages")
    }
    scalars_are!(Messages::NotArray, strings too);
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(4).min(64));
        while let Some(m) = seq.next_element_seed(MessageSeed(self.0))? {
            items.push(m);
        }
        Ok(Messages::Items(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Self::Value, A::Error> {
        skip_map(access, self.0)?;
        Ok(Messages::NotArray)
    }
}

/// One element of `messages`.
struct MessageSeed<'a>(&'a Cx);

seed_by_visitor!(MessageSeed);

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = Message<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message object")
    }
    scalars_are!(Message::default(), strings too);
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        skip_seq(seq, self.0)?;
        Ok(Message::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let cx = self.0;
        let mut m = Message { object: true, ..Message::default() };
        let mut keys = Keys::default();
        while let Some(Key(key)) = access.next_key()? {
            match &*key {
                "role" => m.role = Some(access.next_value_seed(Any { keep: true, cx })?),
                "content" => m.content = Some(access.next_value_seed(ContentSeed(cx, &cx.chat_texts))?),
                _ => {
                    access.next_value_seed(Any { keep: false, cx })?;
                }
            }
            keys.note(key, cx);
        }
        Ok(m)
    }
}

/// A message's `content` (or Anthropic's `system`): its kind, recording a string or the text
/// parts of an array in the list given.
struct ContentSeed<'a>(&'a Cx, &'a RefCell<Vec<Text>>);

seed_by_visitor!(ContentSeed);

impl<'de> Visitor<'de> for ContentSeed<'_> {
    type Value = Kind<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("message content")
    }
    scalar_kinds!();
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Kind<'de>, E> {
        self.0.push_text(self.1, v, true);
        Ok(Kind::Str(None))
    }
    fn visit_str<E>(self, v: &str) -> Result<Kind<'de>, E> {
        self.0.push_text(self.1, v, false);
        Ok(Kind::Str(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind<'de>, A::Error> {
        while seq.next_element_seed(PartSeed(self.0, self.1))?.is_some() {}
        Ok(Kind::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Kind<'de>, A::Error> {
        skip_map(access, self.0)?;
        Ok(Kind::Object)
    }
}

/// One content part: `{"type": "text", "text": ...}` is a prompt text.
struct PartSeed<'a>(&'a Cx, &'a RefCell<Vec<Text>>);

seed_by_visitor!(PartSeed);

impl<'de> Visitor<'de> for PartSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a content part")
    }
    scalars_are!((), strings too);
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        skip_seq(seq, self.0)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<(), A::Error> {
        let cx = self.0;
        let (mut is_text, mut text) = (false, None);
        let mut keys = Keys::default();
        while let Some(Key(key)) = access.next_key()? {
            let kind = access.next_value_seed(Any { keep: cx.index && (key == "type" || key == "text"), cx })?;
            match (&*key, kind) {
                ("type", Kind::Str(Some(t))) => is_text = t == "text",
                ("text", Kind::Str(Some(t))) => text = Some(cx.cow_text(&t)),
                _ => {}
            }
            keys.note(key, cx);
        }
        if let (true, Some(t)) = (is_text, text) {
            self.1.borrow_mut().push(t);
        }
        Ok(())
    }
}

/// `input` (embeddings).
struct InputSeed<'a>(&'a Cx);

seed_by_visitor!(InputSeed);

impl<'de> Visitor<'de> for InputSeed<'_> {
    type Value = Input;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array")
    }
    scalars_are!(Input::Other);
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Input, E> {
        self.0.push_text(&self.0.input_texts, v, true);
        Ok(Input::Str)
    }
    fn visit_str<E>(self, v: &str) -> Result<Input, E> {
        self.0.push_text(&self.0.input_texts, v, false);
        Ok(Input::Str)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Input, A::Error> {
        let (mut len, mut ok) = (0, true);
        while let Some(item_ok) = seq.next_element_seed(InputItemSeed(self.0))? {
            len += 1;
            ok &= item_ok;
        }
        Ok(Input::Array { len, ok })
    }
    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Input, A::Error> {
        skip_map(access, self.0)?;
        Ok(Input::Other)
    }
}

/// One item of an `input` array: whether it is a string, a token or an array of tokens.
struct InputItemSeed<'a>(&'a Cx);

seed_by_visitor!(InputItemSeed);

impl<'de> Visitor<'de> for InputItemSeed<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, a token or a token array")
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, v: i64) -> Result<bool, E> {
        Ok(v >= 0)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<bool, E> {
        self.0.push_text(&self.0.input_texts, v, true);
        Ok(true)
    }
    fn visit_str<E>(self, v: &str) -> Result<bool, E> {
        self.0.push_text(&self.0.input_texts, v, false);
        Ok(true)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut ok = true;
        while let Some(token) = seq.next_element_seed(Any { keep: false, cx: self.0 })? {
            ok &= token.as_u64().is_some();
        }
        Ok(ok)
    }
    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<bool, A::Error> {
        skip_map(access, self.0)?;
        Ok(false)
    }
}
