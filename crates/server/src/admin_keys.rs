//! The admin API's virtual keys: `POST /admin/keys` (the secret is in this answer and nowhere
//! else), `GET /admin/keys`, `DELETE /admin/keys/{name}`, `GET /admin/keys/{name}/usage`.
//! With Redis a change reaches every instance at its next admission.

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::body::{Limit, ResponseBody, read_limited};
use crate::error::{Error, ErrorKind};
use crate::gateway::Gateway;
use crate::governance::{AdminError, NewKey, usd};

/// Largest `POST /admin/keys` body read.
const MAX_KEY_BODY: usize = 64 * 1024;

/// Serves `method path` under `/admin/keys`.
///
/// # Errors
/// A bad body or name (400), a taken name (409), no such key (404), Redis away (503).
pub async fn serve(
    gw: &Gateway,
    method: &Method,
    path: &str,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Error> {
    let rest = path.strip_prefix("/admin/keys").unwrap_or_default();
    match (method, rest) {
        (&Method::POST, "") => create(gw, req).await,
        (&Method::GET, "") => list(gw).await,
        (&Method::GET, r) if r.len() > "//usage".len() && r.ends_with("/usage") && r.starts_with('/') => {
            usage(gw, &r[1..r.len() - "/usage".len()]).await
        }
        (&Method::DELETE, r) if r.len() > 1 && r.starts_with('/') => revoke(gw, &r[1..]).await,
        _ => Err(Error::new(ErrorKind::RouteNotFound, format!("no admin route for {method} {path}"))),
    }
}

async fn create(gw: &Gateway, req: Request<Incoming>) -> Result<Response<ResponseBody>, Error> {
    let len = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let limit = Limit { bytes: MAX_KEY_BODY, key: "POST /admin/keys body" };
    let bytes = read_limited(req.into_body(), len, limit, gw.config.server.body_read_timeout).await?;
    let new: NewKey = serde_json::from_slice(&bytes)
        .map_err(|e| Error::new(ErrorKind::InvalidRequest, format!("POST /admin/keys: {e}")))?;
    let created = match gw.governance.create(new).await {
        Err(AdminError::Exists) => {
            let error = json!({"message": "a key with this name exists", "type": "invalid_request_error",
                               "param": "name", "code": "key_exists"});
            return Ok(json(StatusCode::CONFLICT, &json!({ "error": error })));
        }
        other => other.map_err(admin_error)?,
    };
    Ok(json(
        StatusCode::CREATED,
        &json!({
            "name": created.name,
            "key": created.key,
            "note": "the key is shown only in this answer; Weir keeps only its SHA-256",
        }),
    ))
}

async fn list(gw: &Gateway) -> Result<Response<ResponseBody>, Error> {
    let keys = gw.governance.list().await.map_err(admin_error)?;
    Ok(json(StatusCode::OK, &json!({ "keys": keys })))
}

async fn revoke(gw: &Gateway, name: &str) -> Result<Response<ResponseBody>, Error> {
    gw.governance.revoke(name).await.map_err(admin_error)?;
    Ok(json(StatusCode::OK, &json!({ "name": name, "status": "revoked" })))
}

async fn usage(gw: &Gateway, name: &str) -> Result<Response<ResponseBody>, Error> {
    let (spec, u) = gw.governance.usage(name).await.map_err(admin_error)?;
    Ok(json(
        StatusCode::OK,
        &json!({
            "key": spec,
            "window": {
                "requests_last_minute": u.requests_last_minute,
                "tokens_this_minute": u.tokens_this_minute,
                "spend_this_period_usd": usd(u.spend_this_period_nano),
                "in_flight": u.in_flight,
            },
            "total": {
                "requests": u.requests,
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
                "cost_usd": usd(u.cost_nano),
            },
        }),
    ))
}

fn admin_error(e: AdminError) -> Error {
    match e {
        AdminError::Invalid(m) => Error::new(ErrorKind::InvalidRequest, m),
        AdminError::Exists => Error::invalid_param("name", "a key with this name exists").with_code("key_exists"),
        AdminError::NotFound => {
            Error::new(ErrorKind::RouteNotFound, "no key with this name").with_code("key_not_found")
        }
        AdminError::Unavailable => Error::new(
            ErrorKind::StateUnavailable,
            "the shared state store (Redis) did not answer; the key change was not made",
        )
        .with_retry_after(1),
    }
}

fn json(status: StatusCode, v: &Value) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(serde_json::to_vec(v).unwrap_or_default()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}
