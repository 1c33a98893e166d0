use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::Header;
use serde_json::json;

use super::*;
use weir_types::canonical::Finish;

/// One event-stream frame as AWS writes it.
fn frame(message_type: &str, type_header: (&str, &str), payload: &Value) -> Vec<u8> {
    let message = Message::new(Bytes::from(payload.to_string()))
        .add_header(Header::new(":message-type", HeaderValue::String(message_type.to_owned().into())))
        .add_header(Header::new(type_header.0.to_owned(), HeaderValue::String(type_header.1.to_owned().into())))
        .add_header(Header::new(":content-type", HeaderValue::String("application/json".into())));
    let mut out = Vec::new();
    write_message_to(&message, &mut out).unwrap();
    out
}

fn event(kind: &str, payload: Value) -> Vec<u8> {
    frame("event", (":event-type", kind), &payload)
}

/// A whole answer: text, a tool call, the stop and the usage.
fn answer() -> Vec<Vec<u8>> {
    vec![
        event("messageStart", json!({ "role": "assistant", "p": "abc" })),
        event("contentBlockDelta", json!({ "contentBlockIndex": 0, "delta": { "text": "Hel" } })),
        event("contentBlockDelta", json!({ "contentBlockIndex": 0, "delta": { "text": "lo" } })),
        event("contentBlockStop", json!({ "contentBlockIndex": 0 })),
        event(
            "contentBlockStart",
            json!({ "contentBlockIndex": 1,
            "start": { "toolUse": { "toolUseId": "tu1", "name": "weather" } } }),
        ),
        event(
            "contentBlockDelta",
            json!({ "contentBlockIndex": 1, "delta": { "toolUse": { "input": "{\"city\":" } } }),
        ),
        event(
            "contentBlockDelta",
            json!({ "contentBlockIndex": 1, "delta": { "toolUse": { "input": "\"Paris\"}" } } }),
        ),
        event("contentBlockStop", json!({ "contentBlockIndex": 1 })),
        event("messageStop", json!({ "stopReason": "tool_use" })),
        event(
            "metadata",
            json!({ "usage": { "inputTokens": 12, "outputTokens": 7, "totalTokens": 19 },
            "metrics": { "latencyMs": 5 } }),
        ),
    ]
}

async fn read(reads: Vec<Vec<u8>>, secrets: Secrets) -> Vec<Result<StreamEvent, Error>> {
    let upstream = futures_util::stream::iter(reads.into_iter().map(|b| Ok::<_, std::io::Error>(Bytes::from(b))));
    events("b".into(), "id1".into(), "m".into(), upstream, Arc::new(secrets), None).collect().await
}

fn expected() -> Vec<StreamEvent> {
    vec![
        StreamEvent::Start {
            origin: ApiFormat::OpenAi,
            id: "id1".into(),
            model: "m".into(),
            created: None,
            extra: Extra::new(),
        },
        StreamEvent::Text { text: "Hel".into() },
        StreamEvent::Text { text: "lo".into() },
        StreamEvent::ToolCall { index: 0, id: "tu1".into(), name: "weather".into() },
        StreamEvent::ToolArguments { index: 0, arguments: "{\"city\":".into() },
        StreamEvent::ToolArguments { index: 0, arguments: "\"Paris\"}".into() },
        StreamEvent::Finish { reason: Finish::ToolCalls },
        StreamEvent::Usage { usage: usage(&json!({ "inputTokens": 12, "outputTokens": 7 })) },
    ]
}

#[tokio::test]
async fn frames_read_one_per_read_give_every_event_in_order() {
    let out = read(answer(), Secrets::default()).await;
    let out: Vec<StreamEvent> = out.into_iter().map(Result::unwrap).collect();
    assert_eq!(out, expected());
}

#[tokio::test]
async fn frames_split_across_reads_at_every_byte_decode_the_same() {
    let whole: Vec<u8> = answer().concat();
    // Every split point of the whole body into two reads, and one byte per read.
    for cut in (1..whole.len()).step_by(7) {
        let out = read(vec![whole[..cut].to_vec(), whole[cut..].to_vec()], Secrets::default()).await;
        let out: Vec<StreamEvent> = out.into_iter().map(Result::unwrap).collect();
        assert_eq!(out, expected(), "split at byte {cut}");
    }
    let bytes = whole.iter().map(|b| vec![*b]).collect();
    let out: Vec<StreamEvent> = read(bytes, Secrets::default()).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(out, expected());
}

#[tokio::test]
async fn an_exception_frame_ends_the_stream_with_its_status() {
    let mut reads = answer()[..2].to_vec();
    reads.push(frame(
        "exception",
        (":exception-type", "throttlingException"),
        &json!({ "message": "Too many tokens" }),
    ));
    reads.push(event("contentBlockDelta", json!({ "contentBlockIndex": 0, "delta": { "text": "never" } })));
    let out = read(reads, Secrets::default()).await;
    assert_eq!(out.len(), 3, "start, text, the error and nothing after it");
    let err = out[2].as_ref().unwrap_err();
    assert_eq!(err.status(), 429);
    assert!(err.message.contains("Too many tokens"), "{}", err.message);
}

#[tokio::test]
async fn a_body_ending_before_message_stop_is_an_error() {
    let out = read(answer()[..3].to_vec(), Secrets::default()).await;
    let err = out.last().unwrap().as_ref().unwrap_err();
    assert_eq!(err.kind, ErrorKind::UpstreamInvalid);
    assert!(err.message.contains("messageStop"), "{}", err.message);
}

#[tokio::test]
async fn a_corrupt_frame_is_an_error_not_a_hang() {
    let mut bad = answer()[1].clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff; // the message CRC
    let out = read(vec![answer()[0].clone(), bad], Secrets::default()).await;
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].as_ref().unwrap_err().kind, ErrorKind::UpstreamInvalid);
}

#[tokio::test]
async fn secrets_in_event_payloads_are_scrubbed() {
    let reads = vec![
        event("messageStart", json!({ "role": "assistant" })),
        event("contentBlockDelta", json!({ "contentBlockIndex": 0, "delta": { "text": "key sk-secret-12345 here" } })),
        event("messageStop", json!({ "stopReason": "end_turn" })),
    ];
    let out = read(reads, Secrets::new(["sk-secret-12345"])).await;
    assert_eq!(out[1].as_ref().unwrap(), &StreamEvent::Text { text: "key <redacted> here".into() });
    assert_eq!(out.len(), 3);
}
