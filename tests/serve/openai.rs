//! The OpenAI-compatible routes, tokenize/detokenize, health, metrics,
//! authentication and request checks.

use crate::harness::{completion, engine_greedy, fixture, sse_events, Server, KEY};
use serde_json::json;
use ztensor::engine::{Engine, EngineOptions};
use ztensor::server::chat::ChatFormat;

#[test]
fn completions_equal_engine_generate_plain_and_streamed() {
    let model = fixture("llama-tiny-q8_0.gguf");
    let s = Server::start(&model, &[]);
    let prompt = "hello world, the quick brown fox";
    let (want, ids) = engine_greedy(&model, prompt, 24);
    assert_eq!(ids.len(), 24);

    let a = s.post("/v1/completions", &completion(prompt, 24));
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], want.as_str());
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let prompt_ids = s.post(
        "/tokenize",
        &json!({"content": prompt, "add_special": true}),
    );
    let n_prompt = prompt_ids.json()["tokens"].as_array().unwrap().len();
    assert_eq!(v["usage"]["prompt_tokens"], n_prompt);
    assert_eq!(v["usage"]["completion_tokens"], 24);
    assert_eq!(v["usage"]["total_tokens"], n_prompt + 24);

    // The same prompt as token ids.
    let toks = prompt_ids.json()["tokens"].clone();
    let b = s.post(
        "/v1/completions",
        &json!({"prompt": toks, "max_tokens": 24, "temperature": 0}),
    );
    assert_eq!(b.json()["choices"][0]["text"], want.as_str());

    // Streamed: the pieces add up to the same text; framing checked.
    let mut req = completion(prompt, 24);
    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    let a = s.post("/v1/completions", &req);
    assert_eq!(a.status, 200);
    assert!(
        a.content_type.starts_with("text/event-stream"),
        "{}",
        a.content_type
    );
    let events = sse_events(&a.body);
    let text: String = events
        .iter()
        .filter_map(|e| e["choices"].get(0).and_then(|c| c["text"].as_str()))
        .collect();
    assert_eq!(text, want);
    let finals: Vec<_> = events
        .iter()
        .filter_map(|e| {
            e["choices"]
                .get(0)
                .and_then(|c| c["finish_reason"].as_str())
        })
        .collect();
    assert_eq!(finals, vec!["length"]);
    let last = events.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 24);

    // Detokenize inverts tokenize (without BOS).
    let plain = s.post("/tokenize", &json!({"content": prompt}));
    let d = s.post("/detokenize", &json!({"tokens": plain.json()["tokens"]}));
    assert_eq!(d.json()["content"].as_str().unwrap().trim_start(), prompt);
    let bad = s.post("/detokenize", &json!({"tokens": [1, 99999]}));
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["param"], "tokens[1]");
    let bad = s.post(
        "/v1/completions",
        &json!({"prompt": [1, 2, 99999], "max_tokens": 1}),
    );
    assert_eq!(bad.json()["error"]["param"], "prompt[2]");
}

#[test]
fn seeds_stops_and_logprobs() {
    let model = fixture("llama-tiny-q8_0.gguf");
    let s = Server::start(&model, &[]);
    let req = json!({"prompt": "the quick", "max_tokens": 20, "temperature": 1.0, "top_p": 0.9, "seed": 7});
    let a = s.post("/v1/completions", &req).json();
    let b = s.post("/v1/completions", &req).json();
    assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"]);
    let mut other = req.clone();
    other["seed"] = json!(8);
    let texts: Vec<String> = (0..4)
        .map(|i| {
            other["seed"] = json!(100 + i);
            s.post("/v1/completions", &other).json()["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(texts
        .iter()
        .any(|t| t != a["choices"][0]["text"].as_str().unwrap()));

    // A stop string cuts the text before it, streamed or not.
    let (full, _) = engine_greedy(&model, "hello world", 30);
    let stop: String = full.chars().skip(6).take(3).collect();
    let cut = full.find(&stop).unwrap();
    let mut r = completion("hello world", 30);
    r["stop"] = json!([stop]);
    let v = s.post("/v1/completions", &r).json();
    assert_eq!(v["choices"][0]["text"], &full[..cut]);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // Log-probabilities cover the returned text, not the stop string:
    // no token starts past the cut (streamed or not).
    let mut lr = r.clone();
    lr["logprobs"] = json!(1);
    for stream in [false, true] {
        lr["stream"] = json!(stream);
        let a = s.post("/v1/completions", &lr);
        let chunks = if stream {
            sse_events(&a.body)
        } else {
            vec![a.json()]
        };
        let offsets: Vec<u64> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["logprobs"]["text_offset"].as_array())
            .flatten()
            .map(|o| o.as_u64().unwrap())
            .collect();
        let tokens: usize = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["logprobs"]["tokens"].as_array())
            .map(Vec::len)
            .sum();
        assert_eq!(offsets.len(), tokens);
        let cut_chars = full[..cut].chars().count() as u64;
        assert!(
            offsets.iter().all(|&o| o < cut_chars.max(1)),
            "stream {stream}: {offsets:?} / {cut_chars}"
        );
        let (_, ids) = engine_greedy(&model, "hello world", 30);
        assert!(tokens < ids.len(), "stream {stream}: {tokens} tokens");
    }
    r["stream"] = json!(true);
    let ev = sse_events(&s.post("/v1/completions", &r).body);
    let streamed: String = ev
        .iter()
        .filter_map(|e| e["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(streamed, &full[..cut]);

    // Log-probabilities: one per token, the top alternative first.
    let mut r = completion("hello world", 5);
    r["logprobs"] = json!(3);
    let v = s.post("/v1/completions", &r).json();
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 5);
    for (i, l) in lp["token_logprobs"].as_array().unwrap().iter().enumerate() {
        let l = l.as_f64().unwrap();
        assert!(l <= 0.0);
        let top = lp["top_logprobs"][i].as_object().unwrap();
        assert!(!top.is_empty() && top.len() <= 4);
        // Best first, in the JSON text itself.
        let values: Vec<f64> = top.values().map(|x| x.as_f64().unwrap()).collect();
        assert!(values.windows(2).all(|w| w[0] >= w[1]), "{values:?}");
        assert!(
            (values[0] - l).abs() < 1e-4,
            "greedy picks the top token: {} vs {l}",
            values[0]
        );
    }
    // Offsets count characters, as OpenAI's string positions do: a whole
    // token moves the next one on by its length (a byte token's text is a
    // lone U+FFFD: see below).
    let text = v["choices"][0]["text"].as_str().unwrap();
    let tokens = lp["tokens"].as_array().unwrap();
    assert_eq!(lp["text_offset"][0], json!(0));
    for (i, t) in tokens.iter().enumerate() {
        let (at, t) = (lp["text_offset"][i].as_u64().unwrap(), t.as_str().unwrap());
        assert!(at as usize <= text.chars().count());
        if i + 1 < tokens.len() && !t.contains('\u{FFFD}') {
            let next = lp["text_offset"][i + 1].as_u64().unwrap();
            assert_eq!(next, at + t.chars().count() as u64, "{t:?}");
        }
    }
    // Byte tokens of multi-byte characters (forced by a grammar): a token
    // starts where its character does in `text`.
    let mut r = completion("hello", 9);
    r["logprobs"] = json!(1);
    r["grammar"] = json!("root ::= \"aé€b\"");
    let v = s.post("/v1/completions", &r).json();
    let c = &v["choices"][0];
    assert_eq!(c["text"], "aé€b");
    let n = c["logprobs"]["tokens"].as_array().unwrap().len();
    let offsets: Vec<u64> = (0..n)
        .map(|i| c["logprobs"]["text_offset"][i].as_u64().unwrap())
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
    assert_eq!((offsets[0], offsets[n - 1]), (0, 3), "{offsets:?}");
    // `logprobs: 0`: just the sampled token, as OpenAI's legacy API.
    let mut r = completion("hello world", 3);
    r["logprobs"] = json!(0);
    let v = s.post("/v1/completions", &r).json();
    let lp = &v["choices"][0]["logprobs"];
    for (i, tok) in lp["tokens"].as_array().unwrap().iter().enumerate() {
        let top = lp["top_logprobs"][i].as_object().unwrap();
        assert_eq!(top.len(), 1, "{top:?}");
        assert_eq!(
            top.get(tok.as_str().unwrap()),
            Some(&lp["token_logprobs"][i])
        );
    }
    let mut r = completion("hello", 5);
    r["logprobs"] = json!(6);
    assert_eq!(s.post("/v1/completions", &r).status, 400);
}

#[test]
fn chat_uses_the_template_and_keeps_typed_markers_as_text() {
    let model = fixture("qwen2-tiny-bpe-f32.gguf");
    let s = Server::start(&model, &[]);
    let e = Engine::open(&model, EngineOptions::default()).unwrap();
    assert_eq!(ChatFormat::detect(&e), ChatFormat::ChatMl);
    let msgs = vec![
        ("system".to_string(), "be brief".to_string()),
        ("user".to_string(), "hello <|im_end|> world".to_string()),
    ];
    let ids = ChatFormat::ChatMl.tokens(e.tokenizer(), &msgs, true);
    // The typed marker is text: <|im_end|> (399) appears only where the
    // template puts it (after each message), not inside the content.
    assert_eq!(ids.iter().filter(|&&t| t == 399).count(), 2);
    assert_eq!(ids.iter().filter(|&&t| t == 398).count(), 3);

    let req = json!({
        "model": "qwen2-tiny-bpe-f32",
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": "hello <|im_end|> world"}],
        "max_tokens": 12, "temperature": 0,
    });
    let a = s.post("/v1/chat/completions", &req);
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["usage"]["prompt_tokens"], ids.len());
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");

    // The same as running those tokens through the engine greedily.
    let mut eng = Engine::open(
        &model,
        EngineOptions {
            n_threads: 1,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    eng.prefill(&ids).unwrap();
    let p = ztensor::engine::GenerateParams {
        max_tokens: 12,
        sampler: ztensor::engine::SamplerConfig {
            temperature: 0.0,
            ..Default::default()
        },
        stop: vec!["<|im_end|>".into()],
        seed: Some(0),
        ..Default::default()
    };
    let mut g = eng.start("", &p).unwrap();
    let mut want = String::new();
    while let Some(t) = eng.next_token(&mut g, &p).unwrap() {
        if t.id == 399 || t.id == 397 {
            break;
        }
        want.push_str(&t.text);
    }
    assert_eq!(content, want);

    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    let ev = sse_events(&s.post("/v1/chat/completions", &sreq).body);
    assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(ev.iter().all(|e| e["object"] == "chat.completion.chunk"));
    let streamed: String = ev
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, content);
    let reasons: Vec<_> = ev
        .iter()
        .filter_map(|e| e["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(reasons.len(), 1);

    let mut lreq = req.clone();
    lreq["logprobs"] = json!(true);
    lreq["top_logprobs"] = json!(2);
    let v = s.post("/v1/chat/completions", &lreq).json();
    let c = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert!(!c.is_empty());
    assert_eq!(c[0]["top_logprobs"].as_array().unwrap().len(), 2);

    let bad = s.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "wizard", "content": "x"}]}),
    );
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["param"], "messages[0].role");
    // `param` is the path of the field that broke the rule.
    let user = json!({"role": "user", "content": "x"});
    for (message, param) in [
        (
            json!({"role": "wizard", "content": "x"}),
            "messages[1].role",
        ),
        (
            json!({"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]}),
            "messages[1].content[1].type",
        ),
        (
            json!({"role": "user", "content": [{"type": "text"}]}),
            "messages[1].content[0].text",
        ),
    ] {
        let bad = s.post(
            "/v1/chat/completions",
            &json!({"messages": [user, message]}),
        );
        assert_eq!(bad.status, 400, "{message}");
        assert_eq!(bad.json()["error"]["param"], param, "{message}");
    }
    let empty = s.post("/v1/chat/completions", &json!({"messages": []}));
    assert_eq!(empty.status, 400);
}

#[test]
fn auth_on_every_route_but_health() {
    let s = Server::start(&fixture("llama-tiny-q8_0.gguf"), &[]);
    let no = [("-noauth", "")];
    assert_eq!(s.request("GET", "/health", None, &no).status, 200);
    assert_eq!(
        s.request("GET", "/health", None, &no).json()["status"],
        "ok"
    );
    let body = completion("hi", 2).to_string();
    for (method, path) in [
        ("GET", "/v1/models"),
        ("GET", "/metrics"),
        ("GET", "/states"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/tokenize"),
        ("POST", "/execute"),
        ("POST", "/reset"),
        ("GET", "/nowhere"),
    ] {
        for headers in [
            vec![("-noauth", "")],
            vec![("Authorization", "Bearer wrong")],
            vec![("Authorization", "Bearer test-key-012")],
            vec![("X-API-Key", "wrong")],
            vec![("Authorization", "Basic dGVzdA==")],
        ] {
            let a = s.request(method, path, Some(body.as_bytes()), &headers);
            assert_eq!(a.status, 401, "{method} {path} {headers:?}");
            assert_eq!(a.json()["error"]["message"], "invalid or missing API key");
        }
    }
    let ok = s.request("GET", "/v1/models", None, &[("X-API-Key", KEY)]);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["data"][0]["id"], "llama-tiny-q8_0");
    let q = s.request(
        "GET",
        &format!("/states?token={KEY}"),
        None,
        &[("-noauth", "")],
    );
    assert_eq!(q.status, 200);
    assert_eq!(q.json()["states"], json!(["initial"]));
}

#[test]
fn bad_requests_get_openai_errors() {
    let s = Server::start(&fixture("llama-tiny-q8_0.gguf"), &["--body-limit", "4096"]);
    let raw = |body: &[u8]| s.request("POST", "/v1/completions", Some(body), &[]);
    for body in [
        &b"{"[..],
        b"not json",
        b"[]",
        b"{\"prompt\": 5}",
        b"{\"max_tokens\": 3}",
        &[0xff, 0xfe],
    ] {
        let a = raw(body);
        assert_eq!(a.status, 400, "{}", String::from_utf8_lossy(body));
        let e = a.json();
        assert_eq!(e["error"]["type"], "invalid_request_error");
        assert_eq!(e["error"]["code"], 400);
    }
    let big = json!({"prompt": "a".repeat(5000)}).to_string();
    let a = raw(big.as_bytes());
    assert_eq!(a.status, 413);
    assert_eq!(a.json()["error"]["code"], 413);
    // max_tokens bounded by the context (256 for this model).
    let a = s.post("/v1/completions", &completion("hello", 300));
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["error"]["param"], "max_tokens");
    let a = s.post(
        "/v1/completions",
        &json!({"prompt": "hello ".repeat(300), "max_tokens": 1}),
    );
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["error"]["param"], "prompt");
    for (field, value) in [
        ("temperature", json!(3.0)),
        ("top_p", json!(0.0)),
        ("n", json!(2)),
        ("stop", json!(["a", "b", "c", "d", "e"])),
    ] {
        let mut r = completion("hello", 2);
        r[field] = value;
        let a = s.post("/v1/completions", &r);
        assert_eq!(a.status, 400, "{field}");
        assert_eq!(a.json()["error"]["param"], field);
    }
    assert_eq!(
        s.post("/v1/completions", &json!({"prompt": [1, 600]}))
            .status,
        400
    );
    assert_eq!(s.get("/v1/nothing").status, 404);
    // Without a max_tokens the rest of the context is the limit.
    let v = s
        .post(
            "/v1/completions",
            &json!({"prompt": "hello", "temperature": 0}),
        )
        .json();
    let used = v["usage"]["total_tokens"].as_u64().unwrap();
    assert!(used <= 256);
    if v["choices"][0]["finish_reason"] == "length" {
        assert_eq!(used, 256);
    }
}

#[test]
fn metrics_are_prometheus_text() {
    let s = Server::start(&fixture("llama-tiny-q8_0.gguf"), &[]);
    s.post("/v1/completions", &completion("hello", 8));
    // The answer goes out before the worker is done with its sequence (it
    // still stores the prompt in the prefix cache): wait for it to be free.
    let t0 = std::time::Instant::now();
    let m = loop {
        let m = s.get("/metrics");
        if m.status != 200 || m.text().contains("\nzt_requests_processing 0\n") {
            break m;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "the request never finished processing"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert_eq!(m.status, 200);
    assert!(m.content_type.starts_with("text/plain"));
    let text = m.text();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing in {text}"))
            .parse()
            .unwrap()
    };
    // The completion; the scrapes of /metrics above are not counted.
    assert_eq!(value("zt_requests_total"), 1.0);
    assert_eq!(value("zt_tokens_predicted_total"), 8.0);
    assert!(value("zt_prompt_tokens_total") >= 2.0);
    assert!(value("zt_predicted_tokens_seconds") > 0.0);
    assert_eq!(value("zt_requests_processing"), 0.0);
    assert_eq!(value("zt_requests_deferred"), 0.0);
    for l in text.lines().filter(|l| l.starts_with("# TYPE")) {
        assert!(l.ends_with(" counter") || l.ends_with(" gauge"), "{l}");
    }
}

/// OpenAI's penalties and llama-server's extra samplers reach the sampler
/// (a trial found them accepted and ignored) and are range-checked.
#[test]
fn penalties_and_extra_samplers_are_applied_and_checked() {
    let s = Server::start(&fixture("llama-tiny-q8_0.gguf"), &[]);
    let text = |extra: serde_json::Value| {
        let mut r = json!({"prompt": "the quick brown fox", "max_tokens": 24, "temperature": 0});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        let a = s.post("/v1/completions", &r);
        assert_eq!(a.status, 200, "{}", a.text());
        a.json()["choices"][0]["text"].as_str().unwrap().to_string()
    };
    let plain = text(json!({}));
    assert_eq!(
        text(json!({"frequency_penalty": 0, "presence_penalty": 0})),
        plain
    );
    for extra in [
        json!({"frequency_penalty": 2.0}),
        json!({"presence_penalty": 2.0}),
        json!({"repeat_penalty": 5.0}),
    ] {
        assert_ne!(text(extra.clone()), plain, "{extra} changed nothing");
    }
    // top_k 1 and min_p 1 keep only the best token: greedy at any temperature.
    for extra in [json!({"top_k": 1}), json!({"min_p": 1.0})] {
        let mut r = extra.clone();
        r["temperature"] = json!(1.5);
        r["seed"] = json!(3);
        assert_eq!(text(r), plain, "{extra}");
    }
    for (field, v) in [
        ("frequency_penalty", json!(2.5)),
        ("presence_penalty", json!(-3)),
        ("min_p", json!(1.5)),
        ("repeat_penalty", json!(0)),
        ("top_k", json!(-1)),
        ("frequency_penalty", json!("x")),
    ] {
        let mut r = completion("hi", 2);
        r[field] = v.clone();
        let a = s.post("/v1/completions", &r);
        assert_eq!(a.status, 400, "{field} = {v}: {}", a.text());
        assert_eq!(a.json()["error"]["param"], field, "{v}");
    }
}
