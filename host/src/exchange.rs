//! The request and response as they travel through the phases (and, through `plugins`, as
//! plugins see them). Bodies stay JSON maps / `Bytes`; nothing here is provider-specific.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Map, Value};

use crate::providers::Endpoint;

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
    pub body: Map<String, Value>,
    /// Client headers, minus credentials (`authorization`, `cookie`, `x-api-key`, ...).
    pub headers: HeaderMap,
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
}

impl GatewayResponse {
    /// A 200 JSON response.
    pub fn ok(body: Bytes) -> Self {
        Self { status: 200, headers: HeaderMap::new(), body }
    }
}

/// Headers never copied into [`GatewayRequest::headers`] (so never visible to plugins).
pub const CREDENTIAL_HEADERS: &[&str] =
    &["authorization", "proxy-authorization", "cookie", "x-api-key", "api-key", "x-goog-api-key"];

/// Copies client headers, dropping credentials and hop-by-hop noise.
pub fn client_headers(src: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(src.len());
    for (name, value) in src {
        let n = name.as_str();
        if CREDENTIAL_HEADERS.contains(&n) || n == "content-length" || n == "connection" || n == "host" {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}
