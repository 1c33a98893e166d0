//! What the front door's scan reports about a body: the fields validation reads, summarised
//! (`api::validate` makes the same summary from a tree, so one set of rules serves both).

use std::borrow::Cow;

use crate::json::index::{Field, FieldValue, Text};

/// What a value is, keeping only what validation reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind<'de> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    /// A string; its text only where the caller asked to keep it.
    Str(Option<Cow<'de, str>>),
    Array,
    Object,
}

impl Kind<'_> {
    /// As `Value::as_u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U64(v) => Some(v),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as the index keeps a top-level field, a kept string's place given by `text`.
    pub fn field_value(&self, text: impl FnOnce(&Cow<'_, str>) -> Text) -> FieldValue {
        match self {
            Self::Null => FieldValue::Null,
            Self::Bool(b) => FieldValue::Bool(*b),
            Self::U64(v) => FieldValue::U64(*v),
            Self::I64(v) => FieldValue::I64(*v),
            Self::F64(v) => FieldValue::F64(*v),
            Self::Str(Some(t)) => FieldValue::Str(text(t)),
            Self::Str(None) | Self::Array | Self::Object => FieldValue::Composite,
        }
    }

    /// As `Value::as_f64`.
    #[allow(clippy::cast_precision_loss)]
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::U64(v) => Some(v as f64),
            Self::I64(v) => Some(v as f64),
            Self::F64(v) => Some(v),
            _ => None,
        }
    }
}

/// One element of `messages`.
#[derive(Debug, Default)]
pub struct Message<'de> {
    pub object: bool,
    pub role: Option<Kind<'de>>,
    pub content: Option<Kind<'de>>,
}

/// `messages`: an array's elements, or what it was instead.
#[derive(Debug)]
pub enum Messages<'de> {
    Items(Vec<Message<'de>>),
    NotArray,
}

/// `input` (embeddings).
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    Str,
    /// An array: how many items, and whether each is a string, a token or a token array.
    Array {
        len: usize,
        ok: bool,
    },
    Other,
}

/// The top-level fields validation reads (the last copy, as in a tree, if a key repeats).
#[derive(Debug, Default)]
pub struct Top<'de> {
    pub model: Option<Kind<'de>>,
    pub stream: Option<Kind<'de>>,
    pub messages: Option<Messages<'de>>,
    pub max_tokens: Option<Kind<'de>>,
    pub max_completion_tokens: Option<Kind<'de>>,
    pub n: Option<Kind<'de>>,
    pub temperature: Option<Kind<'de>>,
    pub input: Option<Input>,
    /// Anthropic's `system` (scanned only for formats that have it).
    pub system: Option<Kind<'de>>,
    /// With `index`: every top-level field.
    pub fields: Vec<Field>,
}

impl<'de> Top<'de> {
    /// Keeps a scalar top-level field's summary when validation reads `name`.
    pub fn keep(&mut self, name: &str, kind: Kind<'de>) {
        let slot = match name {
            "model" => &mut self.model,
            "stream" => &mut self.stream,
            "max_tokens" => &mut self.max_tokens,
            "max_completion_tokens" => &mut self.max_completion_tokens,
            "n" => &mut self.n,
            "temperature" => &mut self.temperature,
            _ => return,
        };
        *slot = Some(kind);
    }
}
