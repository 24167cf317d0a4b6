//! JSON Schema → GBNF.
//!
//! Sound, not always complete: every text the grammar accepts is a JSON
//! instance valid under the schema; some valid instances are not produced
//! (properties come in the schema's key order; objects with `properties`
//! and no `additionalProperties` take no other keys, as in llama.cpp). A
//! keyword we cannot translate exactly is an error naming it and its JSON
//! pointer, never dropped. Annotations (`title`, `description`, `default`,
//! `examples`, `$schema`, `$id`, `$comment`, `readOnly`, `writeOnly`,
//! `deprecated`) and `$defs`/`definitions` containers are ignored.

use super::gbnf::Grammar;
use super::{GrammarError, Limits, Result};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

const MAX_DEPTH: usize = 64;
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
    "readOnly",
    "writeOnly",
    "deprecated",
    "$defs",
    "definitions",
];

/// Most digits of an integer part (or an unbounded side of an integer
/// range) the generated grammars allow: 16, as llama.cpp's
/// json-schema-to-grammar. Fractions and exponents take 1 to 16 digits,
/// whitespace between tokens is at most one space, or a newline and up to
/// 20 spaces or tabs. Every sentence the grammar accepts is still valid
/// JSON; longer numbers and runs of whitespace are simply never produced.
pub const MAX_INT_DIGITS: u32 = 16;

const LIBRARY: &[(&str, &str)] = &[
    ("space", r#"| " " | "\n" [ \t]{0,20}"#),
    (
        "char",
        r#"[^"\\\x00-\x1F] | [\\] (["\\/bfnrt] | "u" [0-9a-fA-F]{4})"#,
    ),
    ("string", r#""\"" char* "\"" space"#),
    // Digit runs are capped (as llama.cpp's `integral-part` and
    // `decimal-part`) so a model cannot loop forever inside one number;
    // `space` is capped likewise. See [`MAX_INT_DIGITS`].
    ("integral", r#""0" | [1-9] [0-9]{0,15}"#),
    ("fraction", r#""." [0-9]{1,16}"#),
    ("exponent", r#"[eE] [-+]? [0-9]{1,16}"#),
    ("number", r#""-"? integral fraction? exponent? space"#),
    ("integer", r#""-"? integral space"#),
    ("boolean", r#"("true" | "false") space"#),
    ("null", r#""null" space"#),
    ("value", "object | array | string | number | boolean | null"),
    (
        "object",
        r#""{" space (string ":" space value ("," space string ":" space value)*)? "}" space"#,
    ),
    (
        "array",
        r#""[" space (value ("," space value)*)? "]" space"#,
    ),
    // Day ranges per month; February stops at 28 (29 needs the year).
    (
        "date",
        r#"[0-9]{4} "-" (("0" [13578] | "1" [02]) "-" ("0" [1-9] | [12] [0-9] | "3" [01]) | ("0" [469] | "11") "-" ("0" [1-9] | [12] [0-9] | "30") | "02" "-" ("0" [1-9] | "1" [0-9] | "2" [0-8]))"#,
    ),
    // No leap second: "60" is valid only at particular instants.
    (
        "time",
        r#"([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]+)? ([Zz] | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9])"#,
    ),
    ("date-time", r#"date [Tt] time"#),
    (
        "uuid",
        r#"[0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12}"#,
    ),
];

/// Library rules each library rule needs.
fn lib_deps(name: &str) -> &'static [&'static str] {
    match name {
        "string" => &["char", "space"],
        "number" => &["integral", "fraction", "exponent", "space"],
        "integer" => &["integral", "space"],
        "boolean" | "null" => &["space"],
        "value" => &["object", "array", "string", "number", "boolean", "null"],
        "object" => &["string", "value", "space"],
        "array" => &["value", "space"],
        "date-time" => &["date", "time"],
        _ => &[],
    }
}

impl Grammar {
    /// Compile a JSON Schema into a grammar (see [`json_schema_to_gbnf`]).
    pub fn from_json_schema(schema: &Value) -> Result<Grammar> {
        Grammar::parse_with(&json_schema_to_gbnf(schema)?, Limits::default())
    }
}

/// Translate a JSON Schema into GBNF text whose `root` matches the
/// instances (optionally followed by whitespace).
pub fn json_schema_to_gbnf(schema: &Value) -> Result<String> {
    let mut c = Conv {
        root: schema,
        rules: BTreeMap::new(),
        refs: HashMap::new(),
        depth: 0,
    };
    let mut body = c.visit(schema, "root", "")?;
    // A top-level `$ref` is its rule's body (so the next step applies).
    for _ in 0..MAX_DEPTH {
        match c.rules.get(&body) {
            Some(inner) => body = inner.clone(),
            None => break,
        }
    }
    // No whitespace after the top-level value: once it is complete the
    // only choice left is the end (EOS), instead of a model padding the
    // output with blanks up to `max_tokens` (values referenced through a
    // rule, as the branches of a top-level `anyOf` or type list, keep the
    // rule's trailing space).
    let body = body.strip_suffix(" space").unwrap_or(&body);
    let mut out = format!("root ::= {body}\n");
    for (name, body) in &c.rules {
        out.push_str(&format!("{name} ::= {body}\n"));
    }
    Ok(out)
}

struct Conv<'a> {
    root: &'a Value,
    rules: BTreeMap<String, String>,
    refs: HashMap<String, String>,
    depth: usize,
}

/// An error for an integer in a `const`/`enum` value that JSON parsing
/// could keep only as an f64 (beyond 64 bits): the output would be
/// another number than the schema's.
fn exact_numbers(v: &Value, keyword: &str, pointer: &str) -> Result<()> {
    match v {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or(0.0);
            if x.fract() == 0.0 && x.abs() >= 9.223_372_036_854_776e18 {
                return unsupported(
                    keyword,
                    pointer,
                    format!("{n} is beyond the 64-bit integers the schema reader keeps exactly (an integer that large is rounded to f64)"),
                );
            }
            Ok(())
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| exact_numbers(x, keyword, &format!("{pointer}/{i}"))),
        Value::Object(o) => o.iter().try_for_each(|(k, x)| {
            exact_numbers(x, keyword, &format!("{pointer}/{}", escape_ptr(k)))
        }),
        _ => Ok(()),
    }
}

fn unsupported<T>(keyword: &str, pointer: &str, detail: impl Into<String>) -> Result<T> {
    Err(GrammarError::UnsupportedSchema {
        keyword: keyword.to_string(),
        pointer: if pointer.is_empty() {
            "#".into()
        } else {
            format!("#{pointer}")
        },
        detail: detail.into(),
    })
}

fn escape_ptr(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// GBNF for "one of `texts`" as a trie: alternatives that share a prefix
/// share its literal, so the recogniser follows one branch per distinct
/// next character instead of one per text (an enum of thousands of values
/// would otherwise need thousands of live stacks at its first character).
/// Past [`TRIE_DEPTH`] nested branchings the rest is a flat alternation.
fn choice(mut texts: Vec<Vec<char>>) -> String {
    texts.sort_unstable();
    texts.dedup();
    trie(&texts, 0)
}

/// Nested branchings [`choice`] builds before it lists the rest flat.
const TRIE_DEPTH: usize = 32;

/// `texts`: sorted, distinct.
fn trie(texts: &[Vec<char>], depth: usize) -> String {
    let text = |t: &[char]| literal(&t.iter().collect::<String>());
    let optional = texts.first().is_some_and(Vec::is_empty);
    let rest = &texts[usize::from(optional)..];
    let mut alts = Vec::new();
    if depth >= TRIE_DEPTH {
        alts.extend(rest.iter().map(|t| text(t)));
    } else {
        let mut i = 0;
        while i < rest.len() {
            // The run of texts starting with rest[i]'s first character and
            // their longest common prefix.
            let first = rest[i][0];
            let end = i + rest[i..].iter().take_while(|t| t[0] == first).count();
            let group = &rest[i..end];
            let mut common = group[0].len();
            for t in &group[1..] {
                common = common.min(t.iter().zip(&group[0]).take_while(|(a, b)| a == b).count());
            }
            let prefix = text(&group[0][..common]);
            if group.len() == 1 {
                alts.push(prefix);
            } else {
                let tails: Vec<Vec<char>> = group.iter().map(|t| t[common..].to_vec()).collect();
                alts.push(format!("{prefix} {}", trie(&tails, depth + 1)));
            }
            i = end;
        }
    }
    match (optional, alts.len()) {
        (true, _) => format!("({})?", alts.join(" | ")),
        (false, 1) => alts.remove(0),
        (false, _) => format!("({})", alts.join(" | ")),
    }
}

/// GBNF string literal for arbitrary text.
fn literal(text: &str) -> String {
    let mut s = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7F => {
                s.push_str(&format!("\\x{:02X}", c as u32))
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

fn sanitize(key: &str) -> String {
    let s: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    if s.is_empty() {
        "x".into()
    } else {
        s
    }
}

fn type_matches(v: &Value, t: &str) -> bool {
    match t {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        _ => false,
    }
}

impl<'a> Conv<'a> {
    fn lib(&mut self, name: &'static str) -> String {
        if !self.rules.contains_key(name) {
            if let Some((_, body)) = LIBRARY.iter().find(|(n, _)| *n == name) {
                self.rules.insert(name.to_string(), body.to_string());
            }
            for d in lib_deps(name) {
                self.lib(d);
            }
        }
        name.to_string()
    }

    fn fresh(&self, base: &str) -> String {
        let mut name = base.to_string();
        let mut i = 1;
        while self.rules.contains_key(&name) || name == "root" {
            name = format!("{base}-{i}");
            i += 1;
        }
        name
    }

    /// Define a rule (unless `name` is "root", whose body is returned) and
    /// return the expression that refers to it.
    fn define(&mut self, name: &str, body: String) -> String {
        if name == "root" {
            return body;
        }
        self.rules.insert(name.to_string(), body);
        name.to_string()
    }

    /// An expression matching instances of `schema` plus trailing space.
    fn visit(&mut self, schema: &'a Value, name: &str, ptr: &str) -> Result<String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return unsupported("", ptr, format!("schema nested deeper than {MAX_DEPTH}"));
        }
        let r = self.visit_inner(schema, name, ptr);
        self.depth -= 1;
        r
    }

    fn visit_inner(&mut self, schema: &'a Value, name: &str, ptr: &str) -> Result<String> {
        let obj = match schema {
            Value::Bool(true) => {
                let v = self.lib("value");
                return Ok(self.define(name, v));
            }
            Value::Bool(false) => {
                return unsupported("false", ptr, "the false schema matches nothing")
            }
            Value::Object(o) => o,
            _ => return unsupported("", ptr, "a schema must be an object or a boolean"),
        };
        let keys: Vec<&str> = obj
            .keys()
            .map(String::as_str)
            .filter(|k| !ANNOTATIONS.contains(k))
            .collect();
        let only = |allowed: &[&str]| -> Result<()> {
            match keys.iter().find(|k| !allowed.contains(k)) {
                Some(k) => unsupported(
                    k,
                    &format!("{ptr}/{}", escape_ptr(k)),
                    "cannot be combined here",
                ),
                None => Ok(()),
            }
        };
        if let Some(r) = obj.get("$ref") {
            only(&["$ref"])?;
            return self.reference(r, name, ptr);
        }
        if let Some(c) = obj.get("const") {
            only(&["const", "type"])?;
            exact_numbers(c, "const", &format!("{ptr}/const"))?;
            self.check_type_of(obj.get("type"), std::slice::from_ref(c), ptr)?;
            let body = format!("{} space", literal(&c.to_string()));
            self.lib("space");
            return Ok(self.define(name, body));
        }
        if let Some(e) = obj.get("enum") {
            only(&["enum", "type"])?;
            let Some(vals) = e.as_array().filter(|a| !a.is_empty()) else {
                return unsupported("enum", &format!("{ptr}/enum"), "must be a non-empty array");
            };
            for (i, v) in vals.iter().enumerate() {
                exact_numbers(v, "enum", &format!("{ptr}/enum/{i}"))?;
            }
            self.check_type_of(obj.get("type"), vals, ptr)?;
            let texts: Vec<Vec<char>> = vals
                .iter()
                .map(|v| v.to_string().chars().collect())
                .collect();
            self.lib("space");
            return Ok(self.define(name, format!("({}) space", choice(texts))));
        }
        for kw in ["anyOf", "oneOf"] {
            if let Some(list) = obj.get(kw) {
                only(&[kw])?;
                let Some(items) = list.as_array().filter(|a| !a.is_empty()) else {
                    return unsupported(kw, &format!("{ptr}/{kw}"), "must be a non-empty array");
                };
                if kw == "oneOf" && !super::one_of::disjoint(self.root, items) {
                    return unsupported(
                        kw,
                        &format!("{ptr}/{kw}"),
                        "branches may overlap (exactly-one cannot be enforced); \
                         they must differ in JSON type or be distinct const/enum values",
                    );
                }
                let mut alts = Vec::new();
                for (i, s) in items.iter().enumerate() {
                    let sub = self.fresh(&format!("{name}-{i}"));
                    alts.push(self.visit_named(s, &sub, &format!("{ptr}/{kw}/{i}"))?);
                }
                return Ok(self.define(name, alts.join(" | ")));
            }
        }
        let types: Vec<&str> = match obj.get("type") {
            None => vec![infer_type(&keys)],
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) if !ts.is_empty() => {
                let mut v = Vec::new();
                for t in ts {
                    match t.as_str() {
                        Some(s) => v.push(s),
                        None => {
                            return unsupported(
                                "type",
                                &format!("{ptr}/type"),
                                "entries must be strings",
                            )
                        }
                    }
                }
                v
            }
            Some(_) => {
                return unsupported(
                    "type",
                    &format!("{ptr}/type"),
                    "must be a string or a non-empty array",
                )
            }
        };
        // Every keyword must apply to one of the types.
        for k in &keys {
            if *k == "type" {
                continue;
            }
            if !types.iter().any(|t| keyword_applies(k, t)) {
                return unsupported(
                    k,
                    &format!("{ptr}/{}", escape_ptr(k)),
                    format!("not supported for type {}", types.join("/")),
                );
            }
        }
        let mut alts = Vec::new();
        for (i, t) in types.iter().enumerate() {
            let sub = if types.len() == 1 {
                name.to_string()
            } else {
                self.fresh(&format!("{name}-{t}"))
            };
            let _ = i;
            let expr = match *t {
                "string" => self.string(obj, ptr)?,
                "integer" => self.integer(obj, ptr)?,
                "number" => self.number(obj, ptr)?,
                "boolean" => self.lib("boolean"),
                "null" => self.lib("null"),
                "object" => self.object(obj, &sub, ptr)?,
                "array" => self.array(obj, &sub, ptr)?,
                "any" => self.lib("value"),
                other => {
                    return unsupported(
                        "type",
                        &format!("{ptr}/type"),
                        format!("unknown type '{other}'"),
                    )
                }
            };
            alts.push(if types.len() == 1 {
                expr
            } else {
                self.define(&sub, expr)
            });
        }
        Ok(self.define(name, alts.join(" | ")))
    }

    /// Like `visit` but always yields a rule name (never an inline body).
    fn visit_named(&mut self, schema: &'a Value, name: &str, ptr: &str) -> Result<String> {
        let e = self.visit(schema, name, ptr)?;
        Ok(if name == "root" {
            self.define("root-value", e)
        } else {
            e
        })
    }

    fn check_type_of(&self, t: Option<&Value>, vals: &[Value], ptr: &str) -> Result<()> {
        let Some(t) = t else { return Ok(()) };
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => return unsupported("type", &format!("{ptr}/type"), "must be a string or array"),
        };
        for v in vals {
            if !types.iter().any(|t| type_matches(v, t)) {
                return unsupported(
                    "type",
                    &format!("{ptr}/type"),
                    format!("value {v} does not have the type"),
                );
            }
        }
        Ok(())
    }

    fn reference(&mut self, r: &Value, name: &str, ptr: &str) -> Result<String> {
        let Some(target) = r.as_str() else {
            return unsupported("$ref", &format!("{ptr}/$ref"), "must be a string");
        };
        let Some(pointer) = target.strip_prefix('#') else {
            return unsupported(
                "$ref",
                &format!("{ptr}/$ref"),
                format!("only local references ('#/...'), not '{target}'"),
            );
        };
        if let Some(rule) = self.refs.get(pointer) {
            let rule = rule.clone();
            return Ok(self.define(name, rule));
        }
        let Some(sub) = self.root.pointer(pointer) else {
            return unsupported(
                "$ref",
                &format!("{ptr}/$ref"),
                format!("'{target}' points at nothing"),
            );
        };
        let rule = self.fresh(&format!("ref{}", sanitize(pointer)));
        self.refs.insert(pointer.to_string(), rule.clone());
        // Reserve the name so recursion refers to it.
        self.rules.insert(rule.clone(), String::new());
        let body = self.visit(sub, &rule, pointer)?;
        if body != rule {
            self.rules.insert(rule.clone(), body);
        }
        Ok(self.define(name, rule))
    }

    fn string(&mut self, obj: &serde_json::Map<String, Value>, ptr: &str) -> Result<String> {
        let min = count_kw(obj, "minLength", ptr)?;
        let max = count_kw(obj, "maxLength", ptr)?;
        self.lib("space");
        if let Some(f) = obj.get("format") {
            if min.is_some() || max.is_some() {
                return unsupported(
                    "format",
                    &format!("{ptr}/format"),
                    "cannot be combined with minLength/maxLength",
                );
            }
            let rule = match f.as_str() {
                Some("date") => self.lib("date"),
                Some("time") => self.lib("time"),
                Some("date-time") => self.lib("date-time"),
                Some("uuid") => self.lib("uuid"),
                _ => {
                    return unsupported(
                        "format",
                        &format!("{ptr}/format"),
                        format!("format {f} (supported: date, time, date-time, uuid)"),
                    )
                }
            };
            return Ok(format!("\"\\\"\" {rule} \"\\\"\" space"));
        }
        if min.is_none() && max.is_none() {
            return Ok(self.lib("string"));
        }
        self.lib("char");
        let lo = min.unwrap_or(0);
        let rep = match max {
            Some(hi) if hi < lo => {
                return unsupported("maxLength", &format!("{ptr}/maxLength"), "below minLength")
            }
            Some(hi) => format!("{{{lo},{hi}}}"),
            None => format!("{{{lo},}}"),
        };
        Ok(format!("\"\\\"\" char{rep} \"\\\"\" space"))
    }

    fn integer(&mut self, obj: &serde_json::Map<String, Value>, ptr: &str) -> Result<String> {
        let (lo, hi) = int_bounds(obj, ptr)?;
        if lo.is_none() && hi.is_none() {
            return Ok(self.lib("integer"));
        }
        self.lib("space");
        Ok(format!("({}) space", super::int_range::int_range(lo, hi)))
    }

    fn number(&mut self, obj: &serde_json::Map<String, Value>, ptr: &str) -> Result<String> {
        for k in ["maximum", "exclusiveMaximum", "exclusiveMinimum"] {
            if obj.contains_key(k) {
                return unsupported(
                    k,
                    &format!("{ptr}/{k}"),
                    "ranges on type number are not expressible; use integer",
                );
            }
        }
        match obj.get("minimum") {
            None => Ok(self.lib("number")),
            Some(m) if m.as_f64() == Some(0.0) => {
                self.lib("number");
                self.lib("space");
                Ok("integral fraction? exponent? space".into())
            }
            Some(_) => unsupported(
                "minimum",
                &format!("{ptr}/minimum"),
                "on type number only minimum 0 is expressible",
            ),
        }
    }

    fn object(
        &mut self,
        obj: &'a serde_json::Map<String, Value>,
        name: &str,
        ptr: &str,
    ) -> Result<String> {
        self.lib("space");
        let props = match obj.get("properties") {
            None => None,
            Some(Value::Object(p)) => Some(p),
            Some(_) => {
                return unsupported(
                    "properties",
                    &format!("{ptr}/properties"),
                    "must be an object",
                )
            }
        };
        let required: Vec<&str> = match obj.get("required") {
            None => Vec::new(),
            Some(Value::Array(a)) => {
                let mut v = Vec::new();
                for x in a {
                    match x.as_str() {
                        Some(s) => v.push(s),
                        None => {
                            return unsupported(
                                "required",
                                &format!("{ptr}/required"),
                                "entries must be strings",
                            )
                        }
                    }
                }
                v
            }
            Some(_) => {
                return unsupported("required", &format!("{ptr}/required"), "must be an array")
            }
        };
        let additional = obj.get("additionalProperties");
        let Some(props) = props else {
            if !required.is_empty() {
                return unsupported(
                    "required",
                    &format!("{ptr}/required"),
                    "needs properties naming them",
                );
            }
            return match additional {
                Some(Value::Bool(false)) => Ok("\"{\" space \"}\" space".into()),
                None | Some(Value::Bool(true)) => Ok(self.lib("object")),
                Some(s) => {
                    let item = self.visit_named(
                        s,
                        &self.fresh(&format!("{name}-additional")),
                        &format!("{ptr}/additionalProperties"),
                    )?;
                    let kv = format!("{} \":\" space {item}", self.lib("string"));
                    Ok(format!(
                        "\"{{\" space ({kv} (\",\" space {kv})*)? \"}}\" space"
                    ))
                }
            };
        };
        match additional {
            None | Some(Value::Bool(false)) => {}
            Some(_) => {
                return unsupported(
                    "additionalProperties",
                    &format!("{ptr}/additionalProperties"),
                    "only false is supported together with properties",
                )
            }
        }
        for r in &required {
            if !props.contains_key(*r) {
                return unsupported(
                    "required",
                    &format!("{ptr}/required"),
                    format!("'{r}' is not among the properties"),
                );
            }
        }
        // kv rules in key order.
        let mut kvs: Vec<(String, bool)> = Vec::new();
        for (key, sub) in props {
            let base = format!("{name}-{}", sanitize(key));
            let vname = self.fresh(&base);
            let sub_ptr = format!("{ptr}/properties/{}", escape_ptr(key));
            let v = self.visit_named(sub, &vname, &sub_ptr)?;
            let kv_name = self.fresh(&format!("{base}-kv"));
            let key_lit = literal(&Value::String(key.clone()).to_string());
            let kv = self.define(&kv_name, format!("{key_lit} space \":\" space {v}"));
            kvs.push((kv, required.contains(&key.as_str())));
        }
        // rest(i): properties from i on, after at least one was written;
        // first(i): properties from i on, none written yet. None: empty.
        let mut rest_next: Option<String> = None;
        let mut first_next: Option<String> = None;
        for (i, (kv, req)) in kvs.iter().enumerate().rev() {
            let after = rest_next
                .as_ref()
                .map(|r| format!(" {r}"))
                .unwrap_or_default();
            let rest_body = if *req {
                format!("\",\" space {kv}{after}")
            } else {
                format!("(\",\" space {kv})?{after}")
            };
            let first_body = match (&first_next, *req) {
                (_, true) => format!("{kv}{after}"),
                (Some(f), false) => format!("{kv}{after} | {f}"),
                (None, false) => format!("({kv}{after})?"),
            };
            let rname = self.fresh(&format!("{name}-rest{i}"));
            rest_next = Some(self.define(&rname, rest_body));
            let fname = self.fresh(&format!("{name}-first{i}"));
            first_next = Some(self.define(&fname, first_body));
        }
        let inner = first_next.map(|f| format!(" {f}")).unwrap_or_default();
        Ok(format!("\"{{\" space{inner} \"}}\" space"))
    }

    fn array(
        &mut self,
        obj: &'a serde_json::Map<String, Value>,
        name: &str,
        ptr: &str,
    ) -> Result<String> {
        self.lib("space");
        if let Some(u) = obj.get("uniqueItems") {
            if u != &Value::Bool(false) {
                return unsupported(
                    "uniqueItems",
                    &format!("{ptr}/uniqueItems"),
                    "cannot be expressed in a grammar",
                );
            }
        }
        let item = match obj.get("items") {
            None => self.lib("value"),
            Some(s) => {
                let n = self.fresh(&format!("{name}-item"));
                self.visit_named(s, &n, &format!("{ptr}/items"))?
            }
        };
        let min = count_kw(obj, "minItems", ptr)?.unwrap_or(0);
        let max = count_kw(obj, "maxItems", ptr)?;
        let more = |lo: u64| match max {
            Some(hi) => format!("{{{lo},{}}}", hi - 1),
            None => format!("{{{lo},}}"),
        };
        Ok(match max {
            Some(hi) if hi < min => {
                return unsupported("maxItems", &format!("{ptr}/maxItems"), "below minItems")
            }
            Some(0) => "\"[\" space \"]\" space".into(),
            _ if min == 0 => format!(
                "\"[\" space ({item} (\",\" space {item}){})? \"]\" space",
                more(0)
            ),
            _ => format!(
                "\"[\" space {item} (\",\" space {item}){} \"]\" space",
                more(min - 1)
            ),
        })
    }
}

fn infer_type(keys: &[&str]) -> &'static str {
    let has = |ks: &[&str]| keys.iter().any(|k| ks.contains(k));
    if has(&["properties", "required", "additionalProperties"]) {
        "object"
    } else if has(&["items", "minItems", "maxItems", "uniqueItems"]) {
        "array"
    } else if has(&["minLength", "maxLength", "format"]) {
        "string"
    } else if has(&["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]) {
        "number"
    } else {
        "any"
    }
}

fn keyword_applies(k: &str, t: &str) -> bool {
    match t {
        "string" => matches!(k, "minLength" | "maxLength" | "format"),
        "integer" | "number" => matches!(
            k,
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum"
        ),
        "object" => matches!(k, "properties" | "required" | "additionalProperties"),
        "array" => matches!(k, "items" | "minItems" | "maxItems" | "uniqueItems"),
        _ => false,
    }
}

/// A non-negative count keyword, at most the grammar repetition limit.
fn count_kw(obj: &serde_json::Map<String, Value>, k: &str, ptr: &str) -> Result<Option<u64>> {
    let Some(v) = obj.get(k) else { return Ok(None) };
    let limit = u64::from(Limits::default().max_repeat);
    match v.as_u64() {
        Some(n) if n <= limit => Ok(Some(n)),
        _ => unsupported(
            k,
            &format!("{ptr}/{k}"),
            format!("must be an integer in 0..={limit}, got {v}"),
        ),
    }
}

/// Inclusive integer bounds from minimum/maximum/exclusive*.
fn int_bounds(
    obj: &serde_json::Map<String, Value>,
    ptr: &str,
) -> Result<(Option<i64>, Option<i64>)> {
    let get = |k: &str| -> Result<Option<f64>> {
        match obj.get(k) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(f) if f.abs() < 9.0e18 => Ok(Some(f)),
                _ => unsupported(
                    k,
                    &format!("{ptr}/{k}"),
                    format!("must be a number within ±9e18, got {v}"),
                ),
            },
        }
    };
    let mut lo: Option<i64> = None;
    let mut hi: Option<i64> = None;
    if let Some(m) = get("minimum")? {
        lo = Some(m.ceil() as i64);
    }
    if let Some(m) = get("exclusiveMinimum")? {
        let v = m.floor() as i64 + 1;
        lo = Some(lo.map_or(v, |l| l.max(v)));
    }
    if let Some(m) = get("maximum")? {
        let v = m.floor() as i64;
        hi = Some(hi.map_or(v, |h| h.min(v)));
    }
    if let Some(m) = get("exclusiveMaximum")? {
        let v = m.ceil() as i64 - 1;
        hi = Some(hi.map_or(v, |h| h.min(v)));
    }
    if let (Some(l), Some(h)) = (lo, hi) {
        if l > h {
            return unsupported("minimum", ptr, format!("empty integer range {l}..={h}"));
        }
    }
    Ok((lo, hi))
}
