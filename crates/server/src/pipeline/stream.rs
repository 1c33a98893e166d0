//! The stream relay: one task per stream reads the pool's chunks, runs the stream hooks, frames
//! each event in the client's format and, on a failure after the first byte, writes the front
//! door's error event.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use tokio::sync::mpsc;

use super::resume::Next;
use super::{Ctx, Stream, decorate, finish, finish_as, same_bytes};
use crate::body::{BodyFrame, ResponseBody};
use crate::client_io::ClientConn;
use crate::error::{Error, ErrorKind};
use crate::gateway::Gateway;
use crate::plugins::ChunkOutcome;
use crate::pool::{ShutdownSignal, StreamItem};
use crate::providers::usage::StreamUsage;
use crate::trace::SpanKind;

/// Relays a stream: one task reads chunks from the pool worker, runs `on_stream_chunk`, frames
/// each event (and the end) as the client's front door writes them and hands bytes to hyper.
/// `finish` runs once: when the stream ends, the client leaves, the client stops reading for
/// `server.send_timeout` (499 `client_stalled`), or the shutdown deadline passes while the
/// relay waits for the client (503 `shutting_down`).
pub(super) fn stream_response(
    gw: Arc<Gateway>,
    mut ctx: Ctx,
    conn: ClientConn,
    stream: Stream,
) -> Response<ResponseBody> {
    let Stream { head, mut chunks, shutdown, hook, mut seen, mut attempt, mut record, mut resume } = stream;
    let mut relay = ctx.span.cx().child("weir.relay", SpanKind::Internal);
    let (tx, rx) = mpsc::channel::<BodyFrame>(16);
    let mut out = Response::new(ResponseBody::stream(rx));
    let headers = out.headers_mut();
    *headers = head;
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    decorate(&ctx, headers);
    let at_head = ctx.facts.is_some().then(|| ctx.overhead());
    if let Some(f) = ctx.facts.as_deref_mut() {
        f.head_overhead = at_head;
    }
    let hooks = gw.plugins.has_stream_hooks(seen);
    let format = ctx.endpoint.format;
    let send_timeout = gw.config.server.send_timeout;
    // Built on the heap where it lives: the relay's state is ~8 KB, which spawning would copy.
    tokio::spawn(crate::conn::boxed_in_place(|| async move {
        let mut to_client = ToClient { tx: &tx, send_timeout, shutdown };
        let mut failure: Option<Error> = None;
        // The upstream's usage, noted before plugins see a chunk.
        let mut tokens = StreamUsage::new(format);
        // A continued stream's closing payloads are being sent: the terminator follows.
        let mut ending = false;
        'relay: loop {
            let continuing = resume.as_deref_mut().filter(|r| r.continuing());
            let batch = match chunks.recv().await {
                Some(Ok(StreamItem::Chunk(p))) => match continuing.map(|r| r.rewrite(&p)) {
                    None => Ok(Batch::One(Some(p))),
                    Some(Ok(v)) => Ok(Batch::Many(v.into_iter())),
                    Some(Err(e)) => Err(e),
                },
                Some(Ok(StreamItem::End)) => match continuing {
                    None => break,
                    Some(r) => {
                        ending = true;
                        Ok(Batch::Many(r.end().into_iter()))
                    }
                },
                Some(Err(e)) => Err(gw.secrets.scrub_error(e)),
                None => {
                    failure = Some(stream_cut());
                    break;
                }
            };
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    if let Some(r) = resume.as_deref_mut()
                        && let Next::Continued { chunks: c, shutdown, attempt: a } = r.next(&gw, &mut ctx, &e).await
                    {
                        (chunks, to_client.shutdown, attempt) = (c, shutdown, a);
                        // A stitched answer is not kept for the cache.
                        record = None;
                        continue;
                    }
                    failure = Some(e);
                    break;
                }
            };
            for payload in batch {
                tokens.note(&payload);
                if attempt.is_recording() {
                    attempt.event("first_token");
                    attempt.set_elapsed_ms("weir.time_to_first_token_ms");
                    std::mem::take(&mut attempt).end();
                    relay.event("first_token");
                }
                if let Some(r) = &mut record {
                    r.note(&payload);
                }
                if let Some(r) = &mut resume {
                    r.note(&payload);
                }
                let payload = if hooks {
                    match gw.plugins.on_stream_chunk(&hook, &mut seen, payload.clone()).await {
                        // A chunk a plugin rewrote is scrubbed (the upstream's was, by the provider).
                        Ok(ChunkOutcome::Pass(p)) if same_bytes(&p, &payload) => p,
                        Ok(ChunkOutcome::Pass(p)) => gw.secrets.scrub_bytes(p),
                        Ok(ChunkOutcome::Drop) => continue,
                        Err(e) => {
                            failure = Some(gw.secrets.scrub_error(e));
                            break 'relay;
                        }
                    }
                } else {
                    payload
                };
                if let Err(why) = to_client.send(BodyFrame::Data(crate::api::frame_event(format, &payload))).await {
                    // Dropping `chunks` stops the upstream read and frees the worker.
                    ctx.usage = tokens.usage();
                    drop(relay);
                    return ended_early(&gw, &mut ctx, &conn, why);
                }
                if let Some(f) = ctx.facts.as_deref_mut().filter(|f| f.ttft.is_none()) {
                    f.ttft = Some(ctx.started.elapsed());
                }
            }
            if ending {
                break;
            }
        }
        ctx.usage = tokens.usage();
        let last = match &failure {
            Some(e) => crate::api::error_event(format, e),
            None => crate::api::end_of_stream(format).map_or_else(Bytes::new, Bytes::from_static),
        };
        let sent = to_client.send(BodyFrame::Last(last)).await;
        drop((attempt, relay));
        if let Err(why) = sent {
            return ended_early(&gw, &mut ctx, &conn, why);
        }
        if let Some(r) = record.filter(|_| failure.is_none()) {
            r.keep();
        }
        finish(&gw, &mut ctx, failure.as_ref().map_or(200, |e| e.status().as_u16()), failure.as_ref());
    }));
    out
}

/// The client's payloads made of one upstream payload: itself, or a continuation's rewrite.
enum Batch {
    One(Option<Bytes>),
    Many(std::vec::IntoIter<Bytes>),
}

impl Iterator for Batch {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        match self {
            Self::One(p) => p.take(),
            Self::Many(it) => it.next(),
        }
    }
}

/// Why a frame could not be handed to the client.
enum NotSent {
    /// The client left (or its connection was closed for not reading).
    Gone,
    /// The client took nothing for `send_timeout`.
    Stalled,
    /// The pool's shutdown deadline passed while the client was not reading.
    Stopped,
}

/// The relay's side of the response body channel.
struct ToClient<'a> {
    tx: &'a mpsc::Sender<BodyFrame>,
    send_timeout: Duration,
    /// The shutdown of the pool whose stream is relayed (a continuation's pool replaces it).
    shutdown: ShutdownSignal,
}

impl ToClient<'_> {
    /// Hands one frame to hyper. With room in the channel, at once and with no timer; else the
    /// wait is bounded by `send_timeout` and the shutdown deadline, so a client that does not
    /// read costs only itself.
    async fn send(&self, frame: BodyFrame) -> Result<(), NotSent> {
        let frame = match self.tx.try_send(frame) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(NotSent::Gone),
            Err(mpsc::error::TrySendError::Full(frame)) => frame,
        };
        tokio::select! {
            biased;
            sent = self.tx.send(frame) => sent.map_err(|_| NotSent::Gone),
            () = self.shutdown.fired() => Err(NotSent::Stopped),
            () = tokio::time::sleep(self.send_timeout) => Err(NotSent::Stalled),
        }
    }
}

/// `finish` for a stream that could not be handed to its client to the end. The relay then
/// drops the body's sender before the last frame, which fails the body: hyper aborts the
/// response rather than end it as if complete.
fn ended_early(gw: &Gateway, ctx: &mut Ctx, conn: &ClientConn, why: NotSent) {
    match why {
        NotSent::Gone if !conn.stalled() => finish_as(gw, ctx, 499, "client_closed", None),
        NotSent::Gone | NotSent::Stalled => finish_as(gw, ctx, 499, "client_stalled", None),
        NotSent::Stopped => {
            let e = stream_cut();
            finish(gw, ctx, e.status().as_u16(), Some(&e));
        }
    }
}

fn stream_cut() -> Error {
    Error::new(ErrorKind::ShuttingDown, "the stream was cut: Weir is shutting down and could not finish it")
}
