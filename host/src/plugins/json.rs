//! JSON-pointer (RFC 6901) reads and writes on request/response bodies, done host-side so a
//! plugin can read one field without copying or parsing the whole body.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::providers::Endpoint;

/// Why a pointer write failed (shown to the plugin).
pub type WriteError = &'static str;

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

/// Sets the value at `pointer` (parent must exist; `-` appends to an array).
///
/// # Errors
/// A short reason when the pointer is malformed or its parent is missing.
pub fn set(body: &mut Map<String, Value>, pointer: &str, value: Value) -> Result<(), WriteError> {
    let toks: Vec<Cow<'_, str>> = tokens(pointer).ok_or("pointer must start with '/'")?.collect();
    let Some((last, parents)) = toks.split_last() else {
        return Err("use set-body to replace the whole body");
    };
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
    match endpoint {
        Endpoint::ChatCompletions => {
            for message in body.get("messages").and_then(Value::as_array).into_iter().flatten() {
                match message.get("content") {
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
        }
        Endpoint::Embeddings => match body.get("input") {
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
        visit_prompt_texts(chat.as_object().unwrap(), Endpoint::ChatCompletions, &mut |t| seen.push(t));
        assert_eq!(seen, ["a", "b", "c"]);
        for (input, want) in [(json!("x"), vec!["x"]), (json!(["x", "y"]), vec!["x", "y"]), (json!([1, 2]), vec![])] {
            let body = json!({ "input": input });
            let mut seen = Vec::new();
            visit_prompt_texts(body.as_object().unwrap(), Endpoint::Embeddings, &mut |t| seen.push(t));
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
}
