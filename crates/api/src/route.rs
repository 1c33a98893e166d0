//! The client listener's route table: each front door's model-call routes ([`Format::ROUTES`])
//! and the gateway's own. The server's dispatch asks [`route`] and never spells a path.

use http::Method;

use crate::anthropic::Anthropic;
use crate::format::{ApiFormat, Endpoint};
use crate::openai::OpenAi;
use crate::{CallRoute, Format};

/// Every format's model-call routes, with the format they belong to.
const CALLS: &[(ApiFormat, &[CallRoute])] = &[(OpenAi::FORMAT, OpenAi::ROUTES), (Anthropic::FORMAT, Anthropic::ROUTES)];

/// The gateway's own paths (all `GET`), in the OpenAI style its model listing speaks.
const MODELS: &str = "/v1/models";
const MODEL_PREFIX: &str = "/v1/models/";
const OWN: &[(&str, Route<'static>)] =
    &[(MODELS, Route::Models), ("/health", Route::Health), ("/ready", Route::Ready), ("/metrics", Route::Metrics)];

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'p> {
    /// A model call at a front door: the request pipeline serves it.
    Call(Endpoint),
    /// `GET /v1/models`.
    Models,
    /// `GET /v1/models/{id}`, with the id.
    Model(&'p str),
    /// `GET /health`.
    Health,
    /// `GET /ready`.
    Ready,
    /// `GET /metrics`.
    Metrics,
    /// A known path with another method: 405.
    WrongMethod,
    /// No such path: 404.
    NotFound,
}

/// The route for `method` and `path`. Model calls are looked up first: they are the hot path.
pub fn route<'p>(method: &Method, path: &'p str) -> Route<'p> {
    let mut known = false;
    for (format, routes) in CALLS {
        for (m, p, op) in *routes {
            if *p == path {
                if m == method {
                    return Route::Call(Endpoint { format: *format, op: *op });
                }
                known = true;
            }
        }
    }
    if known {
        return Route::WrongMethod;
    }
    if let Some((_, own)) = OWN.iter().find(|(p, _)| *p == path) {
        return if method == Method::GET { *own } else { Route::WrongMethod };
    }
    match path.strip_prefix(MODEL_PREFIX) {
        Some(id) if method == Method::GET => Route::Model(id),
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_calls_route_to_their_endpoint() {
        assert_eq!(route(&Method::POST, "/v1/chat/completions"), Route::Call(Endpoint::OPENAI_CHAT));
        assert_eq!(route(&Method::POST, "/v1/embeddings"), Route::Call(Endpoint::OPENAI_EMBEDDINGS));
    }

    #[test]
    fn a_known_path_with_another_method_is_405_and_the_rest_404() {
        assert_eq!(route(&Method::GET, "/v1/chat/completions"), Route::WrongMethod);
        assert_eq!(route(&Method::POST, "/v1/models"), Route::WrongMethod);
        assert_eq!(route(&Method::DELETE, "/metrics"), Route::WrongMethod);
        assert_eq!(route(&Method::POST, "/v1/completions"), Route::NotFound);
        assert_eq!(route(&Method::GET, "/v1/chat/completions/"), Route::NotFound);
        // As before: only GET reaches a model by id; other methods there are unknown paths.
        assert_eq!(route(&Method::DELETE, "/v1/models/m"), Route::NotFound);
    }

    #[test]
    fn the_gateway_routes_are_get_only() {
        assert_eq!(route(&Method::GET, "/v1/models"), Route::Models);
        assert_eq!(route(&Method::GET, "/v1/models/gpt-4o"), Route::Model("gpt-4o"));
        assert_eq!(route(&Method::GET, "/health"), Route::Health);
        assert_eq!(route(&Method::GET, "/ready"), Route::Ready);
        assert_eq!(route(&Method::GET, "/metrics"), Route::Metrics);
    }
}
