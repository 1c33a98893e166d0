//! Sends one OTLP/HTTP export: `POST` of the protobuf body with the configured headers, on
//! hyper with rustls (the TLS stack the providers already use).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client as Pooled;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Largest collector answer read (a partial-success message is small).
const MAX_ANSWER: usize = 64 * 1024;

pub(crate) struct Client {
    http: Pooled<HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoint: Uri,
    headers: HeaderMap,
    timeout: Duration,
}

impl Client {
    /// A client for `endpoint` (validated by the config) sending `headers` with each export.
    pub(crate) fn new(endpoint: &str, headers: &[(String, String)], timeout: Duration) -> Result<Self, String> {
        let endpoint: Uri = endpoint.parse().map_err(|_| "tracing.endpoint: not a URL".to_owned())?;
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("tracing.headers.{name}: bad name"))?;
            let v = HeaderValue::from_str(value).map_err(|_| format!("tracing.headers.{name}: bad value"))?;
            map.insert(n, v);
        }
        map.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(timeout));
        let connector =
            HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().wrap_connector(tcp);
        let http = Pooled::builder(TokioExecutor::new()).pool_max_idle_per_host(2).build(connector);
        Ok(Self { http, endpoint, headers: map, timeout })
    }

    /// Posts one export body.
    ///
    /// # Errors
    /// The connection failed, the collector answered other than 2xx (its status in the message,
    /// never the headers sent), or it took longer than `export_timeout`.
    pub(crate) async fn send(&self, body: Vec<u8>) -> Result<(), String> {
        let mut req =
            Request::post(self.endpoint.clone()).body(Full::new(Bytes::from(body))).map_err(|e| e.to_string())?;
        *req.headers_mut() = self.headers.clone();
        let call = async {
            let resp = self.http.request(req).await.map_err(|e| format!("cannot reach the collector: {e}"))?;
            let status = resp.status();
            // Read the answer so the connection can be reused.
            let _ = Limited::new(resp.into_body(), MAX_ANSWER).collect().await;
            if status.is_success() { Ok(()) } else { Err(format!("the collector answered {status}")) }
        };
        tokio::time::timeout(self.timeout, call).await.map_err(|_| "export timed out".to_owned())?
    }
}
