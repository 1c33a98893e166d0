//! OpenAI endpoints Weir relays without modelling them (`api::Route::Relay`): completions,
//! moderations, images, audio, files and batches. The body is read under the same limits as a
//! model call; a JSON body's `model` routes it (mapped to the provider's name), anything else
//! (multipart uploads, `GET`s of files and batches) goes to the first `openai`-kind provider
//! in config order, so a file uploaded through Weir is always found again. The request passes
//! the provider's pool like any other; its answer is streamed back as it arrives. Plugins do
//! not run here: these bodies are not chat or embeddings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::affinity::Affinity;
use crate::api::GATEWAY_FORMAT;
use crate::body::{BodyFrame, Limit, ResponseBody, read_limited};
use crate::error::{Error, ErrorKind};
use crate::gateway::Gateway;
use crate::metrics::ModelLabel;
use crate::providers::TraceHeaders;
use crate::providers::relay::{RelayAnswer, RelayRequest};
use crate::respond::error_response;
use weir_types::relay::AskedHeaders;

use crate::pipeline::{X_REQUEST_ID, X_WEIR_PROVIDER};

/// Where a relayed request goes.
struct Chosen {
    target: usize,
    model: Option<ModelLabel>,
}

/// Serves one relayed request; `label` is its endpoint's metrics label (`files`, ...).
pub async fn handle(
    gw: Arc<Gateway>,
    label: &'static str,
    here: Affinity,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let (id, id_header) = crate::pipeline::request_id(req.headers());
    let mut chosen = None;
    let result = run(&gw, here, req, id_header.clone(), &mut chosen).await;
    let (mut resp, outcome) = match result {
        Ok(resp) => (resp, "ok"),
        Err(e) => {
            let e = gw.secrets.scrub_error(e);
            let label = e.metric_label();
            if e.status().is_server_error() {
                tracing::warn!(request_id = %id, endpoint = label, error = %e, "relayed request failed");
            }
            (error_response(GATEWAY_FORMAT, &e), label)
        }
    };
    if let Some(v) = id_header {
        resp.headers_mut().insert(X_REQUEST_ID, v);
    }
    let status = resp.status().as_u16();
    match &chosen {
        Some(c) => {
            let pool = &gw.targets[c.target].pool;
            if let Some(v) = pool.name_header() {
                resp.headers_mut().insert(X_WEIR_PROVIDER, v.clone());
            }
            pool.request_metrics().record_relayed(c.model, label, outcome, status, started.elapsed());
        }
        None => metrics::counter!(
            "weir_requests_total",
            "provider" => "none",
            "model" => "none",
            "endpoint" => label,
            "outcome" => outcome,
            "status" => crate::metrics::status_label(status)
        )
        .increment(1),
    }
    resp
}

async fn run(
    gw: &Gateway,
    here: Affinity,
    req: Request<Incoming>,
    id_header: Option<HeaderValue>,
    chosen: &mut Option<Chosen>,
) -> Result<Response<ResponseBody>, Error> {
    let (parts, body) = req.into_parts();
    let content_length =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let mut bytes = read_limited(
        body,
        content_length,
        Limit { bytes: gw.config.server.max_body_bytes, key: "server.max_body_bytes" },
        gw.config.server.body_read_timeout,
    )
    .await?;
    let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
    let json = content_type.as_ref().and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.starts_with("application/json"));
    let model = if json && !bytes.is_empty() { body_model(&bytes)? } else { None };
    let what = format!("{} {}", parts.method, parts.uri.path());
    let target = match &model {
        Some(model) => {
            let route = gw.router.route(model)?;
            if !gw.targets[route.provider].provider.relays() {
                return Err(cannot_serve(&what, Some(gw.targets[route.provider].pool.name())));
            }
            if route.upstream_model != *model {
                bytes = with_model(&bytes, &route.upstream_model)?;
            }
            route.provider
        }
        None => gw.targets.iter().position(|t| t.provider.relays()).ok_or_else(|| cannot_serve(&what, None))?,
    };
    let t = &gw.targets[target];
    *chosen = Some(Chosen { target, model: model.as_deref().map(|m| t.pool.request_metrics().model(m)) });
    let path_and_query = parts.uri.path_and_query().map_or("", |p| p.as_str());
    let upstream = RelayRequest {
        method: parts.method.clone(),
        // Provider base URLs end in `/v1` (or their own version path): the rest is appended.
        path_and_query: path_and_query.strip_prefix("/v1").unwrap_or(path_and_query).to_owned(),
        content_type,
        body: bytes,
        secrets: gw.secrets.clone(),
        affinity: here,
        trace: TraceHeaders::new(id_header, &AskedHeaders::read(&parts.headers)),
    };
    let permit = t.pool.admit().await?;
    let timeout = t.pool.config().request_timeout;
    let answer = tokio::time::timeout(timeout, t.provider.relay(upstream)).await.map_err(|_| {
        Error::new(
            ErrorKind::UpstreamTimeout,
            format!("provider {} did not answer within {}s (request_timeout)", t.pool.name(), timeout.as_secs()),
        )
    })??;
    Ok(stream_back(answer, permit, timeout, gw.config.server.send_timeout))
}

/// The answer streamed to the client as it arrives. The pool slot is held until the body's
/// end; an upstream silent for `idle` or a client that reads nothing for `send_timeout` ends
/// it, and an end before the upstream's is an aborted body, never a short one that looks whole.
fn stream_back(
    answer: RelayAnswer,
    permit: crate::pool::Permit,
    idle: Duration,
    send_timeout: Duration,
) -> Response<ResponseBody> {
    let RelayAnswer { status, content_type, relay, mut body, conn } = answer;
    let (tx, rx) = mpsc::channel::<BodyFrame>(8);
    let mut resp = Response::new(ResponseBody::stream(rx));
    *resp.status_mut() = status;
    if let Some(ct) = content_type {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    relay.write_to(resp.headers_mut());
    tokio::spawn(async move {
        let _permit = permit;
        loop {
            let frame = match tokio::time::timeout(idle, body.frame()).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(None) => break,
                // Cut, failed or silent upstream: the client's body is aborted.
                Ok(Some(Err(_))) | Err(_) => return,
            };
            let Ok(data) = frame.into_data() else { continue };
            if data.is_empty() {
                continue;
            }
            if !matches!(tokio::time::timeout(send_timeout, tx.send(BodyFrame::Data(data))).await, Ok(Ok(()))) {
                return;
            }
        }
        if tx.send(BodyFrame::Last(Bytes::new())).await.is_ok()
            && let Some(conn) = conn
        {
            conn.done();
        }
    });
    resp
}

/// The `model` of a JSON body, if it names one.
fn body_model(bytes: &[u8]) -> Result<Option<String>, Error> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::new(ErrorKind::InvalidJson, format!("the request body is not valid JSON: {e}")))?;
    Ok(v.get("model").and_then(Value::as_str).map(str::to_owned))
}

/// The body with `model` replaced by the provider's name for it.
fn with_model(bytes: &[u8], model: &str) -> Result<Bytes, Error> {
    let mut v: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::new(ErrorKind::InvalidJson, format!("the request body is not valid JSON: {e}")))?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("model".into(), Value::String(model.to_owned()));
    }
    Ok(Bytes::from(serde_json::to_vec(&v).unwrap_or_default()))
}

fn cannot_serve(what: &str, provider: Option<&str>) -> Error {
    let message = match provider {
        Some(p) => format!(
            "{what} is relayed only to openai-kind providers, and the model routes to provider {p}, which is not one"
        ),
        None => format!("no provider can serve {what}: it is relayed only to an openai-kind (non-Azure) provider"),
    };
    Error::new(ErrorKind::RouteNotFound, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_body_names_its_model_and_gets_the_providers_name() {
        assert_eq!(body_model(br#"{"model":"m","prompt":"x"}"#).unwrap().as_deref(), Some("m"));
        assert_eq!(body_model(br#"{"input":"x"}"#).unwrap(), None);
        assert_eq!(body_model(b"{oops").unwrap_err().kind, ErrorKind::InvalidJson);
        let b = with_model(br#"{"model":"alias","prompt":"x"}"#, "real").unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&b).unwrap()["model"], "real");
    }
}
