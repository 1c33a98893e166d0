//! What every HTTP provider kind shares ([`HttpCore`]): the constant headers, the key choice
//! ([`KeyRing`]), sending with error statuses turned into [`Error`]s by the kind's own reader,
//! reading a whole answer under `max_response_bytes`, and the stream content-type check. A kind
//! adds its addressing, its body conversion and the reading of its error bodies
//! ([`ErrorBody`]), relaying upstream text only through [`relayed_text`] (scrubbed, then cut).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, header};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::Value;

use super::RelayHeaders;
use super::http::{Conn, ReadError, Returning, SendError, Upstream, read_capped, read_whole};
use super::keys::{KeyRing, Pick, REJECTED_COOLDOWN};
use crate::affinity::Affinity;
use crate::config::PoolConfig;
use crate::error::{Error, ErrorKind};
use crate::secrets::Secrets;

/// Largest model list accepted from `GET /models` (background discovery, one at a time).
pub const MAX_MODEL_LIST_BYTES: usize = 4 * 1024 * 1024;
/// Largest error body read from upstream: an error needs no more, and all of it is scanned.
const MAX_ERROR_BYTES: usize = 64 * 1024;
/// Most bytes of upstream text relayed in an error: its JSON `message`, else its raw body.
pub const MAX_RELAYED_MESSAGE: usize = 1024;
const MAX_RELAYED_RAW: usize = 200;

/// `user-agent`, then `fixed` (the kind's own), then the configured `headers`, whose values are
/// marked sensitive.
///
/// # Errors
/// A message naming an invalid header name or value.
pub fn provider_headers(
    fixed: impl IntoIterator<Item = (HeaderName, HeaderValue)>,
    configured: &BTreeMap<String, String>,
) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    headers.insert(header::USER_AGENT, HeaderValue::from_static(concat!("weir/", env!("CARGO_PKG_VERSION"))));
    headers.extend(fixed);
    for (name, value) in configured {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("header name {name:?} is invalid"))?;
        let mut value =
            HeaderValue::from_str(value).map_err(|_| format!("value of header {name} is not a valid header value"))?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    Ok(headers)
}

/// An upstream error answer, read (at most 64 KiB) for the kind to map.
pub struct ErrorBody {
    /// The upstream status.
    pub status: u16,
    /// The answer's headers.
    pub headers: HeaderMap,
    /// The body, possibly cut.
    pub body: Bytes,
}

impl ErrorBody {
    async fn read(resp: Response<Incoming>) -> Self {
        let (parts, body) = resp.into_parts();
        let hint = content_length(&parts.headers);
        let body = read_capped(body, hint, MAX_ERROR_BYTES).await.unwrap_or_default();
        Self { status: parts.status.as_u16(), headers: parts.headers, body }
    }

    /// `Retry-After` in whole seconds.
    pub fn retry_after(&self) -> Option<u64> {
        self.headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()
    }

    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Upstream error text fit to relay: `message` (else the raw `body`) scrubbed of `secrets`,
/// then cut (a cut must not leave a secret's first bytes behind).
pub fn relayed_text(secrets: &Secrets, message: Option<&str>, body: &[u8]) -> String {
    match message {
        Some(msg) => secrets.scrub_cut(msg, MAX_RELAYED_MESSAGE),
        None => secrets.scrub_cut(&String::from_utf8_lossy(body), MAX_RELAYED_RAW),
    }
}

/// Whether upstream error text says the request is longer than the model's context: the
/// phrasings of Anthropic ("prompt is too long: N tokens > M maximum", "input length and
/// `max_tokens` exceed context limit"), Gemini ("The input token count (N) exceeds the maximum
/// number of tokens allowed (M)") and Bedrock ("Input is too long for requested model").
pub fn says_context_length(message: &str) -> bool {
    const PHRASES: [&str; 7] = [
        "prompt is too long",
        "input is too long",
        "exceed context limit",
        "exceeds the maximum number of tokens",
        "too many input tokens",
        "maximum context length",
        "context window",
    ];
    let lower = message.to_ascii_lowercase();
    PHRASES.iter().any(|p| lower.contains(p))
}

/// The message for a 401/403 from upstream: its own text is never relayed, as auth messages
/// often quote part of the key.
pub fn credentials_rejected(name: &str, status: u16) -> String {
    format!("provider {name} rejected Weir's credentials (upstream status {status})")
}

/// An answer with a success status, and the connection it came on.
pub struct Answer {
    /// The response, body unread.
    pub resp: Response<Incoming>,
    /// The connection, for [`HttpCore::put_back`] or [`HttpCore::returning`].
    pub conn: Option<Conn>,
    /// The allow-listed headers to relay.
    pub relay: RelayHeaders,
}

/// One HTTP provider's client, headers, keys and answer limits.
pub struct HttpCore {
    name: String,
    client: Upstream,
    /// `user-agent`, the kind's fixed headers and the configured ones (marked sensitive).
    headers: HeaderMap,
    keys: KeyRing,
    /// `pool.max_response_bytes`: the largest whole answer read.
    max_response_bytes: usize,
    /// `weir_pool_buffered_bytes{provider}`: bytes of whole answers being read right now.
    buffered: metrics::Gauge,
}

impl HttpCore {
    /// The core of provider `name`, sending through `client`.
    pub fn new(name: &str, client: Upstream, headers: HeaderMap, keys: KeyRing, pool: &PoolConfig) -> Self {
        // Shown from the start (at 0); old and new clients of one provider during a reload add
        // to the same series.
        let buffered = metrics::gauge!("weir_pool_buffered_bytes", "provider" => name.to_owned());
        buffered.increment(0.0);
        Self { name: name.to_owned(), client, headers, keys, max_response_bytes: pool.max_response_bytes, buffered }
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A request with the provider's headers, a key and room for `extra` more headers.
    pub fn request(&self, method: Method, url: Uri, body: Bytes, extra: usize) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = url;
        let headers = req.headers_mut();
        // Room for what is added later, so the map never grows (~900 instructions): content-type,
        // the key, host (on a lane) and content-length (hyper).
        headers.reserve(self.headers.len() + 4 + extra);
        for (name, value) in &self.headers {
            headers.insert(name, value.clone());
        }
        req
    }

    /// Sends `req` with a key (for plain-http providers, on a connection of the serving thread
    /// `affinity`). A 429, 401 or 403 sets its key aside ([`KeyRing`]) and the request goes
    /// again with another key, each key at most once. An error status becomes `to_error` of its
    /// body, with the relayed headers; its connection is kept.
    ///
    /// # Errors
    /// Transport failures, error statuses, and no usable key.
    pub async fn send(
        &self,
        affinity: Affinity,
        mut req: Request<Full<Bytes>>,
        to_error: impl FnOnce(ErrorBody) -> Error,
    ) -> Result<Answer, Error> {
        let mut tried = 0u64;
        loop {
            let key = match self.keys.pick(tried) {
                Pick::Key(i, value) => {
                    req.headers_mut().insert(self.keys.header().clone(), value.clone());
                    Some(i)
                }
                Pick::NoKeys => None,
                Pick::AllRejected => return Err(self.no_usable_key()),
            };
            tried |= key.filter(|&i| i < 64).map_or(0, |i| 1 << i);
            // A copy to send again with another key, made only when there is one to try.
            let again = (self.keys.len() > 1 && tried.count_ones() < self.keys.len().min(64) as u32)
                .then(|| copy_request(&req));
            let (resp, conn) = self.client.send_on(affinity, req).await.map_err(|e| self.transport_error(&e))?;
            let relay = RelayHeaders::from_upstream(resp.headers());
            if resp.status().is_success() {
                if let Some(i) = key {
                    self.keys.answered(i);
                }
                return Ok(Answer { resp, conn, relay });
            }
            let answer = ErrorBody::read(resp).await;
            self.client.put_back(conn);
            let rotate = match (key, answer.status) {
                (Some(i), 429) => {
                    self.keys.rate_limited(i, answer.retry_after().map(Duration::from_secs));
                    true
                }
                (Some(i), 401 | 403) => {
                    self.keys.rejected(i);
                    // The key's position names it; the key itself is never logged.
                    tracing::warn!(provider = %self.name, key = i, status = answer.status,
                        "upstream rejected a key; it is left out for {}s", REJECTED_COOLDOWN.as_secs());
                    true
                }
                (Some(i), 500..) => {
                    if self.keys.server_error(i) {
                        tracing::warn!(provider = %self.name, key = i, "a key's requests keep failing (5xx); it rests for {}s",
                            crate::keys::KEY_BREAKER_COOLDOWN.as_secs());
                    }
                    false
                }
                _ => false,
            };
            match again {
                Some(copy) if rotate && matches!(self.keys.pick(tried), Pick::Key(..)) => req = copy,
                _ => return Err(to_error(answer).with_relay(relay)),
            }
        }
    }

    /// Every key of the provider was rejected (401/403) within the cool-down.
    fn no_usable_key(&self) -> Error {
        let message = format!(
            "provider {} has no usable key: all {} were rejected by the upstream (401/403) in the last {}s",
            self.name,
            self.keys.len(),
            REJECTED_COOLDOWN.as_secs()
        );
        Error::new(ErrorKind::Upstream { status: 401 }, message).with_code("no_usable_key")
    }

    /// A whole answer of at most `max_response_bytes`; its connection is kept after it.
    ///
    /// # Errors
    /// A transport failure or a larger answer (whose connection then closes).
    pub async fn read_answer(&self, resp: Response<Incoming>, conn: Option<Conn>) -> Result<Bytes, Error> {
        let body = self.read_capped(resp, self.max_response_bytes).await?;
        self.client.put_back(conn);
        Ok(body)
    }

    /// `GET url` as JSON (of at most 4 MiB), scrubbed of `secrets`: a model list.
    ///
    /// # Errors
    /// Transport failures, error statuses (as `to_error` maps them) and bodies that are no JSON.
    pub async fn get_json(
        &self,
        url: &Uri,
        secrets: &Secrets,
        to_error: impl FnOnce(ErrorBody) -> Error,
    ) -> Result<Value, Error> {
        let request = self.request(Method::GET, url.clone(), Bytes::new(), 0);
        let Answer { resp, conn, .. } = self.send(Affinity::NONE, request, to_error).await?;
        // Listed ids reach clients through `GET /v1/models`.
        let body = secrets.scrub_bytes(self.read_capped(resp, MAX_MODEL_LIST_BYTES).await?);
        self.client.put_back(conn);
        serde_json::from_slice(&body).map_err(|_| {
            Error::new(ErrorKind::UpstreamInvalid, format!("provider {} returned an invalid model list", self.name))
        })
    }

    async fn read_capped(&self, resp: Response<Incoming>, cap: usize) -> Result<Bytes, Error> {
        let length = content_length(resp.headers());
        read_whole(resp.into_body(), length, cap, &self.buffered).await.map_err(|e| match e {
            ReadError::Send(e) => self.transport_error(&e),
            ReadError::TooLarge => Error::new(
                ErrorKind::UpstreamTooLarge,
                format!("provider {} answered with more than {cap} bytes (max_response_bytes)", self.name),
            ),
        })
    }

    /// The error for a failed send.
    pub fn transport_error(&self, e: &SendError) -> Error {
        let kind = if e.timed_out { ErrorKind::UpstreamTimeout } else { ErrorKind::UpstreamUnavailable };
        Error::new(kind, format!("provider {} unreachable: {}", self.name, e.cause))
    }

    /// Checks that a stream request was answered with `content_type` (`text/event-stream`,
    /// AWS's event stream).
    ///
    /// # Errors
    /// [`ErrorKind::UpstreamInvalid`] for any other answer.
    pub fn expect_event_stream(&self, resp: &Response<Incoming>, content_type: &str) -> Result<(), Error> {
        let ok = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with(content_type));
        if ok {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::UpstreamInvalid,
            format!("provider {} answered a stream request without an event stream", self.name),
        ))
    }

    /// An error of an answer that is not valid JSON.
    pub fn not_json(&self) -> Error {
        Error::new(
            ErrorKind::UpstreamInvalid,
            format!("provider {} returned a response that is not valid JSON", self.name),
        )
    }

    /// Puts a connection back after its exchange ended cleanly.
    pub fn put_back(&self, conn: Option<Conn>) {
        self.client.put_back(conn);
    }

    /// A connection that goes back when a stream ends cleanly.
    pub fn returning(&self, conn: Option<Conn>) -> Option<Returning> {
        self.client.returning(conn)
    }

    /// A reload replaced or removed this provider: its idle connections close now.
    pub fn retire(&self) {
        self.client.retire();
    }
}

/// A copy of `req` (method, URI, headers, body), to send again.
fn copy_request(req: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut copy = Request::new(req.body().clone());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_length_phrasings_of_each_kind_are_recognised_and_others_are_not() {
        for yes in [
            "prompt is too long: 210000 tokens > 200000 maximum",
            "input length and `max_tokens` exceed context limit: 178959 + 64000 > 200000, decrease input length",
            "The input token count (2551556) exceeds the maximum number of tokens allowed (1048576).",
            "Input is too long for requested model.",
            "The model returned the following errors: Input is too long for requested model.",
        ] {
            assert!(says_context_length(yes), "{yes}");
        }
        for no in ["max_tokens: 10000 > 4096, which is the maximum allowed", "messages: field required", ""] {
            assert!(!says_context_length(no), "{no}");
        }
    }
}
