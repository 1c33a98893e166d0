//! Unit tests of the `request` and `response` resources: the Host methods called directly.

use serde_json::json;
use types::{HostRequest as R, HostResponse as S};

use super::*;

fn request() -> GatewayRequest {
    let mut headers = HeaderMap::new();
    headers.insert("user-agent", HeaderValue::from_static("t"));
    GatewayRequest {
        id: "req_1".into(),
        endpoint: Endpoint::OPENAI_CHAT,
        model: "m".into(),
        stream: false,
        body: JsonBody::from_map(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).as_object().unwrap().clone(),
        ),
        headers,
        affinity: crate::affinity::Affinity::NONE,
    }
}

fn h() -> Resource<RequestHandle> {
    Resource::new_borrow(0)
}

fn rh() -> Resource<ResponseHandle> {
    Resource::new_borrow(0)
}

#[test]
fn getters_copy_only_what_is_asked() {
    let mut ex = Exchange::new(1024);
    ex.put_request(request(), Some("mock".into()));
    assert_eq!(R::id(&mut ex, h()), "req_1");
    assert_eq!(R::model(&mut ex, h()), "m");
    assert_eq!((R::api_format(&mut ex, h()), R::operation(&mut ex, h())), ("openai".into(), "chat".into()));
    assert_eq!(R::provider(&mut ex, h()).as_deref(), Some("mock"));
    assert_eq!(R::get(&mut ex, h(), "/messages/0/content".into()).as_deref(), Some("\"hi\""));
    assert_eq!(R::header(&mut ex, h(), "user-agent".into()).as_deref(), Some("t"));
    assert_eq!(R::headers(&mut ex, h()).len(), 1);
    assert!(!ex.body_edited && !ex.model_edited);
}

#[test]
fn max_tokens_is_read_where_each_format_keeps_it() {
    let cases = [
        (Endpoint::OPENAI_CHAT, json!({"max_tokens": 7}), Some(7)),
        (Endpoint::OPENAI_CHAT, json!({"max_completion_tokens": 9}), Some(9)),
        // Both of OpenAI's names: the larger, whichever it is.
        (Endpoint::OPENAI_CHAT, json!({"max_tokens": 5, "max_completion_tokens": 3}), Some(5)),
        (Endpoint::OPENAI_CHAT, json!({"max_tokens": 3, "max_completion_tokens": 5}), Some(5)),
        (Endpoint::OPENAI_CHAT, json!({}), None),
        (Endpoint::ANTHROPIC_MESSAGES, json!({"max_tokens": 11}), Some(11)),
        (Endpoint::ANTHROPIC_MESSAGES, json!({"max_output_tokens": 11}), None),
        (Endpoint::OPENAI_RESPONSES, json!({"max_output_tokens": 13}), Some(13)),
        (Endpoint::OPENAI_RESPONSES, json!({"max_tokens": 13}), None),
    ];
    for (endpoint, fields, want) in cases {
        let mut req = request();
        req.endpoint = endpoint;
        req.body.map_mut().extend(fields.as_object().unwrap().clone());
        let mut ex = Exchange::new(1024);
        ex.put_request(req, None);
        assert_eq!(R::max_tokens(&mut ex, h()), want, "{endpoint:?} {fields}");
    }
    // In a post hook the body has gone upstream.
    let mut ex = Exchange::new(1024);
    ex.put_request(request(), None);
    ex.take_request();
    assert_eq!(R::max_tokens(&mut ex, h()), None);
}

#[test]
fn prompt_texts_are_built_once_per_chain_and_rebuilt_after_an_edit() {
    let texts = |ex: &mut Exchange| R::prompt_texts(ex, h());
    let mut first = Exchange::new(1024);
    first.put_request(request(), None);
    let shared = first.prompt_texts();
    assert_eq!(texts(&mut first), ["hi"]);
    // The next plugin of the chain gets the same texts, not a second copy.
    let mut second = Exchange::new(1024);
    second.put_request(first.take_request().unwrap(), None);
    assert!(Arc::ptr_eq(&shared, &second.prompt_texts()));
    R::set(&mut second, h(), "/messages/0/content".into(), "\"bye\"".into()).unwrap();
    assert_eq!(texts(&mut second), ["bye"]);
    R::set_body(&mut second, h(), r#"{"messages":[{"role":"user","content":"again"}]}"#.into()).unwrap();
    assert_eq!(texts(&mut second), ["again"]);
    R::set_model(&mut second, h(), "m2".into());
    assert_eq!(texts(&mut second), ["again"]);
}

#[test]
fn edits_apply_in_place_and_are_flagged() {
    let mut ex = Exchange::new(1024);
    ex.put_request(request(), None);
    R::set(&mut ex, h(), "/messages/0/content".into(), "\"bye\"".into()).unwrap();
    R::set_model(&mut ex, h(), "other".into());
    let mut req = ex.take_request().unwrap();
    assert_eq!(req.body.map()["messages"][0]["content"], "bye");
    assert_eq!(req.model, "other");
    assert_eq!(req.body.map()["model"], "other");
    assert!(ex.body_edited && ex.model_edited);
}

#[test]
fn writes_are_capped_and_validated() {
    let mut ex = Exchange::new(16);
    ex.put_request(request(), None);
    assert!(R::set(&mut ex, h(), "/x".into(), format!("\"{}\"", "a".repeat(64))).is_err());
    assert!(R::set(&mut ex, h(), "/x".into(), "{not json".into()).is_err());
    assert!(R::set_body(&mut ex, h(), "[1]".into()).is_err());
    R::set_model(&mut ex, h(), "m".repeat(MAX_MODEL_BYTES + 1));
    assert!(!ex.model_edited);
}

#[test]
fn post_hooks_cannot_edit_the_request() {
    let mut ex = Exchange::new(1024);
    ex.put_shared(Arc::new(request()), Some("mock".into()));
    assert!(R::set(&mut ex, h(), "/x".into(), "1".into()).is_err());
    assert_eq!(R::body(&mut ex, h()), None);
    assert_eq!(R::model(&mut ex, h()), "m");
}

#[test]
fn response_edits_are_serialized_back() {
    let mut ex = Exchange::new(1024);
    ex.put_response(GatewayResponse::ok(Bytes::from_static(br#"{"choices":[{"text":"a"}]}"#)));
    assert_eq!(S::get(&mut ex, rh(), "/choices/0/text".into()).as_deref(), Some("\"a\""));
    S::set(&mut ex, rh(), "/choices/0/text".into(), "\"b\"".into()).unwrap();
    S::set_header(&mut ex, rh(), "x-plugin".into(), "1".into()).unwrap();
    assert!(S::set_header(&mut ex, rh(), "content-length".into(), "1".into()).is_err());
    let resp = ex.take_response().unwrap();
    let v: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(v["choices"][0]["text"], "b");
    assert_eq!(resp.headers["x-plugin"], "1");
}

#[test]
fn unedited_response_is_passed_through_untouched() {
    let mut ex = Exchange::new(1024);
    let body = Bytes::from_static(b"{ \"a\" : 1 }");
    ex.put_response(GatewayResponse::ok(body.clone()));
    let _ = S::get(&mut ex, rh(), "/a".into());
    assert_eq!(ex.take_response().unwrap().body, body);
}

/// `{"d":{"d":...0}}`, `levels` objects deep, as JSON text.
fn nested(levels: usize) -> String {
    format!("{}0{}", "{\"d\":".repeat(levels), "}".repeat(levels))
}

/// Nests 100-level values inside each other 200 times through `set`, each at the innermost
/// object of the last one, and checks every call that would pass the depth cap is refused.
fn nest_repeatedly(mut set: impl FnMut(String, String) -> Result<(), String>, base: &str) -> String {
    let mut ptr = format!("{base}/x");
    for call in 0..200 {
        // The body is one level; each pointer token below it is one more.
        let depth = ptr.matches('/').count() + 100;
        let result = set(ptr.clone(), nested(100));
        if depth > json::MAX_DEPTH {
            assert!(result.is_err(), "call {call} nested the body {depth} levels deep");
        } else {
            result.unwrap();
            ptr = format!("{ptr}{}/x", "/d".repeat(99));
        }
    }
    ptr
}

#[test]
fn request_sets_cannot_nest_the_body_past_the_depth_cap() {
    let mut ex = Exchange::new(1 << 20);
    ex.put_request(request(), None);
    nest_repeatedly(|p, j| R::set(&mut ex, h(), p, j), "");
    // Reading and serialising the edited body is safe.
    assert!(R::get(&mut ex, h(), format!("/x{}", "/d".repeat(99))).is_some());
    assert!(R::body(&mut ex, h()).unwrap().len() > 500);
    let body = ex.take_request().unwrap().body.into_map();
    assert!(json::depth(&Value::Object(body)) <= json::MAX_DEPTH);
}

#[test]
fn set_body_then_set_cannot_nest_past_the_depth_cap() {
    let mut ex = Exchange::new(1 << 20);
    ex.put_request(request(), None);
    R::set_body(&mut ex, h(), format!("{{\"model\":\"m\",\"messages\":[],\"x\":{}}}", nested(100))).unwrap();
    let deep = format!("/x{}/y", "/d".repeat(99));
    assert!(R::set(&mut ex, h(), deep, nested(100)).is_err(), "nested 201 levels deep");
    assert!(R::body(&mut ex, h()).is_some());
}

#[test]
fn response_sets_cannot_nest_the_body_past_the_depth_cap() {
    let mut ex = Exchange::new(1 << 20);
    ex.put_response(GatewayResponse::ok(Bytes::from_static(br#"{"choices":[]}"#)));
    nest_repeatedly(|p, j| S::set(&mut ex, rh(), p, j), "");
    assert!(S::get(&mut ex, rh(), format!("/x{}", "/d".repeat(99))).is_some());
    assert!(S::body(&mut ex, rh()).len() > 500);
    let resp = ex.take_response().unwrap();
    let v: Value = serde_json::from_slice(&resp.body).unwrap();
    assert!(json::depth(&v) <= json::MAX_DEPTH);

    // The same through set-body.
    ex.put_response(GatewayResponse::ok(Bytes::from_static(b"{}")));
    S::set_body(&mut ex, rh(), format!("{{\"x\":{}}}", nested(100))).unwrap();
    assert!(S::set(&mut ex, rh(), format!("/x{}/y", "/d".repeat(99)), nested(100)).is_err());
}

#[test]
fn response_headers_are_capped_in_count() {
    let mut ex = Exchange::new(1 << 20);
    ex.put_response(GatewayResponse::ok(Bytes::from_static(b"{}")));
    let mut accepted = 0;
    for i in 0..40_000 {
        if S::set_header(&mut ex, rh(), format!("x-h{i}"), "v".into()).is_ok() {
            accepted += 1;
        }
    }
    assert_eq!(accepted, MAX_HEADERS);
    // Replacing a header already set is still allowed at the cap.
    S::set_header(&mut ex, rh(), "x-h0".into(), "w".into()).unwrap();
    assert_eq!(ex.take_response().unwrap().headers.len(), MAX_HEADERS);
}

#[test]
fn response_header_bytes_are_capped_across_calls_and_hooks() {
    let mut ex = Exchange::new(2 << 20);
    ex.put_response(GatewayResponse::ok(Bytes::from_static(b"{}")));
    let mb = "v".repeat(1 << 20);
    assert!((0..30).all(|i| S::set_header(&mut ex, rh(), format!("x-mb{i}"), mb.clone()).is_err()), "1 MiB headers");
    let kib2 = "v".repeat(2048);
    let accepted = (0..40).filter(|i| S::set_header(&mut ex, rh(), format!("x-{i}"), kib2.clone()).is_ok()).count();
    assert!(accepted > 0 && accepted * 2048 <= MAX_HEADER_BYTES, "{accepted} x 2 KiB of headers accepted");
    // The next hook (a fresh exchange) sees the headers already set and is held to the same cap.
    let resp = ex.take_response().unwrap();
    let mut next = Exchange::new(2 << 20);
    next.put_response(resp);
    let more = (40..80).filter(|i| S::set_header(&mut next, rh(), format!("x-{i}"), kib2.clone()).is_ok()).count();
    let total: usize = next.take_response().unwrap().headers.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    assert!(total <= MAX_HEADER_BYTES, "{total} bytes of headers after {more} more");
}

#[test]
fn request_body_growth_is_capped_across_calls_and_hooks() {
    let mut ex = Exchange::new(1 << 20);
    ex.put_request(request(), None);
    let mb = format!("\"{}\"", "a".repeat(1_000_000));
    let accepted = (0..40).filter(|i| R::set(&mut ex, h(), format!("/pad{i}"), mb.clone()).is_ok()).count();
    assert!(accepted * 1_000_000 <= MAX_BODY_GROWTH_BYTES, "{accepted} MB accepted");
    assert!(accepted >= 1);
    // The next plugin's hook (a fresh exchange) is held to the same budget.
    let req = ex.take_request().unwrap();
    let mut next = Exchange::new(3 << 20);
    next.put_request(req, None);
    assert!(R::set(&mut next, h(), "/more".into(), mb.clone()).is_err());
    assert!(R::set_body(&mut next, h(), format!("{{\"model\":\"m\",\"messages\":[],\"a\":{mb},\"b\":{mb}}}")).is_ok());
    // A whole new body counts from the size the client sent; same-size replacements add nothing.
    for _ in 0..10 {
        R::set(&mut next, h(), "/a".into(), mb.clone()).unwrap();
    }
}

#[test]
fn response_body_growth_is_capped_across_calls_and_hooks() {
    let mut ex = Exchange::new(1 << 20);
    ex.put_response(GatewayResponse::ok(Bytes::from_static(br#"{"choices":[]}"#)));
    let mb = format!("\"{}\"", "a".repeat(1_000_000));
    let accepted = (0..40).filter(|i| S::set(&mut ex, rh(), format!("/pad{i}"), mb.clone()).is_ok()).count();
    assert!(accepted * 1_000_000 <= MAX_BODY_GROWTH_BYTES, "{accepted} MB accepted");
    let resp = ex.take_response().unwrap();
    let mut next = Exchange::new(1 << 20);
    next.put_response(resp);
    assert!(S::set(&mut next, rh(), "/more".into(), mb.clone()).is_err());
    assert!(
        S::set_body(&mut next, rh(), format!("{{\"a\":{mb},\"b\":{mb},\"c\":{mb},\"d\":{mb},\"e\":{mb}}}")).is_err()
    );
}
