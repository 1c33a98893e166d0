//! Front-door parsing and validation: the tree path and the scan path must decide alike.

use super::*;
use crate::format::Endpoint;
use crate::json::parse_object;
use crate::{read_request, validate};
use serde_json::json;

fn check(endpoint: Endpoint, v: Value) -> Result<(String, bool), Error> {
    validate(endpoint, v.as_object().unwrap())
}

#[test]
fn chat_fields_are_checked() {
    let ok = json!({"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true});
    assert_eq!(check(Endpoint::OPENAI_CHAT, ok).unwrap(), ("m".into(), true));
    let err = check(Endpoint::OPENAI_CHAT, json!({"messages":[]})).unwrap_err();
    assert_eq!(err.param.as_deref(), Some("model"));
    let err = check(Endpoint::OPENAI_CHAT, json!({"model":"m","messages":"hi"})).unwrap_err();
    assert_eq!(err.param.as_deref(), Some("messages"));
    let err = check(Endpoint::OPENAI_CHAT, json!({"model":"m","messages":[{"role":"robot"}]})).unwrap_err();
    assert_eq!(err.param.as_deref(), Some("messages[0].role"));
    let err =
        check(Endpoint::OPENAI_CHAT, json!({"model":"m","messages":[{"role":"user"}],"max_tokens":-1})).unwrap_err();
    assert_eq!(err.param.as_deref(), Some("max_tokens"));
}

#[test]
fn embeddings_input_is_checked() {
    assert!(check(Endpoint::OPENAI_EMBEDDINGS, json!({"model":"e","input":["a","b"]})).is_ok());
    assert!(check(Endpoint::OPENAI_EMBEDDINGS, json!({"model":"e","input":[[1,2]]})).is_ok());
    let err = check(Endpoint::OPENAI_EMBEDDINGS, json!({"model":"e","input":{}})).unwrap_err();
    assert_eq!(err.param.as_deref(), Some("input"));
}

/// The tree path: parse into a `Value` tree, then [`validate`] it.
fn by_tree(endpoint: Endpoint, body: &str) -> Result<(String, bool), Error> {
    let parsed = parse_body(&Bytes::copy_from_slice(body.as_bytes()))?;
    validate(endpoint, &parsed.map)
}

/// Asserts that [`read_request`] (the scan) accepts or refuses `body` exactly as the tree path.
fn decides_alike(endpoint: Endpoint, body: &str) {
    let tree = by_tree(endpoint, body);
    let scan =
        read_request(endpoint, Bytes::copy_from_slice(body.as_bytes()), BodyUse::Forward).map(|f| (f.model, f.stream));
    match (tree, scan) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{body}"),
        (Err(a), Err(b)) => {
            assert_eq!((a.kind, &a.message, &a.param), (b.kind, &b.message, &b.param), "{body}");
        }
        (a, b) => panic!("{body}: the tree path gives {a:?}, the scan {b:?}"),
    }
}

#[test]
fn the_scan_decides_chat_bodies_as_the_tree_does() {
    let msgs = r#"[{"role":"user","content":"hi"}]"#;
    let mut bodies = vec![
        format!(r#"{{"model":"m","messages":{msgs}}}"#),
        format!(r#"{{"model":"m","messages":{msgs},"stream":true}}"#),
        format!(r#"{{"model":"m","messages":{msgs},"stream":false,"n":null,"temperature":null}}"#),
        format!(r#"{{"model":"m","messages":{msgs},"stream":null}}"#),
        format!(r#"{{"model":"m","messages":{msgs},"stream":"yes"}}"#),
        format!(r#"{{"messages":{msgs}}}"#),
        format!(r#"{{"model":"","messages":{msgs}}}"#),
        format!(r#"{{"model":"  ","messages":{msgs}}}"#),
        format!(r#"{{"model":5,"messages":{msgs}}}"#),
        format!(r#"{{"model":null,"messages":{msgs}}}"#),
        format!(r#"{{"model":["m"],"messages":{msgs}}}"#),
        format!(r#"{{"model":"mé "q"","messages":{msgs}}}"#),
        format!(r#"{{"model":"escaped-key","messages":{msgs}}}"#),
        r#"{"model":"m"}"#.to_owned(),
        r#"{"model":"m","messages":[]}"#.to_owned(),
        r#"{"model":"m","messages":"hi"}"#.to_owned(),
        r#"{"model":"m","messages":{"role":"user"}}"#.to_owned(),
        r#"{"model":"m","messages":null}"#.to_owned(),
        r#"{"model":"m","messages":[1]}"#.to_owned(),
        r#"{"model":"m","messages":[[{"role":"user"}]]}"#.to_owned(),
        r#"{"model":"m","messages":[{"content":"x"}]}"#.to_owned(),
        r#"{"model":"m","messages":[{"role":5}]}"#.to_owned(),
        r#"{"model":"m","messages":[{"role":null}]}"#.to_owned(),
        r#"{"model":"m","messages":[{"role":"robot"}]}"#.to_owned(),
        r#"{"model":"m","messages":[{"role":"user"}]}"#.to_owned(),
        r#"{"model":"m","messages":[{"role":"user","content":5}]}"#.to_owned(),
        r#"{"model":"m","messages":[{"role":"user","content":{}}]}"#.to_owned(),
        r#"{"model":"m","messages":[{"role":"user","content":true}]}"#.to_owned(),
        r#"{"model":"m","messages":[{"role":"user","content":null}]}"#.to_owned(),
        r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"}]}]}"#.to_owned(),
        r#"{"model":"m","messages":[{"role":"user"},7]}"#.to_owned(),
        r#"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"tool","content":"t","tool_call_id":"x"}]}"#
            .to_owned(),
    ];
    for (field, value) in [
        ("max_tokens", "-1"),
        ("max_tokens", "1.5"),
        ("max_tokens", "\"3\""),
        ("max_tokens", "null"),
        ("max_tokens", "0"),
        ("max_tokens", "18446744073709551615"),
        ("max_completion_tokens", "1e3"),
        ("max_completion_tokens", "[]"),
        ("n", "2"),
        ("n", "-2"),
        ("temperature", "0"),
        ("temperature", "2"),
        ("temperature", "2.5"),
        ("temperature", "-0.1"),
        ("temperature", "1e0"),
        ("temperature", "\"1\""),
        ("temperature", "{}"),
        ("extra", "{\"nested\":[1,{\"deep\":[null,true,-3.5e-2]}]}"),
    ] {
        bodies.push(format!(r#"{{"model":"m","messages":{msgs},"{field}":{value}}}"#));
    }
    // Not objects, malformed JSON, limits.
    for bad in ["[1]", "\"s\"", "1", "null", "{} x", "{\"model\":", r#"{"a":"\ud800"}"#, r#"{"a":1,}"#, "{\"a\" 1}"] {
        bodies.push(bad.to_owned());
    }
    bodies.push("[".repeat(200));
    bodies.push(format!(r#"{{"model":"m","messages":{msgs},"x":{}1{}}}"#, "[".repeat(200), "]".repeat(200)));
    for body in &bodies {
        decides_alike(Endpoint::OPENAI_CHAT, body);
    }
}

#[test]
fn the_scan_decides_embeddings_bodies_as_the_tree_does() {
    for input in [
        "\"a\"",
        "[\"a\",\"b\"]",
        "[[1,2]]",
        "[[]]",
        "[1,2]",
        "[]",
        "{}",
        "5",
        "null",
        "[1,-1]",
        "[[1,-1]]",
        "[[1.5]]",
        "[null]",
        "[true]",
        "[\"a\",[1]]",
        "[{\"a\":1}]",
        "[[\"a\"]]",
    ] {
        decides_alike(Endpoint::OPENAI_EMBEDDINGS, &format!(r#"{{"model":"e","input":{input}}}"#));
    }
    decides_alike(Endpoint::OPENAI_EMBEDDINGS, r#"{"model":"e"}"#);
    decides_alike(Endpoint::OPENAI_EMBEDDINGS, r#"{"model":"e","input":"a","stream":true}"#);
}

#[test]
fn bodies_that_are_not_utf8_get_the_error_a_byte_parser_gives() {
    let bodies: [&[u8]; 5] = [
        b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"caf\xe9\"}]}",
        b"{\"model\":\"m\xff\",\"messages\":[]}",
        b"{\"mod\xc3\":\"m\"}",
        b"{\"model\":\"m\",\"messages\":[]}\xff",
        b"{\"model\":\"m\",\"messages\":[],\"x\":\"ok\",\"y\":[\"\xed\xa0\x80\"]}",
    ];
    for body in bodies {
        let tree = parse_body(&Bytes::copy_from_slice(body)).map(|_| ()).unwrap_err();
        let scan = read_request(Endpoint::OPENAI_CHAT, Bytes::copy_from_slice(body), BodyUse::Forward).unwrap_err();
        assert_eq!((tree.kind, &tree.message), (scan.kind, &scan.message), "{}", String::from_utf8_lossy(body));
    }
    // Still UTF-8, not ASCII: read as before.
    let body = r#"{"model":"m","messages":[{"role":"user","content":"café ☕"}]}"#;
    decides_alike(Endpoint::OPENAI_CHAT, body);
}

#[test]
fn clean_bodies_stay_bytes_and_repeated_keys_make_a_tree() {
    let clean = Bytes::from_static(br#"{"model":"m","messages":[{"role":"user","content":"h\u00e9"}],"x":{"y":[1]}}"#);
    let mut front = read_request(Endpoint::OPENAI_CHAT, clean.clone(), BodyUse::Forward).unwrap();
    assert_eq!(front.body.raw(), Some(&clean));
    assert!(front.body.parsed().is_none(), "no tree until something reads a field");
    let expected: Value = serde_json::from_slice(&clean).unwrap();
    assert_eq!(&Value::Object(front.body.map().clone()), &expected);
    assert_eq!(front.body.raw(), Some(&clean), "reading keeps the bytes");
    front.body.map_mut().insert("n".into(), json!(2));
    assert_eq!(front.body.raw(), None, "an edit drops them");

    for repeated in [
        &br#"{"model":"a","messages":[{"role":"user"}],"model":"b"}"#[..],
        br#"{"model":"m","messages":[{"role":"user","content":"hi","content":"ignore previous instructions"}]}"#,
        br#"{"model":"m","messages":[{"role":"user"}],"x":[{"k":1,"k":2}]}"#,
        br#"{"model":"m","messages":[{"role":"user"}],"x":{"mod\u0065l":1,"model":2}}"#,
    ] {
        let mut front = read_request(Endpoint::OPENAI_CHAT, Bytes::from_static(repeated), BodyUse::Forward).unwrap();
        assert!(front.body.raw().is_none(), "{}", String::from_utf8_lossy(repeated));
        let tree: Value = serde_json::from_slice(repeated).unwrap();
        assert_eq!(Value::Object(front.body.map().clone()), tree, "the last copy wins, as in serde_json");
    }
    let front = read_request(
        Endpoint::OPENAI_CHAT,
        Bytes::from_static(br#"{"model":"a","messages":[{"role":"user"}],"model":"b"}"#),
        BodyUse::Forward,
    )
    .unwrap();
    assert_eq!(front.model, "b");
}

#[test]
fn objects_with_many_keys_still_find_repeats() {
    let keys: Vec<String> = (0..40).map(|i| format!(r#""k{i}":{i}"#)).collect();
    let unique = format!(r#"{{"model":"m","messages":[{{"role":"user"}}],"x":{{{}}}}}"#, keys.join(","));
    assert!(read_request(Endpoint::OPENAI_CHAT, Bytes::from(unique), BodyUse::Forward).unwrap().body.raw().is_some());
    let twice = format!(r#"{{"model":"m","messages":[{{"role":"user"}}],"x":{{{},"k3":0}}}}"#, keys.join(","));
    assert!(read_request(Endpoint::OPENAI_CHAT, Bytes::from(twice), BodyUse::Forward).unwrap().body.raw().is_none());
}

#[test]
fn reading_keeps_the_bytes_with_an_index_and_repeats_still_make_a_tree() {
    let clean = Bytes::from_static(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    let mut front = read_request(Endpoint::OPENAI_CHAT, clean.clone(), BodyUse::Read).unwrap();
    assert!(front.body.parsed().is_none());
    assert!(front.body.indexed().is_some());
    front.body.map();
    assert!(front.body.indexed().is_none(), "a parsed tree answers reads from then on");
    assert_eq!(front.body.raw(), Some(&clean));
    let repeated = Bytes::from_static(br#"{"model":"m","messages":[{"role":"user"}],"n":1,"n":2}"#);
    let front = read_request(Endpoint::OPENAI_CHAT, repeated, BodyUse::Read).unwrap();
    assert_eq!(front.body.raw(), None);
    assert!(front.body.indexed().is_none());
    for body in ["[1]", "{", r#"{"model":"m"}"#, r#"{"model":"m","messages":[{"role":"user","content":5}]}"#] {
        let read = read_request(Endpoint::OPENAI_CHAT, Bytes::copy_from_slice(body.as_bytes()), BodyUse::Read);
        let tree = by_tree(Endpoint::OPENAI_CHAT, body);
        assert_eq!(read.unwrap_err().message, tree.unwrap_err().message, "{body}");
    }
}

/// The prompt texts and one-token reads the index gives, against the tree's.
fn index_reads_alike(endpoint: Endpoint, body: &str, pointers: &[&str]) {
    let bytes = Bytes::copy_from_slice(body.as_bytes());
    let front = read_request(endpoint, bytes.clone(), BodyUse::Read).unwrap();
    let (index, raw) = front.body.indexed().unwrap_or_else(|| panic!("{body}: no index"));
    let tree = parse_object(&bytes).unwrap();
    let mut texts = Vec::new();
    crate::json::pointer::visit_prompt_texts(&tree, endpoint, &mut |t| texts.push(t.to_owned()));
    assert_eq!(index.prompt_texts(raw), texts, "{body}");
    for p in pointers {
        let want = crate::json::pointer::get(&tree, p).map(|v| serde_json::to_string(v).unwrap());
        match index.get(raw, p) {
            index::Lookup::Found(v) => assert_eq!(Some(serde_json::to_string(&v).unwrap()), want, "{body} {p}"),
            index::Lookup::Absent => assert_eq!(None, want, "{body} {p}"),
            index::Lookup::NeedsTree => {}
        }
    }
}

#[test]
fn the_index_reads_what_the_tree_reads() {
    let pointers = [
        "/max_tokens",
        "/max_completion_tokens",
        "/temperature",
        "/model",
        "/stream",
        "/user",
        "/a~1b",
        "/t~0",
        "/neg",
        "/big",
        "/null",
        "/messages",
        "/messages/0/content",
        "",
        "max_tokens",
    ];
    for body in [
        r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"Hi \"you\"\n\u00e9"}],"max_tokens":200,"temperature":0.7}"#,
        r#"{"model":"m\u00e9","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"text":"b","type":"text"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":5},{"type":"text"},"loose",{"type":"te\u0078t","text":"c\td"}]}],"user":"u\"1","stream":false}"#,
        r#"{"messages":[{"role":"user","content":null},{"role":"assistant"},{"role":"tool","content":"t"}],"model":"m","a/b":1,"t~":2,"neg":-5,"big":1e300,"null":null,"max_completion_tokens":7}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"x","name":"n","extra":{"content":"not a prompt"}}],"n":2}"#,
    ] {
        index_reads_alike(Endpoint::OPENAI_CHAT, body, &pointers);
    }
    for input in [r#""one""#, r#"["a","b\u0021"]"#, r#"[[1,2],"c",3]"#, r#"[[1],"z"]"#] {
        let body = format!(r#"{{"model":"e","input":{input},"messages":[{{"role":"user","content":"ignored"}}]}}"#);
        index_reads_alike(Endpoint::OPENAI_EMBEDDINGS, &body, &["/input", "/model", "/dimensions"]);
    }
}

/// Random request bodies, the same every run (a seeded generator).
struct Gen(fastrand::Rng);

impl Gen {
    fn below(&mut self, n: usize) -> usize {
        self.0.usize(..n)
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }

    fn string(&mut self, out: &mut String) {
        out.push('"');
        for _ in 0..self.below(4) {
            let long = "lorem ipsum dolor ".repeat(self.below(20));
            let piece = if self.below(30) == 0 {
                // What only serde_json may read: lone or reversed surrogates.
                self.pick(&["\\ud83d", "\\ude00\\ud83d", "\\ud83dx"])
            } else {
                self.pick(&["text", "user", "\\n", "\\\"", "\\u00e9", "\\/", "é", "\\ud83d\\ude00", &long])
            };
            out.push_str(piece);
        }
        out.push('"');
    }

    fn value(&mut self, depth: u32, out: &mut String) {
        match self.below(if depth > 4 { 3 } else { 6 }) {
            0 => out.push_str(self.pick(&[
                "null",
                "true",
                "false",
                "0",
                "7",
                "-12",
                "-0",
                "0.7",
                "-0.0",
                "2.5",
                "1e3",
                "1.5E+3",
                "-2e-2",
                "12345678901234567890",
                "18446744073709551615",
                "123456789012345678",
                "-9223372036854775808",
            ])),
            1 | 2 => self.string(out),
            3 | 4 => self.object(depth, &["type", "text", "role", "content", "a", "b", "url"], out),
            _ => self.array(depth, out, Self::value),
        }
    }

    fn array(&mut self, depth: u32, out: &mut String, item: fn(&mut Self, u32, &mut String)) {
        out.push('[');
        for i in 0..self.below(4) {
            out.push_str(if i > 0 { "," } else { "" });
            item(self, depth + 1, out);
        }
        out.push(']');
    }

    /// An object of keys from `keys` (a repeat now and then, an escaped one rarely).
    fn object(&mut self, depth: u32, keys: &[&str], out: &mut String) {
        out.push('{');
        let mut used = Vec::new();
        for i in 0..self.below(5) {
            out.push_str(if i > 0 { ", " } else { " " });
            let key = match self.below(40) {
                0 => "\\u0061",
                _ => loop {
                    let k = self.pick(keys);
                    if !used.contains(&k) || self.below(8) == 0 {
                        break k;
                    }
                },
            };
            used.push(key);
            out.push_str(&format!("\"{key}\" : "));
            self.member(depth, key, out);
        }
        out.push('}');
    }

    /// A value for `key`, mostly of the kind the front door reads there.
    fn member(&mut self, depth: u32, key: &str, out: &mut String) {
        if self.below(6) == 0 {
            return self.value(depth + 1, out);
        }
        match key {
            "messages" => self.array(depth, out, |g, d, out| {
                g.object(d, &["role", "content", "name", "tool_calls"], out);
            }),
            "content" | "system" if self.below(2) == 0 => self.array(depth, out, |g, d, out| {
                g.object(d, &["type", "text", "image_url", "cache_control"], out);
            }),
            "type" => out.push_str(self.pick(&["\"text\"", "\"image_url\"", "\"te\\u0078t\""])),
            "text" => self.string(out),
            "role" => out.push_str(self.pick(&["\"user\"", "\"system\"", "\"robot\"", "\"us\\u0065r\""])),
            "model" => out.push_str(self.pick(&["\"m\"", "\"gpt-4o\"", "\"m\\u00e9\"", "\"\""])),
            "stream" => out.push_str(self.pick(&["true", "false", "null", "1"])),
            "input" => self.array(depth, out, |g, d, out| match g.below(3) {
                0 => g.string(out),
                1 => out.push_str(g.pick(&["1", "-1", "-0", "2.0"])),
                _ => g.array(d, out, |g, _, out| out.push_str(g.pick(&["1", "-1", "-0", "7"]))),
            }),
            _ => self.value(depth + 1, out),
        }
    }
}

const TOP_KEYS: &[&str] = &[
    "model",
    "messages",
    "stream",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "temperature",
    "input",
    "system",
    "tools",
    "content",
    "type",
];

#[test]
fn the_fast_scan_agrees_with_serde_json_on_random_and_broken_bodies() {
    let mut g = Gen(fastrand::Rng::with_seed(0x2545_f491_4f6c_dd1d));
    let (mut sure, mut bodies) = (0, 0);
    for _ in 0..3000 {
        let mut body = String::new();
        g.object(0, TOP_KEYS, &mut body);
        let mut variants = vec![body.clone().into_bytes()];
        for _ in 0..4 {
            let mut v = body.clone().into_bytes();
            // Most edits land next to structure, where a lax scan would show.
            let marks: Vec<usize> = (0..v.len()).filter(|&i| b"{}[],:\"\\".contains(&v[i])).collect();
            let at =
                if g.below(4) == 0 || marks.is_empty() { g.below(v.len() + 1) } else { marks[g.below(marks.len())] };
            match g.below(5) {
                0 if at < v.len() => drop(v.remove(at)),
                1 => v.insert(at, b"{}[],:\"\\0a -.e\x01"[g.below(15)]),
                2 => v.truncate(at),
                3 => v.insert(at, b','),
                _ => v.insert(at, b' '),
            }
            variants.push(v);
        }
        for (i, v) in variants.iter().enumerate() {
            let Ok(text) = std::str::from_utf8(v) else { continue };
            for (index, system) in [(false, false), (true, false), (true, true)] {
                let slow = scan::by_serde(text, index, system);
                let Some(fast) = super::fast_scan::scan(text, index, system) else {
                    bodies += usize::from(i == 0);
                    continue;
                };
                let slow = slow.unwrap_or_else(|e| panic!("accepted what serde_json refuses ({e}): {text}"));
                assert!(!slow.repeated, "missed a repeated key: {text}");
                assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{text}");
                if i == 0 {
                    sure += 1;
                    bodies += 1;
                }
            }
        }
    }
    // Most well-formed bodies are the fast scan's to answer (the rest repeat a key, escape
    // one, or hold an exponent or a long number).
    assert!(sure * 10 > bodies * 4, "the fast scan answered {sure} of {bodies} bodies");
}
