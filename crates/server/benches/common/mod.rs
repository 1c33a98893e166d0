//! Shared by the criterion benches.

use serde_json::{Value, json};

/// The request body `scripts/bench.sh` sends (1,085 bytes as compact JSON: a system and a user
/// message, `max_tokens`, `temperature`).
pub fn bench_chat_body() -> Value {
    json!({
        "model": "bench-1",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": format!("Summarise: {}", "lorem ipsum dolor sit amet ".repeat(34))},
        ],
        "max_tokens": 200,
        "temperature": 0.7,
    })
}
