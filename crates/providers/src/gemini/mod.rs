//! The `gemini` provider kind: Google AI's Gemini API (`generateContent`,
//! `streamGenerateContent?alt=sse`, `batchEmbedContents`, `GET /models`). No client speaks
//! Gemini's format, so this module converts every chat request through the canonical types
//! ([`codec::canonical_request`]) into a Gemini body ([`request`]) and the answer back
//! ([`response`], [`stream`]); embeddings go from OpenAI's shape ([`embeddings`]). The API key
//! travels in `x-goog-api-key`, never in the URL; everything read from upstream is scrubbed of
//! the snapshot's secrets.

mod embeddings;
mod errors;
mod request;
mod response;
mod schema;
mod stream;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;

use super::http::{ReadError, SendError, Upstream, endpoint_uri, read_capped, read_whole};
use super::{ProviderRequest, ProviderResponse, RelayHeaders, codec};
use crate::affinity::Affinity;
use crate::config::{GeminiConfig, PoolConfig};
use crate::error::{Error, ErrorKind};
use crate::format::{Endpoint, Operation};
use crate::secrets::Secrets;
use errors::status_error;

/// The format name in a 400 for a request that has no Gemini form.
const TARGET: &str = "gemini";
/// Largest model list accepted from `GET /models` (background discovery, one at a time).
const MAX_MODEL_LIST_BYTES: usize = 4 * 1024 * 1024;
/// Largest error body read from upstream: an error needs no more, and all of it is scanned.
const MAX_ERROR_BYTES: usize = 64 * 1024;
/// Longest model name put in a URL path.
const MAX_MODEL_NAME: usize = 200;

/// A Gemini API upstream.
pub struct Gemini {
    name: String,
    client: Upstream,
    /// `base_url` without a trailing `/`; model URLs are `{base}/models/{model}:{method}`.
    base: String,
    models_url: Uri,
    /// `user-agent` and the configured `headers` (marked sensitive).
    headers: HeaderMap,
    /// `x-goog-api-key` values (marked sensitive) with cumulative weights.
    keys: Vec<(u64, HeaderValue)>,
    /// `pool.max_response_bytes`: the largest whole answer read.
    max_response_bytes: usize,
    /// `weir_pool_buffered_bytes{provider}`.
    buffered: metrics::Gauge,
}

impl Gemini {
    /// Builds the client of provider `name`.
    ///
    /// # Errors
    /// A message for an invalid URL, header or key.
    pub fn new(name: &str, cfg: &GeminiConfig, pool: &PoolConfig, threads: usize) -> Result<Self, String> {
        let base = cfg.base_url.trim_end_matches('/').to_owned();
        let mut headers = HeaderMap::new();
        headers.insert(header::USER_AGENT, HeaderValue::from_static(concat!("weir/", env!("CARGO_PKG_VERSION"))));
        for (name, value) in &cfg.headers {
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("header name {name:?} is invalid"))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| format!("value of header {name} is not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let mut keys = Vec::with_capacity(cfg.keys.len());
        let mut total = 0u64;
        for (i, k) in cfg.keys.iter().enumerate() {
            if k.weight == 0 {
                continue;
            }
            total += u64::from(k.weight);
            let mut value = HeaderValue::from_str(&k.value)
                .map_err(|_| format!("keys[{i}] contains characters not allowed in a header"))?;
            value.set_sensitive(true);
            keys.push((total, value));
        }
        // Most Gemini models list in one page; the cap keeps the answer bounded.
        let models_url = with_query(&base, "/models", "pageSize=1000")?;
        Ok(Self {
            name: name.to_owned(),
            client: Upstream::new(&models_url, cfg.connect_timeout, pool.workers, threads),
            base,
            models_url,
            headers,
            keys,
            max_response_bytes: pool.max_response_bytes,
            buffered: buffered_gauge(name),
        })
    }

    fn pick_key(&self) -> Option<&HeaderValue> {
        let total = self.keys.last()?.0;
        let roll = fastrand::u64(0..total);
        self.keys.iter().find(|(cum, _)| roll < *cum).map(|(_, v)| v)
    }

    /// A request with the provider's headers and a key.
    fn request(&self, method: Method, url: Uri, body: Bytes) -> Request<Full<Bytes>> {
        let post = method == Method::POST;
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = url;
        let headers = req.headers_mut();
        headers.reserve(self.headers.len() + 4);
        for (name, value) in &self.headers {
            headers.insert(name, value.clone());
        }
        if let Some(key) = self.pick_key() {
            headers.insert(HeaderName::from_static("x-goog-api-key"), key.clone());
        }
        if post {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        req
    }

    /// `{base}/models/{model}:{method}`. The model name goes into the path, so only the
    /// characters of Gemini's model ids are let through: no `/`, `?` or `..` to reach another
    /// endpoint with Weir's key.
    fn model_url(&self, model: &str, method: &str, query: Option<&str>) -> Result<Uri, Error> {
        let ok = !model.is_empty()
            && model.len() <= MAX_MODEL_NAME
            && !model.starts_with('.')
            && model.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !ok {
            return Err(Error::invalid_param(
                "model",
                "a Gemini model name may hold only letters, digits, '-', '.' and '_'",
            ));
        }
        let path = format!("/models/{model}:{method}");
        match query {
            Some(q) => with_query(&self.base, &path, q),
            None => endpoint_uri(&self.base, &path),
        }
        .map_err(|e| Error::new(ErrorKind::Internal, format!("provider {}: {e}", self.name)))
    }

    /// Sends one request (on a connection of the request's serving thread for plain-http
    /// providers, kept only if the exchange ends cleanly).
    ///
    /// # Errors
    /// 400 for a request with no Gemini form; transport failures, error statuses and invalid
    /// answers mapped to [`Error`].
    pub async fn call(&self, mut req: ProviderRequest) -> Result<ProviderResponse, Error> {
        if req.endpoint.op == Operation::Embeddings {
            return self.embed(req).await;
        }
        let client = req.endpoint.format;
        let canonical = codec::canonical_request(TARGET, &mut req)?;
        let wants_usage = request::wants_stream_usage(&canonical);
        let body = request::to_gemini(canonical)?;
        let body = serde_json::to_vec(&body).map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
        let url = if req.stream {
            self.model_url(&req.model, "streamGenerateContent", Some("alt=sse"))?
        } else {
            self.model_url(&req.model, "generateContent", None)?
        };
        let mut request = self.request(Method::POST, url, Bytes::from(body));
        req.trace.write_to(request.headers_mut());
        let (resp, conn) = self.client.send_on(req.affinity, request).await.map_err(|e| self.transport_error(&e))?;
        let relay = RelayHeaders::from_upstream(resp.headers());
        if !resp.status().is_success() {
            let e = self.status_error(resp, &req.secrets).await;
            self.client.put_back(conn);
            return Err(e.with_relay(relay));
        }
        if req.stream {
            let is_sse = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with("text/event-stream"));
            if !is_sse {
                return Err(Error::new(
                    ErrorKind::UpstreamInvalid,
                    format!("provider {} answered a stream request without an event stream", self.name),
                ));
            }
            let conn = self.client.returning(conn);
            let events = stream::events(
                self.name.clone(),
                req.model,
                client,
                wants_usage,
                resp.into_body().into_data_stream(),
                req.secrets,
                conn,
            );
            return Ok(ProviderResponse::stream(codec::canonical_events(client, events)).with_relay(relay));
        }
        let body = self.read_answer(resp, self.max_response_bytes).await?;
        self.client.put_back(conn);
        let body = req.secrets.scrub_bytes(body);
        let answer = response::to_canonical(&self.name, &req.model, client, &body)?;
        let usage = answer.usage.as_ref().map(response::pool_usage);
        let body = codec::canonical_answer(client, answer)?;
        Ok(ProviderResponse::full(body, usage).with_relay(relay))
    }

    /// `POST /v1/embeddings` as `batchEmbedContents`.
    async fn embed(&self, req: ProviderRequest) -> Result<ProviderResponse, Error> {
        if req.endpoint != Endpoint::OPENAI_EMBEDDINGS {
            return Err(Error::new(ErrorKind::InvalidRequest, "Gemini embeddings take OpenAI's embeddings request"));
        }
        let asked = embeddings::Asked::read(req.body.into_map(), &req.model)?;
        let url = self.model_url(&req.model, "batchEmbedContents", None)?;
        let mut request = self.request(Method::POST, url, asked.body.clone());
        req.trace.write_to(request.headers_mut());
        let (resp, conn) = self.client.send_on(req.affinity, request).await.map_err(|e| self.transport_error(&e))?;
        let relay = RelayHeaders::from_upstream(resp.headers());
        if !resp.status().is_success() {
            let e = self.status_error(resp, &req.secrets).await;
            self.client.put_back(conn);
            return Err(e.with_relay(relay));
        }
        let body = self.read_answer(resp, self.max_response_bytes).await?;
        self.client.put_back(conn);
        let body = req.secrets.scrub_bytes(body);
        let (body, usage) = asked.answer(&self.name, &req.model, &body)?;
        Ok(ProviderResponse::full(body, usage).with_relay(relay))
    }

    /// A reload replaced or removed this provider: its idle connections close now.
    pub fn retire(&self) {
        self.client.retire();
    }

    /// `GET /models`: the models' ids without Gemini's `models/` prefix.
    ///
    /// # Errors
    /// Transport failures, error statuses and unexpected bodies.
    pub async fn list_models(&self, secrets: &Secrets) -> Result<Vec<String>, Error> {
        let request = self.request(Method::GET, self.models_url.clone(), Bytes::new());
        let (resp, conn) = self.client.send_on(Affinity::NONE, request).await.map_err(|e| self.transport_error(&e))?;
        if !resp.status().is_success() {
            let e = self.status_error(resp, secrets).await;
            self.client.put_back(conn);
            return Err(e);
        }
        let body = secrets.scrub_bytes(self.read_answer(resp, MAX_MODEL_LIST_BYTES).await?);
        self.client.put_back(conn);
        let v: Value = serde_json::from_slice(&body).map_err(|_| {
            Error::new(ErrorKind::UpstreamInvalid, format!("provider {} returned an invalid model list", self.name))
        })?;
        Ok(v.get("models")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|m| m.get("name")?.as_str())
                    .map(|n| n.strip_prefix("models/").unwrap_or(n).to_owned())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// A whole answer of at most `cap` bytes.
    async fn read_answer(&self, resp: http::Response<Incoming>, cap: usize) -> Result<Bytes, Error> {
        let length = resp.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
        read_whole(resp.into_body(), length, cap, &self.buffered).await.map_err(|e| match e {
            ReadError::Send(e) => self.transport_error(&e),
            ReadError::TooLarge => Error::new(
                ErrorKind::UpstreamTooLarge,
                format!("provider {} answered with more than {cap} bytes (max_response_bytes)", self.name),
            ),
        })
    }

    fn transport_error(&self, e: &SendError) -> Error {
        let kind = if e.timed_out { ErrorKind::UpstreamTimeout } else { ErrorKind::UpstreamUnavailable };
        Error::new(kind, format!("provider {} unreachable: {}", self.name, e.cause))
    }

    /// The error for an upstream error status, from Google's
    /// `{"error": {"code", "message", "status", "details"}}`: the status carried over, the
    /// message (scrubbed, cut) relayed except for auth failures, a `RetryInfo.retryDelay` or
    /// `retry-after` as the retry hint.
    async fn status_error(&self, resp: http::Response<Incoming>, secrets: &Secrets) -> Error {
        let status = resp.status().as_u16();
        let retry_header = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let hint = resp.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
        let body = read_capped(resp.into_body(), hint, MAX_ERROR_BYTES).await.unwrap_or_default();
        status_error(&self.name, status, retry_header, &body, secrets)
    }
}

/// `base` + `path` + `?query`: the base URL is checked without the query, which only Weir
/// writes.
fn with_query(base: &str, path: &str, query: &str) -> Result<Uri, String> {
    let uri = endpoint_uri(base, path)?;
    format!("{uri}?{query}").parse().map_err(|e| format!("base_url: {e}"))
}

/// The provider's `weir_pool_buffered_bytes` gauge, shown from the start (at 0).
fn buffered_gauge(provider: &str) -> metrics::Gauge {
    let g = metrics::gauge!("weir_pool_buffered_bytes", "provider" => provider.to_owned());
    g.increment(0.0);
    g
}
