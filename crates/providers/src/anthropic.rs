//! The `anthropic` provider kind: Anthropic's Messages API (`POST {base}/messages`, keys sent as
//! `x-api-key`, `anthropic-version`). A client that speaks Anthropic and whose request nothing
//! edited has its bytes sent as they are (prompt caching's `cache_control` markers included);
//! any other goes through the canonical types ([`codec`]), with the configured
//! `default_max_tokens` where the request set none. Streams are read event by event: they end
//! at `message_stop`, and an `error` event or a body that ends before it is an error. As in
//! `openai.rs`, everything read from upstream is scrubbed of the snapshot's secrets.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderName, HeaderValue, Method, Uri, header};
use http_body_util::BodyExt;
use serde_json::Value;

use super::http::{Returning, SendError, Upstream, endpoint_uri};
use super::keys::KeyRing;
use super::sse::{SseEvent, SseParser};
use super::upstream_common::{
    Answer, ErrorBody, HttpCore, credentials_rejected, provider_headers, relayed_text, says_context_length,
};
use super::{ChunkStream, ProviderRequest, ProviderResponse, codec};
use crate::config::{AnthropicConfig, PoolConfig};
use crate::error::{Error, ErrorKind};
use crate::format::{ApiFormat, Operation};
use crate::secrets::Secrets;

/// Anthropic's "overloaded" status, answered to Weir's clients as 503.
const OVERLOADED: u16 = 529;

/// An Anthropic Messages API upstream.
pub struct Anthropic {
    /// Client, headers (`user-agent`, `anthropic-version`, the configured ones), `x-api-key`
    /// keys and answer limits.
    core: HttpCore,
    messages_url: Uri,
    models_url: Uri,
    default_max_tokens: u64,
}

impl Anthropic {
    /// The format it speaks upstream.
    pub const FORMAT: ApiFormat = ApiFormat::Anthropic;

    /// Builds the client of provider `name`.
    ///
    /// # Errors
    /// A message for an invalid URL, header or key.
    pub fn new(name: &str, cfg: &AnthropicConfig, pool: &PoolConfig, threads: usize) -> Result<Self, String> {
        let http = &cfg.http;
        let version = HeaderValue::from_str(&cfg.anthropic_version)
            .map_err(|_| "anthropic_version is not a valid header value".to_owned())?;
        let headers = provider_headers([(HeaderName::from_static("anthropic-version"), version)], &http.headers)?;
        let keys = KeyRing::plain("x-api-key", &http.keys)?;
        let messages_url = endpoint_uri(&http.base_url, "/messages")?;
        let client = Upstream::new(&messages_url, http.connect_timeout, pool.workers, threads);
        Ok(Self {
            core: HttpCore::new(name, client, headers, keys, pool),
            messages_url,
            models_url: endpoint_uri(&http.base_url, "/models")?,
            default_max_tokens: cfg.default_max_tokens,
        })
    }

    fn name(&self) -> &str {
        self.core.name()
    }

    /// The body to send: the client's bytes when it speaks Anthropic and nothing edited them,
    /// else the converted request with `default_max_tokens` where it has no `max_tokens`.
    fn body(&self, mut req: ProviderRequest) -> Result<Bytes, Error> {
        if req.endpoint.op != Operation::Chat {
            return Err(Error::invalid_param("model", format!("provider {} serves only chat (messages)", self.name())));
        }
        if req.endpoint.format == Self::FORMAT {
            return codec::request_body(Self::FORMAT, req.endpoint, req.body, req.model);
        }
        if req.endpoint.format == ApiFormat::OpenAi {
            refuse_unexpressible(self.name(), req.body.map())?;
        }
        if req.endpoint.format == ApiFormat::Responses {
            let body = req.body.map();
            let json_mode = body.get("text").and_then(|t| t.get("format")).and_then(|f| f.get("type"));
            if json_mode.and_then(Value::as_str).is_some_and(|t| t != "text") {
                let why =
                    format!("provider {} speaks Anthropic's API, which has no JSON mode (text.format)", self.name());
                return Err(Error::invalid_param("text.format", why));
            }
        }
        codec::native_request(Self::FORMAT, &mut req)?;
        let mut tree = req.body.into_map();
        tree.entry("max_tokens").or_insert_with(|| self.default_max_tokens.into());
        Ok(Bytes::from(weir_types::json::write::object_to_vec(&tree)))
    }

    /// Sends one request.
    ///
    /// # Errors
    /// Transport failures, error statuses and invalid bodies, mapped to [`Error`].
    pub async fn call(&self, mut req: ProviderRequest) -> Result<ProviderResponse, Error> {
        let client = req.endpoint.format;
        let (stream, secrets, affinity) = (req.stream, req.secrets.clone(), req.affinity);
        let trace = std::mem::take(&mut req.trace);
        let bytes = self.body(req)?;
        let mut request = self.core.request(Method::POST, self.messages_url.clone(), bytes, 0);
        request.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        trace.write_to(request.headers_mut());
        let Answer { resp, conn, relay } =
            self.core.send(affinity, request, |e| status_error(self.name(), e, &secrets)).await?;
        if stream {
            self.core.expect_event_stream(&resp, "text/event-stream")?;
            let conn = self.core.returning(conn);
            let events = events(self.name().to_owned(), resp.into_body().into_data_stream(), secrets, conn);
            return Ok(ProviderResponse::stream(codec::events(Self::FORMAT, client, events)).with_relay(relay));
        }
        let body = self.core.read_answer(resp, conn).await?;
        let Ok(usage) = super::usage::read_answer(&body) else {
            return Err(self.core.not_json());
        };
        let body = codec::response(Self::FORMAT, client, secrets.scrub_bytes(body))?;
        Ok(ProviderResponse::full(body, usage).with_relay(relay))
    }

    /// A reload replaced or removed this provider: its idle connections close now.
    pub fn retire(&self) {
        self.core.retire();
    }

    /// `GET /models`: the ids Anthropic lists (`data[].id`).
    ///
    /// # Errors
    /// Transport failures, error statuses and unexpected bodies.
    pub async fn list_models(&self, secrets: &Secrets) -> Result<Vec<String>, Error> {
        let v = self.core.get_json(&self.models_url, secrets, |e| status_error(self.name(), e, secrets)).await?;
        Ok(v.get("data")
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(|m| m.get("id")?.as_str().map(str::to_owned)).collect())
            .unwrap_or_default())
    }
}

/// The error for an upstream error status, from Anthropic's
/// `{"type":"error","error":{"type","message"}}`; 529 (overloaded) is answered as 503.
fn status_error(name: &str, answer: ErrorBody, secrets: &Secrets) -> Error {
    let mut err = error_from(name, answer.status, &answer.body, secrets);
    if let Some(secs) = answer.retry_after() {
        err = err.with_retry_after(secs);
    }
    err
}

/// OpenAI request fields whose meaning Anthropic cannot keep: refused with a 400 naming them
/// rather than dropped (a client asking for JSON or log probabilities must not get prose).
fn refuse_unexpressible(name: &str, body: &serde_json::Map<String, Value>) -> Result<(), Error> {
    let json_mode = body.get("response_format").and_then(|f| f.get("type")).and_then(Value::as_str);
    if json_mode.is_some_and(|t| t != "text") {
        let why = format!("provider {name} speaks Anthropic's API, which has no response_format (JSON mode)");
        return Err(Error::invalid_param("response_format", why));
    }
    if body.get("logprobs") == Some(&Value::Bool(true)) {
        return Err(Error::invalid_param(
            "logprobs",
            format!("provider {name} speaks Anthropic's API, which has no logprobs"),
        ));
    }
    Ok(())
}

/// The error for an Anthropic error status and body. Upstream text is scrubbed of `secrets`
/// before it is cut; on 401/403 it is not relayed at all (it may quote the key).
fn error_from(name: &str, status: u16, body: &[u8], secrets: &Secrets) -> Error {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let upstream = parsed.as_ref().and_then(|v| v.get("error"));
    let message = if status == 401 || status == 403 {
        credentials_rejected(name, status)
    } else {
        let text = relayed_text(secrets, upstream.and_then(|e| e.get("message")).and_then(Value::as_str), body);
        let kind = upstream.and_then(|e| e.get("type")).and_then(Value::as_str).unwrap_or("error");
        format!("provider {name} returned {status} ({}): {text}", secrets.scrub_cut(kind, 64))
    };
    let status = if status == OVERLOADED { 503 } else { status };
    let err = Error::new(ErrorKind::Upstream { status }, message);
    let message = upstream.and_then(|e| e.get("message")).and_then(Value::as_str).unwrap_or_default();
    // Anthropic's error types as the OpenAI-style codes clients and the policy act on.
    match upstream.and_then(|e| e.get("type")).and_then(Value::as_str) {
        Some("invalid_request_error") if says_context_length(message) => {
            err.with_upstream_code("context_length_exceeded")
        }
        Some("rate_limit_error") => err.with_upstream_code("rate_limit_exceeded"),
        // A 5xx keeps no upstream code; this one says the provider is busy, not broken.
        Some("overloaded_error") => err.with_code("overloaded"),
        _ => err,
    }
}

/// The event payloads of an upstream Anthropic SSE body, each scrubbed of `secrets`. The
/// stream ends after `message_stop` (the connection `conn` then goes back to its lanes); an
/// `error` event, or a body that ends before `message_stop`, is an error item.
fn events<S, E>(name: String, upstream: S, secrets: Arc<Secrets>, conn: Option<Returning>) -> ChunkStream
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
    E: std::error::Error + 'static,
{
    struct State<S> {
        upstream: S,
        parser: SseParser,
        finished: bool,
        name: String,
        secrets: Arc<Secrets>,
        conn: Option<Returning>,
    }
    let state = State { upstream, parser: SseParser::default(), finished: false, name, secrets, conn };
    futures_util::stream::unfold(state, |mut s| async move {
        if s.finished {
            return None;
        }
        loop {
            match s.parser.next_event() {
                // `[DONE]` is no Anthropic event; a payload is anything else.
                Ok(Some(SseEvent::Data(data))) => {
                    let data = s.secrets.scrub_bytes(data);
                    match weir_api::anthropic::event_type(&data) {
                        Some("message_stop") => {
                            s.finished = true;
                            if let Some(conn) = s.conn.take() {
                                conn.done();
                            }
                        }
                        Some("error") => {
                            s.finished = true;
                            let status = stream_error_status(&data);
                            return Some((Err(error_from(&s.name, status, &data, &s.secrets)), s));
                        }
                        _ => {}
                    }
                    return Some((Ok(data), s));
                }
                Ok(Some(SseEvent::Done)) => {}
                Ok(None) => {}
                Err(e) => {
                    s.finished = true;
                    let err = Error::new(ErrorKind::UpstreamInvalid, format!("provider {} sent {e}", s.name));
                    return Some((Err(err), s));
                }
            }
            tokio::task::consume_budget().await;
            match s.upstream.next().await {
                Some(Ok(bytes)) => s.parser.feed(&bytes),
                Some(Err(e)) => {
                    s.finished = true;
                    let why = SendError::from_chain(&e).cause;
                    let err =
                        Error::new(ErrorKind::UpstreamUnavailable, format!("provider {} stream failed: {why}", s.name));
                    return Some((Err(err), s));
                }
                None => {
                    s.finished = true;
                    let err = Error::new(
                        ErrorKind::UpstreamInvalid,
                        format!("provider {} ended the stream before message_stop", s.name),
                    );
                    return Some((Err(err), s));
                }
            }
        }
    })
    .boxed()
}

/// The status an `error` event stands for, from its `error.type`.
fn stream_error_status(data: &[u8]) -> u16 {
    let v: Option<Value> = serde_json::from_slice(data).ok();
    match v.as_ref().and_then(|v| v.pointer("/error/type")).and_then(Value::as_str) {
        Some("overloaded_error") => OVERLOADED,
        Some("rate_limit_error") => 429,
        Some("invalid_request_error") => 400,
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(body: &'static [u8]) -> Vec<Result<Bytes, Error>> {
        let upstream =
            futures_util::stream::iter(body.chunks(7).map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(events("p".into(), upstream, Default::default(), None).collect())
    }

    #[test]
    fn a_stream_ends_at_message_stop_and_reads_nothing_after() {
        let out = collect(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n\
              event: ping\ndata: {\"type\": \"ping\"}\n\n\
              event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n\
              data: {\"type\":\"after\"}\n\n",
        );
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(Result::is_ok));
    }

    #[test]
    fn a_stream_cut_before_message_stop_ends_with_an_error() {
        let out = collect(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n");
        assert_eq!(out.len(), 2);
        let e = out[1].as_ref().unwrap_err();
        assert_eq!(e.kind, ErrorKind::UpstreamInvalid);
        assert!(e.message.contains("before message_stop"), "{}", e.message);
    }

    #[test]
    fn an_error_event_is_an_error_with_anthropics_message() {
        let out = collect(
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        );
        assert_eq!(out.len(), 1);
        let e = out[0].as_ref().unwrap_err();
        assert_eq!(e.status().as_u16(), 503);
        assert!(e.message.contains("Overloaded"), "{}", e.message);
    }

    #[test]
    fn error_statuses_keep_anthropics_message_but_never_auth_text() {
        let secrets = Secrets::new(["sk-ant-secret-123456"]);
        let body = br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: key sk-ant-secret-123456"}}"#;
        let e = error_from("a", 400, body, &secrets);
        assert_eq!(e.status().as_u16(), 400);
        assert!(e.message.contains("prompt is too long") && !e.message.contains("sk-ant-secret"), "{}", e.message);
        let e = error_from("a", 401, br#"{"error":{"message":"bad key sk-ant-secret-123456"}}"#, &secrets);
        assert!(!e.message.contains("bad key"), "{}", e.message);
        assert_eq!(e.status().as_u16(), 502);
        assert_eq!(error_from("a", 529, b"{}", &secrets).status().as_u16(), 503);
    }

    #[test]
    fn anthropics_error_types_become_the_codes_clients_and_the_policy_act_on() {
        let code = |status, kind: &str, message: &str| {
            let body = serde_json::json!({"type": "error", "error": {"type": kind, "message": message}});
            error_from("a", status, body.to_string().as_bytes(), &Secrets::default()).code
        };
        let long = "prompt is too long: 210000 tokens > 200000 maximum";
        assert_eq!(code(400, "invalid_request_error", long).as_deref(), Some("context_length_exceeded"));
        let both = "input length and `max_tokens` exceed context limit: 190000 + 20000 > 200000";
        assert_eq!(code(400, "invalid_request_error", both).as_deref(), Some("context_length_exceeded"));
        assert_eq!(code(400, "invalid_request_error", "messages: field required"), None);
        assert_eq!(code(429, "rate_limit_error", "slow down").as_deref(), Some("rate_limit_exceeded"));
        assert_eq!(code(529, "overloaded_error", "Overloaded").as_deref(), Some("overloaded"));
        let e = error_from("a", 529, br#"{"error":{"type":"overloaded_error"}}"#, &Secrets::default());
        assert_eq!(e.status().as_u16(), 503);
        // The same inside a stream.
        let data = br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long"}}"#;
        let e = error_from("a", stream_error_status(data), data, &Secrets::default());
        assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
    }
}
