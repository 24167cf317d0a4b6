//! Constrained output on the generation routes: OpenAI's
//! `response_format` (`{"type":"text"}`, `{"type":"json_object"}`,
//! `{"type":"json_schema","json_schema":{"name","schema","strict"}}`) and
//! llama-server's `grammar` (GBNF text) and `json_schema` fields, at most
//! one of them per request. The grammar is compiled before the request is
//! queued, so a bad schema or grammar is a 400 naming the problem.
//!
//! When the grammar allows no next token (not even the end of the text),
//! the engine stops rather than continue unconstrained
//! ([`crate::engine::StopReason::Grammar`]); the OpenAI routes report that
//! as `finish_reason: "length"` (the output was cut short before the
//! grammar was complete: the closest of OpenAI's values, and one clients
//! already treat as "the text may be incomplete"); `POST /execute` reports
//! `"grammar"` and stores no state, as for any run that did not succeed.

use super::error::{ApiError, ApiResult};
use crate::engine::grammar::{json_schema_to_gbnf, Grammar};
use crate::engine::GrammarSpec;
use serde_json::Value;

/// The grammar fields of a request, as sent.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct GrammarFields {
    #[serde(default)]
    pub response_format: Option<Value>,
    /// GBNF text (llama-server).
    #[serde(default)]
    pub grammar: Option<String>,
    /// A JSON Schema (llama-server).
    #[serde(default)]
    pub json_schema: Option<Value>,
}

impl crate::server::routes::FromJson for GrammarFields {}

/// The spec `response_format` asks for (`None`: plain text).
fn response_format(v: &Value) -> ApiResult<Option<GrammarSpec>> {
    let bad = |m: String| ApiError::bad("response_format", m);
    let obj = v
        .as_object()
        .ok_or_else(|| bad(format!("response_format must be an object, not {v}")))?;
    let kind = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("response_format.type is missing or not a string".into()))?;
    match kind {
        "text" => Ok(None),
        // Any JSON object.
        "json_object" => Ok(Some(GrammarSpec::JsonSchema(
            serde_json::json!({"type": "object"}),
        ))),
        "json_schema" => {
            let js = obj
                .get("json_schema")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    bad("response_format.json_schema is missing or not an object".into())
                })?;
            if let Some(name) = js.get("name") {
                let ok = name.as_str().is_some_and(|n| {
                    !n.is_empty()
                        && n.len() <= 64
                        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
                });
                if !ok {
                    return Err(bad(format!(
                        "response_format.json_schema.name = {name}: expected 1-64 characters of a-z A-Z 0-9 _ -"
                    )));
                }
            }
            if let Some(strict) = js.get("strict") {
                if !strict.is_boolean() && !strict.is_null() {
                    return Err(bad(format!(
                        "response_format.json_schema.strict = {strict}: expected a boolean"
                    )));
                }
            }
            // Without a schema: any JSON value (OpenAI requires one; we
            // take its absence as "any JSON").
            let schema = js.get("schema").cloned().unwrap_or(serde_json::json!({}));
            if !schema.is_object() && !schema.is_boolean() {
                return Err(bad(format!(
                    "response_format.json_schema.schema must be an object, not {schema}"
                )));
            }
            Ok(Some(GrammarSpec::JsonSchema(schema)))
        }
        other => Err(bad(format!(
            "response_format.type = {other:?}: expected \"text\", \"json_object\" or \"json_schema\""
        ))),
    }
}

/// The grammar a request asks for, compiled once to check it (off the
/// async threads: a large schema is CPU work).
pub async fn from_request(f: GrammarFields) -> ApiResult<Option<GrammarSpec>> {
    let given = [
        f.response_format.is_some(),
        f.grammar.is_some(),
        f.json_schema.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(ApiError::invalid(
            "give at most one of response_format, grammar and json_schema",
        ));
    }
    let (spec, field) = if let Some(v) = &f.response_format {
        (response_format(v)?, "response_format")
    } else if let Some(g) = f.grammar {
        (Some(GrammarSpec::Gbnf(g)), "grammar")
    } else if let Some(s) = f.json_schema {
        if !s.is_object() && !s.is_boolean() {
            return Err(ApiError::bad(
                "json_schema",
                format!("json_schema must be an object, not {s}"),
            ));
        }
        (Some(GrammarSpec::JsonSchema(s)), "json_schema")
    } else {
        (None, "")
    };
    let Some(spec) = spec else { return Ok(None) };
    let checked = spec.clone();
    super::routes::blocking(move || check(&checked))
        .await?
        .map_err(|m| ApiError::bad(field, format!("{field}: {m}")))?;
    Ok(Some(spec))
}

/// Compiles `spec`, returning why it cannot be used.
pub fn check(spec: &GrammarSpec) -> Result<(), String> {
    let source = match spec {
        GrammarSpec::Gbnf(s) => s.clone(),
        GrammarSpec::JsonSchema(v) => json_schema_to_gbnf(v).map_err(|e| e.to_string())?,
    };
    Grammar::parse(&source).map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn response_formats() {
        assert_eq!(response_format(&json!({"type": "text"})).unwrap(), None);
        assert!(response_format(&json!({"type": "json_object"}))
            .unwrap()
            .is_some());
        let s = json!({"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "integer"}, "strict": true}});
        assert_eq!(
            response_format(&s).unwrap(),
            Some(GrammarSpec::JsonSchema(json!({"type": "integer"})))
        );
        for bad in [
            json!("json"),
            json!({"type": "xml"}),
            json!({"type": "json_schema"}),
            json!({"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}),
            json!({"type": "json_schema", "json_schema": {"schema": 3}}),
        ] {
            let e = response_format(&bad).unwrap_err();
            assert_eq!(e.param.as_deref(), Some("response_format"), "{bad}");
        }
    }

    #[test]
    fn grammars_are_compiled() {
        assert!(check(&GrammarSpec::Gbnf("root ::= \"a\"".into())).is_ok());
        let e = check(&GrammarSpec::Gbnf("root ::= nope".into())).unwrap_err();
        assert!(e.contains("nope"), "{e}");
        assert!(check(&GrammarSpec::JsonSchema(json!({"type": "object"}))).is_ok());
        assert!(check(&GrammarSpec::JsonSchema(json!({"type": "frobnicate"}))).is_err());
    }
}
