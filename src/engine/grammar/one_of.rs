//! When is JSON Schema `oneOf` exactly an alternation? When no instance
//! can match two branches: they differ in JSON kind or are distinct literals.

use serde_json::Value;

/// JSON kinds a schema can produce, if evident ("integer" counts as
/// "number"); None when unknown.
fn kinds(root: &Value, s: &Value, hops: usize) -> Option<Vec<&'static str>> {
    let norm = |t: &str| -> Option<&'static str> {
        Some(match t {
            "string" => "string",
            "integer" | "number" => "number",
            "boolean" => "boolean",
            "null" => "null",
            "object" => "object",
            "array" => "array",
            _ => return None,
        })
    };
    let of_value = |v: &Value| match v {
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "boolean",
        Value::Null => "null",
        Value::Object(_) => "object",
        Value::Array(_) => "array",
    };
    if hops > 16 {
        return None;
    }
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let target = root.pointer(r.strip_prefix('#')?)?;
        return kinds(root, target, hops + 1);
    }
    if let Some(c) = s.get("const") {
        return Some(vec![of_value(c)]);
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        return Some(e.iter().map(of_value).collect());
    }
    match s.get("type") {
        Some(Value::String(t)) => Some(vec![norm(t)?]),
        Some(Value::Array(ts)) => ts.iter().map(|t| t.as_str().and_then(norm)).collect(),
        _ => {
            let mut all = Vec::new();
            for kw in ["anyOf", "oneOf"] {
                if let Some(items) = s.get(kw).and_then(Value::as_array) {
                    for i in items {
                        all.extend(kinds(root, i, hops + 1)?);
                    }
                    return Some(all);
                }
            }
            None
        }
    }
}

/// Can no instance match two of these branches? (Then `oneOf` is the
/// same as `anyOf`.)
pub(crate) fn disjoint(root: &Value, items: &[Value]) -> bool {
    // Distinct literal values.
    let literals: Option<Vec<&Value>> = items
        .iter()
        .map(
            |i| match (i.get("const"), i.get("enum").and_then(Value::as_array)) {
                (Some(c), None) if i.as_object().is_some_and(|o| o.len() == 1) => Some(vec![c]),
                (None, Some(e)) if i.as_object().is_some_and(|o| o.len() == 1) => {
                    Some(e.iter().collect())
                }
                _ => None,
            },
        )
        .collect::<Option<Vec<Vec<&Value>>>>()
        .map(|v| v.into_iter().flatten().collect());
    if let Some(vals) = literals {
        let mut seen: Vec<String> = Vec::new();
        for v in vals {
            let k = v.to_string();
            if seen.contains(&k) {
                return false;
            }
            seen.push(k);
        }
        return true;
    }
    // Pairwise different JSON kinds.
    let mut seen: Vec<&str> = Vec::new();
    for i in items {
        let Some(mut ks) = kinds(root, i, 0) else {
            return false;
        };
        ks.sort_unstable();
        ks.dedup();
        if ks.iter().any(|k| seen.contains(k)) {
            return false;
        }
        seen.extend(ks);
    }
    true
}
