//! The HTTP client the OTLP exporter sends with: hyper with rustls (the TLS stack the
//! providers already use), so exporting adds no second HTTP client to the binary.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client as Pooled;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_http::HttpError;

/// Largest collector answer read (a partial-success message is small).
const MAX_ANSWER: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub(crate) struct Client(Pooled<HttpsConnector<HttpConnector>, Full<Bytes>>);

impl Client {
    pub(crate) fn new() -> Self {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        let connector =
            HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().wrap_connector(tcp);
        Self(Pooled::builder(TokioExecutor::new()).pool_max_idle_per_host(2).build(connector))
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Client {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let resp = self.0.request(request.map(Full::new)).await?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_ANSWER).collect().await?.to_bytes();
        Ok(Response::from_parts(parts, body))
    }
}
