//! The built-in `mock` provider bounds what it builds from request values: embedding width
//! and total floats are refused past their caps with a 400 naming the field, and a long
//! prompt streams in a bounded number of chunks.

use serde_json::{Value, json};

use crate::support::{SseReader, Weir, client, post};

const CONFIG: &str = "[[providers]]\nname = \"mock\"\nkind = \"mock\"\nmodels = [\"m\"]\n";

#[tokio::test]
async fn mock_embeddings_refuse_dimensions_and_totals_past_their_caps() {
    let weir = Weir::start(CONFIG).await;
    let url = weir.url("/v1/embeddings");

    let reply = post(&url, &json!({"model": "m", "input": "a", "dimensions": 4096})).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (400, "invalid_request"), "{}", reply.text);
    assert_eq!(reply.error_param().as_deref(), Some("dimensions"), "{}", reply.text);

    // 4,000 one-letter inputs at 3,072 dimensions: 12.3 M floats from a 20 KB request.
    let inputs: Vec<&str> = vec!["a"; 4000];
    let reply = post(&url, &json!({"model": "m", "input": inputs, "dimensions": 3072})).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (400, "invalid_request"), "{}", reply.text);
    assert_eq!(reply.error_param().as_deref(), Some("input"), "{}", reply.text);

    // At the caps the mock still answers.
    let reply = post(&url, &json!({"model": "m", "input": "a", "dimensions": 3072})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["data"][0]["embedding"].as_array().map(Vec::len), Some(3072));
    let reply = post(&url, &json!({"model": "m", "input": vec!["a"; 325], "dimensions": 3072})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(weir.rss_bytes() < 512 * 1024 * 1024, "rss {} bytes", weir.rss_bytes());
}

#[tokio::test]
async fn mock_streams_a_long_prompt_in_a_bounded_number_of_chunks() {
    let weir = Weir::start(CONFIG).await;
    let text = "a ".repeat(20_000);
    let body = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": text}]});
    let resp = client().post(weir.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let events = SseReader::new(resp).rest().await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(events.len() <= 1024 + 3, "{} events for 20,000 words", events.len());
    let joined: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(joined, text, "the pieces still join to the whole reply");
}
