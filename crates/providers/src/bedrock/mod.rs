//! The `bedrock` provider kind: Amazon Bedrock Runtime's Converse API
//! (`POST {base}/model/{modelId}/converse` and `/converse-stream`), SigV4-signed. No client
//! speaks Converse, so the request is read into the canonical form ([`codec::canonical_request`]),
//! written as Converse ([`request`]), and the answer read back ([`response`], [`stream`]) and
//! written in the client's format ([`codec::canonical_answer`], [`codec::canonical_events`]).
//! Everything read from upstream is scrubbed of the snapshot's secrets.

mod errors;
mod request;
mod response;
mod sign;
mod stream;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;

use super::http::{ReadError, SendError, Upstream, read_capped, read_whole};
use super::{ProviderRequest, ProviderResponse, RelayHeaders, codec};
use crate::config::{BedrockConfig, PoolConfig};
use crate::error::{Error, ErrorKind};
use crate::secrets::Secrets;

/// Largest error body read from upstream.
const MAX_ERROR_BYTES: usize = 64 * 1024;
/// The name of the format in a 400 for a request Converse cannot express.
const TARGET: &str = "bedrock converse";

/// An Amazon Bedrock Runtime endpoint and the credentials it is signed with.
pub struct Bedrock {
    name: String,
    client: Upstream,
    /// Scheme, authority and path prefix of `base_url`, without a trailing `/`.
    base: String,
    /// The `host` header: signed, so it is set before signing rather than by the client.
    host: HeaderValue,
    /// `user-agent` and the configured `headers` (marked sensitive).
    headers: HeaderMap,
    signer: sign::Signer,
    /// `pool.max_response_bytes`: the largest whole answer read.
    max_response_bytes: usize,
    /// `weir_pool_buffered_bytes{provider}`.
    buffered: metrics::Gauge,
}

impl Bedrock {
    /// Builds the client of provider `name`.
    ///
    /// # Errors
    /// A message for an invalid URL or header.
    pub fn new(name: &str, cfg: &BedrockConfig, pool: &PoolConfig, threads: usize) -> Result<Self, String> {
        let base = cfg.base_url.trim_end_matches('/').to_owned();
        let uri: Uri = base.parse().map_err(|_| "base_url is not a valid URL".to_owned())?;
        let authority = uri.authority().ok_or("base_url has no host")?;
        // As the signer and HTTP/1.1 write it: the port only when it is not the scheme's.
        let default_port = if uri.scheme_str() == Some("http") { 80 } else { 443 };
        let host = match authority.port_u16() {
            Some(p) if p != default_port => format!("{}:{p}", authority.host()),
            _ => authority.host().to_owned(),
        };
        let host = HeaderValue::from_str(&host).map_err(|_| "base_url has an invalid host".to_owned())?;
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
        let g = metrics::gauge!("weir_pool_buffered_bytes", "provider" => name.to_owned());
        g.increment(0.0);
        Ok(Self {
            name: name.to_owned(),
            client: Upstream::new(&uri, cfg.connect_timeout, pool.workers, threads),
            base,
            host,
            headers,
            signer: sign::Signer::new(cfg),
            max_response_bytes: pool.max_response_bytes,
            buffered: g,
        })
    }

    /// Sends one Converse (or ConverseStream) request.
    ///
    /// # Errors
    /// 400 for a request Converse cannot express; transport failures, error statuses, AWS
    /// exceptions and invalid answers, mapped to [`Error`].
    pub async fn call(&self, mut req: ProviderRequest) -> Result<ProviderResponse, Error> {
        let client = req.endpoint.format;
        let canonical = codec::canonical_request(TARGET, &mut req)?;
        let converse = request::to_converse(&canonical).map_err(|r| {
            let message = format!("this request cannot be sent to Bedrock: `{}`: {}", r.path, r.reason);
            Error::new(ErrorKind::InvalidRequest, message).with_param(r.path)
        })?;
        let body = serde_json::to_vec(&converse)
            .map(Bytes::from)
            .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
        let op = if req.stream { "converse-stream" } else { "converse" };
        let url = format!("{}/model/{}/{op}", self.base, request::model_segment(&req.model));
        let url: Uri =
            url.parse().map_err(|_| Error::new(ErrorKind::InvalidRequest, "the model name makes an invalid URL"))?;
        let mut request = self.request(url, body, req.stream)?;
        // Added after signing: SigV4 covers only the headers it lists, so these may vary.
        req.trace.write_to(request.headers_mut());
        let (resp, conn) = self.client.send_on(req.affinity, request).await.map_err(|e| self.transport_error(&e))?;
        let relay = RelayHeaders::from_upstream(resp.headers());
        let status = resp.status();
        if !status.is_success() {
            let e = self.status_error(resp, &req.secrets).await;
            self.client.put_back(conn);
            return Err(e.with_relay(relay));
        }
        let id = resp
            .headers()
            .get("x-amzn-requestid")
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| format!("bedrock-{:016x}", fastrand::u64(..)), |v| format!("bedrock-{v}"));
        if req.stream {
            let is_event_stream = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with("application/vnd.amazon.eventstream"));
            if !is_event_stream {
                return Err(Error::new(
                    ErrorKind::UpstreamInvalid,
                    format!("provider {} answered a stream request without an event stream", self.name),
                ));
            }
            let conn = self.client.returning(conn);
            let data = resp.into_body().into_data_stream();
            let events = stream::events(self.name.clone(), id, req.model, data, req.secrets, conn);
            return Ok(ProviderResponse::stream(codec::canonical_events(client, events)).with_relay(relay));
        }
        let body = self.read_answer(resp).await?;
        self.client.put_back(conn);
        // Scrubbed before it is read: replacing text inside a JSON string keeps it valid.
        let body = req.secrets.scrub_bytes(body);
        let invalid =
            |why: String| Error::new(ErrorKind::UpstreamInvalid, format!("provider {} sent {why}", self.name));
        let tree = match serde_json::from_slice(&body) {
            Ok(Value::Object(o)) => o,
            _ => return Err(invalid("an answer that is not a JSON object".into())),
        };
        let answer =
            response::from_converse(&tree, id, req.model).map_err(|e| invalid(format!("an invalid answer: {e}")))?;
        let usage = answer.usage.as_ref().map(response::metered);
        let body = codec::canonical_answer(client, answer)?;
        Ok(ProviderResponse::full(body, usage).with_relay(relay))
    }

    /// A signed POST of `body` to `url`.
    fn request(&self, url: Uri, body: Bytes, stream: bool) -> Result<Request<Full<Bytes>>, Error> {
        let mut req = Request::new(Full::new(body.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = url;
        let headers = req.headers_mut();
        headers.reserve(self.headers.len() + 6);
        for (name, value) in &self.headers {
            headers.insert(name, value.clone());
        }
        headers.insert(header::HOST, self.host.clone());
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let accept = if stream { "application/vnd.amazon.eventstream" } else { "application/json" };
        headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
        self.signer.sign(&mut req, &body)?;
        Ok(req)
    }

    /// A reload replaced or removed this provider: its idle connections close now.
    pub fn retire(&self) {
        self.client.retire();
    }

    async fn read_answer(&self, resp: http::Response<Incoming>) -> Result<Bytes, Error> {
        let cap = self.max_response_bytes;
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

    /// The error for an upstream error status: `x-amzn-errortype` and the body's `message`.
    async fn status_error(&self, resp: http::Response<Incoming>, secrets: &Secrets) -> Error {
        let status = resp.status().as_u16();
        let error_type = resp.headers().get("x-amzn-errortype").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let hint = resp.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
        let body = read_capped(resp.into_body(), hint, MAX_ERROR_BYTES).await.unwrap_or_default();
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        let message =
            parsed.as_ref().and_then(|v| v.get("message").or_else(|| v.get("Message"))).and_then(Value::as_str);
        // Without a header the type may be in the body (`__type`), as AWS JSON protocols allow.
        let body_type = parsed.as_ref().and_then(|v| v.get("__type")).and_then(Value::as_str);
        let error_type = error_type.as_deref().or(body_type).map(|t| t.rsplit('#').next().unwrap_or(t).to_owned());
        // The raw body when it has no message: cut only after the scrub (in `upstream_error`).
        let text = message.map_or_else(|| String::from_utf8_lossy(&body).into_owned(), str::to_owned);
        let mut err = errors::upstream_error(&self.name, status, error_type.as_deref(), Some(&text), secrets);
        if let Some(secs) = retry_after {
            err = err.with_retry_after(secs);
        }
        err
    }
}
