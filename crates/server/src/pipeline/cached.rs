//! The `lookup` phase (the response cache), between `select_provider` and `upstream_request`:
//! it runs after the `on_request` hooks and routing, so the key covers what would be sent (the
//! body with plugins' edits, the routed provider and model). A hit is an answer like any
//! other: the `on_response` (or, replayed as a stream, `on_stream_chunk`) hooks see it, and
//! `finish` counts it. What is cached is the provider's answer before the post hooks, so they
//! run again on every hit.
//!
//! The client's `cache-control: no-cache` skips the lookup (the fresh answer is still kept);
//! `no-store` skips both. `x-weir-cache` says `hit` or `miss`, and is absent when the cache is
//! off or skipped.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, header};
use tokio::sync::mpsc;

use super::{Ctx, Outcome, Stream, scrub_written};
use crate::cache::{self, Key, Recorder, ResponseCache};
use crate::error::Error;
use crate::exchange::{GatewayRequest, GatewayResponse};
use crate::gateway::Gateway;
use crate::plugins::{HookCtx, Seen};
use crate::pool::StreamItem;
use crate::routing::Route;

/// What the cache did for a request (`x-weir-cache`).
#[derive(Debug, Clone)]
pub(super) enum Mark {
    /// Answered from the cache; the provider whose answer it was (`x-weir-provider`).
    Hit(Option<HeaderValue>),
    /// Not cached: the answer comes from upstream.
    Miss,
}

impl Mark {
    pub(super) fn header(&self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Hit(_) => "hit",
            Self::Miss => "miss",
        })
    }
}

/// The lookup's verdict.
pub(super) enum Lookup {
    /// Go upstream with the request; keep the answer under the key if there is one.
    Go(GatewayRequest, Option<Key>),
    /// Answered.
    Hit(Outcome),
}

/// What the client's `cache-control` allows: (look up, keep the answer).
fn directives(headers: &HeaderMap) -> (bool, bool) {
    let (mut lookup, mut store) = (true, true);
    for v in headers.get_all(header::CACHE_CONTROL) {
        for token in v.to_str().unwrap_or("").split(',').map(str::trim) {
            if token.eq_ignore_ascii_case("no-cache") {
                lookup = false;
            } else if token.eq_ignore_ascii_case("no-store") {
                (lookup, store) = (false, false);
            }
        }
    }
    (lookup, store)
}

/// The `lookup` phase: the cached answer to `request`, or the key to keep its answer under.
pub(super) async fn lookup(
    gw: &Gateway,
    ctx: &mut Ctx,
    headers: &HeaderMap,
    request: GatewayRequest,
    route: &Route,
    seen: Seen,
) -> Result<Lookup, Error> {
    let Some(cache) = &gw.cache else { return Ok(Lookup::Go(request, None)) };
    let (use_it, keep) = directives(headers);
    if !use_it && !keep {
        cache::count("bypass");
        return Ok(Lookup::Go(request, None));
    }
    let pool = &gw.targets[route.provider].pool;
    let owner = ctx.key_name.as_deref().filter(|_| cache.config().per_key);
    let req = cache::Request {
        endpoint: request.endpoint,
        provider: pool.name(),
        model: &route.upstream_model,
        body: &request.body,
        owner,
    };
    let Some(key) = cache.key(&req) else { return Ok(Lookup::Go(request, None)) };
    if !use_it {
        cache::count("bypass");
        return Ok(Lookup::Go(request, Some(key)));
    }
    let Some(hit) = cache.get(&key).await else {
        cache::count("miss");
        ctx.cache = Some(Mark::Miss);
        return Ok(Lookup::Go(request, Some(key)));
    };
    // A streamed request gets the whole answer as a stream; one that has no canonical form
    // (several choices) goes upstream instead.
    let replay = if request.stream {
        match cache::stream_of(request.endpoint.format, &hit.body, key.stream_usage) {
            Some(events) => Some(events),
            None => {
                cache::count("miss");
                ctx.cache = Some(Mark::Miss);
                return Ok(Lookup::Go(request, None));
            }
        }
    } else {
        None
    };
    cache::count("hit");
    ctx.cache = Some(Mark::Hit(HeaderValue::from_str(&hit.provider).ok()));
    let hook = HookCtx { request: Arc::new(request), provider: Some(hit.provider.clone()), trace: ctx.span.cx() };
    let Some(events) = replay else {
        let mut resp = GatewayResponse::ok(hit.body.clone());
        gw.plugins.on_response(&hook, seen, &mut resp).await?;
        scrub_written(gw, &mut resp, Some(&hit.body));
        return Ok(Lookup::Hit(Outcome::Full(resp)));
    };
    let (tx, chunks) = mpsc::channel(events.len() + 1);
    for e in events {
        let _ = tx.try_send(Ok(StreamItem::Chunk(e)));
    }
    let _ = tx.try_send(Ok(StreamItem::End));
    let shutdown = pool.shutdown_signal();
    Ok(Lookup::Hit(Outcome::Stream(Stream {
        head: HeaderMap::new(),
        chunks,
        shutdown,
        hook,
        seen,
        attempt: Default::default(),
        record: None,
        resume: None,
    })))
}

/// A stream being recorded for the cache: its recorder and where the answer goes.
pub(super) struct Record {
    recorder: Recorder,
    key: Key,
    cache: Arc<ResponseCache>,
    provider: Arc<str>,
}

impl Record {
    /// Records the stream `provider` answers `key`'s request with, if the cache keeps it.
    pub(super) fn new(gw: &Gateway, key: Option<Key>, ctx: &Ctx, provider: &Arc<str>) -> Option<Box<Self>> {
        let (key, cache) = (key?, gw.cache.clone()?);
        let max = usize::try_from(cache.config().max_entry_bytes).unwrap_or(usize::MAX);
        let recorder = Recorder::new(ctx.endpoint.format, max);
        Some(Box::new(Self { recorder, key, cache, provider: provider.clone() }))
    }

    /// Notes one event payload as the provider sent it (before `on_stream_chunk`).
    pub(super) fn note(&mut self, payload: &[u8]) {
        self.recorder.note(payload);
    }

    /// The stream ended well and reached the client whole: keep its answer.
    pub(super) fn keep(self: Box<Self>) {
        if let Some(body) = self.recorder.finish() {
            self.cache.put(&self.key, self.provider, body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_cache_skips_the_lookup_and_no_store_skips_both() {
        let mut h = HeaderMap::new();
        assert_eq!(directives(&h), (true, true));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=0, No-Cache"));
        assert_eq!(directives(&h), (false, true));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        assert_eq!(directives(&h), (false, false));
    }
}
