//! The Connect routes (`/ztensor.v1.Engine/{Method}`): the same answers as
//! the OpenAI and state routes, Connect errors and status codes, zstd
//! bodies both ways (a zip bomb refused), deadlines, and server streaming
//! framed byte by byte.

use crate::harness::{agent, engine_greedy, fixture, read_body, temp_dir, Server, KEY};
use serde_json::{json, Value};

struct Reply {
    status: u16,
    content_type: String,
    content_encoding: String,
    accept_encoding: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        let body = if self.content_encoding == "zstd" {
            zstd::decode_all(&self.body[..]).expect("zstd answer")
        } else {
            self.body.clone()
        };
        serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)))
    }

    /// A Connect error with `code` and the status Connect gives it.
    fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.content_type, "application/json");
        let v = self.json();
        assert_eq!(v["code"], code, "{v}");
        v["message"].as_str().expect("a message").to_string()
    }
}

/// A raw POST to the server with the given headers (the test key is
/// added unless `auth` is false).
fn post(s: &Server, path: &str, body: &[u8], headers: &[(&str, &str)], auth: bool) -> Reply {
    let mut r = agent().post(format!("{}{path}", s.base));
    if auth {
        r = r.header("Authorization", format!("Bearer {KEY}"));
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let mut resp = r.send(body).expect("request");
    let h = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (content_type, content_encoding, accept_encoding) = (
        h("content-type"),
        h("content-encoding"),
        h("accept-encoding"),
    );
    Reply {
        status: resp.status().as_u16(),
        content_type,
        content_encoding,
        accept_encoding,
        body: read_body(&mut resp),
    }
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

fn rpc(s: &Server, method: &str, req: &Value) -> Reply {
    post(
        s,
        &format!("/ztensor.v1.Engine/{method}"),
        req.to_string().as_bytes(),
        &[JSON],
        true,
    )
}

fn ok(s: &Server, method: &str, req: &Value) -> Value {
    let r = rpc(s, method, req);
    assert_eq!(
        r.status,
        200,
        "{method}: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.content_type, "application/json");
    r.json()
}

#[test]
fn unary_methods_answer_like_the_other_routes() {
    let model = fixture("llama-tiny-q8_0.gguf");
    let dir = temp_dir("connect");
    let s = Server::start(&model, &["--state-dir", dir.to_str().unwrap()]);
    let prompt = "hello world, the quick brown fox";
    let (want, _) = engine_greedy(&model, prompt, 16);

    let g = ok(
        &s,
        "Generate",
        &json!({"prompt": prompt, "max_tokens": 16, "temperature": 0}),
    );
    assert_eq!(g["text"], want.as_str());
    assert_eq!(g["finish_reason"], "length");
    assert_eq!(g["usage"]["completion_tokens"], 16);
    let chat = ok(
        &s,
        "Generate",
        &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0}),
    );
    let openai = s.post(
        "/v1/chat/completions",
        &json!({"model": "x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0}),
    );
    assert_eq!(
        chat["text"],
        openai.json()["choices"][0]["message"]["content"]
    );

    let t = ok(&s, "Tokenize", &json!({"content": prompt}));
    assert_eq!(t, s.post("/tokenize", &json!({"content": prompt})).json());
    let d = ok(&s, "Detokenize", &json!({"tokens": t["tokens"]}));
    assert_eq!(d["content"], prompt);

    assert_eq!(
        ok(&s, "ListStates", &json!({}))["states"],
        json!(["initial"])
    );
    // An empty body is the empty message.
    let r = post(&s, "/ztensor.v1.Engine/ListStates", b"", &[JSON], true);
    assert_eq!(r.json()["states"], json!(["initial"]));
    let e = ok(
        &s,
        "Execute",
        &json!({"exec_id": "c1", "state_name": "initial", "new_state_name": "a",
                "prompt": "hello", "max_tokens": 3, "temperature": 0}),
    );
    assert_eq!(e["state_name"], "a");
    assert_eq!(e["error"], Value::Null);
    let info = ok(&s, "GetState", &json!({"name": "a"}));
    assert_eq!(info, s.get("/states/a").json());
    assert_eq!(
        ok(&s, "Interrupt", &json!({"exec_id": "nothing-running"})),
        json!({"interrupted": false})
    );
    ok(&s, "DeleteState", &json!({"name": "a"}));
    rpc(&s, "GetState", &json!({"name": "a"})).assert_error(404, "not_found");

    // Field names in lowerCamelCase (protobuf's JSON mapping) are the same
    // fields; a JSON schema's own property names are left alone.
    let e = ok(
        &s,
        "Execute",
        &json!({"execId": "c2", "stateName": "initial", "newStateName": "b",
                "prompt": "hello", "maxTokens": 3, "temperature": 0}),
    );
    assert_eq!(
        (&e["state_name"], &e["usage"]["completion_tokens"]),
        (&json!("b"), &json!(3))
    );
    let g = ok(
        &s,
        "Generate",
        &json!({"prompt": prompt, "maxTokens": 16, "topP": 1.0, "temperature": 0}),
    );
    assert_eq!(g["text"], want.as_str());
    let g = ok(
        &s,
        "Generate",
        &json!({"prompt": "x", "maxTokens": 40, "temperature": 0,
                "responseFormat": {"type": "json_schema", "jsonSchema": {"name": "t", "schema":
                    {"type": "object", "properties": {"fooBar": {"const": 1}},
                     "required": ["fooBar"], "additionalProperties": false}}}}),
    );
    let out: Value = serde_json::from_str(g["text"].as_str().unwrap()).unwrap();
    assert_eq!(out, json!({"fooBar": 1}));
    let both = rpc(
        &s,
        "Generate",
        &json!({"prompt": "x", "maxTokens": 2, "max_tokens": 2}),
    );
    let msg = both.assert_error(400, "invalid_argument");
    assert!(
        msg.contains("maxTokens") && msg.contains("max_tokens"),
        "{msg}"
    );
}

#[test]
fn errors_are_connect_errors() {
    let model = fixture("llama-tiny-q8_0.gguf");
    let s = Server::start(&model, &[]);
    let path = "/ztensor.v1.Engine/ListStates";

    // The key check answers in Connect's shape on these paths.
    post(&s, path, b"{}", &[JSON], false).assert_error(401, "unauthenticated");
    post(&s, path, b"{}", &[JSON, ("X-API-Key", "wrong")], false)
        .assert_error(401, "unauthenticated");
    let r = post(&s, path, b"{}", &[JSON, ("X-API-Key", KEY)], false);
    assert_eq!(r.status, 200);

    let m = rpc(&s, "Generate", &json!({"prompt": 5})).assert_error(400, "invalid_argument");
    assert!(m.contains("request message"), "{m}");
    let m = post(
        &s,
        "/ztensor.v1.Engine/Generate",
        b"{not json",
        &[JSON],
        true,
    )
    .assert_error(400, "invalid_argument");
    assert!(m.contains("request message"), "{m}");
    let m = rpc(
        &s,
        "Generate",
        &json!({"prompt": "hi", "max_tokens": 100000000}),
    )
    .assert_error(400, "invalid_argument");
    assert!(m.contains("max_tokens"), "{m}");
    rpc(&s, "Frobnicate", &json!({})).assert_error(501, "unimplemented");
    rpc(&s, "GetState", &json!({"name": "../etc"})).assert_error(400, "invalid_argument");
    rpc(&s, "GetState", &json!({"name": "nope"})).assert_error(404, "not_found");
    rpc(&s, "Detokenize", &json!({"tokens": [1u64 << 40]})).assert_error(400, "invalid_argument");

    // States are immutable: an existing name is `already_exists`.
    let req = json!({"exec_id": "x1", "state_name": "initial", "new_state_name": "b",
                     "prompt": "hi", "max_tokens": 1});
    ok(&s, "Execute", &req);
    let mut again = req.clone();
    again["exec_id"] = json!("x2");
    rpc(&s, "Execute", &again).assert_error(409, "already_exists");

    let r = post(&s, path, b"{}", &[("Content-Type", "text/plain")], true);
    r.assert_error(415, "unimplemented");
    let r = post(
        &s,
        path,
        b"{}",
        &[JSON, ("Connect-Protocol-Version", "2")],
        true,
    );
    r.assert_error(400, "invalid_argument");
    let r = post(&s, path, b"{}", &[JSON, ("Content-Encoding", "gzip")], true);
    r.assert_error(501, "unimplemented");
    assert_eq!(r.accept_encoding, "zstd");
    let r = post(
        &s,
        path,
        b"{}",
        &[JSON, ("Connect-Timeout-Ms", "12345678901")],
        true,
    );
    r.assert_error(400, "invalid_argument");
    // Too large a body. A small limit keeps the body within the socket
    // buffers: a 5 MiB body against the default 4 MiB limit raced the
    // server's early answer against a reset connection.
    let small = Server::start(&model, &["--body-limit", "4096"]);
    let big = vec![b' '; 5000];
    post(&small, path, &big, &[JSON], true).assert_error(429, "resource_exhausted");
}

#[test]
fn zstd_bodies_both_ways_and_bombs_refused() {
    let model = fixture("llama-tiny-q8_0.gguf");
    let s = Server::start(&model, &[]);
    let req = json!({"prompt": "the quick brown fox", "max_tokens": 8, "temperature": 0});
    let plain = ok(&s, "Generate", &req);

    let packed = zstd::encode_all(req.to_string().as_bytes(), 3).unwrap();
    let r = post(
        &s,
        "/ztensor.v1.Engine/Generate",
        &packed,
        &[
            JSON,
            ("Content-Encoding", "zstd"),
            ("Accept-Encoding", "zstd"),
        ],
        true,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.content_encoding, "zstd");
    assert!(
        r.body.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
        "a zstd frame"
    );
    assert_eq!(r.json()["text"], plain["text"]);
    // Compressed request, plain answer (`zstd;q=0` refuses zstd).
    let r = post(
        &s,
        "/ztensor.v1.Engine/Generate",
        &packed,
        &[
            JSON,
            ("Content-Encoding", "zstd"),
            ("Accept-Encoding", "zstd;q=0"),
        ],
        true,
    );
    assert_eq!(r.content_encoding, "");
    assert_eq!(r.json()["text"], plain["text"]);

    // 64 MiB of spaces compress to a few KiB; decompression stops at the
    // 4 MiB limit.
    let bomb = zstd::encode_all(&vec![b' '; 64 << 20][..], 3).unwrap();
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    let r = post(
        &s,
        "/ztensor.v1.Engine/ListStates",
        &bomb,
        &[JSON, ("Content-Encoding", "zstd")],
        true,
    );
    let m = r.assert_error(429, "resource_exhausted");
    assert!(m.contains("decompressed"), "{m}");
    let r = post(
        &s,
        "/ztensor.v1.Engine/ListStates",
        b"\x28\xb5\x2f\xfdgarbage",
        &[JSON, ("Content-Encoding", "zstd")],
        true,
    );
    r.assert_error(400, "invalid_argument");
    // The server still answers.
    assert_eq!(
        ok(&s, "ListStates", &json!({}))["states"],
        json!(["initial"])
    );
}

#[test]
fn deadlines_cancel_the_call() {
    let model = fixture("llama-tiny-q8_0.gguf");
    let s = Server::start(&model, &[]);
    let r = post(
        &s,
        "/ztensor.v1.Engine/Generate",
        json!({"prompt": "hello", "temperature": 0})
            .to_string()
            .as_bytes(),
        &[JSON, ("Connect-Timeout-Ms", "1")],
        true,
    );
    r.assert_error(504, "deadline_exceeded");
    // The sequence is free again.
    let g = ok(&s, "Generate", &json!({"prompt": "hello", "max_tokens": 2}));
    assert_eq!(g["usage"]["completion_tokens"], 2);
}

#[test]
fn stream_deadlines_end_the_stream_with_deadline_exceeded() {
    let model = fixture("llama-tiny-q8_0.gguf");
    let s = Server::start(&model, &[]);
    // No max_tokens: the rest of the context, far more than 1 ms of work.
    let req = json!({"prompt": "hello", "temperature": 0});
    let r = post(
        &s,
        "/ztensor.v1.Engine/GenerateStream",
        &stream_body(&req, false),
        &[
            ("Content-Type", "application/connect+json"),
            ("Connect-Timeout-Ms", "1"),
        ],
        true,
    );
    assert_eq!(r.status, 200);
    let msgs = envelopes(&r.body);
    let end = &msgs[msgs.len() - 1].1;
    assert_eq!(end["error"]["code"], "deadline_exceeded", "{end}");
    assert!(end["error"]["message"]
        .as_str()
        .unwrap()
        .contains("1-ms deadline"));
    // Only token messages before it: no summary of a finished run.
    assert!(msgs[..msgs.len() - 1]
        .iter()
        .all(|m| m.1.get("tokens").is_some()));
    // The sequence is free again and a generous deadline changes nothing.
    let req = json!({"prompt": "hello", "max_tokens": 3, "temperature": 0});
    let r = post(
        &s,
        "/ztensor.v1.Engine/GenerateStream",
        &stream_body(&req, false),
        &[
            ("Content-Type", "application/connect+json"),
            ("Connect-Timeout-Ms", "600000"),
        ],
        true,
    );
    let msgs = envelopes(&r.body);
    assert_eq!(msgs[msgs.len() - 1].1, json!({}));
    assert_eq!(msgs[msgs.len() - 2].1["usage"]["completion_tokens"], 3);
}

/// Splits a Connect stream into its messages: (flags, JSON), checking that
/// the bytes are exactly back-to-back envelopes ending with the end flag.
fn envelopes(body: &[u8]) -> Vec<(u8, Value)> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        assert!(rest.len() >= 5, "a cut envelope prefix: {rest:?}");
        let flags = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        assert!(rest.len() >= 5 + len, "a cut message");
        let data = &rest[5..5 + len];
        let data = if flags & 1 != 0 {
            zstd::decode_all(data).unwrap()
        } else {
            data.to_vec()
        };
        out.push((flags & !1, serde_json::from_slice(&data).unwrap()));
        rest = &rest[5 + len..];
    }
    assert_eq!(out.last().map(|m| m.0), Some(2), "no end message");
    assert!(out[..out.len() - 1].iter().all(|m| m.0 == 0));
    out
}

fn stream_body(req: &Value, zstd: bool) -> Vec<u8> {
    let raw = req.to_string().into_bytes();
    let (flags, data) = if zstd {
        (1u8, zstd::encode_all(&raw[..], 3).unwrap())
    } else {
        (0u8, raw)
    };
    let mut b = vec![flags];
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(&data);
    b
}

#[test]
fn generate_stream_yields_the_engine_tokens() {
    let model = fixture("llama-tiny-q8_0.gguf");
    let s = Server::start(&model, &[]);
    let prompt = "hello world, the quick brown fox";
    let (want, ids) = engine_greedy(&model, prompt, 20);
    let req = json!({"prompt": prompt, "max_tokens": 20, "temperature": 0});
    let n_prompt = ok(
        &s,
        "Tokenize",
        &json!({"content": prompt, "add_special": true}),
    )["tokens"]
        .as_array()
        .unwrap()
        .len() as u64;
    let streaming = ("Content-Type", "application/connect+json");
    for zstd in [false, true] {
        let mut headers = vec![streaming];
        if zstd {
            headers.push(("Connect-Content-Encoding", "zstd"));
            headers.push(("Connect-Accept-Encoding", "zstd"));
        }
        let r = post(
            &s,
            "/ztensor.v1.Engine/GenerateStream",
            &stream_body(&req, zstd),
            &headers,
            true,
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, "application/connect+json");
        if zstd {
            assert!(r.body[0] & 1 == 1, "the first message is compressed");
        }
        let msgs = envelopes(&r.body);
        let (end, summary) = (&msgs[msgs.len() - 1].1, &msgs[msgs.len() - 2].1);
        assert_eq!(end, &json!({}));
        assert_eq!(summary["finish_reason"], "length");
        assert_eq!(summary["usage"]["completion_tokens"], 20);
        let tokens: Vec<&Value> = msgs[..msgs.len() - 2]
            .iter()
            .flat_map(|m| m.1["tokens"].as_array().unwrap())
            .collect();
        let got: Vec<u64> = tokens.iter().map(|t| t["id"].as_u64().unwrap()).collect();
        assert_eq!(got, ids.iter().map(|&i| i as u64).collect::<Vec<_>>());
        let text: String = tokens.iter().map(|t| t["text"].as_str().unwrap()).collect();
        assert_eq!(text, want);
        for (i, t) in tokens.iter().enumerate() {
            assert_eq!(t["position"], n_prompt + i as u64);
            assert!(t["logprob"].as_f64().unwrap() <= 0.0);
        }
    }

    // Errors travel in the end message, under HTTP 200.
    let r = post(
        &s,
        "/ztensor.v1.Engine/GenerateStream",
        &stream_body(&json!({"prompt": "x", "max_tokens": 100000000}), false),
        &[streaming],
        true,
    );
    assert_eq!(r.status, 200);
    let msgs = envelopes(&r.body);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].1["error"]["code"], "invalid_argument");
    // A body that is not one envelope.
    let r = post(
        &s,
        "/ztensor.v1.Engine/GenerateStream",
        req.to_string().as_bytes(),
        &[streaming],
        true,
    );
    assert_eq!(envelopes(&r.body)[0].1["error"]["code"], "invalid_argument");
}
