//! The request driver for model calls. It only sequences the named phases:
//!
//! `authenticate → read_body → admit → on_request → select_provider → lookup → upstream_request
//!  → on_response | on_stream_chunk → error_response → finish`
//!
//! Each phase's work lives in its own module (`api`, `plugins`, `routing`, `cached` (the
//! response cache), `policy`, `error`); `finish` runs exactly once per request, when the last byte is handed to hyper.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, header};
use hyper::body::Incoming;
use tokio::sync::mpsc;

use crate::affinity::Affinity;
use crate::api::BodyUse;
use crate::body::{Limit, ResponseBody, read_limited};
use crate::client_io::ClientConn;
use crate::error::Error;
use crate::exchange::{GatewayRequest, GatewayResponse, client_headers};
use crate::format::Endpoint;
use crate::gateway::Gateway;
use crate::governance::{Admission, Price, Tokens};
use crate::metrics::ModelLabel;
use crate::plugins::{HookCtx, Seen};
use crate::policy::Served;
use crate::pool::{Pool, Reply, ShutdownSignal, StreamItem};
use crate::providers::usage::Usage;
use crate::providers::{ProviderRequest, RelayHeaders, TraceHeaders};
use crate::record::{Facts, Finished};
use crate::respond::error_response;
use crate::spans;
use crate::trace::{Span, SpanKind};
use weir_types::relay::AskedHeaders;

mod cached;
mod resume;
mod stream;

use self::stream::stream_response;

/// The request id, sent back to the client and accepted from it.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Weir's own time for the request, excluding the upstream wait, in microseconds.
const X_WEIR_OVERHEAD_US: HeaderName = HeaderName::from_static("x-weir-overhead-us");
/// The provider that answered.
pub(crate) const X_WEIR_PROVIDER: HeaderName = HeaderName::from_static("x-weir-provider");
/// Upstream attempts the answer took (retries and fallbacks included), when more than one.
const X_WEIR_ATTEMPTS: HeaderName = HeaderName::from_static("x-weir-attempts");
/// What a whole answer cost in US dollars, from its reported usage and the price table.
const X_WEIR_COST_USD: HeaderName = HeaderName::from_static("x-weir-cost-usd");
/// `hit` or `miss`: whether the response cache answered.
const X_WEIR_CACHE: HeaderName = HeaderName::from_static("x-weir-cache");

/// Per-request bookkeeping for `finish`.
struct Ctx {
    id: Arc<str>,
    /// `id` as the `x-request-id` response header value.
    id_header: Option<HeaderValue>,
    endpoint: Endpoint,
    /// The serving thread the request runs on.
    here: Affinity,
    started: Instant,
    /// Where the request counts: known before the plugins run when the client's model routes,
    /// so a plugin's answer or rejection counts for the provider the model goes to.
    target: Option<Target>,
    /// `select_provider` chose the target's provider (`x-weir-provider` then names it).
    routed: bool,
    upstream: Duration,
    /// Upstream attempts made.
    attempts: u32,
    /// Tokens the upstream answer reported.
    usage: Option<Usage>,
    /// The provider's response headers that go to the client (`decorate` writes them).
    relay: RelayHeaders,
    /// What the request record needs besides the above; only with the event bus on.
    facts: Option<Box<Facts>>,
    /// The virtual key's admission, settled by `finish` (taken there, so exactly once).
    admission: Mutex<Option<Admission>>,
    /// The price of the model asked for, when the table knows it.
    price: Option<Price>,
    /// The request's root span (`[tracing]`; [`Span::NONE`] when not traced), ended by `finish`.
    span: Span,
    /// What the response cache did (`x-weir-cache`); `None` when it is off or skipped.
    cache: Option<cached::Mark>,
    /// The name of the virtual key the request came with, which `[cache] per_key` adds to the
    /// cache key (set by `admit` when the cache is on).
    key_name: Option<Arc<str>>,
}

/// The provider a request goes to and its `model` label there.
struct Target {
    /// The provider's pool: its name, `x-weir-provider` value and pre-registered request
    /// metrics.
    pool: Arc<Pool>,
    model: ModelLabel,
}

impl Target {
    fn new(pool: &Arc<Pool>, model: &str) -> Self {
        Self { pool: pool.clone(), model: pool.request_metrics().model(model) }
    }
}

impl Ctx {
    /// The provider's name for logs, `-` before routing.
    fn provider_name(&self) -> &str {
        self.target.as_ref().map_or("-", |t| t.pool.name())
    }

    /// What the answer cost in nano-dollars, once its usage is known.
    fn cost(&self) -> Option<u64> {
        Some(self.price?.cost(tokens(self.usage?)))
    }

    /// Time spent in Weir so far, excluding the upstream wait.
    fn overhead(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.upstream)
    }
}

/// Serves a model call at one of the front doors (`api::route` gave its `endpoint`).
pub async fn handle(
    gw: Arc<Gateway>,
    endpoint: Endpoint,
    here: Affinity,
    req: http::Request<Incoming>,
    conn: ClientConn,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let (id, id_header) = request_id(req.headers());
    let span = spans::request(&gw, endpoint, req.headers());
    let mut ctx = Ctx {
        id,
        id_header,
        endpoint,
        here,
        started,
        target: None,
        routed: false,
        upstream: Duration::ZERO,
        attempts: 0,
        usage: None,
        relay: RelayHeaders::NONE,
        facts: gw.events.as_ref().map(|_| Facts::new(req.headers())),
        admission: Mutex::new(None),
        price: None,
        span,
        cache: None,
        key_name: None,
    };
    match run(&gw, &mut ctx, req).await {
        Ok(Outcome::Full(resp)) => {
            let resp = full_response(&ctx, resp);
            finish(&gw, &mut ctx, resp.status().as_u16(), None);
            resp
        }
        Ok(Outcome::Stream(stream)) => stream_response(gw, ctx, conn, stream),
        Err(e) => {
            // The last check on anything an error carries (upstream or plugin text).
            let mut e = gw.secrets.scrub_error(e);
            ctx.relay = std::mem::take(&mut e.relay);
            let mut resp = error_response(ctx.endpoint.format, &e);
            decorate(&ctx, resp.headers_mut());
            finish(&gw, &mut ctx, resp.status().as_u16(), Some(&e));
            resp
        }
    }
}

enum Outcome {
    Full(GatewayResponse),
    Stream(Stream),
}

/// A stream to relay: the pool's chunks, what its `on_stream_chunk` hooks need, and the pool's
/// shutdown deadline.
struct Stream {
    head: HeaderMap,
    chunks: mpsc::Receiver<Result<StreamItem, Error>>,
    shutdown: ShutdownSignal,
    hook: HookCtx,
    seen: Seen,
    /// The stream's upstream attempt span, ended at the first chunk (time to first token).
    attempt: Span,
    /// The stream's answer is recorded for the response cache.
    record: Option<Box<cached::Record>>,
    /// What continuing the stream on a fallback needs, when its route opted in.
    resume: Option<Box<resume::Resume>>,
}

async fn run(gw: &Gateway, ctx: &mut Ctx, req: http::Request<Incoming>) -> Result<Outcome, Error> {
    // authenticate: the virtual key, before the body is read (one check when there are none)
    let caller = gw.governance.authenticate(req.headers()).await?;

    // read_body
    let parse = ctx.span.cx().child("weir.parse", SpanKind::Internal);
    let (parts, body) = req.into_parts();
    let content_length =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let bytes = read_limited(
        body,
        content_length,
        Limit { bytes: gw.config.server.max_body_bytes, key: "server.max_body_bytes" },
        gw.config.server.body_read_timeout,
    )
    .await?;
    let body_len = bytes.len();
    // One scan checks the body; it stays the client's bytes. With on-request hooks the scan
    // also records where the prompt texts and top-level fields are, which answers the hooks'
    // usual reads without parsing the body into a tree.
    let usage = if gw.plugins.has_request_hooks() { BodyUse::Read } else { BodyUse::Forward };
    let front = crate::api::read_request(ctx.endpoint, bytes, usage)?;
    drop(parse);
    ctx.span.set_with("gen_ai.request.model", || front.model.clone());
    if let Some(f) = ctx.facts.as_deref_mut() {
        f.model.clone_from(&front.model);
        f.stream = front.stream;
    }
    let mut request = GatewayRequest {
        id: ctx.id.clone(),
        endpoint: ctx.endpoint,
        model: front.model,
        stream: front.stream,
        body: front.body,
        // Only plugins read the client's headers: without any, none are copied.
        headers: if gw.plugins.is_empty() {
            HeaderMap::new()
        } else {
            client_headers(&parts.headers, &gw.plugin_headers)
        },
        affinity: ctx.here,
    };

    // admit: the key's models and limits
    if let Some(caller) = caller {
        let admitted = gw.governance.admit(caller, &request.model, body_len, ctx.here.index()).await?;
        if gw.cache.is_some() {
            ctx.key_name = Some(Arc::from(admitted.key_name()));
        }
        *ctx.admission.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(admitted);
    }

    // on_request (plugins scoped to a provider see where the model routes before the chain)
    let early = gw.router.route(&request.model).ok();
    if let Some(route) = &early {
        ctx.target = Some(Target::new(&gw.targets[route.provider].pool, &request.model));
    }
    let provider = early.as_ref().map(|r| gw.targets[r.provider].pool.name().clone());
    let pre = gw.plugins.on_request_traced(&mut request, provider.as_ref(), &ctx.span.cx()).await?;
    if let Some(f) = ctx.facts.as_deref_mut() {
        f.seen = pre.seen;
        f.responded = pre.respond.is_some();
    }
    if let Some(mut resp) = pre.respond {
        let relay = ctx.span.cx().child("weir.relay", SpanKind::Internal);
        let hook = HookCtx { request: Arc::new(request), provider: None, trace: relay.cx() };
        gw.plugins.on_response(&hook, pre.seen, &mut resp).await?;
        scrub_written(gw, &mut resp, None);
        return Ok(Outcome::Full(resp));
    }

    // select_provider (again if a plugin changed the model)
    let mut routing = ctx.span.cx().child("weir.route", SpanKind::Internal);
    let route = match early {
        Some(route) if !pre.model_changed => route,
        _ => {
            ctx.target = None;
            let route = gw.router.route(&request.model)?;
            ctx.target = Some(Target::new(&gw.targets[route.provider].pool, &request.model));
            route
        }
    };
    // The attempts: fallbacks, total timeout (`x-weir-fallbacks`, `x-weir-timeout-ms`).
    let asked = AskedHeaders::read(&parts.headers);
    let plan = gw.policy.plan(&gw.targets, &request.model, route.provider, &asked)?;
    ctx.routed = true;
    routing.set_with("weir.provider", || gw.targets[route.provider].pool.name().clone());
    routing.set_with("weir.upstream.model", || route.upstream_model.clone());
    drop(routing);

    // lookup (the response cache; on a hit the post hooks run and nothing goes upstream)
    let (mut request, key) = match cached::lookup(gw, ctx, &parts.headers, request, &route, pre.seen).await? {
        cached::Lookup::Go(request, key) => (request, key),
        cached::Lookup::Hit(outcome) => return Ok(outcome),
    };

    // upstream_request: the policy decides the attempts. The client's bytes go as they are when they say exactly the validated
    // request (`JsonBody::raw`: no plugin edited it) and the provider knows the model by the
    // client's name. The body moves upstream (no copy); post hooks see the request's metadata.
    let mut body = std::mem::take(&mut request.body);
    body.forget_index();
    if pre.edited {
        // What a plugin wrote leaves Weir scrubbed, its own config's secrets included.
        gw.secrets.scrub_map(body.map_mut());
    }
    if pre.edited || route.upstream_model != request.model {
        body.forget_raw();
    }
    if let Some(f) = ctx.facts.as_deref_mut() {
        f.served_model = Some(route.upstream_model.clone());
    }
    ctx.price = gw.governance.price(&route.upstream_model).or_else(|| {
        // The client's name, when routing gave the provider another.
        (route.upstream_model != request.model).then(|| gw.governance.price(&request.model)).flatten()
    });
    let mut trace = TraceHeaders::new(ctx.id_header.clone(), &asked);
    trace.span = ctx.span.cx();
    let upstream = ProviderRequest {
        endpoint: request.endpoint,
        model: route.upstream_model,
        body,
        stream: request.stream,
        secrets: gw.secrets.clone(),
        affinity: request.affinity,
        trace,
    };
    // Timed whatever the outcome: a failed call's upstream wait is not overhead.
    // Kept (its body's bytes shared) to ask a fallback for the rest of a cut stream.
    let kept = (plan.resume && upstream.stream).then(|| upstream.clone());
    let mut served = Served::new(plan.routed);
    let result = gw.policy.execute(&gw.targets, &plan, upstream, &mut served).await;
    ctx.upstream = served.upstream;
    ctx.attempts = served.attempts;
    if served.target != route.provider {
        // A fallback answered (or failed last): it is named and counted.
        ctx.target = Some(Target::new(&gw.targets[served.target].pool, &request.model));
        if let Some(f) = ctx.facts.as_deref_mut() {
            f.served_model = plan.fallbacks.iter().find(|s| s.provider == served.target).map(|s| s.model.clone());
        }
    }
    let pool = &gw.targets[served.target].pool;
    let attempt = std::mem::take(&mut served.stream_attempt);
    let reply = result?;
    // A stream's relay span is the relay task's (`stream_response`).
    let relay_span = match reply {
        Reply::Full { .. } => ctx.span.cx().child("weir.relay", SpanKind::Internal),
        Reply::Stream { .. } => Span::NONE,
    };
    let hook = HookCtx { request: Arc::new(request), provider: Some(pool.name().clone()), trace: relay_span.cx() };
    match reply {
        Reply::Full { body, usage, relay } => {
            ctx.usage = usage;
            ctx.relay = relay;
            if let (Some(key), Some(cache)) = (&key, &gw.cache) {
                cache.put(key, pool.name().clone(), body.clone());
            }
            // on_response
            let mut resp = GatewayResponse::ok(body.clone());
            gw.plugins.on_response(&hook, pre.seen, &mut resp).await?;
            scrub_written(gw, &mut resp, Some(&body));
            Ok(Outcome::Full(resp))
        }
        Reply::Stream { chunks, shutdown, relay } => {
            ctx.relay = relay;
            let record = cached::Record::new(gw, key, ctx, pool.name());
            let resume =
                kept.and_then(|r| resume::Resume::new(&plan, r, served.target, &hook.request.model, ctx.started));
            Ok(Outcome::Stream(Stream {
                head: HeaderMap::new(),
                chunks,
                shutdown,
                hook,
                seen: pre.seen,
                attempt,
                record,
                resume,
            }))
        }
    }
}

/// Scrubs what plugins wrote into `resp` of every secret Weir holds (a plugin's own config
/// values from `${ENV}` among them): the headers (only plugins set any), and the body unless it
/// is still the provider's answer `upstream`, already scrubbed (no pass over it then).
fn scrub_written(gw: &Gateway, resp: &mut GatewayResponse, upstream: Option<&Bytes>) {
    if gw.secrets.is_empty() {
        return;
    }
    gw.secrets.scrub_headers(&mut resp.headers);
    if upstream.is_none_or(|up| !same_bytes(up, &resp.body)) {
        resp.body = gw.secrets.scrub_bytes(std::mem::take(&mut resp.body));
    }
}

/// Whether `a` and `b` are the same bytes in memory (a buffer passed through untouched).
fn same_bytes(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

fn full_response(ctx: &Ctx, resp: GatewayResponse) -> Response<ResponseBody> {
    let mut out = Response::new(ResponseBody::full(resp.body));
    *out.status_mut() = http::StatusCode::from_u16(resp.status).unwrap_or(http::StatusCode::OK);
    let headers = out.headers_mut();
    *headers = resp.headers;
    // content-type and decorate's three (and any relayed): one allocation instead of growing.
    headers.reserve(4 + ctx.relay.len());
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    decorate(ctx, headers);
    if let Some(cost) = ctx.cost()
        && let Ok(v) = HeaderValue::from_str(&crate::governance::usd(cost))
    {
        headers.insert(X_WEIR_COST_USD, v);
    }
    out
}

/// Headers every model response carries, and the provider's relayed ones: the one place they
/// are written, for whole answers, streams and errors alike.
fn decorate(ctx: &Ctx, headers: &mut HeaderMap) {
    // Header names are constants and values made once: a `&str` name is parsed on every
    // insert (~500 instructions each).
    if let Some(v) = &ctx.id_header {
        headers.insert(X_REQUEST_ID, v.clone());
    }
    headers.insert(X_WEIR_OVERHEAD_US, HeaderValue::from(ctx.overhead().as_micros() as u64));
    match &ctx.cache {
        Some(cached::Mark::Hit(Some(v))) => {
            headers.insert(X_WEIR_PROVIDER, v.clone());
        }
        _ => {
            if let Some(v) = ctx.target.as_ref().filter(|_| ctx.routed).and_then(|t| t.pool.name_header()) {
                headers.insert(X_WEIR_PROVIDER, v.clone());
            }
        }
    }
    if let Some(mark) = &ctx.cache {
        headers.insert(X_WEIR_CACHE, mark.header());
    }
    if ctx.attempts > 1 {
        headers.insert(X_WEIR_ATTEMPTS, HeaderValue::from(ctx.attempts));
    }
    ctx.relay.write_to(headers);
}

/// The `finish` phase: metrics, the access log line and the request record, once per request.
fn finish(gw: &Gateway, ctx: &mut Ctx, status: u16, error: Option<&Error>) {
    finish_as(gw, ctx, status, error.map_or("ok", Error::metric_label), error);
}

/// `finish` with the `outcome` label chosen by the caller.
fn finish_as(gw: &Gateway, ctx: &mut Ctx, status: u16, outcome: &'static str, error: Option<&Error>) {
    let admission = ctx.admission.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    if let Some(facts) = &ctx.facts {
        let f = Finished {
            id: &ctx.id,
            endpoint: ctx.endpoint,
            provider: ctx.target.as_ref().map(|t| &**t.pool.name()),
            attempts: ctx.attempts,
            status,
            outcome,
            error,
            usage: ctx.usage.as_ref(),
            elapsed: ctx.started.elapsed(),
            overhead: ctx.overhead(),
            key: admission.as_ref().map(Admission::key_name),
            cost_nano_usd: ctx.cost(),
            cache: ctx.cache.as_ref().map(|m| match m {
                cached::Mark::Hit(_) => "hit",
                cached::Mark::Miss => "miss",
            }),
        };
        crate::record::publish(gw, facts, &f);
    }
    let provider = ctx.target.as_ref().filter(|_| ctx.routed).map(|t| t.pool.name());
    let span = std::mem::take(&mut ctx.span);
    spans::finish(span, &ctx.id, provider, status, outcome, ctx.usage.as_ref(), error);
    match &ctx.target {
        Some(t) => {
            let m = t.pool.request_metrics();
            m.record(t.model, ctx.endpoint, outcome, status, ctx.overhead());
            // A cached answer spent no tokens upstream.
            if let Some(usage) = ctx.usage.as_ref().filter(|_| !matches!(ctx.cache, Some(cached::Mark::Hit(_)))) {
                m.tokens(t.model, usage);
            }
        }
        None => crate::metrics::record_unrouted(ctx.endpoint, outcome, status, ctx.overhead()),
    }
    // The virtual key's name (never its secret) and the answer's cost, for the access log.
    let key = admission.as_ref().map_or("-", Admission::key_name);
    match error {
        Some(e) if e.status().is_server_error() => tracing::warn!(
            request_id = %ctx.id, provider = ctx.provider_name(), key, status, error = %e, "request failed"
        ),
        _ => tracing::debug!(
            request_id = %ctx.id, provider = ctx.provider_name(), key, status, outcome,
            total_us = ctx.started.elapsed().as_micros() as u64, overhead_us = ctx.overhead().as_micros() as u64,
            cost_nano_usd = ctx.cost().unwrap_or(0),
            "request finished"
        ),
    }
    if let Some(admission) = admission {
        // Only an answer's reported usage corrects the estimate; a failure before any
        // upstream answer leaves the estimate counted (it was one request of the key's rate).
        admission.settle(ctx.usage.map(tokens), ctx.cost());
    }
}

/// A provider's reported usage as the governance counts it.
fn tokens(u: Usage) -> Tokens {
    Tokens { prompt: u.prompt, completion: u.completion, cached: u.cached }
}

/// The client's `x-request-id` when it is short and printable, else a fresh one; with it, the
/// response header value (the client's own value reused, no copy).
pub(crate) fn request_id(headers: &HeaderMap) -> (Arc<str>, Option<HeaderValue>) {
    if let Some(hv) = headers.get(&X_REQUEST_ID)
        && let Ok(v) = hv.to_str()
        && !v.is_empty()
        && v.len() <= 128
        && v.bytes().all(|b| b.is_ascii_graphic())
    {
        return (Arc::from(v), Some(hv.clone()));
    }
    let fresh = fresh_id(fastrand::u64(..));
    let id = std::str::from_utf8(&fresh).map_or_else(|_| Arc::from("req_"), Arc::from);
    (id, HeaderValue::from_bytes(&fresh).ok())
}

/// `req_` and 16 lower-case hex digits of `n`, without `format!`'s machinery (~1k
/// instructions per request).
fn fresh_id(n: u64) -> [u8; 20] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = *b"req_0000000000000000";
    for (i, digit) in out[4..].iter_mut().enumerate() {
        *digit = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_request_id_is_kept_and_a_bad_one_replaced() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        let (id, header) = request_id(&h);
        assert_eq!(&*id, "abc-123");
        assert_eq!(header.unwrap(), "abc-123");

        for bad in ["has space", "", &"x".repeat(129)] {
            h.insert(X_REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            let (id, header) = request_id(&h);
            assert!(id.starts_with("req_") && id.len() == 20, "{bad:?} -> {id}");
            assert_eq!(header.unwrap().to_str().unwrap(), &*id, "the header says the same id");
        }
        assert_eq!(&fresh_id(0x0123_4567_89ab_cdef), b"req_0123456789abcdef");
        assert_eq!(&fresh_id(u64::MAX), b"req_ffffffffffffffff");
        let (a, _) = request_id(&HeaderMap::new());
        let (b, _) = request_id(&HeaderMap::new());
        assert_ne!(a, b, "fresh ids differ");
    }
}
