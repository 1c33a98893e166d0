//! The values Weir holds as secrets, and the one scrub that keeps them out of everything that
//! leaves Weir (error bodies, relayed answers and stream chunks, plugin-visible data) or
//! reaches its log. Built once per config snapshot; scrubbing is one Aho-Corasick pass.
//!
//! The set: provider keys; Bedrock providers' AWS secret keys and session tokens; provider
//! `headers` values whose name looks like a credential ([`credential_like`]) or (`openai`) that
//! came from `${ENV}`; the admin token; plugin-config values that came from `${ENV}`. Values
//! shorter than [`MIN_SECRET_LEN`] bytes are left out: they would match ordinary text (`true`,
//! a port number) and no real credential is that short.

use std::borrow::Cow;
use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use bytes::Bytes;

use crate::config::{Config, ProviderKind};
use crate::error::Error;

/// What a secret is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Shortest value scrubbed (see the module doc).
pub const MIN_SECRET_LEN: usize = 8;

/// Pieces of a header name that mark it as a credential (matched case-insensitively
/// anywhere in the name: `x-amz-security-token`, `x-forwarded-authorization`, `x-api-key`).
pub const CREDENTIAL_NAME_PARTS: &[&str] = &[
    "auth",
    "token",
    "key",
    "secret",
    "pass",
    "credential",
    "session",
    "cookie",
    "signature",
    "csrf",
    "xsrf",
    "jwt",
    "cert",
];

static CREDENTIAL_NAMES: LazyLock<AhoCorasick> = LazyLock::new(|| {
    AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .build(CREDENTIAL_NAME_PARTS)
        .expect("a handful of short literals always builds")
});

/// Whether a header name looks like it carries a credential.
pub fn credential_like(name: &str) -> bool {
    CREDENTIAL_NAMES.is_match(name)
}

/// One snapshot's secret values and the automaton that finds them.
#[derive(Default)]
pub struct Secrets {
    /// `None` when there is nothing to scrub: every scrub is then free.
    finder: Option<AhoCorasick>,
    /// The patterns, for the partial-prefix check at a cut.
    values: Vec<Box<str>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} patterns)", self.values.len())
    }
}

impl Secrets {
    /// Every secret `cfg` holds (see the module doc).
    pub fn from_config(cfg: &Config) -> Self {
        let mut values: Vec<&str> = Vec::new();
        for p in &cfg.providers {
            if let ProviderKind::Bedrock(b) = &p.kind {
                values.extend(b.secrets());
                values.extend(b.headers.iter().filter(|(name, _)| credential_like(name)).map(|(_, v)| v.as_str()));
                continue;
            }
            let Some(o) = p.kind.http() else { continue };
            values.extend(o.keys.iter().map(|k| k.value.as_str()));
            values.extend(o.headers.iter().filter(|(name, _)| credential_like(name)).map(|(_, v)| v.as_str()));
            values.extend(o.header_env.iter());
        }
        values.extend(cfg.admin.token.as_deref());
        values.extend(cfg.state.redis_password());
        values.extend(cfg.keys.iter().map(|k| k.value.as_str()));
        // The collector's headers ([tracing]) carry its credentials.
        values.extend(cfg.tracing.iter().flat_map(|t| t.headers.values().map(String::as_str)));
        values.extend(cfg.events.sinks.iter().flat_map(|s| s.headers.values().map(String::as_str)));
        for p in &cfg.plugins {
            values.extend(p.config_env.iter());
        }
        Self::new(values)
    }

    /// A set of `values` (short ones dropped; each also as it appears escaped in JSON).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut patterns: Vec<Box<str>> = Vec::new();
        let mut add = |p: &str| {
            if !patterns.iter().any(|q| &**q == p) {
                patterns.push(p.into());
            }
        };
        for v in values.into_iter().filter(|v| v.len() >= MIN_SECRET_LEN) {
            add(v);
            // Inside a JSON body a quote, backslash or control character appears escaped.
            if let Ok(quoted) = serde_json::to_string(v) {
                add(&quoted[1..quoted.len() - 1]);
            }
        }
        // Longest match first: a key that extends another is redacted whole.
        let finder = (!patterns.is_empty()).then(|| {
            AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .build(patterns.iter().map(|p| p.as_bytes()))
                .expect("literal patterns of bounded size build")
        });
        Self { finder, values: patterns }
    }

    /// Whether there is nothing to scrub.
    pub fn is_empty(&self) -> bool {
        self.finder.is_none()
    }

    /// `text` with every secret replaced by [`REDACTED`] (borrowed when there was none).
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let Some(finder) = &self.finder else { return Cow::Borrowed(text) };
        let Some(first) = finder.find(text) else { return Cow::Borrowed(text) };
        let mut out = String::with_capacity(text.len());
        out.push_str(&text[..first.start()]);
        finder.replace_all_with(&text[first.start()..], &mut out, |_, _, dst| {
            dst.push_str(REDACTED);
            true
        });
        Cow::Owned(out)
    }

    /// As [`Secrets::scrub`], for a body or stream chunk: the same `Bytes` (no copy) unless a
    /// secret was found. One pass over the bytes.
    pub fn scrub_bytes(&self, bytes: Bytes) -> Bytes {
        let Some(finder) = &self.finder else { return bytes };
        let Some(first) = finder.find(&bytes[..]) else { return bytes };
        let mut out = Vec::with_capacity(bytes.len());
        out.extend_from_slice(&bytes[..first.start()]);
        finder.replace_all_with_bytes(&bytes[first.start()..], &mut out, |_, _, dst| {
            dst.extend_from_slice(REDACTED.as_bytes());
            true
        });
        Bytes::from(out)
    }

    /// Every string (and object key) in `v` scrubbed in place: for a JSON tree a plugin
    /// edited. Clean strings are not copied.
    pub fn scrub_value(&self, v: &mut serde_json::Value) {
        use serde_json::Value;
        if self.is_empty() {
            return;
        }
        match v {
            Value::String(s) => {
                if let Cow::Owned(clean) = self.scrub(s) {
                    *s = clean;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.scrub_value(item)),
            Value::Object(map) => self.scrub_map(map),
            _ => {}
        }
    }

    /// As [`Secrets::scrub_value`], for a JSON object.
    pub fn scrub_map(&self, map: &mut serde_json::Map<String, serde_json::Value>) {
        if self.is_empty() {
            return;
        }
        if map.keys().any(|k| matches!(self.scrub(k), Cow::Owned(_))) {
            *map = std::mem::take(map).into_iter().map(|(k, v)| (self.scrub(&k).into_owned(), v)).collect();
        }
        map.values_mut().for_each(|v| self.scrub_value(v));
    }

    /// Every header value in `headers` scrubbed in place (a value that no longer makes a
    /// header value is replaced by [`REDACTED`]).
    pub fn scrub_headers(&self, headers: &mut http::HeaderMap) {
        if self.is_empty() {
            return;
        }
        for value in headers.values_mut() {
            let text = String::from_utf8_lossy(value.as_bytes());
            if let Cow::Owned(clean) = self.scrub(&text) {
                *value =
                    http::HeaderValue::from_str(&clean).unwrap_or_else(|_| http::HeaderValue::from_static(REDACTED));
            }
        }
    }

    /// `text` scrubbed, then cut to at most `max` bytes (on a character boundary). A text that
    /// was cut also loses a trailing start of a secret: what was scrubbed whole stays whole,
    /// and the first bytes of a secret left at a cut are worth nothing to anyone but a thief.
    pub fn scrub_cut(&self, text: &str, max: usize) -> String {
        let scrubbed = self.scrub(text);
        let mut end = scrubbed.len().min(max);
        while !scrubbed.is_char_boundary(end) {
            end -= 1;
        }
        let cut = &scrubbed[..end];
        if end == scrubbed.len() {
            return cut.to_owned();
        }
        // Bytes, not chars: a secret's first byte starts a character, so the cut stays valid.
        let partial = self
            .values
            .iter()
            .filter_map(|v| {
                (1..v.len().min(cut.len() + 1)).rev().find(|&k| cut.as_bytes().ends_with(&v.as_bytes()[..k]))
            })
            .max()
            .unwrap_or(0);
        cut[..cut.len() - partial].to_owned()
    }

    /// `e` with its message, param and code scrubbed: the last check before an error is
    /// answered or logged.
    pub fn scrub_error(&self, mut e: Error) -> Error {
        if self.is_empty() {
            return e;
        }
        let scrub = |s: &mut Cow<'static, str>| {
            if let Cow::Owned(clean) = self.scrub(s) {
                *s = Cow::Owned(clean);
            }
        };
        scrub(&mut e.message);
        if let Some(p) = e.param.as_mut() {
            scrub(p);
        }
        if let Some(c) = e.code.as_mut() {
            scrub(c);
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    const KEY: &str = "sk-abcdefgh12345";

    #[test]
    fn every_occurrence_is_replaced_and_clean_text_is_not_copied() {
        let s = Secrets::new([KEY, "short"]);
        assert_eq!(s.scrub(&format!("a {KEY} b {KEY}")), "a <redacted> b <redacted>");
        assert!(matches!(s.scrub("nothing here, short"), Cow::Borrowed(_)), "short values are not secrets");
        let clean = Bytes::from_static(b"{\"x\":1}");
        assert_eq!(s.scrub_bytes(clean.clone()).as_ptr(), clean.as_ptr());
        assert_eq!(&s.scrub_bytes(Bytes::from(format!("[\"{KEY}\"]")))[..], b"[\"<redacted>\"]");
        assert!(Secrets::new([]).is_empty());
    }

    #[test]
    fn the_longest_secret_wins_and_json_escaped_forms_are_found() {
        let s = Secrets::new([KEY, "sk-abcdefgh12345-and-more", "pa\"ss/word\\x"]);
        assert_eq!(s.scrub("sk-abcdefgh12345-and-more!"), "<redacted>!");
        let json = serde_json::to_string(&serde_json::json!({ "m": "pa\"ss/word\\x" })).unwrap();
        assert_eq!(s.scrub(&json), "{\"m\":\"<redacted>\"}");
    }

    #[test]
    fn trees_and_header_values_are_scrubbed_in_place() {
        let s = Secrets::new([KEY]);
        let mut v = serde_json::json!({ "a": [format!("x {KEY}"), 1], KEY: { "b": KEY }, "c": "clean" });
        s.scrub_value(&mut v);
        assert_eq!(
            v,
            serde_json::json!({ "a": ["x <redacted>", 1], "<redacted>": { "b": "<redacted>" }, "c": "clean" })
        );
        let mut h = http::HeaderMap::new();
        h.insert("x-note", http::HeaderValue::from_str(&format!("k={KEY}")).unwrap());
        h.insert("x-other", http::HeaderValue::from_static("fine"));
        s.scrub_headers(&mut h);
        assert_eq!(h["x-note"], "k=<redacted>");
        assert_eq!(h["x-other"], "fine");
    }

    #[test]
    fn a_cut_keeps_no_start_of_a_secret() {
        let s = Secrets::new([KEY]);
        // A secret that the cut would split is scrubbed first.
        let text = format!("{}{KEY} tail", "x".repeat(10));
        assert_eq!(s.scrub_cut(&text, 14), "xxxxxxxxxx<red");
        // A cut that ends inside a secret the scrub could not see whole (here: one that
        // merely starts like it) loses that start; a text that was not cut keeps its end.
        for k in 1..KEY.len() {
            let fragment = format!("xx{}yy", &KEY[..k]);
            assert_eq!(s.scrub_cut(&fragment, 2 + k), "xx", "{fragment}");
        }
        assert_eq!(s.scrub_cut("messages", 200), "messages");
        assert_eq!(s.scrub_cut("héllo", 2), "h", "cuts on a character boundary");
        assert_eq!(Secrets::new([]).scrub_cut("abc", 2), "ab");
    }

    #[test]
    fn errors_are_scrubbed_in_every_field() {
        let s = Secrets::new([KEY]);
        let e = Error::new(ErrorKind::Upstream { status: 400 }, format!("bad {KEY}"))
            .with_param(KEY.to_owned())
            .with_code(format!("c-{KEY}"));
        let e = s.scrub_error(e);
        assert_eq!(e.message, "bad <redacted>");
        assert_eq!(e.param.as_deref(), Some("<redacted>"));
        assert_eq!(e.code.as_deref(), Some("c-<redacted>"));
    }

    #[test]
    fn credential_looking_names() {
        for n in [
            "authorization",
            "Authentication",
            "x-access-token",
            "x-amz-security-token",
            "x-forwarded-authorization",
            "x-api-key",
            "cookie",
            "x-session-id",
            "x-hub-signature-256",
            "x-client-secret",
        ] {
            assert!(credential_like(n), "{n}");
        }
        for n in ["user-agent", "x-request-id", "accept", "content-type", "x-trace-id", "anthropic-version"] {
            assert!(!credential_like(n), "{n}");
        }
    }

    #[test]
    fn the_set_holds_every_kind_of_secret() {
        let toml = r#"
            [admin]
            token = "admin-token-123"
            [[providers]]
            name = "p"
            kind = "openai"
            base_url = "http://127.0.0.1:1/v1"
            keys = [{ value = "key-value-123" }]
            headers = { x-custom-auth = "header-secret-1", anthropic-version = "2023-06-01" }
            [[providers]]
            name = "a"
            kind = "anthropic"
            keys = [{ value = "ant-key-value-123" }]
            headers = { x-api-token = "ant-header-secret-1" }
            [[plugins]]
            name = "x"
            path = "x.wasm"
            config = { plain = "plain-value-123" }
            [tracing]
            endpoint = "http://127.0.0.1:4318/v1/traces"
            headers = { x-collector-key = "collector-secret-1" }
        "#;
        let cfg = Config::from_toml(toml).unwrap();
        let s = Secrets::from_config(&cfg);
        let text = "admin-token-123 key-value-123 header-secret-1 2023-06-01 plain-value-123";
        assert_eq!(s.scrub(text), "<redacted> <redacted> <redacted> 2023-06-01 plain-value-123");
        assert_eq!(s.scrub("ant-key-value-123 ant-header-secret-1"), "<redacted> <redacted>", "anthropic's too");
        assert_eq!(s.scrub("collector-secret-1"), "<redacted>", "the trace collector's headers");
    }
}
