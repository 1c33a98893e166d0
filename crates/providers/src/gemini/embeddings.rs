//! OpenAI `POST /v1/embeddings` through Gemini's `batchEmbedContents`: one embed request per
//! input text (`dimensions` as `outputDimensionality`), and the answer back in OpenAI's list
//! shape, as floats or as base64 of little-endian `f32`s (`encoding_format = "base64"`, what
//! OpenAI sends). Gemini reports no token counts for embeddings, so `usage` holds zeros.

use base64::Engine;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::error::{Error, ErrorKind};
use crate::usage::Usage;

/// A checked embeddings request: the Gemini body and what the answer must look like.
pub(super) struct Asked {
    /// The `batchEmbedContents` body.
    pub body: Bytes,
    inputs: usize,
    base64: bool,
}

fn invalid(param: &'static str, why: &'static str) -> Error {
    Error::invalid_param(param, why)
}

impl Asked {
    /// Reads an OpenAI embeddings body for `model` (the provider's name for it).
    ///
    /// # Errors
    /// 400 naming `input` (token arrays, which Gemini does not take, or no text),
    /// `encoding_format` or `dimensions` when they have no Gemini form.
    pub fn read(mut body: Map<String, Value>, model: &str) -> Result<Self, Error> {
        let texts: Vec<String> = match body.remove("input") {
            Some(Value::String(s)) => vec![s],
            Some(Value::Array(items)) if !items.is_empty() => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(invalid("input", "Gemini embeds text only: token arrays are not supported")),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(invalid("input", "must be a string or a non-empty array of strings")),
        };
        let base64 = match body.get("encoding_format").filter(|v| !v.is_null()) {
            None => false,
            Some(v) if v == "float" => false,
            Some(v) if v == "base64" => true,
            Some(_) => return Err(invalid("encoding_format", "must be \"float\" or \"base64\"")),
        };
        let dims = match body.get("dimensions").filter(|v| !v.is_null()) {
            None => None,
            Some(v) => Some(v.as_u64().filter(|&d| d > 0).ok_or_else(|| invalid("dimensions", "must be above 0"))?),
        };
        let name = format!("models/{model}");
        let requests: Vec<Value> = texts
            .iter()
            .map(|t| {
                let mut r = json!({ "model": name, "content": { "parts": [{ "text": t }] } });
                if let Some(d) = dims {
                    r["outputDimensionality"] = d.into();
                }
                r
            })
            .collect();
        let body = serde_json::to_vec(&json!({ "requests": requests }))
            .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
        Ok(Self { body: Bytes::from(body), inputs: texts.len(), base64 })
    }

    /// Gemini's answer (already scrubbed) as OpenAI's embeddings list.
    ///
    /// # Errors
    /// 502 `upstream_invalid` for an answer without one embedding of numbers per input.
    pub fn answer(&self, name: &str, model: &str, body: &[u8]) -> Result<(Bytes, Option<Usage>), Error> {
        let bad = || Error::new(ErrorKind::UpstreamInvalid, format!("provider {name} returned invalid embeddings"));
        let v: Value = serde_json::from_slice(body).map_err(|_| bad())?;
        let embeddings = v.get("embeddings").and_then(Value::as_array).ok_or_else(bad)?;
        if embeddings.len() != self.inputs {
            return Err(bad());
        }
        let mut data = Vec::with_capacity(embeddings.len());
        for (i, e) in embeddings.iter().enumerate() {
            let values = e.get("values").and_then(Value::as_array).ok_or_else(bad)?;
            let embedding = if self.base64 {
                let mut bytes = Vec::with_capacity(values.len() * 4);
                for x in values {
                    let x = x.as_f64().ok_or_else(bad)? as f32;
                    bytes.extend_from_slice(&x.to_le_bytes());
                }
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                if !values.iter().all(Value::is_number) {
                    return Err(bad());
                }
                Value::Array(values.clone())
            };
            data.push(json!({ "object": "embedding", "index": i, "embedding": embedding }));
        }
        let out = json!({
            "object": "list",
            "data": data,
            "model": model,
            "usage": { "prompt_tokens": 0, "total_tokens": 0 },
        });
        let out = serde_json::to_vec(&out).map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
        Ok((Bytes::from(out), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn one_request_per_input_with_dimensions() {
        let a = Asked::read(body(json!({"model": "x", "input": ["a", "b"], "dimensions": 8})), "text-embedding-004")
            .unwrap();
        let sent: Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(sent["requests"].as_array().unwrap().len(), 2);
        assert_eq!(sent["requests"][1]["model"], "models/text-embedding-004");
        assert_eq!(sent["requests"][1]["content"]["parts"][0]["text"], "b");
        assert_eq!(sent["requests"][0]["outputDimensionality"], 8);
    }

    #[test]
    fn token_arrays_are_refused_naming_input() {
        let e = Asked::read(body(json!({"model": "x", "input": [[1, 2]]})), "m").err().unwrap();
        assert_eq!(e.param.as_deref(), Some("input"));
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let a = Asked::read(body(json!({"input": "a", "encoding_format": "base64"})), "m").unwrap();
        let (out, _) = a.answer("g", "m", br#"{"embeddings":[{"values":[1.0,-2.5]}]}"#).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let b64 = v["data"][0]["embedding"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        assert_eq!(bytes, [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat());
        assert_eq!(v["object"], "list");
    }
}
