//! The `openai` provider kind: any OpenAI-compatible HTTP API, Azure OpenAI (its addressing in
//! `azure.rs`) and the presets. One pooled client per provider (`http.rs`: keep-alive, HTTP/2
//! where the server offers it), weighted random API key per request, upstream errors mapped to
//! Weir errors, the allow-listed response headers relayed ([`crate::RelayHeaders`]). Everything read from upstream (error text,
//! answers, stream events) is scrubbed of the snapshot's secrets before anyone sees it.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, Method, Uri, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;

use super::azure::Deployments;
use super::http::{Returning, SendError, Upstream, endpoint_uri};
use super::keys::KeyRing;
use super::relay::{RelayAnswer, RelayRequest};
use super::sse::{SseEvent, SseParser};
use super::upstream_common::{Answer, ErrorBody, HttpCore, credentials_rejected, provider_headers, relayed_text};
use super::{ChunkStream, ProviderRequest, ProviderResponse, codec};
use crate::config::{OpenAiConfig, PoolConfig};
use crate::error::{Error, ErrorKind};
use crate::format::{ApiFormat, Operation};
use crate::secrets::Secrets;

/// Most bytes of an upstream `param` relayed.
const MAX_RELAYED_PARAM: usize = 200;

/// Where requests go and how the key is sent.
// One per provider, built once: its size costs nothing per request.
#[allow(clippy::large_enum_variant)]
enum Addressing {
    /// `{base_url}/chat/completions`, `/embeddings`, `/responses`, `/models`;
    /// `Authorization: Bearer KEY`.
    Paths { chat: Uri, embeddings: Uri, responses: Uri, models: Uri },
    /// Azure OpenAI: a deployment per model; `api-key: KEY`.
    Azure(Deployments),
}

/// An OpenAI-compatible upstream.
pub struct OpenAi {
    /// Client, headers (`user-agent`, the configured ones), keys (`Authorization: Bearer`, or
    /// Azure's `api-key`) and answer limits.
    core: HttpCore,
    addressing: Addressing,
}

impl OpenAi {
    /// The format it speaks upstream.
    pub const FORMAT: ApiFormat = ApiFormat::OpenAi;

    /// Builds the client of provider `name`.
    ///
    /// # Errors
    /// A message for an invalid URL, header or key.
    pub fn new(name: &str, cfg: &OpenAiConfig, pool: &PoolConfig, threads: usize) -> Result<Self, String> {
        let base = cfg.base_url.as_str();
        let headers = provider_headers([], &cfg.headers)?;
        let (addressing, keys) = match &cfg.azure {
            Some(azure) => (Addressing::Azure(Deployments::new(base, azure)?), KeyRing::plain("api-key", &cfg.keys)?),
            None => (
                Addressing::Paths {
                    chat: endpoint_uri(base, "/chat/completions")?,
                    embeddings: endpoint_uri(base, "/embeddings")?,
                    responses: endpoint_uri(base, "/responses")?,
                    models: endpoint_uri(base, "/models")?,
                },
                KeyRing::bearer(&cfg.keys)?,
            ),
        };
        let client = Upstream::new(&endpoint_uri(base, "")?, cfg.connect_timeout, pool.workers, threads);
        Ok(Self { core: HttpCore::new(name, client, headers, keys, pool), addressing })
    }

    /// Sends one request (for plain-http providers, on a connection of the request's serving
    /// thread, kept for the next request only if the exchange ends cleanly).
    ///
    /// # Errors
    /// Transport failures, error statuses and invalid bodies, mapped to [`Error`].
    pub async fn call(&self, req: ProviderRequest) -> Result<ProviderResponse, Error> {
        // OpenAI serves Responses requests itself (`/responses`): they go as they are. Azure's
        // deployments take chat, so there they are translated like any other format.
        let client = req.endpoint.format;
        let native = match (&self.addressing, client) {
            (Addressing::Paths { .. }, ApiFormat::Responses) => ApiFormat::Responses,
            _ => Self::FORMAT,
        };
        let url = match &self.addressing {
            Addressing::Paths { responses, .. } if native == ApiFormat::Responses => Cow::Borrowed(responses),
            Addressing::Paths { chat, embeddings, .. } => Cow::Borrowed(match req.endpoint.op {
                Operation::Chat => chat,
                Operation::Embeddings => embeddings,
            }),
            Addressing::Azure(d) => d.url(&req.model, req.endpoint.op)?,
        };
        let bytes = codec::request_body(native, req.endpoint, req.body, req.model)?;
        let mut request = self.core.request(Method::POST, url.into_owned(), bytes, req.trace.len());
        let headers = request.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        req.trace.write_to(headers);
        let secrets = &req.secrets;
        let Answer { resp, conn, relay } =
            self.core.send(req.affinity, request, |e| status_error(self.core.name(), e, secrets)).await?;
        if req.stream {
            self.core.expect_event_stream(&resp, "text/event-stream")?;
            let conn = self.core.returning(conn);
            let events = self.chunks(resp.into_body(), req.secrets, conn, native == ApiFormat::Responses);
            return Ok(ProviderResponse::stream(codec::events(native, client, events)).with_relay(relay));
        }
        // On an error the rest of the answer is unread: dropping the connection closes it.
        let body = self.core.read_answer(resp, conn).await?;
        // The validity check reads the token usage in the same pass.
        let Ok(usage) = super::usage::read_answer(&body) else {
            return Err(self.core.not_json());
        };
        // One scan of the answer (~0.24 us for 1.1 KB, ARCHITECTURE.md "Errors"); no copy unless
        // a secret was found. Replacing text inside a JSON string keeps the document valid.
        let body = codec::response(native, client, req.secrets.scrub_bytes(body))?;
        Ok(ProviderResponse::full(body, usage).with_relay(relay))
    }

    /// Turns the upstream SSE body into chunk payloads, each scrubbed of `secrets` (an event is
    /// whole, so a secret split across two reads is found too). A stream that ends without
    /// `[DONE]` is reported as an error item so the client learns it was cut.
    fn chunks(&self, body: Incoming, secrets: Arc<Secrets>, conn: Option<Returning>, responses: bool) -> ChunkStream {
        let complete = Complete { responses, ..Complete::default() };
        sse_chunks(self.core.name().to_owned(), body.into_data_stream(), secrets, conn, complete)
    }

    /// A reload replaced or removed this provider: its idle connections close now.
    pub fn retire(&self) {
        self.core.retire();
    }

    /// Whether it serves [`crate::relay`]ed endpoints (Azure's deployments do not).
    pub fn relays(&self) -> bool {
        matches!(self.addressing, Addressing::Paths { .. })
    }

    /// Sends a relayed request to `{base_url}{path_and_query}` with a key; an error status is
    /// mapped as for a chat call (scrubbed), a success comes back with its body unread.
    ///
    /// # Errors
    /// Transport failures and error statuses.
    pub async fn relay(&self, req: RelayRequest) -> Result<RelayAnswer, Error> {
        let Addressing::Paths { models, .. } = &self.addressing else {
            return Err(Error::new(ErrorKind::Internal, "an Azure provider relays no endpoint"));
        };
        // `models` is `{base_url}/models`: the base is what precedes it.
        let base = models.to_string();
        let base = base.strip_suffix("/models").unwrap_or(&base);
        let url: Uri = format!("{base}{}", req.path_and_query)
            .parse()
            .map_err(|_| Error::invalid_param("path", "the request path is not a valid URL path"))?;
        let mut request = self.core.request(req.method, url, req.body, req.trace.len());
        let headers = request.headers_mut();
        if let Some(ct) = req.content_type {
            headers.insert(header::CONTENT_TYPE, ct);
        }
        req.trace.write_to(headers);
        let secrets = &req.secrets;
        let Answer { resp, conn, relay } =
            self.core.send(req.affinity, request, |e| status_error(self.core.name(), e, secrets)).await?;
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        Ok(RelayAnswer {
            status: resp.status(),
            content_type,
            relay,
            body: resp.into_body(),
            conn: self.core.returning(conn),
        })
    }

    /// `GET /models`: the ids the provider lists. Off the serving threads; a plain-http
    /// provider's connection is kept with its others, so a reload that retires the provider
    /// closes it too.
    ///
    /// # Errors
    /// Transport failures, error statuses and unexpected bodies.
    pub async fn list_models(&self, secrets: &Secrets) -> Result<Vec<String>, Error> {
        let url = match &self.addressing {
            Addressing::Paths { models, .. } => models,
            // Azure's own list names base models, not deployments: the configured ones are
            // what routes.
            Addressing::Azure(d) => return Ok(d.models()),
        };
        let v = self.core.get_json(url, secrets, |e| status_error(self.core.name(), e, secrets)).await?;
        Ok(v.get("data")
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(|m| m.get("id")?.as_str().map(str::to_owned)).collect())
            .unwrap_or_default())
    }
}

/// The error for an upstream error status of provider `name`. Upstream text is scrubbed of
/// `secrets` before it is cut to size (a cut must not leave a secret's first bytes behind either).
fn status_error(name: &str, answer: ErrorBody, secrets: &Secrets) -> Error {
    let status = answer.status;
    let parsed = answer.json();
    let upstream_err = parsed.as_ref().and_then(|v| v.get("error"));
    let message = if status == 401 || status == 403 {
        credentials_rejected(name, status)
    } else {
        let msg = upstream_err.and_then(|e| e.get("message").and_then(Value::as_str).or_else(|| e.as_str()));
        format!("provider {name} returned {status}: {}", relayed_text(secrets, msg, &answer.body))
    };
    let mut err = Error::new(ErrorKind::Upstream { status }, message);
    // Azure's content filter (and OpenAI's own) refuses with this code: a client that
    // handles it needs to see it, not a generic `upstream_error`.
    if upstream_err.and_then(|e| e.get("code")).and_then(Value::as_str) == Some("content_filter") {
        err = err.with_code("content_filter");
    }
    if let Some(param) = upstream_err.and_then(|e| e.get("param")).and_then(Value::as_str) {
        err = err.with_param(secrets.scrub_cut(param, MAX_RELAYED_PARAM));
    }
    if let Some(secs) = answer.retry_after() {
        err = err.with_retry_after(secs);
    }
    if let Some(code) = upstream_err.and_then(|e| e.get("code")).and_then(Value::as_str) {
        err = err.with_upstream_code(&secrets.scrub(code));
    }
    err
}

/// The chunk payloads of an upstream SSE body, read from `upstream` (the body's data frames),
/// each scrubbed of `secrets`. The connection `conn` goes back to its lanes at `[DONE]`; a
/// stream that fails or is dropped before closes it.
fn sse_chunks<S, E>(
    name: String,
    upstream: S,
    secrets: Arc<Secrets>,
    conn: Option<Returning>,
    complete: Complete,
) -> ChunkStream
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
    E: std::error::Error + 'static,
{
    let state = (upstream, SseParser::default(), false, (name, secrets, conn, complete));
    futures_util::stream::unfold(
        state,
        |(mut upstream, mut parser, mut finished, (name, secrets, conn, mut complete))| async move {
            if finished {
                return None;
            }
            loop {
                match parser.next_event() {
                    Ok(Some(SseEvent::Data(data))) => {
                        let data = secrets.scrub_bytes(data);
                        complete.note(&data);
                        return Some((Ok(data), (upstream, parser, finished, (name, secrets, conn, complete))));
                    }
                    Ok(Some(SseEvent::Done)) => {
                        if let Some(conn) = conn {
                            conn.done();
                        }
                        return None;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        finished = true;
                        let err = Error::new(ErrorKind::UpstreamInvalid, format!("provider {name} sent {e}"));
                        return Some((Err(err), (upstream, parser, finished, (name, secrets, conn, complete))));
                    }
                }
                // Each read costs one unit of tokio's cooperative budget: an upstream that
                // always has bytes ready cannot keep its serving thread from other connections.
                tokio::task::consume_budget().await;
                match upstream.next().await {
                    Some(Ok(bytes)) => parser.feed(&bytes),
                    Some(Err(e)) => {
                        finished = true;
                        let err = Error::new(
                            ErrorKind::UpstreamUnavailable,
                            format!("provider {name} stream failed: {}", SendError::from_chain(&e).cause),
                        );
                        return Some((Err(err), (upstream, parser, finished, (name, secrets, conn, complete))));
                    }
                    // The answer is whole (its finish reason and usage came, or a Responses
                    // stream's last event): no terminator is missing, so the stream ends cleanly.
                    None if complete.whole() => {
                        if let Some(conn) = conn {
                            conn.done();
                        }
                        return None;
                    }
                    None => {
                        finished = true;
                        let err = Error::new(
                            ErrorKind::UpstreamInvalid,
                            format!("provider {name} ended the stream before [DONE]"),
                        );
                        return Some((Err(err), (upstream, parser, finished, (name, secrets, conn, complete))));
                    }
                }
            }
        },
    )
    .boxed()
}

/// Whether a stream's answer is complete without its `[DONE]`: a chunk with a finish reason
/// and one with a usage object were seen (a substring check per chunk until both were); for a
/// Responses stream, which has no `[DONE]`, its last event (`response.completed`,
/// `response.incomplete` or `response.failed`).
#[derive(Default)]
struct Complete {
    finish_reason: bool,
    usage: bool,
    responses: bool,
    last_event: bool,
}

impl Complete {
    fn note(&mut self, chunk: &[u8]) {
        if self.responses {
            let kind = weir_api::anthropic::event_type(chunk);
            self.last_event |= matches!(kind, Some("response.completed" | "response.incomplete" | "response.failed"));
            return;
        }
        if !self.finish_reason {
            self.finish_reason = value_starts(chunk, b"\"finish_reason\"", b'"');
        }
        if !self.usage {
            self.usage = value_starts(chunk, b"\"usage\"", b'{');
        }
    }

    fn whole(&self) -> bool {
        (self.finish_reason && self.usage) || self.last_event
    }
}

/// Whether some `key` in `chunk` has a value starting with `first` (a string, an object).
fn value_starts(chunk: &[u8], key: &[u8], first: u8) -> bool {
    memchr::memmem::find_iter(chunk, key).any(|at| {
        let mut rest = chunk[at + key.len()..].iter().copied().filter(|b| !b.is_ascii_whitespace());
        rest.next() == Some(b':') && rest.next() == Some(first)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_long_event_in_tiny_pieces_lets_other_tasks_on_its_thread_run() {
        // An upstream that always has the next byte ready: without yielding, the parse would
        // hold the (single) thread until its event ends.
        let pieces = 100_000;
        let upstream = futures_util::stream::iter(
            std::iter::once(Bytes::from_static(b"data: "))
                .chain(std::iter::repeat_n(Bytes::from_static(b"x"), pieces))
                .chain(std::iter::once(Bytes::from_static(b"\n\ndata: [DONE]\n\n")))
                .map(Ok::<_, std::io::Error>),
        );
        let ticks = Arc::new(AtomicUsize::new(0));
        let other = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                loop {
                    ticks.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            }
        });
        let mut chunks = sse_chunks("p".into(), upstream, Default::default(), None, Complete::default());
        let event = chunks.next().await.unwrap().unwrap();
        let ran = ticks.load(Ordering::Relaxed);
        other.abort();
        assert_eq!(event.len(), pieces);
        assert!(ran >= 100, "the other task ran {ran} times during a {pieces}-read parse");
        assert!(chunks.next().await.is_none(), "[DONE] ends the stream");
    }

    async fn items(body: &'static [u8]) -> Vec<Result<Bytes, Error>> {
        let upstream = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(body))]);
        sse_chunks("p".into(), upstream, Default::default(), None, Complete::default()).collect().await
    }

    #[tokio::test]
    async fn a_complete_answer_without_done_ends_cleanly_and_a_cut_one_with_an_error() {
        let whole = items(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n\
              data: {\"choices\":[{\"delta\":{},\"finish_reason\": \"stop\"}]}\n\n\
              data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n",
        )
        .await;
        assert_eq!(whole.len(), 3);
        assert!(whole.iter().all(Result::is_ok), "no error item: {whole:?}");

        // No usage: the answer may have been cut before it.
        let cut = items(b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n").await;
        assert_eq!(cut.len(), 2);
        assert_eq!(cut[1].as_ref().unwrap_err().kind, ErrorKind::UpstreamInvalid);
        // A null finish reason and a usage that is not an object do not count.
        let cut = items(b"data: {\"choices\":[{\"finish_reason\":null}],\"usage\":null}\n\n").await;
        assert!(cut.last().unwrap().is_err());
    }
}
