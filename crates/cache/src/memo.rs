//! The keys of request bodies seen before, by their exact bytes. A body no plugin edited goes
//! upstream as the client's bytes, and the same bytes on the same route always have the same
//! canonical key; so a repeated question (what a cache hit is) skips parsing the body into a
//! tree and hashing its canonical form, most of a hit's own work. Bounded by bytes held, and
//! local to the process: the key it returns is the one [`crate::key`] computes, so instances
//! still agree.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use crate::key::{Key, Request, key};

/// Bodies larger than this are keyed each time (a copy of each is kept per entry).
pub const MAX_BODY: usize = 16 * 1024;
/// Bytes of bodies the memo holds at most.
const MAX_BYTES: u64 = 4 * 1024 * 1024;

/// A body's bytes and route, and the key they have.
struct Seen {
    route: Box<[u8]>,
    raw: Box<[u8]>,
    key: Key,
}

/// Keys by exact request bytes.
pub struct KeyMemo {
    seen: Cache<u64, Arc<Seen>>,
    /// Random per process: the memo's hash is not predictable from outside. foldhash, not
    /// SipHash: a kilobyte body costs a fraction of the instructions, and a collision only
    /// costs a miss (the bytes are compared).
    state: foldhash::fast::RandomState,
}

impl KeyMemo {
    /// A memo whose entries live at most `ttl` (the cache's: a key is worth keeping as long
    /// as its answer).
    pub fn new(ttl: Duration) -> Self {
        let seen = Cache::builder()
            .max_capacity(MAX_BYTES)
            .weigher(|_k: &u64, v: &Arc<Seen>| u32::try_from(v.raw.len() + v.route.len() + 64).unwrap_or(u32::MAX))
            .time_to_live(ttl)
            .build();
        Self { seen, state: foldhash::fast::RandomState::default() }
    }

    /// `req`'s key: remembered when its body is the client's bytes, seen before on the same
    /// route; else computed (and remembered for next time).
    pub fn key(&self, req: &Request<'_>) -> Option<Key> {
        let Some(raw) = req.body.raw().filter(|r| r.len() <= MAX_BODY) else { return key(req) };
        let route = route(req);
        let mut h = self.state.build_hasher();
        route.hash(&mut h);
        raw.hash(&mut h);
        let id = h.finish();
        if let Some(s) = self.seen.get(&id)
            && *s.route == *route
            && *s.raw == **raw
        {
            return Some(s.key);
        }
        let k = key(req)?;
        self.seen.insert(id, Arc::new(Seen { route: route.into_boxed_slice(), raw: Box::from(&raw[..]), key: k }));
        Some(k)
    }
}

/// Everything besides the body that the key covers, length-prefixed.
fn route(req: &Request<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(req.endpoint.index() as u8);
    for part in [req.provider, req.model, req.owner.unwrap_or(""), if req.owner.is_some() { "1" } else { "0" }] {
        out.extend_from_slice(&(part.len() as u32).to_le_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use weir_types::exchange::JsonBody;
    use weir_types::format::{ApiFormat, Endpoint, Operation};

    use super::*;

    const CHAT: Endpoint = Endpoint { format: ApiFormat::OpenAi, op: Operation::Chat };

    fn body(text: &str) -> JsonBody {
        JsonBody::from_raw(Bytes::from(text.to_owned()))
    }

    fn req<'a>(body: &'a JsonBody, model: &'a str, owner: Option<&'a str>) -> Request<'a> {
        Request { endpoint: CHAT, provider: "p", model, body, owner }
    }

    #[test]
    fn a_remembered_key_is_the_computed_one_and_the_route_and_bytes_must_match() {
        let memo = KeyMemo::new(Duration::from_secs(60));
        let a = body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        let b = body(r#"{"model":"m","messages":[{"role":"user","content":"ho"}]}"#);
        for _ in 0..2 {
            assert_eq!(memo.key(&req(&a, "m", None)), key(&req(&a, "m", None)));
            assert_eq!(memo.key(&req(&b, "m", None)), key(&req(&b, "m", None)));
            assert_eq!(memo.key(&req(&a, "m2", None)), key(&req(&a, "m2", None)));
            assert_eq!(memo.key(&req(&a, "m", Some("team"))), key(&req(&a, "m", Some("team"))));
        }
        assert_ne!(memo.key(&req(&a, "m", None)), memo.key(&req(&a, "m2", None)));
        assert_ne!(memo.key(&req(&a, "m", None)), memo.key(&req(&a, "m", Some("team"))));
        memo.seen.run_pending_tasks();
        assert_eq!(memo.seen.entry_count(), 4, "one entry per body and route");
    }
}
