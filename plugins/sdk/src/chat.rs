//! Helpers for OpenAI-style bodies: the text of `messages` (string or content-part arrays)
//! and of embeddings `input`, read and rewritten in place. Pure `serde_json`, testable natively.

use serde_json::Value;

/// Calls `f` on every prompt text in a `messages` array or an embeddings `input` value, and
/// replaces the text when `f` returns `Some`. Returns whether anything changed.
pub fn rewrite_texts(value: &mut Value, f: &mut dyn FnMut(&str) -> Option<String>) -> bool {
    let mut changed = false;
    match value {
        Value::String(s) => {
            if let Some(new) = f(s) {
                *s = new;
                changed = true;
            }
        }
        Value::Array(items) => {
            for item in items {
                changed |= match item {
                    Value::String(_) => rewrite_texts(item, f),
                    Value::Object(m) => {
                        let mut c = false;
                        if let Some(content) = m.get_mut("content") {
                            c |= rewrite_texts(content, f);
                        }
                        // Chat and Messages `text` parts; Responses `input_text` / `output_text`.
                        if matches!(m.get("type").and_then(Value::as_str), Some("text" | "input_text" | "output_text"))
                            && let Some(text) = m.get_mut("text")
                        {
                            c |= rewrite_texts(text, f);
                        }
                        c
                    }
                    _ => false,
                };
            }
        }
        _ => {}
    }
    changed
}

/// Every prompt text in a `messages` array or embeddings `input`, in order, borrowed from
/// `value` (nothing is copied).
pub fn texts(value: &Value) -> Vec<&str> {
    let mut out = Vec::new();
    visit_texts(value, &mut |s| out.push(s));
    out
}

/// Calls `f` on every prompt text in a `messages` array or embeddings `input`, in order.
pub fn visit_texts<'a>(value: &'a Value, f: &mut dyn FnMut(&'a str)) {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::String(s) => f(s),
                    Value::Object(m) => {
                        if let Some(content) = m.get("content") {
                            visit_texts(content, f);
                        }
                        if matches!(m.get("type").and_then(Value::as_str), Some("text" | "input_text" | "output_text"))
                            && let Some(text) = m.get("text")
                        {
                            visit_texts(text, f);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn finds_strings_and_text_parts() {
        let messages = json!([
            {"role": "system", "content": "a"},
            {"role": "user", "content": [{"type": "text", "text": "b"}, {"type": "image_url", "image_url": {"url": "u"}}]},
        ]);
        assert_eq!(texts(&messages), ["a", "b"]);
        // Responses input items.
        let input = json!([{"role": "user", "content": [{"type": "input_text", "text": "c"}]}]);
        assert_eq!(texts(&input), ["c"]);
        assert_eq!(texts(&json!("c")), ["c"]);
        assert_eq!(texts(&json!(["d", "e"])), ["d", "e"]);
    }

    #[test]
    fn rewrites_in_place() {
        let mut v = json!([{"role": "user", "content": "hi"}, {"role": "user", "content": "yo"}]);
        let changed = rewrite_texts(&mut v, &mut |s| (s == "hi").then(|| "HI".to_owned()));
        assert!(changed);
        assert_eq!(v[0]["content"], "HI");
        assert_eq!(v[1]["content"], "yo");
    }
}
