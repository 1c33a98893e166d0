//! Anthropic content blocks to and from canonical parts.

use serde_json::{Value, json};

use super::block_type;
use crate::canonical::{ConvertError, Extra, ImageSource, Part};
use crate::openai::canonical::{Obj, indexed, need_string, object, take, take_string};

/// A `content` (a string, or an array of blocks) as parts.
pub(super) fn parts(content: Option<Value>, path: &str) -> Result<Vec<Part>, ConvertError> {
    match content {
        None => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![Part::Text { text, extra: Extra::new() }]),
        Some(Value::Array(blocks)) => {
            blocks.into_iter().enumerate().map(|(i, b)| block(b, &indexed(path, i))).collect()
        }
        Some(_) => Err(ConvertError::new(path, "must be a string or an array of content blocks")),
    }
}

/// One content block as a part.
pub(super) fn block(v: Value, path: &str) -> Result<Part, ConvertError> {
    let mut b = object(v, path)?;
    let kind = block_type(&mut b, path)?;
    Ok(match kind.as_str() {
        "text" => Part::Text { text: need_string(&mut b, "text", path)?, extra: b },
        "image" => {
            let spath = format!("{path}.source");
            let mut s = object(take(&mut b, "source").unwrap_or(Value::Null), &spath)?;
            let source = match take_string(&mut s, "type", &spath)?.as_deref() {
                Some("base64") => ImageSource::Base64 {
                    media_type: need_string(&mut s, "media_type", &spath)?,
                    data: need_string(&mut s, "data", &spath)?,
                },
                Some("url") => ImageSource::Url { url: need_string(&mut s, "url", &spath)? },
                _ => return Err(ConvertError::new(format!("{spath}.type"), "only base64 and url images convert")),
            };
            if !s.is_empty() {
                b.insert("source".into(), Value::Object(s));
            }
            Part::Image { source, extra: b }
        }
        "tool_use" => {
            let id = need_string(&mut b, "id", path)?;
            let name = need_string(&mut b, "name", path)?;
            let input = take(&mut b, "input").unwrap_or_else(|| json!({}));
            Part::ToolCall { id, name, arguments: input.to_string(), extra: b }
        }
        "tool_result" => {
            let id = need_string(&mut b, "tool_use_id", path)?;
            let content = parts(take(&mut b, "content"), &format!("{path}.content"))?;
            let is_error = match take(&mut b, "is_error") {
                None => false,
                Some(Value::Bool(e)) => e,
                Some(_) => return Err(ConvertError::new(format!("{path}.is_error"), "must be true or false")),
            };
            Part::ToolResult { id, name: None, content, is_error, extra: b }
        }
        "thinking" => Part::Reasoning {
            text: need_string(&mut b, "thinking", path)?,
            signature: take_string(&mut b, "signature", path)?,
            extra: b,
        },
        _ => {
            b.insert("type".into(), kind.into());
            Part::Unknown { part: b }
        }
    })
}

/// Parts as content blocks. `keep`: the parts came from Anthropic, so their `extra` (e.g.
/// `cache_control`) and unknown blocks are written back. Reasoning without a signature is left
/// out: Anthropic refuses a `thinking` block it did not sign.
pub(super) fn blocks(parts: Vec<Part>, keep: bool) -> Vec<Value> {
    parts.into_iter().filter_map(|p| block_value(p, keep)).collect()
}

fn base(kind: &str, extra: Extra, keep: bool) -> Obj {
    let mut o = if keep { extra } else { Obj::new() };
    o.insert("type".into(), kind.into());
    o
}

fn block_value(part: Part, keep: bool) -> Option<Value> {
    Some(Value::Object(match part {
        Part::Text { text, extra } => {
            let mut o = base("text", extra, keep);
            o.insert("text".into(), text.into());
            o
        }
        Part::Image { source, extra } => {
            let mut o = base("image", extra, keep);
            let mut s = match o.remove("source") {
                Some(Value::Object(s)) => s,
                _ => Obj::new(),
            };
            match source {
                ImageSource::Base64 { media_type, data } => {
                    s.insert("type".into(), "base64".into());
                    s.insert("media_type".into(), media_type.into());
                    s.insert("data".into(), data.into());
                }
                ImageSource::Url { url } => {
                    s.insert("type".into(), "url".into());
                    s.insert("url".into(), url.into());
                }
            }
            o.insert("source".into(), Value::Object(s));
            o
        }
        Part::Reasoning { text, signature, extra } => {
            let signature = signature?;
            let mut o = base("thinking", extra, keep);
            o.insert("thinking".into(), text.into());
            o.insert("signature".into(), signature.into());
            o
        }
        Part::ToolCall { id, name, arguments, extra } => {
            let mut o = base("tool_use", extra, keep);
            o.insert("id".into(), id.into());
            o.insert("name".into(), name.into());
            o.insert("input".into(), tool_input(&arguments));
            o
        }
        Part::ToolResult { id, content, is_error, extra, .. } => {
            let mut o = base("tool_result", extra, keep);
            o.insert("tool_use_id".into(), id.into());
            let content = match <[Part; 1]>::try_from(content) {
                Ok([Part::Text { text, extra }]) if !keep || extra.is_empty() => Value::String(text),
                Ok(one) => Value::Array(blocks(one.into(), keep)),
                Err(many) => Value::Array(blocks(many, keep)),
            };
            o.insert("content".into(), content);
            if is_error {
                o.insert("is_error".into(), true.into());
            }
            o
        }
        Part::Unknown { part } if keep => part,
        Part::Unknown { .. } => return None,
    }))
}

/// A tool call's arguments (JSON text) as Anthropic's `input` object. Text that is not a JSON
/// object (a model may write broken JSON) goes as `{}`: Anthropic accepts nothing else there.
pub(super) fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({}),
    }
}
