//! The request and response as they travel through the phases (and, through `plugins`, as
//! plugins see them). Bodies stay the client's `Bytes` until something reads or edits their
//! fields ([`JsonBody`]); nothing here is provider-specific.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, header};
use serde_json::{Map, Value};

use crate::affinity::Affinity;
use crate::config::PluginRuntimeConfig;
use crate::format::Endpoint;
use crate::json::index::BodyIndex;

/// A validated client request.
#[derive(Debug, Clone)]
pub struct GatewayRequest {
    /// Request id (`x-request-id`, generated when the client sent none).
    pub id: Arc<str>,
    /// Endpoint.
    pub endpoint: Endpoint,
    /// Model as requested (plugins may rewrite it; routing reads it after `on_request`).
    pub model: String,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The JSON body.
    pub body: JsonBody,
    /// Client headers plugins may see: credential-looking ones are withheld ([`HeaderRule`]).
    pub headers: HeaderMap,
    /// The serving thread the request runs on (plugin calls start there).
    pub affinity: Affinity,
}

/// A request's JSON body (an object): the client's bytes, parsed into a tree the first time
/// something reads a field (a plugin, a provider that builds its own request). Reading keeps
/// the bytes; editing drops them, so [`JsonBody::raw`] is `Some` exactly while the bytes still
/// say what the tree says and may go upstream as they are.
#[derive(Debug, Clone, Default)]
pub struct JsonBody {
    raw: Option<Bytes>,
    tree: Option<Map<String, Value>>,
    /// Where the bytes' prompt texts and top-level fields are (while `raw` is set).
    index: Option<Box<BodyIndex>>,
    /// What plugins' edits did to its size (`None` until the first edit).
    growth: Option<Growth>,
    /// The prompt texts as the first plugin to ask got them: every plugin in a chain reads the
    /// same ones, so they are built once and shared until an edit.
    texts: Option<Arc<[Arc<str>]>>,
}

/// What plugins' edits have done to a body's size. It travels with the body from hook to hook,
/// so a cap on growth holds for the whole request, not per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Growth {
    /// Length of the body's JSON text before the first edit.
    pub base: usize,
    /// Net bytes the edits added to it since (negative when they shrank it).
    pub added: i64,
}

impl JsonBody {
    /// A body from the client's bytes. They must hold one JSON object that repeats no key
    /// (the front door checks this): a tree parsed from them later then says
    /// exactly what they say.
    pub fn from_raw(bytes: Bytes) -> Self {
        Self { raw: Some(bytes), tree: None, index: None, growth: None, texts: None }
    }

    /// As [`JsonBody::from_raw`], with the scan's record of where the prompt texts and
    /// top-level fields are, so that plugins' usual reads need no tree.
    pub fn from_indexed(bytes: Bytes, index: BodyIndex) -> Self {
        Self { raw: Some(bytes), tree: None, index: Some(Box::new(index)), growth: None, texts: None }
    }

    /// A body whose bytes were parsed whole at the front door: both kept, so reads need no
    /// second parse and the bytes still go upstream while nothing edits the tree.
    pub fn from_parsed(bytes: Bytes, map: Map<String, Value>) -> Self {
        Self { raw: Some(bytes), tree: Some(map), index: None, growth: None, texts: None }
    }

    /// A body that exists only as a tree (edited, or built by Weir).
    pub fn from_map(map: Map<String, Value>) -> Self {
        Self { raw: None, tree: Some(map), index: None, growth: None, texts: None }
    }

    /// What plugins' edits did to the body's size so far.
    pub fn growth(&self) -> Option<Growth> {
        self.growth
    }

    /// Records what plugins' edits did to the body's size.
    pub fn set_growth(&mut self, growth: Growth) {
        self.growth = Some(growth);
    }

    /// The prompt texts kept by [`JsonBody::keep_texts`], while nothing has edited the body.
    pub fn kept_texts(&self) -> Option<&Arc<[Arc<str>]>> {
        self.texts.as_ref()
    }

    /// Keeps the body's prompt texts for the next reader (dropped by the next edit).
    pub fn keep_texts(&mut self, texts: Arc<[Arc<str>]>) {
        self.texts = Some(texts);
    }

    /// The bytes, while nothing has edited the body.
    pub fn raw(&self) -> Option<&Bytes> {
        self.raw.as_ref()
    }

    /// The index and the bytes it describes, while no tree has been parsed (a parsed tree
    /// answers reads more cheaply).
    pub fn indexed(&self) -> Option<(&BodyIndex, &Bytes)> {
        match (&self.tree, &self.index, &self.raw) {
            (None, Some(index), Some(raw)) => Some((index, raw)),
            _ => None,
        }
    }

    /// The tree, if it has been parsed (for read-only holders that cannot parse it).
    pub fn parsed(&self) -> Option<&Map<String, Value>> {
        self.tree.as_ref()
    }

    /// The tree, parsed now if needed; the bytes are kept.
    pub fn map(&mut self) -> &Map<String, Value> {
        self.parse()
    }

    /// The tree for editing: the bytes are dropped (they no longer say what the tree says).
    pub fn map_mut(&mut self) -> &mut Map<String, Value> {
        self.parse();
        self.raw = None;
        self.index = None;
        self.texts = None;
        self.tree.get_or_insert_with(Map::new)
    }

    /// Forgets where the bytes' prompt texts and fields are: only plugins read them, and a
    /// body going upstream is copied for each attempt that may follow.
    pub fn forget_index(&mut self) {
        self.index = None;
        self.texts = None;
    }

    /// Forgets the bytes, so that the body goes upstream re-serialised from the tree.
    pub fn forget_raw(&mut self) {
        self.parse();
        self.raw = None;
        self.index = None;
    }

    /// The tree, by value.
    pub fn into_map(mut self) -> Map<String, Value> {
        self.parse();
        self.tree.unwrap_or_default()
    }

    fn parse(&mut self) -> &mut Map<String, Value> {
        if self.tree.is_none() {
            // The bytes were checked at the front door, so this parse cannot fail; an empty
            // object stands in if it ever did.
            let map = self.raw.as_ref().and_then(|b| crate::json::parse_object(b).ok()).unwrap_or_default();
            self.tree = Some(map);
        }
        self.tree.get_or_insert_with(Map::new)
    }
}

/// A whole (non-stream) response, from upstream or produced by a plugin.
#[derive(Debug, Clone)]
pub struct GatewayResponse {
    /// HTTP status.
    pub status: u16,
    /// Extra response headers (plugins may add some).
    pub headers: HeaderMap,
    /// JSON body.
    pub body: Bytes,
    /// What plugins' edits did to the body's size (`None` until the first edit).
    pub growth: Option<Growth>,
}

impl GatewayResponse {
    /// A 200 JSON response.
    pub fn ok(body: Bytes) -> Self {
        Self { status: 200, headers: HeaderMap::new(), body, growth: None }
    }
}

/// Which client headers plugins see ([`GatewayRequest::headers`]): deny by default for
/// anything whose name looks like a credential ([`crate::secrets::credential_like`]), with
/// `[plugin_runtime] expose_headers` and `withhold_headers` as exceptions. Built once per
/// config snapshot.
#[derive(Debug, Clone, Default)]
pub struct HeaderRule {
    expose: Vec<HeaderName>,
    withhold: Vec<HeaderName>,
}

impl HeaderRule {
    /// The rule `[plugin_runtime]` configures (names already checked at load; an invalid one
    /// is skipped).
    pub fn new(cfg: &PluginRuntimeConfig) -> Self {
        let names = |list: &[String]| list.iter().filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok()).collect();
        Self { expose: names(&cfg.expose_headers), withhold: names(&cfg.withhold_headers) }
    }

    /// Whether plugins may see header `name`.
    pub fn visible(&self, name: &HeaderName) -> bool {
        if self.expose.contains(name) {
            return true;
        }
        if self.withhold.contains(name) {
            return false;
        }
        // The headers most requests carry are answered without the name scan.
        COMMON_PLAIN.contains(name) || !crate::secrets::credential_like(name.as_str())
    }
}

/// Standard headers nearly every request carries whose names are not credential-like (a
/// test checks them against [`crate::secrets::credential_like`]).
static COMMON_PLAIN: [HeaderName; 5] =
    [header::CONTENT_TYPE, header::ACCEPT, header::USER_AGENT, header::ACCEPT_ENCODING, header::ACCEPT_LANGUAGE];

/// Copies the client headers plugins may see under `rule`, without hop-by-hop noise.
pub fn client_headers(src: &HeaderMap, rule: &HeaderRule) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(src.len());
    for (name, value) in src {
        let n = name.as_str();
        if n == "content-length" || n == "connection" || n == "host" || !rule.visible(name) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_withheld_unless_exposed() {
        let mut src = HeaderMap::new();
        for (n, v) in [("x-auth-token", "a"), ("x-session-id", "s"), ("x-tenant", "t"), ("x-trace", "r"), ("host", "h")]
        {
            src.insert(HeaderName::from_static(n), v.parse().unwrap());
        }
        let seen = client_headers(&src, &HeaderRule::default());
        assert_eq!(seen.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["x-tenant", "x-trace"]);
        let cfg = PluginRuntimeConfig {
            expose_headers: vec!["X-Session-Id".into()],
            withhold_headers: vec!["x-tenant".into()],
            ..Default::default()
        };
        let seen = client_headers(&src, &HeaderRule::new(&cfg));
        assert_eq!(seen.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["x-session-id", "x-trace"]);
    }

    #[test]
    fn the_common_headers_answered_without_a_scan_are_not_credential_like() {
        for name in COMMON_PLAIN.iter() {
            assert!(!crate::secrets::credential_like(name.as_str()), "{name}");
        }
        let cfg = PluginRuntimeConfig { withhold_headers: vec!["user-agent".into()], ..Default::default() };
        assert!(!HeaderRule::new(&cfg).visible(&header::USER_AGENT), "withhold_headers still applies");
    }
}
