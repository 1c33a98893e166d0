//! OpenAI endpoints Weir does not model (`/v1/completions`, `/v1/moderations`, `/v1/images/*`,
//! `/v1/audio/*`, `/v1/files`, `/v1/batches`): relayed as bytes to an OpenAI-kind provider,
//! with its key and Weir's trace headers, and the answer streamed back as it arrives (a file's
//! content or generated audio is not JSON and may be large).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use hyper::body::Incoming;

use crate::affinity::Affinity;
use crate::http::Returning;
use crate::secrets::Secrets;
use crate::{RelayHeaders, TraceHeaders};

/// A request relayed to the provider as it came.
#[derive(Debug)]
pub struct RelayRequest {
    /// The client's method.
    pub method: Method,
    /// The path below `/v1` and the query: `/files/file-abc/content`, `/batches?limit=2`.
    pub path_and_query: String,
    /// The client's `content-type` (JSON, or `multipart/form-data` with its boundary).
    pub content_type: Option<HeaderValue>,
    /// The body, model already mapped to the provider's name when it is JSON.
    pub body: Bytes,
    /// Scrubbed from error answers.
    pub secrets: Arc<Secrets>,
    /// The serving thread, for a connection of its own.
    pub affinity: Affinity,
    /// `x-request-id` and the trace context.
    pub trace: TraceHeaders,
}

/// A successful answer, its body unread.
pub struct RelayAnswer {
    /// The upstream status (2xx).
    pub status: StatusCode,
    /// The upstream `content-type`.
    pub content_type: Option<HeaderValue>,
    /// The allow-listed upstream headers.
    pub relay: RelayHeaders,
    /// The body, to stream to the client.
    pub body: Incoming,
    /// The connection, handed back once the body was read to its end.
    pub conn: Option<Returning>,
}
