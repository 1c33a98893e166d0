//! HTTP helpers for talking to `weir`: request bodies, replies with their OpenAI error fields,
//! an SSE reader, and a Prometheus text lookup.

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Value, json};

/// Longest any single test request may take before the test fails instead of hanging.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A client for 127.0.0.1 (no proxy from the environment, bounded per request).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(REQUEST_TIMEOUT).build().unwrap()
}

/// A chat completion body with one user message.
pub fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// A finished response: status, headers and the whole body.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body text.
    pub text: String,
}

impl Reply {
    /// Reads a whole response.
    pub async fn read(resp: reqwest::Response) -> Self {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        Self { status, headers, text }
    }

    /// The body as JSON.
    ///
    /// # Panics
    /// If it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// A header as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `error.code` of an OpenAI-style error body, checking the body has the full error shape.
    pub fn error_code(&self) -> String {
        let v = self.json();
        let e = &v["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "no error.message in {v}");
        assert!(e["type"].is_string() && e.get("param").is_some(), "not an OpenAI error body: {v}");
        e["code"].as_str().unwrap_or_else(|| panic!("no error.code in {v}")).to_owned()
    }

    /// `error.message`.
    pub fn error_message(&self) -> String {
        self.json()["error"]["message"].as_str().unwrap_or_default().to_owned()
    }

    /// `error.param`.
    pub fn error_param(&self) -> Option<String> {
        self.json()["error"]["param"].as_str().map(str::to_owned)
    }
}

/// POSTs JSON to `url` and reads the whole reply.
pub async fn post(url: &str, body: &Value) -> Reply {
    Reply::read(client().post(url).json(body).send().await.unwrap()).await
}

/// Reads `data:` payloads from an SSE response as they arrive.
pub struct SseReader {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl SseReader {
    /// Wraps a streaming response.
    pub fn new(resp: reqwest::Response) -> Self {
        Self { stream: resp.bytes_stream().boxed(), buf: Vec::new() }
    }

    /// The next event's data, `None` at the end of the body.
    ///
    /// # Panics
    /// On a transport error or if nothing arrives within [`REQUEST_TIMEOUT`].
    pub async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buf.drain(..pos + 2).collect();
                let text = String::from_utf8(event).unwrap();
                let data = text.trim_end().strip_prefix("data: ").unwrap_or_else(|| panic!("not a data event: {text}"));
                return Some(data.to_owned());
            }
            let next = tokio::time::timeout(REQUEST_TIMEOUT, self.stream.next()).await.expect("stream stalled");
            match next {
                Some(Ok(bytes)) => self.buf.extend_from_slice(&bytes),
                Some(Err(e)) => panic!("stream failed: {e}"),
                None => {
                    assert!(
                        self.buf.is_empty(),
                        "stream ended inside an event: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    );
                    return None;
                }
            }
        }
    }

    /// Every remaining event.
    pub async fn rest(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await {
            out.push(e);
        }
        out
    }
}

/// Sum of the Prometheus samples named `name` whose labels include all of `labels`
/// (0 when there is none).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}
