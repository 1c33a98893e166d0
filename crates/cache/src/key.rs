//! The cache key: a SHA-256 of the request as it goes upstream, in a canonical form, so the
//! same question hashes the same on every instance whatever its field order or whitespace.
//!
//! Hashed, each length-prefixed: a version tag, the front door (API format and operation), the
//! provider and model the request routes to, the virtual key's name when entries are kept per
//! key, and the body after plugins' edits with every object's keys in sorted order, minus the
//! fields that do not change the answer ([`IGNORED`]). Every other field counts, known or not,
//! so a parameter Weir does not know never makes two different questions share an answer.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use weir_types::exchange::JsonBody;
use weir_types::format::{ApiFormat, Endpoint, Operation};

/// Top-level body fields left out of the key: how the answer is delivered (`stream`,
/// `stream_options`), who asks (`user`, `metadata`, OpenAI's `safety_identifier`), whether the
/// provider keeps a copy (`store`), and `model`, which the routed provider and model replace.
pub const IGNORED: &[&str] = &["model", "stream", "stream_options", "user", "metadata", "store", "safety_identifier"];

/// Bumped when what is hashed changes, so old entries in a shared Redis are never read.
const VERSION: &[u8] = b"weir-cache-v1";

/// The hash of one request, and what its replay needs to know about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// SHA-256 of the canonical request.
    pub hash: [u8; 32],
    /// An OpenAI stream asked for its usage chunk (`stream_options.include_usage`).
    pub stream_usage: bool,
}

impl Key {
    /// The hash as lower-case hex (the Redis key's suffix).
    pub fn hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.hash {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
        }
        s
    }
}

/// What a request is asked of, for its key.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The front door.
    pub endpoint: Endpoint,
    /// The provider the request routes to.
    pub provider: &'a str,
    /// The model as that provider knows it.
    pub model: &'a str,
    /// The body as it goes upstream (plugins' edits included).
    pub body: &'a JsonBody,
    /// The virtual key's name, with `[cache] per_key`.
    pub owner: Option<&'a str>,
}

/// The key of `req`, or `None` when its body cannot be read as JSON (it always can after the
/// front door's check; the request is then simply not cached).
pub fn key(req: &Request<'_>) -> Option<Key> {
    let parsed;
    let body: &Map<String, Value> = match (req.body.parsed(), req.body.raw()) {
        (Some(tree), _) => tree,
        (None, Some(raw)) => {
            parsed = serde_json::from_slice::<Map<String, Value>>(raw).ok()?;
            &parsed
        }
        (None, None) => return None,
    };
    let mut h = Sha256::new();
    let mut part = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part(VERSION);
    part(format_name(req.endpoint.format).as_bytes());
    part(match req.endpoint.op {
        Operation::Chat => b"chat",
        Operation::Embeddings => b"embeddings",
    });
    part(req.provider.as_bytes());
    part(req.model.as_bytes());
    part(req.owner.unwrap_or("").as_bytes());
    // serde_json's `Map` is ordered by key (no `preserve_order` in this tree), so writing it
    // sorts every object; a test pins this. The kept fields are written straight into the hash,
    // with no copy of the body.
    h.update(b"{");
    for (k, v) in body.iter().filter(|(k, _)| !IGNORED.contains(&k.as_str())) {
        serde_json::to_writer(Hashing(&mut h), k).ok()?;
        h.update(b":");
        serde_json::to_writer(Hashing(&mut h), v).ok()?;
        h.update(b",");
    }
    h.update(b"}");
    let stream_usage =
        body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
    Some(Key { hash: h.finalize().into(), stream_usage })
}

/// Writes into the hash.
struct Hashing<'a>(&'a mut Sha256);

impl std::io::Write for Hashing<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn format_name(f: ApiFormat) -> &'static str {
    match f {
        ApiFormat::OpenAi => "openai",
        ApiFormat::Anthropic => "anthropic",
        ApiFormat::Responses => "openai-responses",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const CHAT: Endpoint = Endpoint { format: ApiFormat::OpenAi, op: Operation::Chat };

    fn k(body: &str, owner: Option<&str>) -> Key {
        let body = JsonBody::from_raw(Bytes::from(body.to_owned()));
        key(&Request { endpoint: CHAT, provider: "p", model: "m", body: &body, owner }).unwrap()
    }

    #[test]
    fn field_order_and_whitespace_do_not_change_the_key() {
        let a = k(r#"{"model":"x","messages":[{"role":"user","content":"hi"}],"temperature":0}"#, None);
        let b = k(r#"{ "temperature":0, "messages":[{"content":"hi", "role":"user"}], "model":"x" }"#, None);
        assert_eq!(a, b);
    }

    #[test]
    fn what_changes_the_answer_changes_the_key_and_delivery_does_not() {
        let base = k(r#"{"messages":[{"role":"user","content":"hi"}]}"#, None);
        let streamed = k(r#"{"messages":[{"role":"user","content":"hi"}],"stream":true,"user":"u1"}"#, None);
        assert_eq!(base.hash, streamed.hash);
        for other in [
            r#"{"messages":[{"role":"user","content":"hello"}]}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"temperature":1}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"tools":[]}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"some_new_param":1}"#,
        ] {
            assert_ne!(base.hash, k(other, None).hash, "{other}");
        }
        assert_ne!(base.hash, k(r#"{"messages":[{"role":"user","content":"hi"}]}"#, Some("team-a")).hash);
    }

    #[test]
    fn the_route_and_the_front_door_are_part_of_the_key() {
        let body = JsonBody::from_raw(Bytes::from_static(br#"{"messages":[]}"#));
        let req = Request { endpoint: CHAT, provider: "p", model: "m", body: &body, owner: None };
        let a = key(&req).unwrap();
        assert_ne!(a, key(&Request { model: "m2", ..req }).unwrap());
        assert_ne!(a, key(&Request { provider: "q", ..req }).unwrap());
        let anthropic = Endpoint { format: ApiFormat::Anthropic, op: Operation::Chat };
        assert_ne!(a, key(&Request { endpoint: anthropic, ..req }).unwrap());
        assert_eq!(a.hex().len(), 64);
    }

    #[test]
    fn an_edited_tree_hashes_like_the_same_bytes() {
        let text = r#"{"b":1,"a":{"y":2,"x":1}}"#;
        let tree = JsonBody::from_map(serde_json::from_str(text).unwrap());
        let req = Request { endpoint: CHAT, provider: "p", model: "m", body: &tree, owner: None };
        assert_eq!(key(&req).unwrap(), k(r#"{"a":{"x":1,"y":2},"b":1}"#, None));
        assert!(k(r#"{"stream_options":{"include_usage":true}}"#, None).stream_usage);
    }
}
