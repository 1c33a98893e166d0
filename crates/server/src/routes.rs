//! Endpoints that do not call a provider: `/v1/models`, `/health`, `/ready`, `/metrics`.

use std::collections::HashSet;

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};

use crate::api::GATEWAY_FORMAT;
use crate::body::ResponseBody;
use crate::error::{Error, ErrorKind};
use crate::gateway::Gateway;
use crate::pool::HealthState;
use crate::respond::error_response;

fn json_response(status: StatusCode, v: &Value) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(serde_json::to_vec(v).unwrap_or_default()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn model_entry(id: &str, owner: &str) -> Value {
    json!({ "id": id, "object": "model", "created": 0, "owned_by": owner })
}

/// Every model a client can ask for: configured models and aliases, then discovered ones.
fn all_models(gw: &Gateway) -> Vec<(String, String)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for p in &gw.config.providers {
        for m in p.models.iter().chain(p.aliases.keys()) {
            if seen.insert(m.clone()) {
                out.push((m.clone(), p.name.clone()));
            }
        }
    }
    let discovered = gw.router.discovered();
    let mut extra: Vec<_> = discovered.iter().filter(|(m, _)| !seen.contains(*m)).collect();
    extra.sort();
    for (m, &i) in extra {
        out.push((m.clone(), gw.config.providers[i].name.clone()));
    }
    out
}

/// `GET /v1/models`: aggregated list; a failing provider only loses its discovered models.
pub fn models(gw: &Gateway) -> Response<ResponseBody> {
    let data: Vec<Value> = all_models(gw).iter().map(|(m, p)| model_entry(m, p)).collect();
    json_response(StatusCode::OK, &json!({ "object": "list", "data": data }))
}

/// `GET /v1/models/{id}`.
pub fn model(gw: &Gateway, id: &str) -> Response<ResponseBody> {
    match gw.router.route(id) {
        Ok(route) => json_response(StatusCode::OK, &model_entry(id, &gw.config.providers[route.provider].name)),
        Err(_) => error_response(
            GATEWAY_FORMAT,
            &Error::new(ErrorKind::ModelNotFound, format!("the model `{id}` does not exist")).with_param("model"),
        ),
    }
}

/// `GET /health`: the process is up.
pub fn health() -> Response<ResponseBody> {
    json_response(StatusCode::OK, &json!({ "status": "ok" }))
}

/// `GET /ready`: per-provider and per-plugin state and the overload monitor's (`overload`:
/// whether new requests are shed, and its status); 503 when draining, shedding, or when no
/// provider is usable. Usable means `healthy` or `degraded`: a `failing` provider (several
/// consecutive failures) is not counted on until a call to it succeeds again.
pub fn ready(gw: &Gateway, draining: bool, overload: (bool, Value)) -> Response<ResponseBody> {
    let (shedding, overload) = overload;
    let mut providers = serde_json::Map::new();
    let mut any_usable = false;
    for pool in gw.targets.iter().map(|t| &t.pool) {
        let fill = pool.queue_depth() as f64 / pool.config().queue.max(1) as f64;
        let state = pool.health().state(fill);
        any_usable |= matches!(state, HealthState::Healthy | HealthState::Degraded);
        providers.insert(
            pool.name().to_string(),
            json!({
                "state": state.as_str(),
                "reason": pool.health().reason(fill),
                "queue_depth": pool.queue_depth(),
                "queue_capacity": pool.config().queue,
                "workers": pool.workers(),
            }),
        );
    }
    // A degraded plugin (its replacement instances keep failing) is reported, not fatal: its
    // other instances still serve, and fail-open plugins are skipped.
    let mut plugins = serde_json::Map::new();
    for p in gw.plugins.stats() {
        plugins.insert(
            p.name,
            json!({
                "state": if p.degraded { "degraded" } else { "ready" },
                "instances": p.live,
                "configured": p.configured,
                "replace_failures": p.replace_failures,
            }),
        );
    }
    // Shared state: under fail-closed an instance whose Redis is away answers only 503s.
    let (state, state_ok) = match &gw.redis {
        Some(r) => {
            let up = r.available();
            let closed = r.mode() == crate::state::OnUnavailable::FailClosed;
            let mode = if closed { "fail-closed" } else { "fail-open" };
            (
                json!({ "redis": r.shown_url(), "state": if up { "up" } else { "unavailable" }, "mode": mode }),
                up || !closed,
            )
        }
        None => (json!({ "redis": null, "state": "local" }), true),
    };
    let ready = any_usable && !draining && !shedding && state_ok;
    let status = if draining {
        "draining"
    } else if shedding {
        "overloaded"
    } else if ready {
        "ready"
    } else {
        "not_ready"
    };
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json_response(
        code,
        &json!({ "status": status, "providers": providers, "plugins": plugins, "overload": overload, "state": state }),
    )
}

/// `GET /metrics`: Prometheus text exposition.
pub fn metrics() -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(crate::metrics::render()));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    resp
}
