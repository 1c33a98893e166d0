//! The request's trace spans as the pipeline sees them (`[tracing]`): the root span made from
//! the client's headers, and what `finish` writes on it. Off or not sampled, every call here
//! is one `None` check.

use http::HeaderMap;

use crate::error::Error;
use crate::format::Endpoint;
use crate::gateway::Gateway;
use crate::providers::usage::Usage;
use crate::trace::Span;

/// The root span of a request at `endpoint` with client `headers`.
pub(crate) fn request(gw: &Gateway, endpoint: Endpoint, headers: &HeaderMap) -> Span {
    let Some(tracer) = &gw.tracer else { return Span::NONE };
    let mut span = tracer.root(headers, "weir.request");
    if span.is_recording() {
        span.set("http.request.method", "POST");
        span.set("http.route", route(endpoint));
        span.set("gen_ai.operation.name", endpoint.op.name());
    }
    span
}

/// The path of `endpoint` (its `http.route`).
fn route(endpoint: Endpoint) -> &'static str {
    const ROUTES: [&str; Endpoint::COUNT] = ["/v1/chat/completions", "/v1/embeddings", "/v1/messages", "/v1/responses"];
    ROUTES[endpoint.index()]
}

/// What the request came to, on its root span, which then ends (handing the request's spans
/// to the exporter when it is sampled or, for `always_on_error`, failed).
pub(crate) fn finish(
    mut span: Span,
    request_id: &str,
    provider: Option<&std::sync::Arc<str>>,
    status: u16,
    outcome: &'static str,
    usage: Option<&Usage>,
    error: Option<&Error>,
) {
    if !span.is_recording() {
        return;
    }
    span.set("http.response.status_code", status);
    span.set_with("weir.request_id", || request_id.to_owned());
    if let Some(p) = provider {
        span.set("weir.provider", p.clone());
    }
    if let Some(u) = usage {
        span.set("gen_ai.usage.input_tokens", u.prompt as i64);
        span.set("gen_ai.usage.output_tokens", u.completion as i64);
    }
    if error.is_some() || status >= 500 {
        span.fail(outcome);
    }
}
