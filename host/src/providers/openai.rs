//! The `openai` provider kind: any OpenAI-compatible HTTP API. One pooled reqwest client per
//! provider (keep-alive, HTTP/2 where the server offers it), weighted random API key per
//! request, upstream errors mapped to Weir errors with secrets scrubbed.

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::sse::{SseEvent, SseParser};
use super::{ChunkStream, Endpoint, ProviderRequest, ProviderResponse};
use crate::config::ProviderConfig;
use crate::error::{Error, ErrorKind};

/// Largest non-stream response body accepted from upstream.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// An OpenAI-compatible upstream.
pub struct OpenAi {
    name: String,
    client: reqwest::Client,
    chat_url: reqwest::Url,
    embeddings_url: reqwest::Url,
    models_url: reqwest::Url,
    /// `Authorization` values (marked sensitive) with cumulative weights for the random choice.
    keys: Vec<(u64, HeaderValue)>,
    /// Raw key strings, only to scrub them from upstream error messages.
    secrets: Vec<String>,
}

impl OpenAi {
    /// Builds the client.
    ///
    /// # Errors
    /// A message for an invalid URL, header or key, or a client that cannot be built.
    pub fn new(cfg: &ProviderConfig) -> Result<Self, String> {
        let base = cfg.base_url.as_deref().unwrap_or_default().trim_end_matches('/');
        let url = |path: &str| reqwest::Url::parse(&format!("{base}{path}")).map_err(|e| format!("base_url: {e}"));
        let mut headers = HeaderMap::new();
        for (name, value) in &cfg.headers {
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("header name {name:?} is invalid"))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| format!("value of header {name} is not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(cfg.connect_timeout)
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .pool_max_idle_per_host(cfg.pool.workers)
            .tcp_nodelay(true)
            // A gateway relays the provider's answer; it does not chase redirects with the
            // provider's API key attached.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        let mut keys = Vec::with_capacity(cfg.keys.len());
        let mut total = 0u64;
        for (i, k) in cfg.keys.iter().enumerate() {
            if k.weight == 0 {
                continue;
            }
            total += u64::from(k.weight);
            let mut value = HeaderValue::from_str(&format!("Bearer {}", k.value))
                .map_err(|_| format!("keys[{i}] contains characters not allowed in a header"))?;
            value.set_sensitive(true);
            keys.push((total, value));
        }
        Ok(Self {
            name: cfg.name.clone(),
            client,
            chat_url: url(Endpoint::ChatCompletions.path())?,
            embeddings_url: url(Endpoint::Embeddings.path())?,
            models_url: url("/models")?,
            keys,
            secrets: cfg.keys.iter().map(|k| k.value.clone()).filter(|k| k.len() >= 4).collect(),
        })
    }

    fn pick_key(&self) -> Option<&HeaderValue> {
        let total = self.keys.last()?.0;
        let roll = fastrand::u64(0..total);
        self.keys.iter().find(|(cum, _)| roll < *cum).map(|(_, v)| v)
    }

    fn request(&self, method: reqwest::Method, url: &reqwest::Url) -> reqwest::RequestBuilder {
        let rb = self.client.request(method, url.clone());
        match self.pick_key() {
            Some(key) => rb.header(http::header::AUTHORIZATION, key.clone()),
            None => rb,
        }
    }

    /// Sends one request.
    ///
    /// # Errors
    /// Transport failures, error statuses and invalid bodies, mapped to [`Error`].
    pub async fn call(&self, req: ProviderRequest) -> Result<ProviderResponse, Error> {
        let url = match req.endpoint {
            Endpoint::ChatCompletions => &self.chat_url,
            Endpoint::Embeddings => &self.embeddings_url,
        };
        let mut body = req.body;
        body.insert("model".into(), Value::String(req.model));
        let bytes = serde_json::to_vec(&body).map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
        let resp = self
            .request(reqwest::Method::POST, url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(bytes)
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(self.status_error(resp).await);
        }
        if req.stream {
            let is_sse = resp
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with("text/event-stream"));
            if !is_sse {
                return Err(Error::new(
                    ErrorKind::UpstreamInvalid,
                    format!("provider {} answered a stream request without an event stream", self.name),
                ));
            }
            return Ok(ProviderResponse::Stream(self.chunks(resp)));
        }
        let body = read_capped(resp).await.map_err(|e| self.transport_error(&e))?;
        if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
            return Err(Error::new(
                ErrorKind::UpstreamInvalid,
                format!("provider {} returned a response that is not valid JSON", self.name),
            ));
        }
        Ok(ProviderResponse::Full(body))
    }

    /// Turns the upstream SSE body into chunk payloads. A stream that ends without `[DONE]`
    /// is reported as an error item so the client learns it was cut.
    fn chunks(&self, resp: reqwest::Response) -> ChunkStream {
        let name = self.name.clone();
        let state = (resp.bytes_stream(), SseParser::default(), false, name);
        futures_util::stream::unfold(state, |(mut upstream, mut parser, mut finished, name)| async move {
            if finished {
                return None;
            }
            loop {
                match parser.next_event() {
                    Some(SseEvent::Data(data)) => return Some((Ok(data), (upstream, parser, finished, name))),
                    Some(SseEvent::Done) => return None,
                    None => {}
                }
                if parser.pending() > super::sse::MAX_EVENT_BYTES {
                    finished = true;
                    let err =
                        Error::new(ErrorKind::UpstreamInvalid, format!("provider {name} sent an oversized event"));
                    return Some((Err(err), (upstream, parser, finished, name)));
                }
                match upstream.next().await {
                    Some(Ok(bytes)) => parser.feed(&bytes),
                    Some(Err(e)) => {
                        finished = true;
                        let err = Error::new(
                            ErrorKind::UpstreamUnavailable,
                            format!("provider {name} stream failed: {}", without_url(&e)),
                        );
                        return Some((Err(err), (upstream, parser, finished, name)));
                    }
                    None => {
                        finished = true;
                        let err = Error::new(
                            ErrorKind::UpstreamInvalid,
                            format!("provider {name} ended the stream before [DONE]"),
                        );
                        return Some((Err(err), (upstream, parser, finished, name)));
                    }
                }
            }
        })
        .boxed()
    }

    /// `GET /models`: the ids the provider lists.
    ///
    /// # Errors
    /// Transport failures, error statuses and unexpected bodies.
    pub async fn list_models(&self) -> Result<Vec<String>, Error> {
        let resp =
            self.request(reqwest::Method::GET, &self.models_url).send().await.map_err(|e| self.transport_error(&e))?;
        if !resp.status().is_success() {
            return Err(self.status_error(resp).await);
        }
        let body = read_capped(resp).await.map_err(|e| self.transport_error(&e))?;
        let v: Value = serde_json::from_slice(&body).map_err(|_| {
            Error::new(ErrorKind::UpstreamInvalid, format!("provider {} returned an invalid model list", self.name))
        })?;
        Ok(v.get("data")
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(|m| m.get("id")?.as_str().map(str::to_owned)).collect())
            .unwrap_or_default())
    }

    fn transport_error(&self, e: &reqwest::Error) -> Error {
        let kind = if e.is_timeout() { ErrorKind::UpstreamTimeout } else { ErrorKind::UpstreamUnavailable };
        Error::new(kind, format!("provider {} unreachable: {}", self.name, without_url(e)))
    }

    async fn status_error(&self, resp: reqwest::Response) -> Error {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = read_capped(resp).await.unwrap_or_default();
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        let upstream_err = parsed.as_ref().and_then(|v| v.get("error"));
        let message = if status == 401 || status == 403 {
            // Upstream auth messages often quote part of the key: never relay them.
            format!("provider {} rejected Weir's credentials (upstream status {status})", self.name)
        } else {
            let upstream_msg = upstream_err
                .and_then(|e| e.get("message").and_then(Value::as_str).or_else(|| e.as_str()))
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
            format!("provider {} returned {status}: {}", self.name, self.scrub(&upstream_msg))
        };
        let mut err = Error::new(ErrorKind::Upstream { status }, message);
        if let Some(param) = upstream_err.and_then(|e| e.get("param")).and_then(Value::as_str) {
            err = err.with_param(param.to_owned());
        }
        if let Some(secs) = retry_after {
            err = err.with_retry_after(secs);
        }
        err
    }

    fn scrub(&self, msg: &str) -> String {
        let mut out = msg.to_owned();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "<redacted>");
            }
        }
        out
    }
}

/// reqwest errors print the URL; base URLs may embed credentials, so print only the cause.
fn without_url(e: &reqwest::Error) -> String {
    let mut msg = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        msg = s.to_string();
        source = s.source();
    }
    if msg.is_empty() {
        msg = if e.is_timeout() {
            "timed out".into()
        } else if e.is_connect() {
            "connection failed".into()
        } else {
            "request failed".into()
        };
    }
    msg
}

async fn read_capped(mut resp: reqwest::Response) -> Result<Bytes, reqwest::Error> {
    let mut buf = Vec::with_capacity(resp.content_length().map_or(4096, |l| (l as usize).min(MAX_RESPONSE_BYTES)));
    while let Some(chunk) = resp.chunk().await? {
        if buf.len() + chunk.len() > MAX_RESPONSE_BYTES {
            break;
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}
