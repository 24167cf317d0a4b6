//! Refusals: the key rule whatever the order of the credentials, OpenAI
//! JSON for axum's own refusals (405, a path that is not UTF-8), bodies
//! in an encoding the routes do not decode, and 400s naming the field.

use crate::harness::{fixture, Answer, Server, KEY};
use serde_json::{json, Value};

/// An OpenAI-style error with `status`; its `param`.
fn error(a: &Answer, status: u16) -> Value {
    assert_eq!(a.status, status, "{}", a.text());
    assert!(
        a.content_type.starts_with("application/json"),
        "{}: {:?}",
        a.content_type,
        a.text()
    );
    let v = a.json();
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    assert_eq!(v["error"]["code"], status);
    v["error"]["param"].clone()
}

#[test]
fn every_credential_presented_must_be_the_key() {
    let s = Server::start(&fixture("llama-tiny-q8_0.gguf"), &[]);
    let good_bearer = format!("Bearer {KEY}");
    let q = |path: &str, headers: &[(&str, &str)]| {
        let mut h = headers.to_vec();
        h.push(("-noauth", ""));
        s.request("GET", path, None, &h).status
    };
    let good_query = format!("/v1/models?token={KEY}");
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, u16);
    let cases: Vec<Case> = vec![
        (
            "/v1/models".into(),
            vec![("Authorization", &good_bearer)],
            200,
        ),
        ("/v1/models".into(), vec![("X-API-Key", KEY)], 200),
        (good_query.clone(), vec![], 200),
        ("/v1/models".into(), vec![], 401),
        // One wrong credential refuses, wherever it is.
        (
            "/v1/models".into(),
            vec![("Authorization", &good_bearer), ("X-API-Key", "bad")],
            401,
        ),
        (
            "/v1/models".into(),
            vec![("Authorization", "Bearer bad"), ("X-API-Key", KEY)],
            401,
        ),
        (
            "/v1/models".into(),
            vec![("Authorization", &good_bearer), ("X-API-Key", KEY)],
            200,
        ),
        (format!("{good_query}&token=wrong"), vec![], 401),
        (format!("/v1/models?token=wrong&token={KEY}"), vec![], 401),
        (format!("{good_query}&token={KEY}"), vec![], 200),
        (good_query.clone(), vec![("X-API-Key", "bad")], 401),
        ("/v1/models?token=bad".into(), vec![("X-API-Key", KEY)], 401),
        (
            good_query.clone(),
            vec![("Authorization", &good_bearer)],
            200,
        ),
        // Another scheme is a credential that is not the key.
        (
            "/v1/models".into(),
            vec![("Authorization", "Basic eDp5"), ("X-API-Key", KEY)],
            401,
        ),
        (
            "/v1/models".into(),
            vec![("X-API-Key", KEY), ("X-API-Key", "bad")],
            401,
        ),
        (
            "/v1/models".into(),
            vec![("X-API-Key", "bad"), ("X-API-Key", KEY)],
            401,
        ),
        (format!("/v1/models?token={KEY}&token"), vec![], 401),
    ];
    for (path, headers, want) in cases {
        assert_eq!(q(&path, &headers), want, "{path} {headers:?}");
    }
    // The key check is before the route: a refused request learns nothing.
    let a = s.request("GET", "/v1/models?token=bad", None, &[("X-API-Key", KEY)]);
    assert_eq!(error(&a, 401), Value::Null);
}

#[test]
fn axums_own_refusals_are_openai_errors() {
    let s = Server::start(&fixture("llama-tiny-q8_0.gguf"), &[]);
    // Wrong methods: 405 with Allow, as JSON.
    let a = s.post("/states", &json!({}));
    error(&a, 405);
    assert!(a.text().contains("POST is not allowed"), "{}", a.text());
    error(&s.get("/reset"), 405);
    error(&s.get("/v1/completions"), 405);
    error(&s.request("DELETE", "/execute", None, &[]), 405);
    // A name that is not UTF-8 once decoded.
    assert_eq!(error(&s.get("/states/%FF"), 400), "name");
    assert_eq!(
        error(&s.request("DELETE", "/states/%FF", None, &[]), 400),
        "name"
    );
    error(&s.get("/no/such/route"), 404);
    // Bodies in an encoding these routes do not decode: 415 with
    // Accept-Encoding (Connect's routes answer 501, their protocol's code).
    let exec = json!({"exec_id": "g", "state_name": "initial", "prompt": "hi", "max_tokens": 2})
        .to_string();
    for path in ["/execute", "/v1/completions", "/tokenize", "/reset"] {
        let a = s.request(
            "POST",
            path,
            Some(exec.as_bytes()),
            &[("Content-Encoding", "gzip")],
        );
        error(&a, 415);
    }
    let a = s.request(
        "POST",
        "/execute",
        Some(exec.as_bytes()),
        &[("Content-Encoding", "identity")],
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let a = s.request(
        "POST",
        "/ztensor.v1.Engine/Tokenize",
        Some(br#"{"content": "hi"}"#),
        &[("Content-Encoding", "gzip")],
    );
    assert_eq!(a.status, 501);
    assert_eq!(a.json()["code"], "unimplemented");
    // Connect paths keep Connect's error shape for axum's refusals too.
    let a = s.get("/ztensor.v1.Engine/Tokenize");
    assert_eq!(a.status, 501, "{}", a.text());
    assert_eq!(a.json()["code"], "unimplemented");
}

#[test]
fn body_errors_name_the_field() {
    let s = Server::start(&fixture("qwen2-tiny-bpe-f32.gguf"), &[]);
    let exec = |extra: Value| {
        let mut b =
            json!({"exec_id": "e", "state_name": "initial", "prompt": "hi", "max_tokens": 2});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases = [
        ("/execute", exec(json!({"max_tokens": -1})), "max_tokens"),
        ("/execute", exec(json!({"max_tokens": 5.0})), "max_tokens"),
        (
            "/execute",
            exec(json!({"temperature": "0.5"})),
            "temperature",
        ),
        ("/execute", exec(json!({"seed": -5})), "seed"),
        ("/execute", exec(json!({"grammar": 123})), "grammar"),
        ("/execute", exec(json!({"state_name": null})), "state_name"),
        ("/execute", exec(json!({"stream": "yes"})), "stream"),
        (
            "/execute",
            json!({"state_name": "initial", "prompt": "hi"}),
            "exec_id",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "top_p": []}),
            "top_p",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "stream_options": {"include_usage": 1}}),
            "stream_options.include_usage",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"},
                                {"role": "user", "content": 5}]}),
            "messages[1].content",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": "3"}),
            "max_completion_tokens",
        ),
        ("/interrupt", json!({"exec_id": 7}), "exec_id"),
        ("/tokenize", json!({"content": ["x"]}), "content"),
        // A misspelled field is refused on every route (ignoring
        // `max_token` would drop the length limit); any unknown field on
        // our own routes.
        (
            "/v1/completions",
            json!({"prompt": "hi", "max_token": 2}),
            "max_token",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "maxTokens": 2}),
            "maxTokens",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "temprature": 0}),
            "temprature",
        ),
        ("/execute", exec(json!({"max_token": 2})), "max_token"),
        ("/execute", exec(json!({"user": "u"})), "user"),
        (
            "/interrupt",
            json!({"exec_id": "e", "force": true}),
            "force",
        ),
        // A prompt too long for the context is the chat route's `messages`.
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi ".repeat(3000)}]}),
            "messages",
        ),
    ];
    for (path, body, param) in cases {
        let a = s.post(path, &body);
        assert_eq!(error(&a, 400), param, "{path} {body}");
    }
    // Untagged shapes are explained, not named after serde's enums.
    for (path, body) in [
        ("/v1/completions", json!({"prompt": [[1, 2], [3]]})),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": 5}]}),
        ),
    ] {
        let v = s.post(path, &body).json();
        let m = v["error"]["message"].as_str().unwrap();
        assert!(!m.contains("untagged") && m.contains("a string"), "{m}");
    }
    // Unknown OpenAI fields that are not misspellings are ignored, as
    // llama-server does (clients send `user`, `store`, `metadata`).
    let a = s.post(
        "/v1/completions",
        &json!({"prompt": "hi", "max_tokens": 2, "user": "u", "store": false, "metadata": {}}),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let m = error(
        &s.post("/v1/completions", &json!({"prompt": "hi", "max_token": 2})),
        400,
    );
    assert_eq!(m, "max_token");
    let msg = s
        .post("/v1/completions", &json!({"prompt": "hi", "max_token": 2}))
        .json();
    assert!(
        msg["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `max_tokens`"),
        "{msg}"
    );
    // Too deep: the path to where it got too deep, cut short.
    let deep = format!(
        r#"{{"exec_id": "e", "state_name": "initial", "prompt": {}1{}}}"#,
        "[".repeat(300),
        "]".repeat(300)
    );
    let a = s.request("POST", "/execute", Some(deep.as_bytes()), &[]);
    let p = error(&a, 400);
    assert!(p.as_str().unwrap().starts_with("prompt[0][0]"), "{p}");
    // A repeated field is refused (as serde's structs do), and named.
    let dup = br#"{"exec_id": "e", "state_name": "initial", "prompt": "hi", "max_tokens": 1, "max_tokens": 2}"#;
    let a = s.request("POST", "/execute", Some(dup), &[]);
    assert_eq!(error(&a, 400), "max_tokens");
    // Malformed JSON: the field it broke in, if any.
    let a = s.request("POST", "/execute", Some(b"{\"exec_id\": "), &[]);
    assert_eq!(error(&a, 400), "exec_id");
    let a = s.request("POST", "/execute", Some(b"nope"), &[]);
    assert_eq!(error(&a, 400), Value::Null);
    // Connect refuses unknown fields (also after the camelCase renaming).
    for bad in [json!({"maxToken": 2}), json!({"user": "u"})] {
        let a = s.post("/ztensor.v1.Engine/Execute", &exec(bad.clone()));
        assert_eq!(a.status, 400, "{bad}");
        assert!(
            a.json()["message"]
                .as_str()
                .unwrap()
                .contains("unknown field"),
            "{}",
            a.text()
        );
    }
    // Connect names the field in its message.
    let a = s.post(
        "/ztensor.v1.Engine/Execute",
        &exec(json!({"max_tokens": -1})),
    );
    assert_eq!(a.status, 400);
    assert!(
        a.json()["message"].as_str().unwrap().contains("max_tokens"),
        "{}",
        a.text()
    );
}
