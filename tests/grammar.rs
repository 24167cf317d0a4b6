//! GBNF compiler, recogniser state, JSON Schema translation and token masks
//! on fixed inputs (the llama.cpp example grammars among them).
#![cfg(feature = "engine")]

use serde_json::json;
use std::sync::Arc;
use ztensor::engine::grammar::{
    json_schema_to_gbnf, Grammar, GrammarError, Limits, Recognizer, StateArrays, TokenMask,
};

fn load(name: &str) -> Arc<Grammar> {
    let path = format!("{}/tests/data/grammars/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("grammar file");
    Arc::new(Grammar::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}")))
}

fn matches(g: &Arc<Grammar>, text: &[u8]) -> bool {
    let mut r = Recognizer::new(g.clone()).expect("recogniser");
    r.accept_bytes(text).is_ok() && r.can_end()
}

#[test]
fn llama_cpp_example_grammars_compile_and_recognise() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "json.gbnf",
            &[
                r#"{"a": [1, -2, "x\n\u00e9"], "b": {"c": true}}"#,
                "{}",
                "{ }",
            ],
            &[r#"{"a": 1.5}"#, "[1]", r#"{"a" 1}"#],
        ),
        (
            "json_arr.gbnf",
            &["[\n{\"a\": 1.5e3, \"b\": null},\n\"x\"]", "[\n]"],
            &["[1]", "{}"],
        ),
        (
            "list.gbnf",
            &["- one\n- two words\n"],
            &["- \n", "-x\n", "- a"],
        ),
        (
            "arithmetic.gbnf",
            &["1+2= 3\n", "(a *b_2)=x\nx=1\n"],
            &["1+2\n", "=1\n"],
        ),
        (
            "chess.gbnf",
            &["1. e4 e5\n2. Nf3 Nc6\n", "1. d4 Nf6\n2. O-O-O Bxc4+\n"],
            &["1. e4 e5\n", "1. e9 e5\n2. a3 a4\n"],
        ),
        (
            "english.gbnf",
            &["Hello, world!\nBye."],
            &["two  spaces", ""],
        ),
        (
            "japanese.gbnf",
            &["こんにちは 世界", "カタカナ、ひらがな"],
            &["abc", "日本 x"],
        ),
        (
            "c.gbnf",
            &[
                "int main(){x = 1;return x;}",
                "float f(int a){while(a<3){a = a+1;}}",
            ],
            &["int main(){", "main(){}"],
        ),
    ];
    for (name, good, bad) in cases {
        let g = load(name);
        for s in *good {
            assert!(matches(&g, s.as_bytes()), "{name} should accept {s:?}");
        }
        for s in *bad {
            assert!(!matches(&g, s.as_bytes()), "{name} should reject {s:?}");
        }
    }
}

#[test]
fn partial_utf8_across_chunks() {
    let g = load("japanese.gbnf");
    let text = "日本語 テキスト".as_bytes();
    let mut r = Recognizer::new(g.clone()).expect("recogniser");
    for b in text {
        r.accept_bytes(std::slice::from_ref(b))
            .expect("byte by byte");
    }
    assert!(r.can_end());
    // Mid-character: not an end, and a wrong continuation is rejected.
    let mut r = Recognizer::new(g.clone()).expect("recogniser");
    r.accept_bytes(&"日".as_bytes()[..2]).expect("partial");
    assert!(!r.can_end());
    assert_eq!(
        r.clone().accept_bytes(b"A"),
        Err(GrammarError::Rejected { offset: 0 })
    );
    // A lead byte whose every completion lies outside the grammar.
    let mut r = Recognizer::new(g).expect("recogniser");
    assert!(
        r.accept_bytes(&[0xC3]).is_err(),
        "2-byte chars are not Japanese here"
    );
    assert!(r.accept_bytes(&[0xFF]).is_err() && r.accept_bytes(&[0x80]).is_err());
}

fn syntax_at(src: &str) -> (usize, usize) {
    match Grammar::parse(src) {
        Err(GrammarError::Syntax { line, column, .. }) => (line, column),
        other => panic!("{src:?}: expected a syntax error, got {other:?}"),
    }
}

#[test]
fn errors_carry_line_and_column() {
    assert_eq!(syntax_at("root ::= \"a\"\nx ::= [b-a]\n"), (2, 10));
    assert_eq!(syntax_at("root ::= \"abc"), (1, 10));
    assert_eq!(syntax_at("root ::= (\"a\" | \"b\"\n"), (2, 1));
    assert_eq!(syntax_at("root ::= \"\\q\""), (1, 11));
    assert_eq!(syntax_at("root := \"a\""), (1, 6));
    assert_eq!(syntax_at("root ::= * \"a\""), (1, 10));
    assert_eq!(syntax_at("root ::= \"a\"{3,1}"), (1, 13));
    assert_eq!(syntax_at("root ::= []"), (1, 10));
    assert_eq!(syntax_at("root ::= <think>"), (1, 10));
    assert_eq!(syntax_at("root ::= \"a\"\nroot ::= \"b\""), (2, 1));
    assert_eq!(syntax_at("root ::= \"\\U00110000\""), (1, 11));
    assert!(matches!(
        Grammar::parse("a ::= \"x\""),
        Err(GrammarError::Syntax { .. })
    ));
    match Grammar::parse("root ::= \"a\"\n  # c\nx ::= \"b\" y\n") {
        Err(GrammarError::UndefinedRule { name, line, column }) => {
            assert_eq!((name.as_str(), line, column), ("y", 3, 11))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn left_recursion_is_rejected() {
    for src in [
        "root ::= root \"a\" | \"b\"",
        "root ::= x\nx ::= y \"a\"\ny ::= root | \"c\"",
        "root ::= e x\ne ::= \"q\"?\nx ::= e root | \"z\"",
        "root ::= (\"a\"?)*",
    ] {
        assert!(
            matches!(Grammar::parse(src), Err(GrammarError::LeftRecursion { .. })),
            "{src:?} -> {:?}",
            Grammar::parse(src)
        );
    }
    // Right recursion is fine.
    let g = Arc::new(Grammar::parse("root ::= \"(\" root \")\" | \"x\"").expect("compiles"));
    assert!(matches(&g, b"((x))") && !matches(&g, b"((x)"));
}

#[test]
fn hostile_grammars_hit_limits_not_memory() {
    let too_many = Grammar::parse("root ::= \"a\"{5000}");
    assert!(
        matches!(too_many, Err(GrammarError::Syntax { .. })),
        "{too_many:?}"
    );
    let blowup = Grammar::parse(&format!("root ::= \"{}\"{{4000}}", "x".repeat(300)));
    assert!(
        matches!(blowup, Err(GrammarError::TooLarge { .. })),
        "{blowup:?}"
    );
    let deep = format!("root ::= {}\"a\"{}", "(".repeat(100), ")".repeat(100));
    assert!(matches!(
        Grammar::parse(&deep),
        Err(GrammarError::Syntax { .. })
    ));
    let big = "x".repeat(2 << 20);
    assert!(matches!(
        Grammar::parse(&big),
        Err(GrammarError::TooLarge { .. })
    ));
    // Ambiguity explodes the live stacks: capped with a clear error.
    let lim = Limits {
        max_stacks: 64,
        ..Limits::default()
    };
    let g =
        Arc::new(Grammar::parse_with("root ::= (\"a\" | \"a\" \"b\"?)*", lim).expect("compiles"));
    let amb = Arc::new(
        Grammar::parse_with("root ::= x*\nx ::= \"a\" | \"a\" y\ny ::= x* \"b\"", lim)
            .expect("compiles"),
    );
    assert!(matches(&g, b"aaab"));
    let mut r = Recognizer::new(amb).expect("recogniser");
    let err = r.accept_bytes(&[b'a'; 200]).expect_err("stack cap");
    assert!(
        matches!(
            err,
            GrammarError::TooManyStacks { .. } | GrammarError::StackTooDeep { .. }
        ),
        "{err:?}"
    );
}

#[test]
fn state_serialises_and_rejects_tampering() {
    let g = load("json.gbnf");
    let mut r = Recognizer::new(g.clone()).expect("recogniser");
    r.accept_bytes("{\"k\": [1, \"é".as_bytes())
        .expect("prefix");
    r.accept_bytes(&"€".as_bytes()[..1]).expect("partial");
    let arrays = r.to_arrays();
    let mut back = Recognizer::from_arrays(g.clone(), &arrays).expect("restore");
    assert_eq!(back.state(), r.state());
    let rest = &"€\"]}".as_bytes()[1..];
    back.accept_bytes(rest).expect("continue");
    r.accept_bytes(rest).expect("continue");
    assert!(back.can_end() && r.can_end());
    assert_eq!(back.state(), r.state());
    // Snapshot / restore in process.
    let mut r = Recognizer::new(g.clone()).expect("recogniser");
    r.accept_bytes(b"{").expect("brace");
    let snap = r.snapshot();
    r.accept_bytes(b" ").expect("ws");
    r.restore(snap.clone()).expect("restore");
    assert_eq!(r.state(), &snap);
    // Another grammar's state is refused.
    let other = load("list.gbnf");
    assert!(Recognizer::from_arrays(other, &arrays).is_err());
    // Every single-value corruption is caught or gives a valid state.
    let tamper = |f: &dyn Fn(&mut StateArrays)| {
        let mut a = arrays.clone();
        f(&mut a);
        Recognizer::from_arrays(g.clone(), &a)
    };
    assert!(tamper(&|a| a.header[0] = 9).is_err());
    assert!(tamper(&|a| a.header.push(0)).is_err());
    assert!(tamper(&|a| a.header[4] = 7).is_err());
    assert!(tamper(&|a| a.header[5] = 2).is_err());
    assert!(tamper(&|a| a.header[6] = 0).is_err());
    assert!(tamper(&|a| a.header[6] = u32::MAX).is_err());
    assert!(tamper(&|a| a.offsets[0] = 1).is_err());
    assert!(tamper(&|a| *a.offsets.last_mut().expect("offset") += 1).is_err());
    assert!(tamper(&|a| a.entries[0] = u32::MAX).is_err());
    assert!(tamper(&|a| a.entries.clear()).is_err());
    for i in 0..arrays.entries.len() {
        for v in [0u32, 1, 2, 3, 5, 8, 13, 50, 100] {
            let res = tamper(&|a| a.entries[i] = v);
            if let Ok(rec) = res {
                // A state that passes the checks must behave like a state.
                let _ = rec.clone().accept_bytes(b"\"]}");
            }
        }
    }
}

fn schema_grammar(schema: serde_json::Value) -> Arc<Grammar> {
    let text = json_schema_to_gbnf(&schema).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(Grammar::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}")))
}

#[test]
fn json_schema_basics() {
    let g = schema_grammar(json!({
        "type": "object",
        "properties": {
            "a": {"type": "integer", "minimum": 10, "maximum": 250},
            "b": {"type": "string", "format": "date-time"},
            "c": {"type": ["string", "null"], "maxLength": 2},
            "d": {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 2}
        },
        "required": ["a", "d"],
        "title": "ignored annotation"
    }));
    for ok in [
        r#"{"a":10,"d":[true]}"#,
        r#"{"a":250,"b":"2024-12-31T23:59:59.5+05:30","d":[true,false]}"#,
        r#"{ "a": 99, "c": null, "d": [ false ] }"#,
        r#"{"a":100,"c":"xy","d":[true]}"#,
    ] {
        assert!(matches(&g, ok.as_bytes()), "{ok}");
    }
    for bad in [
        r#"{"a":9,"d":[true]}"#,
        r#"{"a":251,"d":[true]}"#,
        r#"{"a":010,"d":[true]}"#,
        r#"{"d":[true]}"#,
        r#"{"a":10,"d":[]}"#,
        r#"{"a":10,"d":[true,true,true]}"#,
        r#"{"a":10,"c":"xyz","d":[true]}"#,
        r#"{"a":10,"b":"2024-13-01T00:00:00Z","d":[true]}"#,
        r#"{"a":10,"b":"2023-02-30T00:00:00Z","d":[true]}"#,
        r#"{"a":10,"b":"2023-04-31T00:00:00Z","d":[true]}"#,
        r#"{"a":10,"d":[true],"e":1}"#,
        r#"{"d":[true],"a":10}"#,
    ] {
        assert!(!matches(&g, bad.as_bytes()), "{bad}");
    }
}

/// Whitespace and digit runs are capped (as llama.cpp's
/// json-schema-to-grammar), so a model cannot loop forever inside valid
/// JSON: at most one space, or a newline and 20 spaces or tabs, between
/// tokens; at most 16 digits in an integer part, a fraction, an exponent or
/// an open-ended integer range.
#[test]
fn json_grammars_cap_whitespace_and_digit_runs() {
    let any_object = schema_grammar(json!({"type": "object"}));
    let any_value = schema_grammar(json!({}));
    let int_from = schema_grammar(json!({"type": "integer", "minimum": -3}));
    let int_to = schema_grammar(json!({"type": "integer", "maximum": 7}));
    let nonneg_number = schema_grammar(json!({"type": "number", "minimum": 0}));
    let sixteen = "1234567890123456";
    let ws20 = format!("\n{}", " ".repeat(20));
    let ws21 = format!("\n{}", " ".repeat(21));
    for (g, ok) in [
        (&any_object, format!("{{\"a\":{sixteen}}}")),
        (
            &any_object,
            format!("{{\"a\":-{sixteen}.{sixteen}e-{sixteen}}}"),
        ),
        (&any_object, format!("{{{ws20}\"a\": [ 1,{ws20}2 ] }}")),
        (&any_object, "{\"a\":0.5E+3}".to_string()),
        (&any_value, format!("-{sixteen}")),
        (&int_from, sixteen.to_string()),
        (&int_to, format!("-{sixteen}")),
        (&nonneg_number, format!("{sixteen}.5")),
    ] {
        assert!(matches(g, ok.as_bytes()), "{ok}");
    }
    for (g, bad) in [
        (&any_object, format!("{{\"a\":{sixteen}7}}")),
        (&any_object, format!("{{\"a\":1.{sixteen}7}}")),
        (&any_object, format!("{{\"a\":1e{sixteen}7}}")),
        (&any_object, format!("{{{ws21}\"a\":1}}")),
        (&any_object, "{  \"a\":1}".to_string()),
        (&any_object, "{\"a\":1 \n}".to_string()),
        (&any_object, "{\"a\":\n\n1}".to_string()),
        (&any_value, format!("{sixteen}0")),
        (&int_from, format!("{sixteen}0")),
        (&int_to, format!("-{sixteen}0")),
        (&nonneg_number, format!("{sixteen}0")),
    ] {
        assert!(!matches(g, bad.as_bytes()), "{bad}");
    }
    // A recogniser that has taken 16 digits refuses a 17th: generation
    // under the grammar cannot loop inside a number.
    let mut r = Recognizer::new(any_value.clone()).expect("recogniser");
    r.accept_bytes(sixteen.as_bytes()).expect("16 digits");
    assert!(r.state_after(b"1").is_err() && r.state_after(b" ").is_ok());
    assert_eq!(ztensor::engine::grammar::MAX_INT_DIGITS, 16);
}

#[test]
fn json_schema_unsupported_keywords_name_keyword_and_pointer() {
    let cases = [
        (
            json!({"type": "string", "pattern": "^a$"}),
            "pattern",
            "#/pattern",
        ),
        (
            json!({"properties": {"x": {"type": "array", "uniqueItems": true}}}),
            "uniqueItems",
            "#/properties/x/uniqueItems",
        ),
        (json!({"allOf": [{"type": "string"}]}), "allOf", "#/allOf"),
        (
            json!({"type": "object", "properties": {"a/b": {"not": {}}}}),
            "not",
            "#/properties/a~1b/not",
        ),
        (
            json!({"type": "number", "maximum": 3}),
            "maximum",
            "#/maximum",
        ),
        (
            json!({"type": "string", "format": "email"}),
            "format",
            "#/format",
        ),
        (json!({"$ref": "http://x/y"}), "$ref", "#/$ref"),
        (json!({"$ref": "#/$defs/missing"}), "$ref", "#/$ref"),
        (
            json!({"type": "integer", "minimum": 1e30}),
            "minimum",
            "#/minimum",
        ),
        (
            json!({"type": "object", "properties": {"a": {}}, "additionalProperties": true}),
            "additionalProperties",
            "#/additionalProperties",
        ),
        (
            json!({"type": "integer", "multipleOf": 2}),
            "multipleOf",
            "#/multipleOf",
        ),
    ];
    for (schema, kw, ptr) in cases {
        match json_schema_to_gbnf(&schema) {
            Err(GrammarError::UnsupportedSchema {
                keyword, pointer, ..
            }) => assert_eq!((keyword.as_str(), pointer.as_str()), (kw, ptr), "{schema}"),
            other => panic!("{schema}: {other:?}"),
        }
    }
}

#[test]
fn json_schema_refs_recursion_and_alternatives() {
    let g = schema_grammar(json!({
        "$defs": {"node": {"type": "object", "properties": {
            "v": {"enum": [1, "two", null]},
            "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}
        }, "required": ["v", "next"]}},
        "oneOf": [{"$ref": "#/$defs/node"}, {"const": [1, 2]}]
    }));
    assert!(matches(
        &g,
        br#"{"v":1,"next":{"v":"two","next":{"v":null,"next":null}}}"#
    ));
    assert!(matches(&g, b"[1,2]"));
    assert!(!matches(&g, b"[1,3]"));
    assert!(!matches(&g, br#"{"v":2,"next":null}"#));
    // The schema's key order (v before next), not the alphabetical one.
    assert!(
        !matches(&g, br#"{"next":null,"v":1}"#),
        "properties in schema order only"
    );
    // A reference to itself with nothing consumed is left recursion.
    let text =
        json_schema_to_gbnf(&json!({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}))
            .expect("translates");
    assert!(matches!(
        Grammar::parse(&text),
        Err(GrammarError::LeftRecursion { .. })
    ));
}

fn vocab_of(pieces: &[&str]) -> Vec<Vec<u8>> {
    pieces.iter().map(|p| p.as_bytes().to_vec()).collect()
}

#[test]
fn token_mask_eos_fail_closed_and_split_utf8() {
    let g = Arc::new(Grammar::parse("root ::= \"é\" [0-9]+").expect("compiles"));
    let mut vocab = vocab_of(&["a", "é", "1", "12", "é1", "</s>", ""]);
    vocab.push(vec![0xC3]); // first half of é
    vocab.push(vec![0xA9, b'3']); // second half + digit
    let eos = 5u32;
    let mut m = TokenMask::new(g.clone(), &vocab, &[eos]).expect("mask");
    let mut r = Recognizer::new(g.clone()).expect("recogniser");
    let allowed = m.allowed_tokens(r.state()).expect("some");
    assert_eq!(allowed.as_slice(), &[1, 4, 7]);
    assert!(!m.allowed(r.state(), eos) && !m.allowed(r.state(), 6) && !m.allowed(r.state(), 99));
    r.accept_bytes(&[0xC3]).expect("half");
    assert_eq!(m.allowed_tokens(r.state()).expect("some").as_slice(), &[8]);
    r.accept_bytes(&[0xA9, b'3']).expect("rest");
    let allowed = m.allowed_tokens(r.state()).expect("some");
    assert_eq!(allowed.as_slice(), &[2, 3, 5]);
    // Greedy/top-k follow logit order among allowed tokens.
    let mut logits = vec![0.0f32; vocab.len()];
    logits[0] = 9.0;
    logits[3] = 5.0;
    logits[5] = 7.0;
    assert_eq!(m.greedy(r.state(), &logits), Ok(5));
    assert_eq!(m.top_k(r.state(), &logits, 2), Ok(vec![5, 3]));
    let mut masked = logits.clone();
    assert_eq!(m.apply(r.state(), &mut masked), Ok(3));
    assert!(masked[0] == f32::NEG_INFINITY && masked[3] == 5.0);
    // Nothing allowed: a typed error, never an unconstrained pick.
    let g2 = Arc::new(Grammar::parse("root ::= \"z\"").expect("compiles"));
    let mut m2 = TokenMask::new(g2.clone(), &vocab, &[eos]).expect("mask");
    let r2 = Recognizer::new(g2).expect("recogniser");
    assert_eq!(
        m2.greedy(r2.state(), &logits),
        Err(GrammarError::NoTokenAllowed)
    );
    assert_eq!(
        m2.allowed_tokens(r2.state()).map(|_| ()),
        Err(GrammarError::NoTokenAllowed)
    );
    assert!(TokenMask::new(g, &vocab, &[99]).is_err());
}

/// A large enum compiles to a trie: thousands of values (a new-user trial
/// hit the recogniser's live-stack limit at ~1,000) are each accepted and
/// nothing else is, values that are prefixes of others included.
#[test]
fn json_schema_large_enums_stay_within_the_stack_limit() {
    let mut words: Vec<serde_json::Value> = Vec::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..3000 {
        let w: String = (0..6)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect();
        words.push(json!(w));
    }
    words.extend((0..1100).map(|i| json!(format!("v{i}"))));
    words.extend([
        json!(1),
        json!(12),
        json!(123),
        json!("é"),
        json!("éa"),
        json!(null),
    ]);
    let g = schema_grammar(json!({"enum": words}));
    for w in &words {
        let text = w.to_string();
        assert!(matches(&g, text.as_bytes()), "{text}");
    }
    for bad in [
        r#""v1100""#,
        r#""v""#,
        "1234",
        "2",
        r#""ée""#,
        r#""""#,
        "nul",
    ] {
        assert!(!matches(&g, bad.as_bytes()), "{bad}");
    }
}

/// The top-level value ends the output: no trailing blanks (a model would
/// otherwise pad constrained output with whitespace up to `max_tokens`),
/// while whitespace inside stays allowed.
#[test]
fn json_schema_output_ends_with_the_value() {
    let g = schema_grammar(json!({
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"enum": ["x", "y"]}},
        "required": ["a", "b"]
    }));
    assert!(matches(&g, br#"{"a":1,"b":"x"}"#));
    assert!(matches(&g, b"{ \"a\": 1,\n  \"b\": \"y\" }"));
    for bad in [&b"{\"a\":1,\"b\":\"x\"} "[..], b"{\"a\":1,\"b\":\"x\"}\n\t"] {
        assert!(!matches(&g, bad), "{}", String::from_utf8_lossy(bad));
    }
    let e = schema_grammar(json!({"enum": [1, 2]}));
    assert!(matches(&e, b"2") && !matches(&e, b"2 "));
    // A top-level `$ref` (here recursive) or a bare type ends there too.
    let r = schema_grammar(json!({
        "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}},
        "$ref": "#/$defs/node"
    }));
    assert!(matches(&r, br#"{"next": {"next": {} }}"#));
    assert!(!matches(&r, b"{} ") && !matches(&r, b"{}\n"));
    let b = schema_grammar(json!({"type": "boolean"}));
    assert!(matches(&b, b"true") && !matches(&b, b"true "));
}

/// `const`/`enum` integers beyond 64 bits reach the schema reader as f64
/// (another number than the schema's): refused by pointer, while those
/// that fit (u64 and i64 extremes) compile exactly.
#[test]
fn json_schema_integers_beyond_64_bits_are_refused() {
    for (text, pointer) in [
        (r#"{"const": 123456789012345678901234567890}"#, "#/const"),
        (r#"{"enum": [1, -98765432109876543210987]}"#, "#/enum/1"),
        (
            r#"{"const": {"a": [1, 99999999999999999999]}}"#,
            "#/const/a/1",
        ),
    ] {
        let schema: serde_json::Value = serde_json::from_str(text).unwrap();
        match json_schema_to_gbnf(&schema) {
            Err(GrammarError::UnsupportedSchema {
                pointer: p, detail, ..
            }) => {
                assert_eq!(p, pointer, "{text}");
                assert!(detail.contains("beyond the 64-bit integers"), "{detail}");
            }
            other => panic!("{text}: {other:?}"),
        }
    }
    let g = schema_grammar(json!({"enum": [u64::MAX, i64::MIN, 1.5]}));
    for ok in ["18446744073709551615", "-9223372036854775808", "1.5"] {
        assert!(matches(&g, ok.as_bytes()), "{ok}");
    }
}
