//! `zt generate --grammar FILE` and `--json-schema FILE`: the built-in model
//! (random weights) always, SmolLM2-135M-Instruct when cached. What `zt`
//! prints re-parses under the grammar (a valid prefix, or a whole sentence
//! when the model stopped); on SmolLM2 the JSON parses and has the schema's
//! fields. Bad grammar or schema files are refused with an error naming
//! the problem.

mod common;

use common::models::cached_model;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use ztensor::engine::grammar::{json_schema_to_gbnf, Grammar, Recognizer};

fn zt(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_zt"))
        .args(args)
        .output()
        .expect("spawn zt");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zt-grammar-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

fn grammar_file(name: &str) -> String {
    format!("{}/tests/data/grammars/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The generated text (stdout ends with one newline) is a prefix of the
/// grammar's language; returns whether it is a whole sentence.
fn reparses(source: &str, stdout: &str) -> bool {
    let text = stdout.strip_suffix('\n').expect("trailing newline");
    let g = Arc::new(Grammar::parse(source).expect("compiles"));
    let mut r = Recognizer::new(g).expect("recogniser");
    r.accept_bytes(text.as_bytes())
        .unwrap_or_else(|e| panic!("{e}: {text:?}"));
    r.can_end()
}

const SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "name": {"type": "string", "maxLength": 12},
    "age": {"type": "integer", "minimum": 0, "maximum": 120}
  },
  "required": ["name", "age"],
  "additionalProperties": false
}"#;

fn schema_file() -> (PathBuf, String) {
    let p = tmp("schema.json");
    std::fs::write(&p, SCHEMA).expect("write schema");
    let v: serde_json::Value = serde_json::from_str(SCHEMA).expect("schema");
    (p, json_schema_to_gbnf(&v).expect("converts"))
}

#[test]
fn built_in_model_follows_grammar_and_schema_files() {
    let file = grammar_file("json_arr.gbnf");
    let source = std::fs::read_to_string(&file).expect("grammar");
    for seed in ["1", "2"] {
        let (ok, out, err) = zt(&[
            "generate",
            "-n",
            "24",
            "--temp",
            "1",
            "--seed",
            seed,
            "-t",
            "1",
            "--grammar",
            &file,
            "-p",
            "list:",
        ]);
        assert!(ok, "{err}");
        reparses(&source, &out);
    }
    let (schema, gbnf) = schema_file();
    let schema = schema.to_string_lossy().into_owned();
    let (ok, out, err) = zt(&[
        "generate",
        "-n",
        "24",
        "--temp",
        "1",
        "-t",
        "1",
        "--json-schema",
        &schema,
        "-p",
        "x",
    ]);
    assert!(ok, "{err}");
    reparses(&gbnf, &out);
}

#[test]
fn bad_grammar_and_schema_files_are_refused() {
    let bad = tmp("bad.gbnf");
    std::fs::write(&bad, "root ::= \"a\" nowhere\n").expect("write");
    let bad = bad.to_string_lossy().into_owned();
    let (ok, _, err) = zt(&["generate", "-n", "4", "--grammar", &bad]);
    assert!(!ok && err.contains("nowhere"), "{err}");
    let unsupported = tmp("unsupported.json");
    std::fs::write(&unsupported, r#"{"type": "string", "pattern": "a+"}"#).expect("write");
    let unsupported = unsupported.to_string_lossy().into_owned();
    let (ok, _, err) = zt(&["generate", "-n", "4", "--json-schema", &unsupported]);
    assert!(!ok && err.contains("pattern"), "{err}");
    let (ok, _, err) = zt(&["generate", "--grammar", &bad, "--json-schema", &unsupported]);
    assert!(!ok && err.contains("cannot be used with"), "{err}");
}

fn smollm2() -> Option<PathBuf> {
    cached_model("SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn smollm2_json_schema_from_the_command_line_validates() {
    let Some(model) = smollm2() else { return };
    let (schema, gbnf) = schema_file();
    for seed in ["3", "4"] {
        let (ok, out, err) = zt(&[
            "generate",
            &path_str(&model),
            "-n",
            "48",
            "--temp",
            "1",
            "--seed",
            seed,
            "-t",
            "2",
            "--ctx",
            "256",
            "--json-schema",
            &path_str(&schema),
            "-p",
            "A JSON record of a person:\n",
        ]);
        assert!(ok, "{err}");
        assert!(reparses(&gbnf, &out), "not finished in 48 tokens: {out:?}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
        let name = v["name"].as_str().expect("name");
        assert!(name.chars().count() <= 12, "{v}");
        let age = v["age"].as_i64().expect("age");
        assert!((0..=120).contains(&age), "{v}");
        assert_eq!(v.as_object().map(|o| o.len()), Some(2), "{v}");
    }
}
