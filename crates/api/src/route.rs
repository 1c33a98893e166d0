//! The client listener's route table: each front door's model-call routes ([`Format::ROUTES`])
//! and the gateway's own. The server's dispatch asks [`route`] and never spells a path.

use http::Method;

use crate::anthropic::Anthropic;
use crate::format::{ApiFormat, Endpoint};
use crate::openai::OpenAi;
use crate::responses::Responses;
use crate::{CallRoute, Format};

/// Every format's model-call routes, with the format they belong to.
const CALLS: &[(ApiFormat, &[CallRoute])] =
    &[(OpenAi::FORMAT, OpenAi::ROUTES), (Anthropic::FORMAT, Anthropic::ROUTES), (Responses::FORMAT, Responses::ROUTES)];

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
    /// An OpenAI endpoint Weir relays to an OpenAI-kind provider without modelling it; the
    /// value is its `endpoint` metrics label.
    Relay(&'static str),
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
    if let Some(id) = path.strip_prefix(MODEL_PREFIX) {
        return if method == Method::GET { Route::Model(id) } else { Route::NotFound };
    }
    relayed(method, path)
}

/// The OpenAI endpoints relayed as they are: `(path pattern, methods, label)`, where `{id}`
/// stands for one path segment of an object id.
const RELAYED: &[(&str, &[Method], &str)] = &[
    ("/v1/completions", &[Method::POST], "completions"),
    ("/v1/moderations", &[Method::POST], "moderations"),
    ("/v1/images/generations", &[Method::POST], "images"),
    ("/v1/images/edits", &[Method::POST], "images"),
    ("/v1/images/variations", &[Method::POST], "images"),
    ("/v1/audio/speech", &[Method::POST], "audio"),
    ("/v1/audio/transcriptions", &[Method::POST], "audio"),
    ("/v1/audio/translations", &[Method::POST], "audio"),
    ("/v1/files", &[Method::GET, Method::POST], "files"),
    ("/v1/files/{id}", &[Method::GET, Method::DELETE], "files"),
    ("/v1/files/{id}/content", &[Method::GET], "files"),
    ("/v1/batches", &[Method::GET, Method::POST], "batches"),
    ("/v1/batches/{id}", &[Method::GET], "batches"),
    ("/v1/batches/{id}/cancel", &[Method::POST], "batches"),
    ("/v1/responses/{id}", &[Method::GET, Method::DELETE], "responses"),
    ("/v1/responses/{id}/cancel", &[Method::POST], "responses"),
    ("/v1/responses/{id}/input_items", &[Method::GET], "responses"),
];

fn relayed(method: &Method, path: &str) -> Route<'static> {
    let mut known = false;
    for (pattern, methods, label) in RELAYED {
        if matches_pattern(pattern, path) {
            if methods.contains(method) {
                return Route::Relay(label);
            }
            known = true;
        }
    }
    if known { Route::WrongMethod } else { Route::NotFound }
}

/// Whether `path` fits `pattern`, whose `{id}` segments take one id (letters, digits, `-`,
/// `_`, `.`; at most 128 bytes).
fn matches_pattern(pattern: &str, path: &str) -> bool {
    let mut want = pattern.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some("{id}"), Some(id)) => {
                let ok = !id.is_empty()
                    && id.len() <= 128
                    && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                    && id != "."
                    && id != "..";
                if !ok {
                    return false;
                }
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return false,
        }
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
        assert_eq!(route(&Method::PUT, "/v1/files"), Route::WrongMethod);
        assert_eq!(route(&Method::POST, "/v1/completion"), Route::NotFound);
        assert_eq!(route(&Method::GET, "/v1/chat/completions/"), Route::NotFound);
        // As before: only GET reaches a model by id; other methods there are unknown paths.
        assert_eq!(route(&Method::DELETE, "/v1/models/m"), Route::NotFound);
    }

    #[test]
    fn openai_endpoints_weir_does_not_model_are_relayed_by_pattern() {
        assert_eq!(route(&Method::POST, "/v1/completions"), Route::Relay("completions"));
        assert_eq!(route(&Method::POST, "/v1/audio/transcriptions"), Route::Relay("audio"));
        assert_eq!(route(&Method::GET, "/v1/files/file-abc_1.x/content"), Route::Relay("files"));
        assert_eq!(route(&Method::DELETE, "/v1/files/file-abc"), Route::Relay("files"));
        assert_eq!(route(&Method::POST, "/v1/batches/batch_1/cancel"), Route::Relay("batches"));
        assert_eq!(route(&Method::GET, "/v1/batches?limit=2".split('?').next().unwrap()), Route::Relay("batches"));
        assert_eq!(route(&Method::POST, "/v1/files/file-abc"), Route::WrongMethod);
        for bad in ["/v1/files/..", "/v1/files/a%2Fb", "/v1/files//content", "/v1/files/a/b", "/v1/images/x"] {
            assert_eq!(route(&Method::GET, bad), Route::NotFound, "{bad}");
        }
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
