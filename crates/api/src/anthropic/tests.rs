//! The Anthropic front door: what it accepts, the 400s naming a field, and that the scan's
//! index gives plugins the same prompt texts as a walk over the tree.

use super::*;
use crate::format::Endpoint;

fn read(body: &str, usage: BodyUse) -> Result<FrontDoor, Error> {
    read_request(Operation::Chat, Bytes::from(body.to_owned()), usage)
}

#[test]
fn a_valid_body_stays_the_clients_bytes() {
    let body = r#"{"model":"claude","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let front = read(body, BodyUse::Forward).unwrap();
    assert_eq!((front.model.as_str(), front.stream), ("claude", true));
    assert_eq!(front.body.raw().map(|b| &b[..]), Some(body.as_bytes()));
}

#[test]
fn invalid_bodies_get_a_400_naming_the_field() {
    let cases = [
        (r#"{"max_tokens":1,"messages":[{"role":"user","content":"x"}]}"#, "model"),
        (r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#, "max_tokens"),
        (r#"{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]}"#, "max_tokens"),
        (r#"{"model":"m","max_tokens":1}"#, "messages"),
        (r#"{"model":"m","max_tokens":1,"messages":[]}"#, "messages"),
        (r#"{"model":"m","max_tokens":1,"messages":[{"role":"system","content":"x"}]}"#, "messages.0.role"),
        (r#"{"model":"m","max_tokens":1,"messages":[{"role":"user"}]}"#, "messages.0.content"),
        (r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":5}]}"#, "messages.0.content"),
        (r#"{"model":"m","max_tokens":1,"stream":"yes","messages":[{"role":"user","content":"x"}]}"#, "stream"),
        (r#"{"model":"m","max_tokens":1,"temperature":1.5,"messages":[{"role":"user","content":"x"}]}"#, "temperature"),
        (r#"{"model":"m","max_tokens":1,"system":7,"messages":[{"role":"user","content":"x"}]}"#, "system"),
    ];
    for (body, param) in cases {
        let e = read(body, BodyUse::Forward).unwrap_err();
        assert_eq!(e.status(), 400, "{body}");
        assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        // The tree path (after a plugin edit) gives the same answer.
        let tree = crate::json::parse_body(&Bytes::from(body.to_owned())).unwrap().map;
        assert_eq!(validate(&tree).unwrap_err().param.as_deref(), Some(param), "{body}");
    }
    assert_eq!(read("{nope", BodyUse::Forward).unwrap_err().kind, ErrorKind::InvalidJson);
    assert_eq!(read("[1]", BodyUse::Forward).unwrap_err().status(), 400);
}

#[test]
fn a_repeated_key_is_decided_by_the_tree() {
    let body = r#"{"model":"a","model":"b","max_tokens":1,"messages":[{"role":"user","content":"x"}]}"#;
    let front = read(body, BodyUse::Forward).unwrap();
    assert_eq!(front.model, "b");
    assert!(front.body.raw().is_none(), "bytes that say two things are never forwarded");
}

#[test]
fn the_index_gives_the_prompt_texts_a_tree_walk_gives_system_first() {
    for body in [
        r#"{"model":"m","max_tokens":1,"system":"be brief","messages":[{"role":"user","content":"hi"}]}"#,
        r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a\"b"},{"type":"image","source":{}}]},
            {"role":"assistant","content":"ok"}],"model":"m","max_tokens":1,
            "system":[{"type":"text","text":"s1","cache_control":{"type":"ephemeral"}},{"type":"text","text":"s2"}]}"#,
    ] {
        let front = read(body, BodyUse::Read).unwrap();
        let (index, raw) = front.body.indexed().unwrap();
        let tree = crate::json::parse_body(&Bytes::from(body.to_owned())).unwrap().map;
        let mut texts = Vec::new();
        crate::json::pointer::visit_prompt_texts(&tree, Endpoint::ANTHROPIC_MESSAGES, &mut |t| {
            texts.push(t.to_owned())
        });
        assert_eq!(index.prompt_texts(raw), texts, "{body}");
        assert!(texts[0] == "be brief" || texts[..2] == ["s1", "s2"], "{texts:?}");
    }
}
