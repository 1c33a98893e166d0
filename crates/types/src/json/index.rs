//! Where a request body's prompt texts and top-level fields are, recorded by the front door's
//! scan when `on-request` hooks will read the body. The reads plugins make most
//! (`prompt-texts`, `get("/max_tokens")`) are then answered from the client's bytes, and the
//! body is parsed into a tree only for anything else (a deeper pointer, `body()`, an edit).

use std::borrow::Cow;
use std::ops::Range;

use serde_json::{Number, Value};

/// A string of the body: its span (it had no escapes) or its unescaped copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    /// Bytes `start..end` of the body.
    Span(Range<usize>),
    /// The unescaped text of a string that had escapes.
    Owned(Box<str>),
}

impl Text {
    /// The text, given the body it was scanned from.
    pub fn resolve<'a>(&'a self, body: &'a [u8]) -> &'a str {
        match self {
            Self::Span(r) => body.get(r.clone()).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or_default(),
            Self::Owned(s) => s,
        }
    }
}

/// A top-level field's value: a scalar as it is, an array or object only as such.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A non-negative integer.
    U64(u64),
    /// A negative integer.
    I64(i64),
    /// Any other number.
    F64(f64),
    /// A string.
    Str(Text),
    /// An array or an object.
    Composite,
}

/// One top-level field.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The key.
    pub key: Text,
    /// The value.
    pub value: FieldValue,
}

/// What the scan recorded about one body (which repeats no key).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BodyIndex {
    /// The endpoint's prompt texts, in order (as `plugins::json::visit_prompt_texts` finds them).
    pub texts: Vec<Text>,
    /// Every top-level field, in order.
    pub fields: Vec<Field>,
}

/// The answer to a JSON-pointer read.
#[derive(Debug, PartialEq)]
pub enum Lookup {
    /// The value (as a tree would hold it).
    Found(Value),
    /// No such field.
    Absent,
    /// Only a tree can answer (a deeper pointer, an array or object, a malformed pointer).
    NeedsTree,
}

impl BodyIndex {
    /// The prompt texts, copied out of `body`.
    pub fn prompt_texts(&self, body: &[u8]) -> Vec<String> {
        self.texts.iter().map(|t| t.resolve(body).to_owned()).collect()
    }

    /// The value at a one-token `pointer` (`/max_tokens`), as the tree would give it.
    pub fn get(&self, body: &[u8], pointer: &str) -> Lookup {
        let Some(token) = pointer.strip_prefix('/').filter(|t| !t.contains('/')) else {
            return Lookup::NeedsTree;
        };
        let token = if token.contains('~') {
            Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
        } else {
            Cow::Borrowed(token)
        };
        let Some(field) = self.fields.iter().find(|f| f.key.resolve(body) == token) else {
            return Lookup::Absent;
        };
        Lookup::Found(match &field.value {
            FieldValue::Null => Value::Null,
            FieldValue::Bool(b) => Value::Bool(*b),
            FieldValue::U64(v) => Value::from(*v),
            FieldValue::I64(v) => Value::from(*v),
            FieldValue::F64(v) => Number::from_f64(*v).map_or(Value::Null, Value::Number),
            FieldValue::Str(t) => Value::String(t.resolve(body).to_owned()),
            FieldValue::Composite => return Lookup::NeedsTree,
        })
    }
}
