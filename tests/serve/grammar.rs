//! Constrained output over HTTP: `response_format` (OpenAI), `grammar` and
//! `json_schema` (llama-server) on completions, chat and `/execute`; the
//! output equals the library engine's under the same grammar; bad
//! grammars and schemas are 400s naming the problem.

use crate::harness::{engine_run, fixture, Server};
use serde_json::{json, Value};
use ztensor::engine::GrammarSpec;

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green", "blue"]},
            "ok": {"type": "boolean"}
        },
        "required": ["color", "ok"],
        "additionalProperties": false
    })
}

#[test]
fn response_format_json_schema_equals_the_engine_and_validates() {
    let model = fixture("llama-tiny-q8_0.gguf");
    let s = Server::start(&model, &[]);
    let prompt = "the quick brown fox";
    let run = engine_run(&model, prompt, 48, Some(GrammarSpec::JsonSchema(schema())));
    let (want, reason) = (run.text, run.reason);
    let finish = if reason == "eos" || reason == "stop" {
        "stop"
    } else {
        "length"
    };
    let rf = json!({"type": "json_schema", "json_schema": {"name": "pick", "schema": schema(), "strict": true}});
    let a = s.post(
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 48, "temperature": 0, "response_format": rf}),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    assert_eq!(v["choices"][0]["text"], want.as_str());
    assert_eq!(v["choices"][0]["finish_reason"], finish);
    if finish == "stop" {
        let out: Value = serde_json::from_str(&want).unwrap_or_else(|e| panic!("{e}: {want}"));
        assert!(["red", "green", "blue"].contains(&out["color"].as_str().unwrap()));
        assert!(out["ok"].is_boolean());
        assert_eq!(out.as_object().unwrap().len(), 2);
    }
    // llama-server's `json_schema` field: the same output.
    let b = s.post(
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 48, "temperature": 0, "json_schema": schema()}),
    );
    assert_eq!(b.json()["choices"][0]["text"], want.as_str());
    // Unconstrained, the same prompt gives something else.
    let c = s.post(
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 48, "temperature": 0}),
    );
    assert_ne!(c.json()["choices"][0]["text"], want.as_str());
}

#[test]
fn gbnf_grammar_on_chat_streaming_and_execute() {
    let model = fixture("llama-tiny-q8_0.gguf");
    let s = Server::start(&model, &[]);
    let g = r#"root ::= ("yes" | "no") " " [0-9] [0-9]?"#;
    let req = json!({
        "messages": [{"role": "user", "content": "answer"}],
        "max_tokens": 12, "temperature": 0.9, "seed": 5, "grammar": g,
    });
    let check = |text: &str| {
        let (word, rest) = text.split_once(' ').unwrap_or_else(|| panic!("{text:?}"));
        assert!(word == "yes" || word == "no", "{text:?}");
        assert!(
            (1..=2).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_digit()),
            "{text:?}"
        );
    };
    let a = s.post("/v1/chat/completions", &req);
    assert_eq!(a.status, 200, "{}", a.text());
    let text = a.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    check(&text);
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    let b = s.post("/v1/chat/completions", &sreq);
    let streamed: String = crate::harness::sse_events(&b.body)
        .iter()
        .filter_map(|e| {
            e["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(streamed, text, "same seed, same grammar, same text");

    let e = s.post(
        "/execute",
        &json!({"exec_id": "g1", "state_name": "initial", "new_state_name": "g",
                "prompt": "answer", "max_tokens": 8, "temperature": 0.7, "seed": 1,
                "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"enum": [1, 22, 333]}}}}),
    );
    assert_eq!(e.status, 200, "{}", e.text());
    let v = e.json();
    assert_eq!(v["error"], Value::Null, "{v}");
    let out: Value = serde_json::from_str(v["output"].as_str().unwrap()).unwrap();
    assert!([1, 22, 333].contains(&out.as_i64().unwrap()), "{out}");
    assert_eq!(s.get("/states/g").status, 200);
}

#[test]
fn bad_grammars_and_schemas_are_400_naming_the_problem() {
    let model = fixture("llama-tiny-q8_0.gguf");
    let s = Server::start(&model, &[]);
    let base = json!({"prompt": "x", "max_tokens": 4});
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"grammar": "root ::= missing"}), "grammar", "missing"),
        (json!({"grammar": "root ::= \"a"}), "grammar", "line 1"),
        (
            json!({"json_schema": {"type": "frobnicate"}}),
            "json_schema",
            "frobnicate",
        ),
        (
            json!({"json_schema": 7}),
            "json_schema",
            "must be an object",
        ),
        (
            json!({"response_format": {"type": "xml"}}),
            "response_format",
            "xml",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object", "patternProperties": {"a": {}}}}}}),
            "response_format",
            "patternProperties",
        ),
        (
            json!({"response_format": {"type": "json_schema"}}),
            "response_format",
            "json_schema",
        ),
    ];
    for (extra, param, needle) in cases {
        let mut req = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            req[k] = v.clone();
        }
        for route in ["/v1/completions", "/execute"] {
            let mut r = req.clone();
            if route == "/execute" {
                r["exec_id"] = json!("bad");
                r["state_name"] = json!("initial");
            }
            let a = s.post(route, &r);
            assert_eq!(a.status, 400, "{route} {req}: {}", a.text());
            let err = &a.json()["error"];
            assert_eq!(err["param"], param, "{route} {req}: {err}");
            assert!(
                err["message"].as_str().unwrap().contains(needle),
                "{route} {req}: {err}"
            );
        }
    }
    let both = json!({"prompt": "x", "grammar": "root ::= \"a\"", "json_schema": {}});
    assert_eq!(s.post("/v1/completions", &both).status, 400);
    // Nothing was stored by the refused executions.
    assert_eq!(s.get("/states").json()["states"], json!(["initial"]));
}
