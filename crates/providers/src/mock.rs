//! The built-in `mock` provider: answers like OpenAI (its native format) with no network or key. Chat replies echo
//! the last user message (so a plugin's edits are visible end to end), streams send it word by
//! word, embeddings are deterministic vectors. `latency` and `chunk_delay` shape its timing.
//! What it builds from request values is bounded (echo size, stream chunks, embedding floats),
//! so a small request cannot make it allocate far more than the request itself.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::usage::Usage;
use super::{ProviderRequest, ProviderResponse, codec};
use crate::config::MockConfig;
use crate::error::Error;
use crate::format::{ApiFormat, Operation};

/// Default embedding width when the request does not ask for `dimensions`.
const DEFAULT_DIMS: usize = 8;
/// Largest `dimensions` the mock accepts (OpenAI's widest model); past it: 400.
const MAX_DIMS: usize = 3072;
/// Most floats one embeddings request may ask for (inputs x dimensions, ~12 MB of JSON);
/// past it: 400. Without it 4,000 one-letter inputs at full width took 1.6 GiB.
const MAX_FLOATS: usize = 1_000_000;
/// Longest reply echoed, in bytes (cut at a character boundary): a demo needs no more.
const MAX_ECHO_BYTES: usize = 64 * 1024;
/// Most content chunks in a stream; a longer reply puts several words in each chunk, so a
/// prompt of many one-letter words cannot multiply into as many JSON chunks.
const MAX_STREAM_CHUNKS: usize = 1024;

/// Built-in echo provider.
pub struct Mock {
    models: Vec<String>,
    latency: Duration,
    chunk_delay: Duration,
}

impl Mock {
    /// The format it answers in.
    pub const FORMAT: ApiFormat = ApiFormat::OpenAi;

    /// Builds the mock that serves `models`.
    pub fn new(models: &[String], cfg: &MockConfig) -> Self {
        Self { models: models.to_vec(), latency: cfg.latency, chunk_delay: cfg.chunk_delay }
    }

    /// Configured models.
    pub fn models(&self) -> Vec<String> {
        self.models.clone()
    }

    /// Answers one request.
    ///
    /// # Errors
    /// 400 if the embeddings input has an unsupported shape, or asks for more dimensions or
    /// floats than the mock builds.
    pub async fn call(&self, mut req: ProviderRequest) -> Result<ProviderResponse, Error> {
        let client = req.endpoint.format;
        codec::native_request(Self::FORMAT, &mut req)?;
        req.body.map();
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let (body, usage) = match req.endpoint.op {
            Operation::Chat if req.stream => {
                return Ok(ProviderResponse::stream(codec::events(Self::FORMAT, client, self.stream(&req))));
            }
            Operation::Chat => chat_completion(&req),
            Operation::Embeddings => embeddings(&req)?,
        };
        Ok(ProviderResponse::full(codec::response(Self::FORMAT, client, body)?, Some(usage)))
    }

    fn stream(&self, req: &ProviderRequest) -> super::ChunkStream {
        let id = completion_id();
        let created = now_secs();
        let model = req.model.clone();
        let reply = last_user_text(tree(req));
        let prompt_tokens = prompt_tokens(tree(req));
        let include_usage = tree(req)
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let completion_tokens = count_words(&reply) as u64;
        let words = stream_pieces(&reply);
        let delay = self.chunk_delay;

        let mut chunks: Vec<Value> = Vec::with_capacity(words.len() + 3);
        chunks.push(chunk(&id, created, &model, json!({"role": "assistant", "content": ""}), None));
        for w in words {
            chunks.push(chunk(&id, created, &model, json!({ "content": w }), None));
        }
        chunks.push(chunk(&id, created, &model, json!({}), Some("stop")));
        if include_usage {
            chunks.push(json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [], "usage": usage(prompt_tokens, completion_tokens),
            }));
        }
        futures_util::stream::iter(chunks.into_iter().enumerate())
            .then(move |(i, c)| async move {
                if i > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok(Bytes::from(serde_json::to_vec(&c).unwrap_or_default()))
            })
            .boxed()
    }
}

fn chunk(id: &str, created: u64, model: &str, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
    })
}

/// The answer and the usage it reports.
fn chat_completion(req: &ProviderRequest) -> (Bytes, Usage) {
    let reply = last_user_text(tree(req));
    let completion_tokens = count_words(&reply) as u64;
    let prompt_tokens = prompt_tokens(tree(req));
    let body = json!({
        "id": completion_id(),
        "object": "chat.completion",
        "created": now_secs(),
        "model": req.model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": reply },
            "finish_reason": "stop",
        }],
        "usage": usage(prompt_tokens, completion_tokens),
    });
    let usage = Usage { prompt: prompt_tokens, completion: completion_tokens, cached: 0 };
    (Bytes::from(serde_json::to_vec(&body).unwrap_or_default()), usage)
}

/// The answer and the usage it reports.
fn embeddings(req: &ProviderRequest) -> Result<(Bytes, Usage), Error> {
    let inputs: Vec<String> = match tree(req).get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            items.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).collect()
        }
        _ => return Err(Error::invalid_param("input", "input must be a string or an array")),
    };
    let dims = match tree(req).get("dimensions") {
        None | Some(Value::Null) => DEFAULT_DIMS,
        Some(d) => match d.as_u64() {
            Some(d @ 1..) if d <= MAX_DIMS as u64 => d as usize,
            _ => {
                return Err(Error::invalid_param(
                    "dimensions",
                    format!("dimensions must be an integer from 1 to {MAX_DIMS}"),
                ));
            }
        },
    };
    if inputs.len().saturating_mul(dims) > MAX_FLOATS {
        return Err(Error::invalid_param(
            "input",
            format!("{} inputs of {dims} dimensions exceed the mock's {MAX_FLOATS} floats per request", inputs.len()),
        ));
    }
    let base64 = tree(req).get("encoding_format").and_then(Value::as_str) == Some("base64");
    let mut prompt_tokens = 0u64;
    let data: Vec<EmbeddingItem> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            prompt_tokens += count_words(text).max(1) as u64;
            let v = vector(text, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                Embedding::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Embedding::Floats(v)
            };
            EmbeddingItem { object: "embedding", index, embedding }
        })
        .collect();
    let body = EmbeddingList {
        object: "list",
        data,
        model: &req.model,
        usage: json!({ "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens }),
    };
    let usage = Usage { prompt: prompt_tokens, completion: 0, cached: 0 };
    Ok((Bytes::from(serde_json::to_vec(&body).unwrap_or_default()), usage))
}

// Serialised straight from the floats: a `Value` per float would cost 8x their size.
#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: &'a str,
    usage: Value,
}

#[derive(Serialize)]
struct EmbeddingItem {
    object: &'static str,
    index: usize,
    embedding: Embedding,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Embedding {
    Floats(Vec<f32>),
    Base64(String),
}

/// A deterministic unit vector derived from the text (FNV-1a seeded per dimension).
fn vector(text: &str, dims: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dims)
        .map(|d| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (d as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for b in text.bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::EPSILON);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// The text of the last `user` message (string content, or the text parts joined), cut to
/// [`MAX_ECHO_BYTES`].
pub fn last_user_text(body: &Map<String, Value>) -> String {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else { return String::new() };
    let Some(msg) = messages.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user")) else {
        return String::new();
    };
    let mut text = content_text(msg.get("content"));
    if text.len() > MAX_ECHO_BYTES {
        let cut = (0..=MAX_ECHO_BYTES).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        text.truncate(cut);
    }
    text
}

fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" ")
        }
        _ => String::new(),
    }
}

/// Splits a reply into stream pieces: each word keeps its following whitespace, so the
/// concatenated stream equals the non-stream reply exactly.
fn split_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            in_space = true;
        } else if in_space && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            in_space = false;
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Words in `text`, as [`split_words`] would cut it, without building them.
fn count_words(text: &str) -> usize {
    let mut count = 0;
    let mut in_word = false;
    for c in text.chars() {
        let word = !c.is_whitespace();
        if word && !in_word {
            count += 1;
        }
        in_word = word;
    }
    count
}

/// The stream's content pieces: one per word, or, past [`MAX_STREAM_CHUNKS`] words, as many
/// consecutive words per piece as keeps the count within it. They join to `text` exactly.
fn stream_pieces(text: &str) -> Vec<String> {
    let words = split_words(text);
    let per = words.len().div_ceil(MAX_STREAM_CHUNKS).max(1);
    if per == 1 {
        return words;
    }
    words.chunks(per).map(<[String]>::concat).collect()
}

fn prompt_tokens(body: &Map<String, Value>) -> u64 {
    body.get("messages")
        .and_then(Value::as_array)
        .map_or(0, |msgs| msgs.iter().map(|m| 3 + count_words(&content_text(m.get("content"))) as u64).sum())
}

fn usage(prompt: u64, completion: u64) -> Value {
    json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion })
}

fn completion_id() -> String {
    format!("chatcmpl-mock-{:016x}", fastrand::u64(..))
}

/// The request's body tree (parsed by [`Mock::call`] before any helper runs).
fn tree(req: &ProviderRequest) -> &Map<String, Value> {
    static EMPTY: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);
    req.body.parsed().unwrap_or(&EMPTY)
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::JsonBody;

    fn req(body: Value, stream: bool) -> ProviderRequest {
        ProviderRequest {
            endpoint: crate::format::Endpoint::OPENAI_CHAT,
            model: "mock-1".into(),
            body: JsonBody::from_map(body.as_object().unwrap().clone()),
            stream,
            secrets: Default::default(),
            affinity: crate::affinity::Affinity::NONE,
            trace: Default::default(),
        }
    }

    #[test]
    fn echoes_last_user_message() {
        let r = req(
            json!({"messages": [{"role":"user","content":"first"},{"role":"assistant","content":"x"},{"role":"user","content":"hello there"}]}),
            false,
        );
        let v: Value = serde_json::from_slice(&chat_completion(&r).0).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "hello there");
        assert_eq!(v["usage"]["completion_tokens"], 2);
        assert_eq!(v["model"], "mock-1");
    }

    #[test]
    fn stream_pieces_join_to_reply() {
        assert_eq!(split_words("a  b c ").concat(), "a  b c ");
        assert_eq!(split_words("hello world").len(), 2);
        for text in ["a  b c ", " lead", "", "x\ty\nz"] {
            assert_eq!(count_words(text), split_words(text).iter().filter(|w| !w.trim().is_empty()).count());
        }
    }

    #[test]
    fn long_replies_stream_in_bounded_pieces() {
        let text = "ab ".repeat(5 * MAX_STREAM_CHUNKS + 3);
        let pieces = stream_pieces(&text);
        assert!(pieces.len() <= MAX_STREAM_CHUNKS, "{} pieces", pieces.len());
        assert_eq!(pieces.concat(), text);
        assert_eq!(stream_pieces("hello there").len(), 2);
    }

    #[test]
    fn echo_is_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_ECHO_BYTES);
        let reply = last_user_text(json!({"messages": [{"role": "user", "content": long}]}).as_object().unwrap());
        assert!(reply.len() <= MAX_ECHO_BYTES && reply.len() > MAX_ECHO_BYTES - 4, "{}", reply.len());
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = vector("x", 16);
        assert_eq!(a, vector("x", 16));
        assert_ne!(a, vector("y", 16));
        let n: f32 = a.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-4);
    }
}
