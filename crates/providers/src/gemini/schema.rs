//! JSON Schema (as OpenAI tools and `response_format` carry it) to the OpenAPI subset Gemini's
//! `parameters` and `responseSchema` take. Gemini refuses a body with a keyword outside that
//! subset, so each is converted where it has an equivalent and dropped where it only narrows
//! what is valid (docs/providers.md lists both).

use serde_json::{Map, Value};

/// Keywords Gemini's `Schema` takes (sub-schemas are converted in turn).
const KEPT: [&str; 19] = [
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "propertyOrdering",
    "default",
    "minimum",
    "maximum",
];

/// How deep `$ref`s and nested schemas are followed; a recursive schema stops here.
const MAX_DEPTH: usize = 32;

/// `schema` in Gemini's form.
///
/// # Errors
/// Why it has none: not an object, a `$ref` that does not resolve, or nesting past 32 levels
/// (a recursive `$ref`, which Gemini's schema cannot express).
pub(super) fn to_gemini(schema: &Value) -> Result<Value, String> {
    convert(schema, schema, 0)
}

fn convert(s: &Value, root: &Value, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err("the schema nests deeper than 32 levels (a recursive $ref?)".into());
    }
    let Value::Object(s) = s else {
        // `true` / `{}`: anything. Gemini has no such schema; an empty object says the same.
        return Ok(Value::Object(Map::new()));
    };
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let target = resolve(root, r).ok_or_else(|| format!("$ref {r:?} does not resolve in $defs/definitions"))?;
        let mut out = convert(target, root, depth + 1)?;
        // Siblings of a `$ref` (a description, say) annotate it.
        if let (Value::Object(o), Some(d)) = (&mut out, s.get("description")) {
            o.insert("description".into(), d.clone());
        }
        return Ok(out);
    }
    let mut out = Map::new();
    for key in KEPT {
        if let Some(v) = s.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    // `"type": ["string", "null"]` is OpenAPI's `nullable`; several other types an `anyOf`.
    if let Some(Value::Array(types)) = s.get("type") {
        let non_null: Vec<&Value> = types.iter().filter(|t| t.as_str() != Some("null")).collect();
        if non_null.len() < types.len() {
            out.insert("nullable".into(), true.into());
        }
        match non_null.as_slice() {
            [one] => {
                out.insert("type".into(), (*one).clone());
            }
            _ => {
                out.remove("type");
                let any = non_null.iter().map(|t| Value::Object(Map::from_iter([("type".into(), (*t).clone())])));
                out.insert("anyOf".into(), any.collect());
            }
        }
    }
    if let Some(c) = s.get("const") {
        out.insert("enum".into(), Value::Array(vec![c.clone()]));
    }
    if let Some(Value::Object(props)) = s.get("properties") {
        let mut p = Map::new();
        for (name, sub) in props {
            p.insert(name.clone(), convert(sub, root, depth + 1)?);
        }
        out.insert("properties".into(), Value::Object(p));
    }
    if let Some(items) = s.get("items") {
        out.insert("items".into(), convert(items, root, depth + 1)?);
    }
    // `oneOf` says "exactly one"; Gemini has only `anyOf`, which the same values satisfy.
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(subs)) = s.get(key) {
            let subs = subs.iter().map(|x| convert(x, root, depth + 1)).collect::<Result<Vec<_>, _>>()?;
            out.insert("anyOf".into(), Value::Array(subs));
        }
    }
    // A lone `allOf` entry is the schema itself (what generators write around a `$ref`).
    if let Some(Value::Array(subs)) = s.get("allOf")
        && let [one] = subs.as_slice()
        && let Value::Object(inner) = convert(one, root, depth + 1)?
    {
        for (k, v) in inner {
            out.entry(k).or_insert(v);
        }
    }
    Ok(Value::Object(out))
}

/// The schema a local `$ref` (`#/$defs/X`, `#/definitions/X`, any `#/...` pointer) names.
fn resolve<'a>(root: &'a Value, r: &str) -> Option<&'a Value> {
    let pointer = r.strip_prefix('#')?;
    root.pointer(pointer)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn refused_keywords_are_dropped_and_equivalents_converted() {
        let s = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "city": {"type": ["string", "null"], "description": "where"},
                "unit": {"const": "celsius"},
                "tags": {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}
            },
            "required": ["city"]
        });
        let g = to_gemini(&s).unwrap();
        assert_eq!(
            g,
            json!({
                "type": "object",
                "properties": {
                    "city": {"type": "string", "nullable": true, "description": "where"},
                    "unit": {"enum": ["celsius"]},
                    "tags": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}
                },
                "required": ["city"]
            })
        );
    }

    #[test]
    fn refs_are_inlined_and_a_recursive_one_is_refused() {
        let s = json!({
            "type": "object",
            "properties": {"p": {"$ref": "#/$defs/P", "description": "a point"}},
            "$defs": {"P": {"type": "object", "properties": {"x": {"type": "number"}}}}
        });
        let g = to_gemini(&s).unwrap();
        assert_eq!(g["properties"]["p"]["properties"]["x"]["type"], "number");
        assert_eq!(g["properties"]["p"]["description"], "a point");
        assert!(g.get("$defs").is_none());

        let rec = json!({"$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}},
            "$ref": "#/$defs/N"});
        assert!(to_gemini(&rec).unwrap_err().contains("recursive"));
        assert!(to_gemini(&json!({"$ref": "#/$defs/missing"})).unwrap_err().contains("does not resolve"));
    }
}
