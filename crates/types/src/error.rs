//! The one request error type, and the one place that decides its status, `type` and `code`
//! (`weir_server::respond` builds the HTTP response; each front door spells the body). Every
//! other module reports failures as an [`Error`].

use std::borrow::Cow;
use std::fmt;

use http::StatusCode;

/// Who caused a failure: decides the status family and whether a retry elsewhere may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The client sent something Weir cannot serve.
    Client,
    /// The upstream provider failed or answered with an error.
    Provider,
    /// A plugin rejected the request or failed.
    Plugin,
    /// Weir itself: overload, shutdown, internal faults.
    Gateway,
}

/// What went wrong. Each kind maps to exactly one status and OpenAI-style `type`/`code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The body is not valid JSON.
    InvalidJson,
    /// A field is missing or has the wrong type/value.
    InvalidRequest,
    /// The body is larger than `server.max_body_bytes`.
    BodyTooLarge,
    /// The whole body did not arrive within `server.body_read_timeout`.
    BodyTimeout,
    /// The request head is larger than the server reads (hyper's own parse error).
    HeaderTooLarge,
    /// The request URI is longer than the server reads (hyper's own parse error).
    UriTooLong,
    /// No route for this method and path.
    RouteNotFound,
    /// The method is not allowed on this path.
    MethodNotAllowed,
    /// Missing or wrong credentials (admin API).
    Unauthorized,
    /// An API request whose `Content-Type` is present and not JSON (a browser form post).
    UnsupportedMediaType,
    /// An `Origin` not in `server.browser.allowed_origins`: a cross-site web page.
    OriginNotAllowed,
    /// A `Host` this listener does not answer to (DNS rebinding).
    HostNotAllowed,
    /// No provider serves the requested model.
    ModelNotFound,
    /// The provider's queue is full and its policy is `reject`.
    QueueFull,
    /// The request waited longer than `queue_timeout` for a queue slot or a worker.
    QueueTimeout,
    /// The request was evicted from the queue by a newer one (`drop-oldest`).
    Dropped,
    /// Weir is shutting down and did not get to this request.
    ShuttingDown,
    /// Weir is past a memory or connection threshold and sheds new work (`[server.overload]`).
    Overloaded,
    /// The provider did not answer within `request_timeout`.
    UpstreamTimeout,
    /// The provider answered with an error status.
    Upstream {
        /// Status the provider answered with.
        status: u16,
    },
    /// The provider could not be reached.
    UpstreamUnavailable,
    /// The provider's circuit breaker is open and no fallback could serve.
    CircuitOpen,
    /// The provider answered with something that is not a valid response.
    UpstreamInvalid,
    /// The provider's whole answer is larger than the pool's `max_response_bytes`.
    UpstreamTooLarge,
    /// A plugin rejected the request with its own status.
    PluginRejected {
        /// Status chosen by the plugin (validated to 400..=599).
        status: u16,
    },
    /// A plugin failed (trap, fuel, deadline, memory) under `on_error = "fail-closed"`.
    PluginFailed,
    /// A bug in Weir (e.g. a panic in provider code); the request fails, the process does not.
    Internal,
    /// The virtual key may not call this model (its `models` list).
    ModelNotAllowed,
    /// A virtual key's rate, token or concurrency limit is reached (`code` names which).
    KeyLimit,
    /// A virtual key's budget for the current period is spent.
    BudgetExceeded,
    /// The shared state store (Redis) did not answer and `state.on_unavailable` is fail-closed.
    StateUnavailable,
}

/// A request-scoped error: kind, origin, a client-safe message, and retry hints.
#[derive(Debug, Clone)]
pub struct Error {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Who caused it.
    pub origin: Origin,
    /// Client-safe message (never contains secrets).
    pub message: Cow<'static, str>,
    /// The request field the error is about, when there is one.
    pub param: Option<Cow<'static, str>>,
    /// Seconds the client should wait before retrying (sent as `Retry-After`).
    pub retry_after: Option<u64>,
    /// Override of the OpenAI-style `code`: the upstream's own code (`context_length_exceeded`,
    /// `content_policy_violation`, `rate_limit_exceeded`, ...) when it sent one, so a client
    /// and the policy stage can act on it.
    pub code: Option<Cow<'static, str>>,
    /// Headers of the provider's error answer relayed to the client (rate limits, ids).
    pub relay: crate::relay::RelayHeaders,
}

impl Error {
    /// Builds an error with the origin implied by `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        let origin = match kind {
            ErrorKind::InvalidJson
            | ErrorKind::InvalidRequest
            | ErrorKind::BodyTooLarge
            | ErrorKind::BodyTimeout
            | ErrorKind::HeaderTooLarge
            | ErrorKind::UriTooLong
            | ErrorKind::RouteNotFound
            | ErrorKind::MethodNotAllowed
            | ErrorKind::Unauthorized
            | ErrorKind::UnsupportedMediaType
            | ErrorKind::OriginNotAllowed
            | ErrorKind::HostNotAllowed
            | ErrorKind::ModelNotFound
            | ErrorKind::ModelNotAllowed
            | ErrorKind::KeyLimit
            | ErrorKind::BudgetExceeded => Origin::Client,
            ErrorKind::UpstreamTimeout
            | ErrorKind::Upstream { .. }
            | ErrorKind::UpstreamUnavailable
            | ErrorKind::UpstreamInvalid
            | ErrorKind::UpstreamTooLarge => Origin::Provider,
            ErrorKind::PluginRejected { .. } | ErrorKind::PluginFailed => Origin::Plugin,
            ErrorKind::QueueFull
            | ErrorKind::QueueTimeout
            | ErrorKind::Dropped
            | ErrorKind::ShuttingDown
            | ErrorKind::Overloaded
            | ErrorKind::CircuitOpen
            | ErrorKind::StateUnavailable
            | ErrorKind::Internal => Origin::Gateway,
        };
        Self {
            kind,
            origin,
            message: message.into(),
            param: None,
            retry_after: None,
            code: None,
            relay: crate::relay::RelayHeaders::NONE,
        }
    }

    /// A 400 about one request field.
    pub fn invalid_param(param: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message).with_param(param)
    }

    /// Names the offending request field.
    pub fn with_param(mut self, param: impl Into<Cow<'static, str>>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Sets the `Retry-After` hint in seconds.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// Overrides the machine-readable `code`.
    pub fn with_code(mut self, code: impl Into<Cow<'static, str>>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Carries the provider's relayed response headers to the client's error response.
    pub fn with_relay(mut self, relay: crate::relay::RelayHeaders) -> Self {
        self.relay = relay;
        self
    }

    /// Carries the provider's own error code (kept when it is a short identifier such as
    /// `context_length_exceeded`; anything else is ignored, so no free text rides along).
    /// Auth failures keep Weir's `upstream_auth_failed`, server errors `upstream_error`.
    #[must_use]
    pub fn with_upstream_code(self, code: &str) -> Self {
        let client_side = matches!(self.kind, ErrorKind::Upstream { status } if (400..500).contains(&status) && status != 401 && status != 403);
        let token = !code.is_empty()
            && code.len() <= 64
            && code.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if client_side && token { self.with_code(code.to_owned()) } else { self }
    }

    /// Whether the same request may succeed if retried (later, or on another provider).
    pub fn retryable(&self) -> bool {
        match self.kind {
            ErrorKind::QueueFull
            | ErrorKind::QueueTimeout
            | ErrorKind::Dropped
            | ErrorKind::ShuttingDown
            | ErrorKind::Overloaded
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamUnavailable
            | ErrorKind::StateUnavailable => true,
            ErrorKind::Upstream { status } => status == 429 || status >= 500,
            _ => false,
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        let code = match self.kind {
            ErrorKind::InvalidJson | ErrorKind::InvalidRequest => 400,
            ErrorKind::BodyTooLarge => 413,
            ErrorKind::BodyTimeout => 408,
            ErrorKind::HeaderTooLarge => 431,
            ErrorKind::UriTooLong => 414,
            ErrorKind::RouteNotFound | ErrorKind::ModelNotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::Unauthorized => 401,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::OriginNotAllowed | ErrorKind::HostNotAllowed | ErrorKind::ModelNotAllowed => 403,
            ErrorKind::QueueFull | ErrorKind::KeyLimit | ErrorKind::BudgetExceeded => 429,
            ErrorKind::StateUnavailable
            | ErrorKind::QueueTimeout
            | ErrorKind::Dropped
            | ErrorKind::ShuttingDown
            | ErrorKind::Overloaded
            | ErrorKind::CircuitOpen => 503,
            ErrorKind::UpstreamTimeout => 504,
            ErrorKind::UpstreamUnavailable | ErrorKind::UpstreamInvalid | ErrorKind::UpstreamTooLarge => 502,
            ErrorKind::Upstream { status } => upstream_status(status),
            ErrorKind::PluginRejected { status } => status,
            ErrorKind::PluginFailed | ErrorKind::Internal => 500,
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY)
    }

    /// OpenAI-style `type` field.
    pub fn type_str(&self) -> &'static str {
        match self.kind {
            ErrorKind::InvalidJson
            | ErrorKind::InvalidRequest
            | ErrorKind::BodyTooLarge
            | ErrorKind::BodyTimeout
            | ErrorKind::HeaderTooLarge
            | ErrorKind::UriTooLong
            | ErrorKind::RouteNotFound
            | ErrorKind::MethodNotAllowed
            | ErrorKind::ModelNotFound
            | ErrorKind::UnsupportedMediaType
            | ErrorKind::PluginRejected { .. } => "invalid_request_error",
            ErrorKind::OriginNotAllowed | ErrorKind::HostNotAllowed | ErrorKind::ModelNotAllowed => "permission_error",
            ErrorKind::QueueFull | ErrorKind::KeyLimit => "rate_limit_error",
            ErrorKind::BudgetExceeded => "insufficient_quota",
            ErrorKind::Unauthorized => "authentication_error",
            ErrorKind::Upstream { status: 429 } => "rate_limit_error",
            ErrorKind::Upstream { status } if (400..500).contains(&status) && status != 401 && status != 403 => {
                "invalid_request_error"
            }
            ErrorKind::PluginFailed => "plugin_error",
            ErrorKind::QueueTimeout
            | ErrorKind::Dropped
            | ErrorKind::ShuttingDown
            | ErrorKind::Overloaded
            | ErrorKind::StateUnavailable
            | ErrorKind::CircuitOpen => "service_unavailable",
            _ => "api_error",
        }
    }

    /// OpenAI-style `code` field.
    pub fn code_str(&self) -> &str {
        if let Some(code) = &self.code {
            return code;
        }
        match self.kind {
            ErrorKind::InvalidJson => "invalid_json",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::BodyTimeout => "request_timeout",
            ErrorKind::HeaderTooLarge => "request_header_too_large",
            ErrorKind::UriTooLong => "uri_too_long",
            ErrorKind::RouteNotFound => "not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::UnsupportedMediaType => "unsupported_media_type",
            ErrorKind::OriginNotAllowed => "origin_not_allowed",
            ErrorKind::HostNotAllowed => "host_not_allowed",
            ErrorKind::ModelNotFound => "model_not_found",
            ErrorKind::QueueFull => "queue_full",
            ErrorKind::QueueTimeout => "queue_timeout",
            ErrorKind::Dropped => "dropped_from_queue",
            ErrorKind::ShuttingDown => "shutting_down",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::Upstream { status: 401 | 403 } => "upstream_auth_failed",
            ErrorKind::Upstream { status: 429 } => "upstream_rate_limited",
            ErrorKind::Upstream { .. } => "upstream_error",
            ErrorKind::UpstreamUnavailable => "upstream_unavailable",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::UpstreamInvalid => "upstream_invalid_response",
            ErrorKind::UpstreamTooLarge => "upstream_response_too_large",
            ErrorKind::PluginRejected { .. } => "plugin_rejected",
            ErrorKind::PluginFailed => "plugin_error",
            ErrorKind::Internal => "internal_error",
            ErrorKind::ModelNotAllowed => "model_not_allowed",
            ErrorKind::KeyLimit => "rate_limit_exceeded",
            ErrorKind::BudgetExceeded => "budget_exceeded",
            ErrorKind::StateUnavailable => "state_unavailable",
        }
    }

    /// Short label for metrics (`outcome` label values).
    pub fn metric_label(&self) -> &'static str {
        match self.kind {
            ErrorKind::InvalidJson
            | ErrorKind::InvalidRequest
            | ErrorKind::BodyTooLarge
            | ErrorKind::BodyTimeout
            | ErrorKind::HeaderTooLarge
            | ErrorKind::UriTooLong
            | ErrorKind::UnsupportedMediaType => "bad_request",
            ErrorKind::OriginNotAllowed | ErrorKind::HostNotAllowed => "forbidden",
            ErrorKind::RouteNotFound | ErrorKind::MethodNotAllowed | ErrorKind::ModelNotFound => "not_found",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::QueueFull => "rejected",
            ErrorKind::QueueTimeout => "queue_timeout",
            ErrorKind::Dropped => "dropped",
            ErrorKind::ShuttingDown => "shutdown",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::UpstreamTimeout => "timeout",
            ErrorKind::Upstream { .. }
            | ErrorKind::UpstreamUnavailable
            | ErrorKind::UpstreamInvalid
            | ErrorKind::UpstreamTooLarge => "upstream_error",
            ErrorKind::PluginRejected { .. } => "plugin_rejected",
            ErrorKind::PluginFailed => "plugin_error",
            ErrorKind::Internal => "panic",
            ErrorKind::ModelNotAllowed => "forbidden",
            ErrorKind::KeyLimit => "key_limited",
            ErrorKind::BudgetExceeded => "budget_exceeded",
            ErrorKind::StateUnavailable => "state_unavailable",
        }
    }

    /// The error for a response hyper makes itself on a request head it cannot parse.
    pub fn from_parse_status(status: u16) -> Self {
        match status {
            431 => Self::new(ErrorKind::HeaderTooLarge, "the request head is too large"),
            414 => Self::new(ErrorKind::UriTooLong, "the request URI is too long"),
            _ => Self::new(ErrorKind::InvalidRequest, "the request head is not valid HTTP/1.1"),
        }
    }

    /// Who failed, as the `x-weir-error-source` header says it.
    pub fn origin_str(&self) -> &'static str {
        match self.origin {
            Origin::Client => "client",
            Origin::Provider => "provider",
            Origin::Plugin => "plugin",
            Origin::Gateway => "gateway",
        }
    }
}

/// Maps an upstream status to what the client sees: client faults pass through, upstream
/// auth failures are the operator's problem (502), overload passes through, the rest is 502.
fn upstream_status(status: u16) -> u16 {
    match status {
        401 | 403 => 502,
        400..=499 => status,
        503 | 504 => status,
        _ => 502,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code_str(), self.status().as_u16(), self.message)
    }
}

impl std::error::Error for Error {}

/// Result alias for request-path code.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_upstream_answer_is_502_upstream_response_too_large() {
        let err = Error::new(ErrorKind::UpstreamTooLarge, "too large");
        assert_eq!(
            (err.status().as_u16(), err.code_str(), err.origin),
            (502, "upstream_response_too_large", Origin::Provider)
        );
        assert!(!err.retryable());
    }

    #[test]
    fn upstream_auth_failure_is_not_blamed_on_client() {
        let err = Error::new(ErrorKind::Upstream { status: 401 }, "upstream rejected credentials");
        assert_eq!(err.status(), 502);
        assert_eq!(err.code_str(), "upstream_auth_failed");
        let err = Error::new(ErrorKind::Upstream { status: 500 }, "boom");
        assert_eq!(err.status(), 502);
        let err = Error::new(ErrorKind::Upstream { status: 422 }, "bad");
        assert_eq!(err.status(), 422);
    }
}
