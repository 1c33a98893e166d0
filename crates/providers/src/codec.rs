//! The one place that decides between passing the client's format through and converting it to
//! a provider's native format ([`crate::Provider::native_format`]) and back.
//!
//! Same format and nothing edited: the client's bytes go upstream unchanged, which also keeps
//! providers' prompt caching working. Same format, edited: the tree is serialised with the
//! provider's model name. Another format: through the canonical types (`weir_types::canonical`).
//! Answers and stream events come back untouched when the formats match: no parse and no box.

use bytes::Bytes;
use futures_util::StreamExt;

use crate::error::{Error, ErrorKind};
use crate::exchange::JsonBody;
use crate::format::{ApiFormat, Endpoint};
use crate::{ChunkStream, ProviderRequest};
use weir_types::canonical::{ChatRequest, ChatResponse, ConvertError, StreamEvent};
use weir_types::json::write;

type Tree = serde_json::Map<String, serde_json::Value>;

/// The request body to send upstream, in `native` format, with `model` (the provider's name
/// for it) set. `endpoint.format` is the client's.
///
/// # Errors
/// 400 when the request has no form in the provider's format; 500 if a tree cannot be written.
pub fn request_body(native: ApiFormat, endpoint: Endpoint, body: JsonBody, model: String) -> Result<Bytes, Error> {
    if endpoint.format == native
        && let Some(raw) = body.raw()
    {
        return Ok(raw.clone());
    }
    let mut tree = body.into_map();
    if endpoint.format == native {
        weir_api::set_model(native, &mut tree, model);
    } else {
        tree = convert_request(native, endpoint, tree, model)?;
    }
    Ok(Bytes::from(write::object_to_vec(&tree)))
}

/// Makes `req` a request in `native` format, for providers that read the request rather than
/// forward it: nothing to do when the formats match; else its body becomes the converted tree
/// (with the provider's model name) and its format `native`.
///
/// # Errors
/// 400 when the request has no form in the provider's format.
pub fn native_request(native: ApiFormat, req: &mut ProviderRequest) -> Result<(), Error> {
    if req.endpoint.format == native {
        return Ok(());
    }
    let tree = std::mem::take(&mut req.body).into_map();
    let tree = convert_request(native, req.endpoint, tree, req.model.clone())?;
    req.body = JsonBody::from_map(tree);
    req.endpoint.format = native;
    Ok(())
}

/// The request through the canonical form: the client's format in, `native` out.
fn convert_request(native: ApiFormat, endpoint: Endpoint, tree: Tree, model: String) -> Result<Tree, Error> {
    let mut canonical =
        weir_api::request_to_canonical(endpoint, tree).map_err(|e| unconvertible(endpoint, native.name(), e))?;
    canonical.model = model;
    Ok(weir_api::request_from_canonical(native, canonical))
}

// Providers whose native format no client speaks (Gemini, Bedrock) own their conversion to and
// from the canonical types; these three functions are their side of the codec. The body they
// write is never the client's, so there is no passthrough to decide.

/// The request as a canonical chat request with the provider's `model` name, for a provider
/// called `target` (its format's name, for the 400) that writes its own body from it.
///
/// # Errors
/// 400 when the request has no canonical form (e.g. embeddings).
pub fn canonical_request(target: &str, req: &mut ProviderRequest) -> Result<ChatRequest, Error> {
    let tree = std::mem::take(&mut req.body).into_map();
    let mut canonical =
        weir_api::request_to_canonical(req.endpoint, tree).map_err(|e| unconvertible(req.endpoint, target, e))?;
    canonical.model.clone_from(&req.model);
    Ok(canonical)
}

/// A canonical answer as a whole body in the client's format.
pub fn canonical_answer(client: ApiFormat, resp: ChatResponse) -> Bytes {
    Bytes::from(write::object_to_vec(&weir_api::response_from_canonical(client, resp)))
}

/// Canonical stream events as event payloads in the client's format. An `Err` item is passed
/// on and ends the stream; a stream that ends well gets the client format's closing events.
pub fn canonical_events(
    client: ApiFormat,
    events: futures_util::stream::BoxStream<'static, Result<StreamEvent, Error>>,
) -> ChunkStream {
    write_events(client, events, |event, out| {
        out.push(event);
        Ok(())
    })
}

/// The client's payloads for a stream of `T`s: `read` turns each item into canonical events,
/// the client format's writer writes them (a canonical event may be several payloads, or
/// none), and its closing events follow the last item. The first error ends the stream.
fn write_events<T, R>(
    client: ApiFormat,
    input: futures_util::stream::BoxStream<'static, Result<T, Error>>,
    read: R,
) -> ChunkStream
where
    T: Send + 'static,
    R: FnMut(T, &mut Vec<StreamEvent>) -> Result<(), Error> + Send + 'static,
{
    struct State<T, R> {
        input: futures_util::stream::BoxStream<'static, Result<T, Error>>,
        read: R,
        writer: weir_api::EventWriter,
        canonical: Vec<StreamEvent>,
        out: std::collections::VecDeque<Bytes>,
        done: bool,
    }
    let state = State {
        input,
        read,
        writer: weir_api::EventWriter::new(client),
        canonical: Vec::new(),
        out: std::collections::VecDeque::new(),
        done: false,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(payload) = s.out.pop_front() {
                return Some((Ok(payload), s));
            }
            if s.done {
                return None;
            }
            let mut written = Vec::new();
            match s.input.next().await {
                None => {
                    s.done = true;
                    s.writer.end(&mut written);
                }
                Some(Err(e)) => {
                    s.done = true;
                    return Some((Err(e), s));
                }
                Some(Ok(item)) => {
                    if let Err(e) = (s.read)(item, &mut s.canonical) {
                        s.done = true;
                        return Some((Err(e), s));
                    }
                    for ev in s.canonical.drain(..) {
                        s.writer.write(ev, &mut written);
                    }
                }
            }
            s.out.extend(written);
        }
    })
    .boxed()
}

/// A whole answer in the client's format: `body` itself when the formats match.
///
/// # Errors
/// 502 `upstream_invalid` for an answer that has no form in the client's format.
pub fn response(native: ApiFormat, client: ApiFormat, body: Bytes) -> Result<Bytes, Error> {
    if native == client {
        return Ok(body);
    }
    convert_response(native, client, &body)
}

/// A whole answer through the canonical form.
fn convert_response(native: ApiFormat, client: ApiFormat, body: &[u8]) -> Result<Bytes, Error> {
    let invalid = |why: String| Error::new(ErrorKind::UpstreamInvalid, why);
    let tree = match serde_json::from_slice(body) {
        Ok(serde_json::Value::Object(o)) => o,
        _ => return Err(invalid("the provider's answer is not a JSON object".into())),
    };
    let canonical = weir_api::response_to_canonical(native, tree)
        .map_err(|e| invalid(format!("the provider's answer does not convert: {e}")))?;
    let out = weir_api::response_from_canonical(client, canonical);
    Ok(Bytes::from(write::object_to_vec(&out)))
}

/// Stream event payloads in the client's format: `events` itself when the formats match.
/// Otherwise each native event is read into canonical events and written as zero or more of
/// the client's; one that does not convert ends the stream with 502 `upstream_invalid`.
pub fn events(native: ApiFormat, client: ApiFormat, events: ChunkStream) -> ChunkStream {
    if native == client {
        return events;
    }
    convert_events(native, client, events)
}

/// Stream events through the canonical form.
fn convert_events(native: ApiFormat, client: ApiFormat, events: ChunkStream) -> ChunkStream {
    let mut reader = weir_api::EventReader::new(native);
    write_events(client, events, move |payload: Bytes, canonical| {
        reader.read(&payload, canonical).map_err(|e| {
            let why = format!("the provider's stream event does not convert: {e}");
            Error::new(ErrorKind::UpstreamInvalid, why)
        })
    })
}

/// A request the provider's format (named `target`) cannot express: the client asked for it,
/// so 400.
fn unconvertible(endpoint: Endpoint, target: &str, e: ConvertError) -> Error {
    let message =
        format!("this {} request cannot be sent in the provider's {target} format: {e}", endpoint.format.name());
    let err = Error::new(ErrorKind::InvalidRequest, message);
    if e.path.is_empty() { err } else { err.with_param(e.path) }
}

#[cfg(test)]
mod tests {
    use super::*;

    use futures_util::StreamExt;

    #[test]
    fn same_format_unedited_sends_the_clients_bytes() {
        let raw = Bytes::from_static(br#"{"model":"a",  "messages":[]}"#);
        let out = request_body(ApiFormat::OpenAi, Endpoint::OPENAI_CHAT, JsonBody::from_raw(raw.clone()), "a".into());
        let out = out.unwrap();
        assert_eq!(out, raw);
        assert_eq!(out.as_ptr(), raw.as_ptr(), "the same buffer, not a copy");
    }

    #[test]
    fn same_format_edited_writes_the_tree_with_the_providers_model() {
        let mut body = JsonBody::from_raw(Bytes::from_static(br#"{"model":"alias","messages":[]}"#));
        body.forget_raw();
        let out = request_body(ApiFormat::OpenAi, Endpoint::OPENAI_CHAT, body, "real".into()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "real");
        assert_eq!(v["messages"], serde_json::json!([]));
    }

    #[test]
    fn answers_and_events_of_the_same_format_are_untouched() {
        let body = Bytes::from_static(b"not even JSON: nothing reads it");
        let out = response(ApiFormat::OpenAi, ApiFormat::OpenAi, body.clone()).unwrap();
        assert_eq!(out.as_ptr(), body.as_ptr());
    }

    // No second format exists yet, so the conversion branches are driven here directly,
    // OpenAI to canonical and back: what a provider of another format would get and what its
    // client would read.
    #[test]
    fn a_request_converts_through_the_canonical_form() {
        let body = serde_json::json!({
            "model": "alias", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": true
        });
        let tree = body.as_object().unwrap().clone();
        let out = convert_request(ApiFormat::OpenAi, Endpoint::OPENAI_CHAT, tree, "real".into()).unwrap();
        assert_eq!(out["model"], "real");
        assert_eq!(out["max_completion_tokens"], 5, "OpenAI's current name for the limit");
        assert_eq!(out["messages"][0]["content"], "hi");
    }

    #[test]
    fn embeddings_have_no_canonical_form_and_say_so_as_a_400() {
        let body = serde_json::json!({"model": "e", "input": "x"}).as_object().unwrap().clone();
        let err = convert_request(ApiFormat::OpenAi, Endpoint::OPENAI_EMBEDDINGS, body, "e".into()).unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(err.message.contains("embeddings have no canonical form"), "{}", err.message);
    }

    #[test]
    fn an_answer_converts_and_a_bad_one_is_the_providers_fault() {
        let body = br#"{"id":"c1","object":"chat.completion","created":1,"model":"m",
            "choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}]}"#;
        let out = convert_response(ApiFormat::OpenAi, ApiFormat::OpenAi, body).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Hi");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        let err = convert_response(ApiFormat::OpenAi, ApiFormat::OpenAi, b"[1]").unwrap_err();
        assert_eq!(err.kind, ErrorKind::UpstreamInvalid);
    }

    #[tokio::test]
    async fn stream_events_convert_one_by_one_and_a_bad_one_ends_the_stream() {
        let chunks = [
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#,
            "[1]",
            r#"{"id":"c1","choices":[]}"#,
        ];
        let upstream = futures_util::stream::iter(chunks.map(|c| Ok(Bytes::from_static(c.as_bytes())))).boxed();
        let out: Vec<_> = convert_events(ApiFormat::OpenAi, ApiFormat::OpenAi, upstream).collect().await;
        assert_eq!(out.len(), 3, "the start, the text, then the failure and nothing after it");
        let text: serde_json::Value = serde_json::from_slice(out[1].as_ref().unwrap()).unwrap();
        assert_eq!(text["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(out[2].as_ref().unwrap_err().kind, ErrorKind::UpstreamInvalid);
    }

    #[tokio::test]
    async fn canonical_events_are_written_in_the_clients_format_and_an_error_ends_them() {
        let events = vec![
            Ok(StreamEvent::Start {
                origin: ApiFormat::OpenAi,
                id: "g1".into(),
                model: "m".into(),
                created: Some(1),
                extra: Default::default(),
            }),
            Ok(StreamEvent::Text { text: "Hi".into() }),
            Err(Error::new(ErrorKind::UpstreamInvalid, "cut")),
            Ok(StreamEvent::Text { text: "never".into() }),
        ];
        let out: Vec<_> =
            canonical_events(ApiFormat::OpenAi, futures_util::stream::iter(events).boxed()).collect().await;
        assert_eq!(out.len(), 3);
        let text: serde_json::Value = serde_json::from_slice(out[1].as_ref().unwrap()).unwrap();
        assert_eq!(text["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(out[2].as_ref().unwrap_err().kind, ErrorKind::UpstreamInvalid);
    }
}
