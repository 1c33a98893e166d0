//! The audit line, independent of the plugin ABI (unit-tested natively). Never contains
//! prompt or answer text, nor any header outside the allow-list (credentials are removed by
//! the gateway before plugins run anyway).

use serde::Deserialize;
use serde_json::{Map, Value, json};

/// `[plugins.config]` of `request-log`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Client headers copied into the line (lower-case names).
    pub headers: Vec<String>,
    /// Log level: `debug`, `info` or `warn`.
    pub level: String,
    /// Also log a line per response (status, token usage).
    pub responses: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self { headers: vec!["user-agent".into()], level: "info".into(), responses: true }
    }
}

/// What the request line says.
pub struct RequestFacts<'a> {
    /// Request id.
    pub id: &'a str,
    /// The API format the client spoke, e.g. `openai`.
    pub api_format: &'a str,
    /// What was asked: `chat` or `embeddings`.
    pub operation: &'a str,
    /// Model requested.
    pub model: &'a str,
    /// Provider it routes to, if known.
    pub provider: Option<&'a str>,
    /// Stream flag.
    pub stream: bool,
    /// Message count.
    pub messages: usize,
    /// Prompt size in characters.
    pub prompt_chars: usize,
    /// Allow-listed headers present.
    pub headers: Vec<(String, String)>,
}

/// The JSON request line.
pub fn request_line(f: &RequestFacts<'_>) -> String {
    let headers: Map<String, Value> = f.headers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    json!({
        "event": "request",
        "request_id": f.id,
        "api_format": f.api_format,
        "operation": f.operation,
        "model": f.model,
        "provider": f.provider,
        "stream": f.stream,
        "messages": f.messages,
        "prompt_chars": f.prompt_chars,
        "headers": headers,
    })
    .to_string()
}

/// The JSON response line; `usage` is the response's `usage` object, if any.
pub fn response_line(id: &str, model: &str, provider: Option<&str>, status: u16, usage: Option<&Value>) -> String {
    let n = |k: &str| usage.and_then(|u| u.get(k)).and_then(Value::as_u64);
    json!({
        "event": "response",
        "request_id": id,
        "model": model,
        "provider": provider,
        "status": status,
        "prompt_tokens": n("prompt_tokens"),
        "completion_tokens": n("completion_tokens"),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_has_metadata_only() {
        let line = request_line(&RequestFacts {
            id: "r1",
            api_format: "openai",
            operation: "chat",
            model: "m",
            provider: Some("mock"),
            stream: false,
            messages: 2,
            prompt_chars: 11,
            headers: vec![("user-agent".into(), "curl".into())],
        });
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["request_id"], "r1");
        assert_eq!((&v["api_format"], &v["operation"]), (&json!("openai"), &json!("chat")));
        assert_eq!(v["headers"]["user-agent"], "curl");
        assert_eq!(v["prompt_chars"], 11);
    }

    #[test]
    fn response_line_reads_usage() {
        let usage = json!({"prompt_tokens": 3, "completion_tokens": 5});
        let v: Value = serde_json::from_str(&response_line("r", "m", None, 200, Some(&usage))).unwrap();
        assert_eq!(v["completion_tokens"], 5);
        assert_eq!(v["provider"], Value::Null);
    }
}
