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
use http::{HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use super::http::Upstream;
use super::keys::KeyRing;
use super::upstream_common::{Answer, ErrorBody, HttpCore, provider_headers};
use super::{ProviderRequest, ProviderResponse, codec};
use crate::config::{BedrockConfig, PoolConfig};
use crate::error::{Error, ErrorKind};
use crate::secrets::Secrets;

/// The name of the format in a 400 for a request Converse cannot express.
const TARGET: &str = "bedrock converse";

/// An Amazon Bedrock Runtime endpoint and the credentials it is signed with.
pub struct Bedrock {
    /// Client, headers (`user-agent`, the configured ones) and answer limits; no keys: requests
    /// are signed.
    core: HttpCore,
    /// Scheme, authority and path prefix of `base_url`, without a trailing `/`.
    base: String,
    /// The `host` header: signed, so it is set before signing rather than by the client.
    host: HeaderValue,
    signer: sign::Signer,
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
        let headers = provider_headers([], &cfg.headers)?;
        let client = Upstream::new(&uri, cfg.connect_timeout, pool.workers, threads);
        Ok(Self {
            core: HttpCore::new(name, client, headers, KeyRing::none(), pool),
            base,
            host,
            signer: sign::Signer::new(cfg),
        })
    }

    fn name(&self) -> &str {
        self.core.name()
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
        let secrets = &req.secrets;
        let Answer { resp, conn, relay } =
            self.core.send(req.affinity, request, |e| status_error(self.name(), e, secrets)).await?;
        let id = resp
            .headers()
            .get("x-amzn-requestid")
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| format!("bedrock-{:016x}", fastrand::u64(..)), |v| format!("bedrock-{v}"));
        if req.stream {
            self.core.expect_event_stream(&resp, "application/vnd.amazon.eventstream")?;
            let conn = self.core.returning(conn);
            let data = resp.into_body().into_data_stream();
            let events = stream::events(self.name().to_owned(), id, req.model, data, req.secrets, conn);
            return Ok(ProviderResponse::stream(codec::canonical_events(client, events)).with_relay(relay));
        }
        let body = self.core.read_answer(resp, conn).await?;
        // Scrubbed before it is read: replacing text inside a JSON string keeps it valid.
        let body = req.secrets.scrub_bytes(body);
        let invalid =
            |why: String| Error::new(ErrorKind::UpstreamInvalid, format!("provider {} sent {why}", self.name()));
        let tree = match serde_json::from_slice(&body) {
            Ok(Value::Object(o)) => o,
            _ => return Err(invalid("an answer that is not a JSON object".into())),
        };
        let answer =
            response::from_converse(&tree, id, req.model).map_err(|e| invalid(format!("an invalid answer: {e}")))?;
        let usage = answer.usage.as_ref().map(response::metered);
        let body = codec::canonical_answer(client, answer);
        Ok(ProviderResponse::full(body, usage).with_relay(relay))
    }

    /// A signed POST of `body` to `url`.
    fn request(&self, url: Uri, body: Bytes, stream: bool) -> Result<Request<Full<Bytes>>, Error> {
        let mut req = self.core.request(Method::POST, url, body.clone(), 2);
        let headers = req.headers_mut();
        headers.insert(header::HOST, self.host.clone());
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let accept = if stream { "application/vnd.amazon.eventstream" } else { "application/json" };
        headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
        self.signer.sign(&mut req, &body)?;
        Ok(req)
    }

    /// A reload replaced or removed this provider: its idle connections close now.
    pub fn retire(&self) {
        self.core.retire();
    }
}

/// The error for an upstream error status: `x-amzn-errortype` and the body's `message`.
fn status_error(name: &str, answer: ErrorBody, secrets: &Secrets) -> Error {
    let error_type = answer.headers.get("x-amzn-errortype").and_then(|v| v.to_str().ok());
    let parsed = answer.json();
    let message = parsed.as_ref().and_then(|v| v.get("message").or_else(|| v.get("Message"))).and_then(Value::as_str);
    // Without a header the type may be in the body (`__type`), as AWS JSON protocols allow.
    let body_type = parsed.as_ref().and_then(|v| v.get("__type")).and_then(Value::as_str);
    let error_type = error_type.or(body_type).map(|t| t.rsplit('#').next().unwrap_or(t));
    // The raw body when it has no message: cut only after the scrub (in `upstream_error`).
    let text = message.map_or_else(|| String::from_utf8_lossy(&answer.body), std::borrow::Cow::Borrowed);
    let mut err = errors::upstream_error(name, answer.status, error_type, Some(&text), secrets);
    if let Some(secs) = answer.retry_after() {
        err = err.with_retry_after(secs);
    }
    err
}
