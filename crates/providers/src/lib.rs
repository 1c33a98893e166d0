//! Providers: the `upstream_request` phase. Each kind speaks one API format natively
//! ([`Provider::native_format`]); [`codec`] passes the client's request through when it is in
//! that format and converts it (and the answer back) when not. Dispatch is a plain enum: no
//! boxing per call, and a new kind (Anthropic, Bedrock, ...) is one more variant and module.

pub mod anthropic;
pub mod azure;
pub mod bedrock;
pub mod codec;
pub mod gemini;
pub mod http;
pub mod keys;
pub mod mock;
pub mod openai;
pub mod relay;
#[cfg(any(test, feature = "testing"))]
pub mod scripted;
pub mod sse;
pub mod upstream_common;
pub mod usage;

use weir_config as config;
use weir_types::{affinity, error, exchange, format, secrets};

pub use weir_types::relay::{RelayHeaders, TraceHeaders};

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;

use crate::affinity::Affinity;
use crate::config::{ProviderConfig, ProviderKind};
use crate::error::Error;
use crate::exchange::JsonBody;
use crate::format::{ApiFormat, Endpoint};
use crate::secrets::Secrets;

/// A request as handed to a provider: routed, validated, model already mapped to the
/// provider's own name.
#[derive(Debug, Clone)]
pub struct ProviderRequest {
    /// Where the request came in: its format is the client's, which the answer must speak.
    pub endpoint: Endpoint,
    /// The model name the provider knows.
    pub model: String,
    /// The JSON body in the client's format. While it still holds the client's own bytes
    /// ([`JsonBody::raw`]: nothing edited the request and `model` is the client's name) and the
    /// provider speaks that format, HTTP providers send them unchanged ([`codec`]).
    pub body: JsonBody,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The snapshot's secrets, scrubbed from everything read from upstream.
    pub secrets: Arc<Secrets>,
    /// The serving thread the request runs on: the upstream connection is taken from its
    /// idle ones.
    pub affinity: Affinity,
    /// `x-request-id` and the client's trace context, for every HTTP provider to send upstream
    /// ([`TraceHeaders::write_to`]).
    pub trace: TraceHeaders,
}

/// Stream of event payloads in the client's format (for OpenAI, `chat.completion.chunk` JSON);
/// ends after the last one (an end marker such as `[DONE]` is not an item). An `Err` item ends
/// the stream with that error.
pub type ChunkStream = BoxStream<'static, Result<Bytes, Error>>;

/// A provider's answer. Build it with [`ProviderResponse::full`] or [`ProviderResponse::stream`]
/// and add upstream headers with [`ProviderResponse::with_relay`].
pub enum ProviderResponse {
    /// A whole JSON body (non-stream requests) in the client's format, already checked to be
    /// valid JSON.
    Full {
        /// The answer.
        body: Bytes,
        /// The tokens it reports, for `weir_tokens_total`.
        usage: Option<usage::Usage>,
        /// Upstream response headers relayed to the client.
        relay: RelayHeaders,
    },
    /// Chunks relayed as they arrive.
    Stream {
        /// The event payloads.
        events: ChunkStream,
        /// Upstream response headers relayed to the client.
        relay: RelayHeaders,
    },
}

impl ProviderResponse {
    /// A whole answer with no relayed headers.
    pub fn full(body: Bytes, usage: Option<usage::Usage>) -> Self {
        Self::Full { body, usage, relay: RelayHeaders::NONE }
    }

    /// A stream with no relayed headers.
    pub fn stream(events: ChunkStream) -> Self {
        Self::Stream { events, relay: RelayHeaders::NONE }
    }

    /// The same answer carrying the upstream headers `headers` relays to the client.
    #[must_use]
    pub fn with_relay(mut self, headers: RelayHeaders) -> Self {
        match &mut self {
            Self::Full { relay, .. } | Self::Stream { relay, .. } => *relay = headers,
        }
        self
    }
}

/// One configured provider.
pub enum Provider {
    /// OpenAI-compatible HTTP API.
    Openai(Box<openai::OpenAi>),
    /// Google AI's Gemini API.
    Gemini(Box<gemini::Gemini>),
    /// Anthropic's Messages API.
    Anthropic(Box<anthropic::Anthropic>),
    /// Built-in echo provider.
    Mock(mock::Mock),
    /// Amazon Bedrock Runtime (Converse).
    Bedrock(Box<bedrock::Bedrock>),
    /// Test double with scripted behaviour (delays, errors, panics).
    #[cfg(any(test, feature = "testing"))]
    Scripted(scripted::Scripted),
}

impl Provider {
    /// Builds the provider's client from its config, for requests on `threads` serving
    /// threads ([`crate::affinity`]).
    ///
    /// # Errors
    /// A message if the HTTP client cannot be built (bad header values, TLS init).
    pub fn from_config(cfg: &ProviderConfig, threads: usize) -> Result<Self, String> {
        Ok(match &cfg.kind {
            ProviderKind::OpenAi(o) => Self::Openai(Box::new(openai::OpenAi::new(&cfg.name, o, &cfg.pool, threads)?)),
            ProviderKind::Anthropic(a) => {
                Self::Anthropic(Box::new(anthropic::Anthropic::new(&cfg.name, a, &cfg.pool, threads)?))
            }
            ProviderKind::Mock(m) => Self::Mock(mock::Mock::new(&cfg.models, m)),
            ProviderKind::Gemini(g) => Self::Gemini(Box::new(gemini::Gemini::new(&cfg.name, g, &cfg.pool, threads)?)),
            ProviderKind::Bedrock(b) => {
                Self::Bedrock(Box::new(bedrock::Bedrock::new(&cfg.name, b, &cfg.pool, threads)?))
            }
        })
    }

    /// The provider as OpenTelemetry's `gen_ai.system` names it (trace spans).
    pub fn system_name(&self) -> &'static str {
        match self {
            Self::Openai(_) => "openai",
            Self::Gemini(_) => "gcp.gemini",
            Self::Anthropic(_) => "anthropic",
            Self::Mock(_) => "weir.mock",
            Self::Bedrock(_) => "aws.bedrock",
            #[cfg(any(test, feature = "testing"))]
            Self::Scripted(_) => "weir.scripted",
        }
    }

    /// The API format the provider speaks upstream; `None` for a kind whose format no client
    /// speaks (Bedrock Converse), which converts through the canonical form itself.
    pub fn native_format(&self) -> Option<ApiFormat> {
        Some(match self {
            Self::Openai(_) => openai::OpenAi::FORMAT,
            Self::Anthropic(_) => anthropic::Anthropic::FORMAT,
            Self::Mock(_) => mock::Mock::FORMAT,
            // No client speaks these formats: the provider converts every request itself
            // (`codec::canonical_request`), so no passthrough can ever match.
            Self::Gemini(_) | Self::Bedrock(_) => return None,
            #[cfg(any(test, feature = "testing"))]
            Self::Scripted(_) => scripted::Scripted::FORMAT,
        })
    }

    /// Makes one attempt upstream; for streams, resolves when the response head arrived.
    /// Which connection it uses is the provider's business; dropping the future stops the
    /// attempt and closes a connection it left mid-exchange.
    ///
    /// # Errors
    /// Upstream errors mapped to [`Error`] (status and message carried over, secrets scrubbed).
    pub async fn call(&self, req: ProviderRequest) -> Result<ProviderResponse, Error> {
        // Gemini's and Bedrock's calls are boxed: the largest futures here (Gemini's ~4 KB), they
        // would size this one, which is moved a few times per request on every provider.
        match self {
            Self::Openai(p) => p.call(req).await,
            Self::Gemini(p) => Box::pin(p.call(req)).await,
            Self::Anthropic(p) => p.call(req).await,
            Self::Mock(p) => p.call(req).await,
            Self::Bedrock(p) => Box::pin(p.call(req)).await,
            #[cfg(any(test, feature = "testing"))]
            Self::Scripted(p) => p.call(req).await,
        }
    }

    /// A reload replaced or removed this provider: it closes its idle upstream connections now
    /// instead of when the last request of the old snapshot is done (a stream may last
    /// minutes). Calls in flight finish; their connections are closed after them.
    pub fn retire(&self) {
        match self {
            Self::Openai(p) => p.retire(),
            Self::Gemini(p) => p.retire(),
            Self::Anthropic(p) => p.retire(),
            Self::Bedrock(p) => p.retire(),
            Self::Mock(_) => {}
            #[cfg(any(test, feature = "testing"))]
            Self::Scripted(_) => {}
        }
    }

    /// Whether [`Provider::relay`] can serve the OpenAI endpoints Weir does not model: an
    /// `openai` kind that is not Azure (whose deployments address only chat and embeddings).
    pub fn relays(&self) -> bool {
        matches!(self, Self::Openai(p) if p.relays())
    }

    /// Relays a request of an endpoint Weir does not model ([`relay`]).
    ///
    /// # Errors
    /// A provider that cannot ([`Provider::relays`]), transport failures, and upstream error
    /// statuses mapped as for a chat call.
    pub async fn relay(&self, req: relay::RelayRequest) -> Result<relay::RelayAnswer, Error> {
        match self {
            Self::Openai(p) if p.relays() => p.relay(req).await,
            _ => Err(Error::new(
                error::ErrorKind::Internal,
                "this provider cannot relay OpenAI endpoints (only openai-kind providers can)",
            )),
        }
    }

    /// Asks the provider which models it serves, for `GET /v1/models` and routing.
    /// `None` when the provider has no listing endpoint. Errors are scrubbed of `secrets`.
    pub async fn discover_models(&self, secrets: &Secrets) -> Option<Result<Vec<String>, Error>> {
        match self {
            Self::Openai(p) => Some(p.list_models(secrets).await),
            Self::Gemini(p) => Some(p.list_models(secrets).await),
            Self::Anthropic(p) => Some(p.list_models(secrets).await),
            Self::Mock(p) => Some(Ok(p.models())),
            // The runtime API lists no models: `models` in the config routes them.
            Self::Bedrock(_) => None,
            #[cfg(any(test, feature = "testing"))]
            Self::Scripted(_) => None,
        }
    }
}
