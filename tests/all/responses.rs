//! The OpenAI Responses front door (`POST /v1/responses`): the client's bytes straight to an
//! OpenAI provider (`/responses`, events relayed as they are), and translated for any other
//! provider, whole and streamed, tools included; its errors in OpenAI's shape.

use serde_json::{Value, json};

use crate::support::anthropic::{MockAnthropic, TEXT, USAGE};
use crate::support::plugins::plugin_toml;
use crate::support::{MockUpstream, Reply, Weir, client, metric, post};

/// `(event name, data)` of each event of a Responses stream, checking the name is the type.
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut lines = e.lines();
            let name = lines.next().and_then(|l| l.strip_prefix("event: ")).expect("event line").to_owned();
            let data: Value =
                serde_json::from_str(lines.next().and_then(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
            assert_eq!(data["type"], name.as_str(), "{e}");
            (name, data)
        })
        .collect()
}

async fn stream(weir: &Weir, body: &Value) -> (u16, String) {
    let resp = client().post(weir.url("/v1/responses")).json(body).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn an_openai_provider_gets_the_clients_bytes_and_its_events_come_back_as_they_are() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&up.provider_toml("oai", "models = [\"gpt-4.1\"]", "")).await;

    // Key order and spacing a re-serialisation would change.
    let raw = r#"{"model":"gpt-4.1", "input":"Hi there", "store":false,"reasoning":{"effort":"low"}}"#;
    let resp = client()
        .post(weir.url("/v1/responses"))
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    let reply = Reply::read(resp).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["output"][0]["content"][0]["text"], "Hi there");
    let seen = up.seen_on("/v1/responses");
    assert_eq!(seen[0].raw, raw, "the client's bytes go upstream unchanged");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer sk-test-key"));

    let (status, text) = stream(&weir, &json!({"model": "gpt-4.1", "input": "one two three", "stream": true})).await;
    assert_eq!(status, 200, "{text}");
    let events = events(&text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"response.created"));
    assert_eq!(names.last(), Some(&"response.completed"), "ends with its own last event, no [DONE]: {text}");
    assert!(!text.contains("[DONE]"));
    let deltas: String = events.iter().filter_map(|(_, d)| d["delta"].as_str()).collect();
    assert_eq!(deltas, "one two three");

    // Tokens counted from the last event's usage.
    let m = weir.metrics().await;
    let tokens = |kind| metric(&m, "weir_tokens_total", &[("provider", "oai"), ("kind", kind)]);
    assert_eq!((tokens("prompt"), tokens("completion"), tokens("cached")), (14.0, 6.0, 4.0), "{m}");
    let count = metric(&m, "weir_requests_total", &[("provider", "oai"), ("endpoint", "responses"), ("status", "200")]);
    assert_eq!(count, 2.0, "{m}");

    // Stored responses are relayed by id.
    let resp = client().get(weir.url("/v1/responses/resp_abc")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.seen().last().unwrap().path, "/v1/responses/resp_abc");
}

#[tokio::test]
async fn an_anthropic_provider_answers_a_responses_client_whole_and_streamed() {
    let up = MockAnthropic::start().await;
    let weir = Weir::start(&up.provider_toml("ant", "models = [\"claude-mock-1\"]\ndefault_max_tokens = 512")).await;

    let body = json!({
        "model": "claude-mock-1",
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Hello?"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}]},
        ],
        "max_output_tokens": 100,
        "temperature": 0.2,
    });
    let reply = post(&weir.url("/v1/responses"), &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let answer = reply.json();
    assert_eq!(answer["object"], "response");
    assert_eq!(answer["status"], "completed");
    assert_eq!(answer["output"][0]["type"], "message");
    assert_eq!(answer["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(answer["output"][0]["content"][0]["text"], TEXT.concat());
    let (input, output, read, write) = USAGE;
    assert_eq!(answer["usage"]["input_tokens"], input + read + write);
    assert_eq!(answer["usage"]["output_tokens"], output);
    assert_eq!(answer["usage"]["input_tokens_details"]["cached_tokens"], read);
    let sent = &up.messages()[0].body;
    assert_eq!(sent["system"], "Be brief.", "{sent}");
    assert_eq!(sent["max_tokens"], 100);
    assert_eq!(sent["messages"][0]["content"][1]["source"]["type"], "base64", "{sent}");

    let (status, text) = stream(&weir, &json!({"model": "claude-mock-1", "input": "Hi", "stream": true})).await;
    assert_eq!(status, 200, "{text}");
    let events = events(&text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ],
        "{text}"
    );
    let seqs: Vec<u64> = events.iter().map(|(_, d)| d["sequence_number"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    let done = &events.last().unwrap().1["response"];
    assert_eq!(done["output"][0]["content"][0]["text"], TEXT.concat());
    assert_eq!(done["usage"]["output_tokens"], output);
}

#[tokio::test]
async fn tools_translate_both_ways_for_a_responses_client() {
    let up = MockAnthropic::start().await;
    let weir = Weir::start(&up.provider_toml("ant", "models = [\"claude-mock-1;tools\"]")).await;

    let body = json!({
        "model": "claude-mock-1;tools",
        "input": [
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        ],
        "tools": [{"type": "function", "name": "get_weather", "description": "Weather by city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": "auto",
    });
    let reply = post(&weir.url("/v1/responses"), &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let sent = &up.messages()[0].body;
    assert_eq!(sent["tools"][0]["name"], "get_weather", "{sent}");
    assert_eq!(sent["tools"][0]["input_schema"]["type"], "object");
    assert_eq!(sent["messages"][1]["content"][0]["type"], "tool_use", "{sent}");
    assert_eq!(sent["messages"][2]["content"][0]["type"], "tool_result", "{sent}");
    assert_eq!(sent["messages"][2]["content"][0]["tool_use_id"], "call_1");
    let output = reply.json()["output"].clone();
    let call = output.as_array().unwrap().iter().find(|i| i["type"] == "function_call").expect("a function call");
    assert!(!call["call_id"].as_str().unwrap().is_empty());
    assert!(serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).is_ok(), "{call}");

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (status, text) = stream(&weir, &streamed).await;
    assert_eq!(status, 200, "{text}");
    let events = events(&text);
    let args: String = events
        .iter()
        .filter(|(n, _)| n == "response.function_call_arguments.delta")
        .filter_map(|(_, d)| d["delta"].as_str())
        .collect();
    assert!(serde_json::from_str::<Value>(&args).is_ok(), "the argument fragments join into JSON: {args}");
    assert!(events.iter().any(|(n, d)| n == "response.output_item.done" && d["item"]["type"] == "function_call"));
}

#[tokio::test]
async fn what_another_provider_cannot_do_is_refused_naming_it_and_bad_bodies_get_400() {
    let up = MockAnthropic::start().await;
    let weir = Weir::start(&up.provider_toml("ant", "models = [\"claude-mock-1\"]")).await;

    for (body, param) in [
        (json!({"model": "claude-mock-1", "input": "x", "previous_response_id": "resp_1"}), "previous_response_id"),
        (json!({"model": "claude-mock-1", "input": "x", "tools": [{"type": "web_search"}]}), "tools[0].type"),
        (json!({"model": "claude-mock-1", "input": "x", "text": {"format": {"type": "json_object"}}}), "text.format"),
        (json!({"model": "claude-mock-1"}), "input"),
        (json!({"model": "claude-mock-1", "input": 5}), "input"),
        (json!({"model": "claude-mock-1", "input": "x", "temperature": 3}), "temperature"),
        (json!({"input": "x"}), "model"),
    ] {
        let reply = post(&weir.url("/v1/responses"), &body).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text);
        assert!(reply.text.contains(param), "{body} names {param}: {}", reply.text);
        assert!(reply.json()["error"]["message"].is_string(), "OpenAI's error shape: {}", reply.text);
    }
    assert!(up.messages().is_empty(), "nothing refused went upstream");
}

#[tokio::test]
async fn prompt_guard_and_pii_redact_work_on_responses_requests_answers_and_streams() {
    let up = MockAnthropic::start().await;
    let mut config = up.provider_toml("ant", r#"models = ["claude-x", "claude-x;pii"]"#);
    config +=
        &plugin_toml("prompt-guard", "prompt-guard", r#"config = { deny_keywords = ["forbidden"], max_tokens = 100 }"#);
    config += &plugin_toml("pii-redact", "pii-redact", "config = { responses = true, streams = true }");
    let weir = Weir::start(&config).await;

    let body = json!({"model": "claude-x", "instructions": "the operator is bob@example.com",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "mail me at jane@example.com"}]}]});
    let reply = post(&weir.url("/v1/responses"), &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let sent = String::from_utf8_lossy(&up.messages()[0].raw).into_owned();
    assert!(!sent.contains("jane@example.com") && !sent.contains("bob@example.com"), "{sent}");

    for body in [
        json!({"model": "claude-x", "input": "this is forbidden"}),
        json!({"model": "claude-x", "instructions": "forbidden", "input": "fine"}),
        // The Responses API's name for the output-token limit.
        json!({"model": "claude-x", "input": "fine", "max_output_tokens": 1000}),
    ] {
        let refused = post(&weir.url("/v1/responses"), &body).await;
        assert_eq!(refused.status, 400, "{body}: {}", refused.text);
    }
    assert_eq!(up.messages().len(), 1);

    let reply = post(&weir.url("/v1/responses"), &json!({"model": "claude-x;pii", "input": "hi"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(!reply.text.contains("ops@example.com"), "{}", reply.text);
    assert!(reply.json()["output"][0]["content"][0]["text"].as_str().unwrap().starts_with("Mail "));

    let (status, text) = stream(&weir, &json!({"model": "claude-x;pii", "input": "hi", "stream": true})).await;
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains("ops@example.com"), "not in deltas, done events or the last event: {text}");
    assert!(text.contains("event: response.completed"), "{text}");
}
