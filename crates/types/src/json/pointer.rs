//! JSON-pointer (RFC 6901) reads and writes on request/response bodies, done host-side so a
//! plugin can read one field without copying or parsing the whole body.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::format::{ApiFormat, Endpoint, Operation};

/// Why a pointer write failed (shown to the plugin).
pub type WriteError = &'static str;

/// Deepest nesting of arrays and objects a plugin's edits may build: the most one parse
/// accepts (serde_json refuses the 128th level), so an edited body still parses wherever it
/// goes next. A value set at a deep pointer nests one parse inside another, and serialising,
/// cloning and dropping a tree recurse once per level, so a tree built that way without a
/// bound overflows the stack and kills the process.
pub const MAX_DEPTH: usize = 127;

/// Nesting depth of `v`: 0 for a scalar, 1 + the deepest child for an array or object.
/// Recursive, which is safe on what it is given: parsed values and trees kept within
/// [`MAX_DEPTH`].
pub fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Length of `v`'s compact JSON text, counted without building it.
pub fn text_len(v: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    // Writing to a counter cannot fail, and a `Value` always serialises.
    let _ = serde_json::to_writer(&mut n, v);
    n.0
}

/// Splits a pointer into unescaped tokens; `None` if it does not start with `/` (and is not
/// empty). A token is copied only when it has an escape (`~1` for `/`, `~0` for `~`): a
/// plugin's `get("/max_tokens")` on the request path allocates nothing here.
fn tokens(pointer: &str) -> Option<impl Iterator<Item = Cow<'_, str>> + '_> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return None;
    }
    Some(
        pointer.split('/').skip(1).map(|t| {
            if t.contains('~') { Cow::Owned(t.replace("~1", "/").replace("~0", "~")) } else { Cow::Borrowed(t) }
        }),
    )
}

/// The value at `pointer` inside an object body (`""` is the whole body, not handled here).
pub fn get<'a>(body: &'a Map<String, Value>, pointer: &str) -> Option<&'a Value> {
    let mut toks = tokens(pointer)?;
    let first = toks.next()?;
    let mut cur = body.get(first.as_ref())?;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get(t.as_ref())?,
            Value::Array(a) => a.get(index(&t)?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn index(t: &str) -> Option<usize> {
    if t.len() > 1 && t.starts_with('0') {
        return None;
    }
    t.parse().ok()
}

/// Sets the value at `pointer` (parent must exist; `-` appends to an array). The body (an
/// object, one level) with the value at the pointer's depth must stay within [`MAX_DEPTH`].
///
/// # Errors
/// A short reason when the pointer is malformed, its parent is missing or the tree would
/// nest too deep.
pub fn set(body: &mut Map<String, Value>, pointer: &str, value: Value) -> Result<(), WriteError> {
    let toks: Vec<Cow<'_, str>> = tokens(pointer).ok_or("pointer must start with '/'")?.collect();
    let Some((last, parents)) = toks.split_last() else {
        return Err("use set-body to replace the whole body");
    };
    // The body and each parent on the path are one container level each.
    if toks.len() + depth(&value) > MAX_DEPTH {
        return Err("the edit would nest the body deeper than 127 levels (what one JSON parse accepts)");
    }
    let Some((first, rest)) = parents.split_first() else {
        body.insert(last.clone().into_owned(), value);
        return Ok(());
    };
    let mut cur = body.get_mut(first.as_ref()).ok_or("parent does not exist")?;
    for t in rest {
        cur = match cur {
            Value::Object(m) => m.get_mut(t.as_ref()).ok_or("parent does not exist")?,
            Value::Array(a) => a.get_mut(index(t).ok_or("bad array index")?).ok_or("parent does not exist")?,
            _ => return Err("parent is not an object or array"),
        };
    }
    match cur {
        Value::Object(m) => {
            m.insert(last.clone().into_owned(), value);
            Ok(())
        }
        Value::Array(a) if last == "-" => {
            a.push(value);
            Ok(())
        }
        Value::Array(a) => {
            let slot = a.get_mut(index(last).ok_or("bad array index")?).ok_or("array index out of range")?;
            *slot = value;
            Ok(())
        }
        _ => Err("parent is not an object or array"),
    }
}

/// Calls `f` on every prompt text of a request body, in order: the `content` strings and `text`
/// parts of `messages` (chat), or the `input` string or strings (embeddings).
pub fn visit_prompt_texts<'a>(body: &'a Map<String, Value>, endpoint: Endpoint, f: &mut dyn FnMut(&'a str)) {
    // A string, or the texts of `{"type": "text", "text": ...}` parts (OpenAI content parts,
    // Anthropic text blocks).
    fn texts<'a>(content: Option<&'a Value>, f: &mut dyn FnMut(&'a str)) {
        match content {
            Some(Value::String(s)) => f(s),
            Some(Value::Array(parts)) => {
                for part in parts {
                    if part.get("type").and_then(Value::as_str) == Some("text")
                        && let Some(Value::String(s)) = part.get("text")
                    {
                        f(s);
                    }
                }
            }
            _ => {}
        }
    }
    if endpoint.format == ApiFormat::Responses {
        // Responses: `instructions`, then `input` (a string, or items whose `content` is a
        // string or `input_text` / `output_text` parts).
        if let Some(Value::String(s)) = body.get("instructions") {
            f(s);
        }
        match body.get("input") {
            Some(Value::String(s)) => f(s),
            Some(Value::Array(items)) => {
                for item in items {
                    match item.get("content") {
                        Some(Value::String(s)) => f(s),
                        Some(Value::Array(parts)) => {
                            for part in parts {
                                let kind = part.get("type").and_then(Value::as_str);
                                if matches!(kind, Some("input_text" | "output_text" | "text"))
                                    && let Some(Value::String(s)) = part.get("text")
                                {
                                    f(s);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        return;
    }
    match endpoint.op {
        Operation::Chat => {
            // Anthropic keeps the instructions in a top-level `system`, read first.
            if endpoint.format == ApiFormat::Anthropic {
                texts(body.get("system"), f);
            }
            for message in body.get("messages").and_then(Value::as_array).into_iter().flatten() {
                texts(message.get("content"), f);
            }
        }
        Operation::Embeddings => match body.get("input") {
            Some(Value::String(s)) => f(s),
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).for_each(f),
            _ => {}
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body() -> Map<String, Value> {
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "a/b": {"~x": 1}})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn get_follows_objects_arrays_and_escapes() {
        let b = body();
        assert_eq!(get(&b, "/model"), Some(&json!("m")));
        assert_eq!(get(&b, "/messages/0/content"), Some(&json!("hi")));
        assert_eq!(get(&b, "/a~1b/~0x"), Some(&json!(1)));
        assert_eq!(get(&b, "/messages/1"), None);
        assert_eq!(get(&b, "/messages/01"), None);
        assert_eq!(get(&b, "model"), None);
        assert_eq!(get(&b, ""), None);
    }

    #[test]
    fn prompt_texts_cover_strings_text_parts_and_embedding_inputs() {
        let chat = json!({"messages": [
            {"role": "system", "content": "a"},
            {"role": "user", "content": [{"type": "text", "text": "b"}, {"type": "image_url", "image_url": {"url": "u"}}]},
            {"role": "assistant", "content": null, "tool_calls": []},
            {"role": "user", "content": "c"},
        ]});
        let mut seen = Vec::new();
        visit_prompt_texts(chat.as_object().unwrap(), Endpoint::OPENAI_CHAT, &mut |t| seen.push(t));
        assert_eq!(seen, ["a", "b", "c"]);
        for (input, want) in [(json!("x"), vec!["x"]), (json!(["x", "y"]), vec!["x", "y"]), (json!([1, 2]), vec![])] {
            let body = json!({ "input": input });
            let mut seen = Vec::new();
            visit_prompt_texts(body.as_object().unwrap(), Endpoint::OPENAI_EMBEDDINGS, &mut |t| seen.push(t));
            assert_eq!(seen, want);
        }
    }

    #[test]
    fn set_replaces_appends_and_refuses_missing_parents() {
        let mut b = body();
        set(&mut b, "/messages/0/content", json!("bye")).unwrap();
        set(&mut b, "/messages/-", json!({"role": "user"})).unwrap();
        set(&mut b, "/temperature", json!(0.5)).unwrap();
        assert_eq!(get(&b, "/messages/0/content"), Some(&json!("bye")));
        assert_eq!(b["messages"].as_array().unwrap().len(), 2);
        assert_eq!(b["temperature"], json!(0.5));
        assert!(set(&mut b, "/nope/x", json!(1)).is_err());
        assert!(set(&mut b, "/messages/9", json!(1)).is_err());
        assert!(set(&mut b, "", json!(1)).is_err());
        assert!(set(&mut b, "/model/x", json!(1)).is_err());
    }

    /// `{"d":{"d":...0}}`, `levels` objects deep.
    fn nested(levels: usize) -> Value {
        (0..levels).fold(json!(0), |inner, _| json!({ "d": inner }))
    }

    #[test]
    fn set_refuses_to_nest_past_the_depth_cap() {
        let mut b = body();
        // 1 (body) + 126 = 127 levels: allowed; one more is refused, wherever it is nested.
        set(&mut b, "/deep", nested(126)).unwrap();
        assert_eq!(depth(&Value::Object(b.clone())), MAX_DEPTH);
        let inner = format!("/deep{}", "/d".repeat(125));
        assert!(set(&mut b, &format!("{inner}/x"), json!([])).is_err());
        set(&mut b, &format!("{inner}/x"), json!(1)).unwrap();
        assert!(set(&mut b, "/deeper", nested(127)).is_err());
        assert_eq!(depth(&Value::Object(b.clone())), MAX_DEPTH);
        // The deepest tree edits may build still parses.
        let text = serde_json::to_string(&b).unwrap();
        assert!(serde_json::from_str::<Value>(&text).is_ok());
        let one_more = format!("[{text}]");
        assert!(serde_json::from_str::<Value>(&one_more).is_err(), "MAX_DEPTH is below serde_json's limit");
    }

    #[test]
    fn text_len_counts_the_compact_text() {
        let v = json!({"a": [1, "é", null], "b": {"c": true}});
        assert_eq!(text_len(&v), serde_json::to_string(&v).unwrap().len());
    }
}
