//! A stream cut after its first byte, on a route with `stream_resume = "continue"`: the next
//! fallback is asked the same request with the text so far as an assistant message, and the
//! client gets one stream (one id, one start, one end). A fallback that refuses the prefill,
//! no step left, or a route not opted in: the stream ends with the front door's error event.

use serde_json::{Value, json};

use crate::support::anthropic::{self, MockAnthropic};
use crate::support::otlp::OtlpReceiver;
use crate::support::{MockUpstream, SseReader, Weir, chat, client, metric, weir_check};

/// The primary's stream: `c0 c1 ` reach the client, then the connection drops.
const CUT: &str = "m;chunks=4;cut_at=2";

/// Providers `a` and `b` in front of `up`, without retries, and model `gpt` routed to `a`
/// (`CUT`) with `b` (`fallback`) only as its fallback; `resume` is the route's line.
async fn start(up: &MockUpstream, fallback: &str, resume: &str) -> Weir {
    start_with(up, CUT, "", fallback, resume).await
}

/// [`start`] with `a` asked `primary`, `pool` lines in its pool table.
async fn start_with(up: &MockUpstream, primary: &str, pool: &str, fallback: &str, resume: &str) -> Weir {
    let no_retries = "[providers.retry]\nmax_retries = 0";
    let a = up.provider_toml("a", "discover_models = false", &format!("{pool}\n{no_retries}"));
    let b = up.provider_toml("b", "discover_models = false", no_retries);
    let route = format!(
        "[[routes]]\nmodel = \"gpt\"\n{resume}\ntargets = [{{ provider = \"a\", model = \"{primary}\" }}, \
         {{ provider = \"b\", model = \"{fallback}\", weight = 0 }}]\n"
    );
    Weir::start(&format!("[[events.sinks]]\nkind = \"stdout\"\n\n{a}\n{b}\n{route}")).await
}

/// A streamed OpenAI chat for `gpt`: the request id and the events' data.
async fn stream_openai(weir: &Weir, fallbacks: Option<&str>) -> (String, Vec<String>) {
    let mut body = chat("gpt", "hello");
    body["stream"] = json!(true);
    let mut req = client().post(weir.url("/v1/chat/completions")).json(&body);
    if let Some(f) = fallbacks {
        req = req.header("x-weir-fallbacks", f);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    (id, SseReader::new(resp).rest().await)
}

/// The text the chunks carry, and their distinct ids.
fn text_and_ids(events: &[String]) -> (String, Vec<String>) {
    let (mut text, mut ids) = (String::new(), Vec::new());
    for e in events.iter().filter(|e| *e != "[DONE]") {
        let v: Value = serde_json::from_str(e).unwrap();
        if let Some(id) = v["id"].as_str().filter(|id| !ids.iter().any(|i| i == id)) {
            ids.push(id.to_owned());
        }
        text.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
    }
    (text, ids)
}

/// The request record of request `id` on the stdout sink (waits up to 5 s).
async fn record(weir: &Weir, id: &str) -> Value {
    for _ in 0..250 {
        let found = (weir.logs().lines())
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|r| r["id"] == id && r["attempts"].is_u64());
        if let Some(r) = found {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no record for {id}:\n{}", weir.logs());
}

#[tokio::test]
async fn a_cut_openai_stream_continues_on_the_fallback_as_one_stream() {
    let up = MockUpstream::start().await;
    let weir = start(&up, "m;prefill", "stream_resume = \"continue\"").await;
    let (id, events) = stream_openai(&weir, None).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    assert!(!events.iter().any(|e| e.contains("\"error\"")), "{events:?}");
    let (text, ids) = text_and_ids(&events);
    assert_eq!(text, "c0 c1 r0 r1 ", "the text so far, then the fallback's continuation");
    assert_eq!(ids, ["chatcmpl-up"], "one id: the fallback's chunks carry the start's");
    assert_eq!(events.iter().filter(|e| e.contains("finish_reason\":\"stop")).count(), 1, "{events:?}");

    let chats = up.chats();
    assert_eq!(chats.iter().map(|s| s.model()).collect::<Vec<_>>(), [CUT, "m;prefill"]);
    let messages = chats[1].body["messages"].as_array().unwrap().clone();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!((messages[0]["role"].as_str(), messages[0]["content"].as_str()), (Some("user"), Some("hello")));
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["content"], "c0 c1 ", "the prefill is exactly the text the client got");

    let r = record(&weir, &id).await;
    assert_eq!((r["attempts"].as_u64(), r["status"].as_u64()), (Some(2), Some(200)), "{r}");
    assert_eq!(r["provider"], "b", "the provider that finished the answer: {r}");
    let metrics = weir.metrics().await;
    let resumes = |outcome| metric(&metrics, "weir_stream_resumes_total", &[("provider", "a"), ("outcome", outcome)]);
    assert_eq!((resumes("continued"), resumes("refused")), (1.0, 0.0));
    assert!(metrics.contains("# HELP weir_stream_resumes_total"), "described");
}

#[tokio::test]
async fn a_stream_stalled_past_the_idle_timeout_continues_on_the_fallback() {
    let up = MockUpstream::start().await;
    let stalled = "m;chunks=4;hold_after=2";
    let pool = "idle_timeout = \"300ms\"\nrequest_timeout = \"10s\"";
    let weir = start_with(&up, stalled, pool, "m;prefill", "stream_resume = \"continue\"").await;
    let (_, events) = stream_openai(&weir, None).await;
    up.release();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    assert_eq!(text_and_ids(&events), ("c0 c1 r0 r1 ".to_owned(), vec!["chatcmpl-up".to_owned()]));
    assert_eq!(up.chats()[1].body["messages"][1]["content"], "c0 c1 ");
    let metrics = weir.metrics().await;
    assert_eq!(metric(&metrics, "weir_timeouts_total", &[("provider", "a"), ("phase", "idle")]), 1.0);
}

#[tokio::test]
async fn a_fallback_that_refuses_assistant_prefill_leaves_the_error_event() {
    let up = MockUpstream::start().await;
    let weir = start(&up, "m;no_prefill", "stream_resume = \"continue\"").await;
    let (id, events) = stream_openai(&weir, None).await;
    assert!(!events.iter().any(|e| e == "[DONE]"), "never a clean end: {events:?}");
    assert!(events.last().unwrap().contains("\"error\""), "{events:?}");
    assert_eq!(text_and_ids(&events[..events.len() - 1]).0, "c0 c1 ");
    let chats = up.chats();
    assert_eq!(chats.iter().map(|s| s.model()).collect::<Vec<_>>(), [CUT, "m;no_prefill"], "one attempt on b");
    assert_eq!(chats[1].body["messages"].as_array().unwrap().last().unwrap()["role"], "assistant");
    let r = record(&weir, &id).await;
    assert_eq!(r["attempts"].as_u64(), Some(2), "{r}");
    assert_ne!(r["status"].as_u64(), Some(200), "{r}");
    let metrics = weir.metrics().await;
    let resumes = |outcome| metric(&metrics, "weir_stream_resumes_total", &[("provider", "a"), ("outcome", outcome)]);
    assert_eq!((resumes("refused"), resumes("continued")), (1.0, 0.0));

    // No step left (the request's own fallbacks name only the provider and model that failed).
    let (_, events) = stream_openai(&weir, Some(&format!("a/{CUT}"))).await;
    assert!(events.last().unwrap().contains("\"error\""), "{events:?}");
    assert_eq!(up.chats().len(), 3, "nothing more was asked");
    let metrics = weir.metrics().await;
    assert_eq!(metric(&metrics, "weir_stream_resumes_total", &[("outcome", "none_left")]), 1.0);
}

#[tokio::test]
async fn a_route_not_opted_in_ends_a_cut_stream_with_the_error_event() {
    let up = MockUpstream::start().await;
    let weir = start(&up, "m;prefill", "").await;
    let (_, events) = stream_openai(&weir, None).await;
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    assert!(events.last().unwrap().contains("\"error\""), "{events:?}");
    assert_eq!(up.chats().len(), 1, "no fallback was asked");
    let metrics = weir.metrics().await;
    assert_eq!(metric(&metrics, "weir_stream_resumes_total", &[]), 0.0);
}

#[tokio::test]
async fn an_anthropic_stream_continues_with_one_message_start_and_one_message_stop() {
    let up = MockUpstream::start().await;
    let weir = start(&up, "m;prefill", "stream_resume = \"continue\"").await;
    let body = json!({"model": "gpt", "max_tokens": 50, "stream": true,
                      "messages": [{"role": "user", "content": "hello"}]});
    let resp = client().post(weir.url("/v1/messages")).json(&body).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let sse = resp.text().await.unwrap();
    let events: Vec<(String, Value)> = (sse.split("\n\n").filter(|e| !e.trim().is_empty()))
        .map(|e| {
            let name = e.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or_else(|| panic!("{e}"));
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or_else(|| panic!("{e}"));
            (name.to_owned(), serde_json::from_str(data).unwrap())
        })
        .collect();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let count = |n: &str| names.iter().filter(|m| **m == n).count();
    assert_eq!((count("message_start"), count("message_stop"), count("error")), (1, 1, 0), "{names:?}");
    assert_eq!(count("content_block_start"), 1, "the text block goes on: {names:?}");
    assert_eq!(names.last(), Some(&"message_stop"));
    let text: String = (events.iter())
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "c0 c1 r0 r1 ");
    let last = up.chats()[1].body["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["role"].as_str(), last["content"].as_str()), (Some("assistant"), Some("c0 c1 ")), "{last}");
}

/// Model `claude` routed to the Anthropic mock (`primary`), with the OpenAI mock's `m;prefill`
/// on provider `b` as its fallback; an Anthropic client's stream, as `(event, data)` pairs.
async fn anthropic_cut(primary: &str) -> (MockAnthropic, MockUpstream, Vec<(String, Value)>) {
    let (an, up) = (MockAnthropic::start().await, MockUpstream::start().await);
    let no_retries = "[providers.retry]\nmax_retries = 0";
    let config = format!(
        "{}{}\n[[routes]]\nmodel = \"claude\"\nstream_resume = \"continue\"\n\
         targets = [{{ provider = \"an\", model = \"{primary}\" }}, {{ provider = \"b\", model = \"m;prefill\", weight = 0 }}]\n",
        an.provider_toml("an", no_retries),
        up.provider_toml("b", "discover_models = false", no_retries),
    );
    let weir = Weir::start(&config).await;
    let body = json!({"model": "claude", "max_tokens": 50, "stream": true,
                      "messages": [{"role": "user", "content": "hello"}]});
    let resp = client().post(weir.url("/v1/messages")).json(&body).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let events = anthropic::events(&resp.text().await.unwrap());
    (an, up, events)
}

#[tokio::test]
async fn an_anthropic_upstream_cut_before_message_stop_continues_in_a_new_block_on_an_openai_fallback() {
    let (_an, up, events) = anthropic_cut("claude;cut").await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let count = |n: &str| names.iter().filter(|m| **m == n).count();
    assert_eq!((count("message_start"), count("message_stop"), count("error")), (1, 1, 0), "{names:?}");
    // The upstream closed block 0 before the cut: the continuation is block 1.
    let starts: Vec<u64> = (events.iter())
        .filter(|(n, _)| n == "content_block_start")
        .map(|(_, d)| d["index"].as_u64().unwrap())
        .collect();
    assert_eq!(starts, [0, 1], "{names:?}");
    let text: String = (events.iter())
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, format!("{}r0 r1 ", anthropic::TEXT.concat()));
    let last = up.chats()[0].body["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["content"], anthropic::TEXT.concat(), "the prefill, as an OpenAI assistant message: {last}");
}

#[tokio::test]
async fn a_stream_cut_inside_a_tool_call_is_not_continued() {
    let (_an, up, events) = anthropic_cut("claude;tools;cut").await;
    assert_eq!(events.last().map(|(n, _)| n.as_str()), Some("error"), "{events:?}");
    assert!(!events.iter().any(|(n, _)| n == "message_stop"), "never a clean end: {events:?}");
    assert!(up.chats().is_empty(), "no fallback was asked");
}

#[test]
fn weir_check_names_stream_resume_when_a_route_has_nowhere_to_continue_or_a_bad_value() {
    let provider = "[[providers]]\nname = \"a\"\nkind = \"mock\"\nmodels = [\"m\"]\n";
    let route =
        |line: &str| format!("{provider}[[routes]]\nmodel = \"gpt\"\n{line}\ntargets = [{{ provider = \"a\" }}]\n");
    for line in ["stream_resume = \"continue\"", "stream_resume = \"restart\""] {
        let out = weir_check(&route(line), &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{line} was accepted");
        assert!(stderr.contains("stream_resume"), "{line}: {stderr}");
    }
    let ok = weir_check(&format!("{}[fallbacks]\ngpt = [\"a/m2\"]\n", route("stream_resume = \"continue\"")), &[]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}

#[tokio::test]
async fn the_continuations_attempt_is_a_child_of_the_request_span_numbered_after_the_first() {
    let (up, otlp) = (MockUpstream::start().await, OtlpReceiver::start().await);
    let no_retries = "[providers.retry]\nmax_retries = 0";
    let config = format!(
        "{}{}\n[[routes]]\nmodel = \"gpt\"\nstream_resume = \"continue\"\n\
         targets = [{{ provider = \"a\", model = \"{CUT}\" }}, {{ provider = \"b\", model = \"m;prefill\", weight = 0 }}]\n\
         [tracing]\nendpoint = \"{}\"\nexport_interval = \"50ms\"\n",
        up.provider_toml("a", "discover_models = false", no_retries),
        up.provider_toml("b", "discover_models = false", no_retries),
        otlp.endpoint(),
    );
    let weir = Weir::start(&config).await;
    let trace = "0123456789abcdef0123456789abcd01";
    let mut body = chat("gpt", "hello");
    body["stream"] = json!(true);
    let req = client()
        .post(weir.url("/v1/chat/completions"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"));
    let events = SseReader::new(req.json(&body).send().await.unwrap()).rest().await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");

    let spans = otlp.wait_for(trace, "weir.request").await;
    let request = spans.iter().find(|s| s.name == "weir.request").unwrap();
    let mut attempts: Vec<_> = spans.iter().filter(|s| s.name == "weir.upstream_attempt").collect();
    attempts.sort_by_key(|s| s.attrs["weir.attempt"].clone());
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    assert!(attempts.iter().all(|a| a.parent_id == request.span_id), "{attempts:#?}");
    let numbered: Vec<(&str, &str)> =
        attempts.iter().map(|a| (a.attrs["weir.attempt"].as_str(), a.attrs["weir.provider"].as_str())).collect();
    assert_eq!(numbered, [("1", "a"), ("2", "b")]);
}
