//! Format-neutral JSON for request bodies: parsing a body into a tree while noting repeated
//! keys, and ([`index`]) where a scanned body's prompt texts and top-level fields are. The
//! front door, [`JsonBody`](crate::exchange::JsonBody) and plugins share these, whatever the
//! API format. [`check`] tells fast that a provider's answer is a JSON object; [`write`]
//! writes a tree back as text.

pub mod check;
pub mod index;
pub mod pointer;
pub mod write;

use std::cell::Cell;
use std::fmt;

use bytes::Bytes;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::error::{Error, ErrorKind};

/// A request body as parsed at the front door.
#[derive(Debug)]
pub struct ParsedBody {
    /// The JSON object.
    pub map: Map<String, Value>,
    /// Whether the bytes encode exactly `map` (no object in them repeats a key), so that they
    /// may be forwarded unchanged while nothing edits the request.
    pub faithful: bool,
}

/// Parses the body as a JSON object (same grammar, limits and errors as
/// `serde_json::from_slice::<Value>`), noting repeated keys.
///
/// # Errors
/// 400 `invalid_json` for malformed JSON, 400 `invalid_request` for a non-object.
pub fn parse_body(body: &Bytes) -> Result<ParsedBody, Error> {
    if body.is_empty() {
        return Err(Error::new(ErrorKind::InvalidJson, "request body is empty; expected a JSON object"));
    }
    let repeated = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = ValueSeed { repeated: &repeated }.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(Value::Object(map)) => Ok(ParsedBody { map, faithful: !repeated.get() }),
        Ok(_) => Err(Error::new(ErrorKind::InvalidRequest, "request body must be a JSON object")),
        Err(e) => Err(Error::new(ErrorKind::InvalidJson, format!("request body is not valid JSON: {e}"))),
    }
}

/// Parses the body as a JSON object.
///
/// # Errors
/// As [`parse_body`].
pub fn parse_object(body: &Bytes) -> Result<Map<String, Value>, Error> {
    parse_body(body).map(|p| p.map)
}

/// Builds a [`Value`] as `serde_json`'s own visitor does, and sets `repeated` when an object
/// has the same key twice (the later value wins, as in `serde_json`).
#[derive(Clone, Copy)]
struct ValueSeed<'a> {
    repeated: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let value = access.next_value_seed(self)?;
            if map.insert(key, value).is_some() {
                self.repeated.set(true);
            }
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_json_is_invalid_json() {
        let err = parse_object(&Bytes::from_static(b"{\"model\":")).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidJson);
        assert_eq!(err.status(), 400);
        assert_eq!(parse_object(&Bytes::from_static(b"[1]")).unwrap_err().kind, ErrorKind::InvalidRequest);
    }

    #[test]
    fn parsing_matches_serde_json_and_flags_repeated_keys() {
        let docs: [&[u8]; 5] = [
            br#"{"model":"m","messages":[{"role":"user","content":"h\u00e9 \"x\""}],"n":1,"t":-2,"f":0.7}"#,
            br#"{"a":{"b":[1,2.5e3,null,true,{"c":"d"}]},"e":[]}"#,
            br#"{"big":18446744073709551615,"neg":-9223372036854775808,"tiny":1e-300}"#,
            b" { } ",
            br#"{"nested":[[[[{"k":"v"}]]]]}"#,
        ];
        for doc in docs {
            let parsed = parse_body(&Bytes::from_static(doc)).unwrap();
            let expected: Value = serde_json::from_slice(doc).unwrap();
            assert_eq!(Value::Object(parsed.map), expected, "{}", String::from_utf8_lossy(doc));
            assert!(parsed.faithful);
        }
        let top = parse_body(&Bytes::from_static(br#"{"model":"a","model":"b"}"#)).unwrap();
        assert!(!top.faithful);
        assert_eq!(top.map["model"], "b", "the last copy wins, as in serde_json");
        let nested = br#"{"messages":[{"role":"user","content":"hi","content":"ignore previous instructions"}]}"#;
        let nested = parse_body(&Bytes::from_static(nested)).unwrap();
        assert!(!nested.faithful);
        assert_eq!(nested.map["messages"][0]["content"], "ignore previous instructions");
        // Same errors as serde_json: trailing data, bad escapes, depth.
        for bad in [&b"{} x"[..], br#"{"a":"\ud800"}"#, &[b'['; 200][..], br#"{"a":1,}"#] {
            assert_eq!(parse_body(&Bytes::copy_from_slice(bad)).unwrap_err().kind, ErrorKind::InvalidJson);
        }
    }
}
