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
use http::{HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use super::http::{Upstream, endpoint_uri};
use super::keys::KeyRing;
use super::upstream_common::{Answer, ErrorBody, HttpCore, provider_headers};
use super::{ProviderRequest, ProviderResponse, codec};
use crate::affinity::Affinity;
use crate::config::{GeminiConfig, PoolConfig};
use crate::error::{Error, ErrorKind};
use crate::format::{Endpoint, Operation};
use crate::secrets::Secrets;
use errors::status_error;

/// The format name in a 400 for a request that has no Gemini form.
const TARGET: &str = "gemini";
/// Longest model name put in a URL path.
const MAX_MODEL_NAME: usize = 200;

/// A Gemini API upstream.
pub struct Gemini {
    /// Client, headers (`user-agent`, the configured ones), `x-goog-api-key` keys and answer
    /// limits.
    core: HttpCore,
    /// `base_url` without a trailing `/`; model URLs are `{base}/models/{model}:{method}`.
    base: String,
    models_url: Uri,
}

impl Gemini {
    /// Builds the client of provider `name`.
    ///
    /// # Errors
    /// A message for an invalid URL, header or key.
    pub fn new(name: &str, cfg: &GeminiConfig, pool: &PoolConfig, threads: usize) -> Result<Self, String> {
        let base = cfg.base_url.trim_end_matches('/').to_owned();
        let headers = provider_headers([], &cfg.headers)?;
        let keys = KeyRing::plain("x-goog-api-key", &cfg.keys)?;
        // Most Gemini models list in one page; the cap keeps the answer bounded.
        let models_url = with_query(&base, "/models", "pageSize=1000")?;
        let client = Upstream::new(&models_url, cfg.connect_timeout, pool.workers, threads);
        Ok(Self { core: HttpCore::new(name, client, headers, keys, pool), base, models_url })
    }

    fn name(&self) -> &str {
        self.core.name()
    }

    /// A request with the provider's headers and a key.
    fn request(&self, method: Method, url: Uri, body: Bytes) -> Request<Full<Bytes>> {
        let post = method == Method::POST;
        let mut req = self.core.request(method, url, body, 0);
        if post {
            req.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
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
        .map_err(|e| Error::new(ErrorKind::Internal, format!("provider {}: {e}", self.name())))
    }

    /// Sends `request`, an error status read as Google's error.
    async fn send(
        &self,
        affinity: Affinity,
        secrets: &Secrets,
        request: Request<Full<Bytes>>,
    ) -> Result<Answer, Error> {
        self.core.send(affinity, request, |e| self.status_error(e, secrets)).await
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
        let Answer { resp, conn, relay } = self.send(req.affinity, &req.secrets, request).await?;
        if req.stream {
            self.core.expect_event_stream(&resp, "text/event-stream")?;
            let conn = self.core.returning(conn);
            let events = stream::events(
                self.name().to_owned(),
                req.model,
                client,
                wants_usage,
                resp.into_body().into_data_stream(),
                req.secrets,
                conn,
            );
            return Ok(ProviderResponse::stream(codec::canonical_events(client, events)).with_relay(relay));
        }
        let body = self.core.read_answer(resp, conn).await?;
        let body = req.secrets.scrub_bytes(body);
        let answer = response::to_canonical(self.name(), &req.model, client, &body)?;
        let usage = answer.usage.as_ref().map(response::pool_usage);
        let body = codec::canonical_answer(client, answer);
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
        let Answer { resp, conn, relay } = self.send(req.affinity, &req.secrets, request).await?;
        let body = self.core.read_answer(resp, conn).await?;
        let body = req.secrets.scrub_bytes(body);
        let (body, usage) = asked.answer(self.name(), &req.model, &body)?;
        Ok(ProviderResponse::full(body, usage).with_relay(relay))
    }

    /// A reload replaced or removed this provider: its idle connections close now.
    pub fn retire(&self) {
        self.core.retire();
    }

    /// `GET /models`: the models' ids without Gemini's `models/` prefix.
    ///
    /// # Errors
    /// Transport failures, error statuses and unexpected bodies.
    pub async fn list_models(&self, secrets: &Secrets) -> Result<Vec<String>, Error> {
        let v = self.core.get_json(&self.models_url, secrets, |e| self.status_error(e, secrets)).await?;
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

    /// The error for an upstream error status, from Google's
    /// `{"error": {"code", "message", "status", "details"}}`: the status carried over, the
    /// message (scrubbed, cut) relayed except for auth failures, a `RetryInfo.retryDelay` or
    /// `retry-after` as the retry hint.
    fn status_error(&self, answer: ErrorBody, secrets: &Secrets) -> Error {
        status_error(self.name(), answer.status, answer.retry_after(), &answer.body, secrets)
    }
}

/// `base` + `path` + `?query`: the base URL is checked without the query, which only Weir
/// writes.
fn with_query(base: &str, path: &str, query: &str) -> Result<Uri, String> {
    let uri = endpoint_uri(base, path)?;
    format!("{uri}?{query}").parse().map_err(|e| format!("base_url: {e}"))
}
