//! OpenTelemetry traces (`[tracing]`): the spans of real requests through the real binary,
//! received by a real OTLP/HTTP receiver on 127.0.0.1 (tests/support/otlp.rs), with the
//! client's trace context continued and Weir's upstream-attempt span named upstream.

use serde_json::json;

use crate::support::otlp::{OtlpReceiver, ReceivedSpan};
use crate::support::plugins::{plugin_toml, runtime_toml};
use crate::support::{MockUpstream, Reply, SseReader, Weir, chat, client};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn traceparent(trace: &str) -> String {
    format!("00-{trace}-{CLIENT_SPAN}-01")
}

/// A provider `up` in front of `up` with short retry backoffs, then `[tracing]` sending to
/// `otlp` every 50 ms with `more` lines.
fn config(up: &MockUpstream, otlp: &OtlpReceiver, more: &str) -> String {
    let pool = "request_timeout = \"2s\"\n[providers.retry]\nbase_backoff = \"5ms\"\nmax_backoff = \"20ms\"\n";
    format!(
        "{}\n[tracing]\nendpoint = \"{}\"\nservice_name = \"weir-test\"\nexport_interval = \"50ms\"\n{more}\n",
        up.provider_toml("up", "discover_models = false", pool),
        otlp.endpoint()
    )
}

async fn ask(weir: &Weir, model: &str, trace: &str) -> Reply {
    let req = client()
        .post(weir.url("/v1/chat/completions"))
        .header("traceparent", traceparent(trace))
        .header("tracestate", "vendor=abc")
        .json(&chat(model, "hello there"));
    Reply::read(req.send().await.unwrap()).await
}

fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name} in {spans:#?}");
    found[0]
}

#[tokio::test]
async fn a_requests_spans_reach_the_collector_as_children_of_the_clients_span() {
    let (up, otlp) = (MockUpstream::start().await, OtlpReceiver::start().await);
    let plugins = format!("{}{}", plugin_toml("noop", "noop", ""), runtime_toml());
    let weir = Weir::start(&format!("{}{plugins}", config(&up, &otlp, ""))).await;

    let reply = ask(&weir, "up/m", TRACE).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let spans = otlp.wait_for(TRACE, "weir.request").await;

    assert!(spans.iter().all(|s| s.service == "weir-test" && s.times.0 <= s.times.1), "{spans:#?}");
    let request = one(&spans, "weir.request");
    assert_eq!(request.parent_id, CLIENT_SPAN, "the client's span is the request span's parent");
    assert_eq!(request.kind, 2, "server span");
    assert_eq!(request.attrs["http.response.status_code"], "200");
    assert_eq!(request.attrs["http.route"], "/v1/chat/completions");
    assert_eq!(request.attrs["gen_ai.request.model"], "up/m");
    assert_eq!(request.attrs["gen_ai.usage.input_tokens"], "12");
    assert_eq!(request.attrs["weir.provider"], "up");
    for phase in ["weir.parse", "weir.plugin.on_request", "weir.route", "weir.upstream_attempt", "weir.relay"] {
        assert_eq!(one(&spans, phase).parent_id, request.span_id, "{phase} is a child of the request span");
    }
    assert_eq!(one(&spans, "weir.plugin.on_request").attrs["weir.plugin.name"], "noop");
    assert_eq!(one(&spans, "weir.plugin.on_response").parent_id, one(&spans, "weir.relay").span_id);
    let attempt = one(&spans, "weir.upstream_attempt");
    assert_eq!((attempt.kind, attempt.attrs["weir.attempt"].as_str()), (3, "1"), "client span, attempt 1");
    assert_eq!(attempt.attrs["gen_ai.system"], "openai");
    assert!(attempt.attrs.contains_key("weir.time_to_first_token_ms"), "{attempt:#?}");
    assert_eq!(one(&spans, "weir.queue_wait").parent_id, attempt.span_id);

    // Upstream, the trace goes on under Weir's attempt span, with the client's tracestate.
    let seen = &up.chats()[0];
    assert_eq!(seen.headers["traceparent"], format!("00-{TRACE}-{}-01", attempt.span_id).as_str());
    assert_eq!(seen.headers["tracestate"], "vendor=abc");
}

#[tokio::test]
async fn a_retried_request_has_one_attempt_span_per_attempt_each_named_upstream() {
    let (up, otlp) = (MockUpstream::start().await, OtlpReceiver::start().await);
    let weir = Weir::start(&config(&up, &otlp, "")).await;
    let trace = "0123456789abcdef0123456789abcdef";

    let reply = ask(&weir, "up/m;fail_times=1", trace).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let spans = otlp.wait_for(trace, "weir.request").await;

    let mut attempts: Vec<_> = spans.iter().filter(|s| s.name == "weir.upstream_attempt").collect();
    attempts.sort_by_key(|s| s.attrs["weir.attempt"].clone());
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    assert_eq!(attempts[0].attrs["http.response.status_code"], "500");
    assert_eq!(attempts[0].status, 2, "the failed attempt's status is an error");
    assert_eq!(attempts[1].attrs["http.response.status_code"], "200");
    let sent: Vec<_> = up.chats().iter().map(|s| s.headers["traceparent"].to_str().unwrap().to_owned()).collect();
    let named: Vec<_> = attempts.iter().map(|a| format!("00-{trace}-{}-01", a.span_id)).collect();
    assert_eq!(sent, named, "each attempt's traceparent names its own span");
    assert_ne!(one(&spans, "weir.request").status, 2, "the request itself succeeded");
}

#[tokio::test]
async fn a_streams_relay_span_ends_with_the_stream_and_the_attempt_notes_the_first_token() {
    let (up, otlp) = (MockUpstream::start().await, OtlpReceiver::start().await);
    let weir = Weir::start(&config(&up, &otlp, "")).await;
    let trace = "11111111111111112222222222222222";

    let mut body = chat("up/m;chunks=3;chunk_delay=30", "a b c");
    body["stream"] = json!(true);
    let resp = client()
        .post(weir.url("/v1/chat/completions"))
        .header("traceparent", traceparent(trace))
        .json(&body)
        .send()
        .await
        .unwrap();
    let mut sse = SseReader::new(resp);
    while sse.next().await.is_some() {}
    let spans = otlp.wait_for(trace, "weir.request").await;

    let attempt = one(&spans, "weir.upstream_attempt");
    assert!(attempt.events.iter().any(|e| e == "first_token"), "{attempt:#?}");
    let relay = one(&spans, "weir.relay");
    assert_eq!(relay.parent_id, one(&spans, "weir.request").span_id);
    // Three chunks 30 ms apart: the relay ends at the stream's end, well after the first token.
    assert!(relay.times.1 >= attempt.times.1 + 50_000_000, "relay {relay:#?} attempt {attempt:#?}");
}

#[tokio::test]
async fn with_ratio_zero_and_always_on_error_only_the_failed_request_is_exported() {
    let (up, otlp) = (MockUpstream::start().await, OtlpReceiver::start().await);
    let weir = Weir::start(&config(&up, &otlp, "sample_ratio = 0.0\nalways_on_error = true")).await;
    let (ok_trace, failed_trace) = ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");

    assert_eq!(ask(&weir, "up/m", ok_trace).await.status, 200);
    assert_eq!(ask(&weir, "up/m;status=400", failed_trace).await.status, 400);
    let spans = otlp.wait_for(failed_trace, "weir.request").await;

    let request = one(&spans, "weir.request");
    assert_eq!(request.status, 2, "{request:#?}");
    assert_eq!(request.attrs["http.response.status_code"], "400");
    assert!(request.attrs.contains_key("error.type"), "{request:#?}");
    assert_eq!(one(&spans, "weir.upstream_attempt").parent_id, request.span_id);
    // Spans go in the order requests end: the earlier, successful request would be there.
    assert!(otlp.spans().iter().all(|s| s.trace_id != ok_trace), "the successful request is not exported");
    // Unsampled, the traceparent sent upstream says so.
    let sent = up.chats()[1].headers["traceparent"].to_str().unwrap().to_owned();
    assert!(sent.starts_with(&format!("00-{failed_trace}-")) && sent.ends_with("-00"), "{sent}");
}

#[tokio::test]
async fn with_ratio_zero_alone_no_span_is_made_and_the_clients_traceparent_goes_upstream() {
    let (up, otlp) = (MockUpstream::start().await, OtlpReceiver::start().await);
    let weir = Weir::start(&config(&up, &otlp, "sample_ratio = 0.0")).await;

    assert_eq!(ask(&weir, "up/m;status=400", TRACE).await.status, 400);
    assert_eq!(ask(&weir, "up/m", TRACE).await.status, 200);
    assert_eq!(up.chats()[1].headers["traceparent"], traceparent(TRACE).as_str());
    // Three export intervals: anything queued would have been sent.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    assert_eq!(otlp.requests(), 0, "{:#?}", otlp.spans());
}

#[tokio::test]
async fn spans_still_queued_at_shutdown_are_sent_before_weir_exits() {
    let (up, otlp) = (MockUpstream::start().await, OtlpReceiver::start().await);
    // The interval alone would not send them before the test gives up.
    let cfg = config(&up, &otlp, "").replace("export_interval = \"50ms\"", "export_interval = \"60s\"");
    let mut weir = Weir::start(&cfg).await;
    let trace = "cccccccccccccccccccccccccccccccc";

    assert_eq!(ask(&weir, "up/m", trace).await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(otlp.requests(), 0, "nothing is sent before the interval");
    weir.sigterm();
    assert!(weir.wait_exit(std::time::Duration::from_secs(10)).await.success());
    assert!(otlp.spans().iter().any(|s| s.trace_id == trace && s.name == "weir.request"), "{:#?}", otlp.spans());
}

#[tokio::test]
async fn a_bad_tracing_value_is_refused_naming_its_key() {
    let (up, otlp) = (MockUpstream::start().await, OtlpReceiver::start().await);
    let out = crate::support::weir_check(&config(&up, &otlp, "sample_ratio = 2.0"), &[]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && text.contains("tracing.sample_ratio"), "{text}");
}
