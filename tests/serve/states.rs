//! Seed 001's states over HTTP: chains and forks, durability across a
//! restart, interrupt by id, nothing stored by failed runs, name rules,
//! other models' states refused.

use crate::harness::{fixture, sse_events, temp_dir, Server};
use serde_json::{json, Value};
use std::io::{Read, Write};

fn exec(s: &Server, id: &str, from: &str, to: &str, prompt: &str, n: usize) -> Value {
    let a = s.post(
        "/execute",
        &json!({"exec_id": id, "state_name": from, "new_state_name": to,
                "prompt": prompt, "max_tokens": n, "temperature": 0}),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()
}

fn names(s: &Server) -> Vec<String> {
    serde_json::from_value(s.get("/states").json()["states"].clone()).unwrap()
}

#[test]
fn chains_forks_and_restart() {
    let model = fixture("llama-tiny-q8_0.gguf");
    let dir = temp_dir("states");
    let dir_arg = dir.to_str().unwrap().to_string();
    let s = Server::start(&model, &["--state-dir", &dir_arg]);
    assert_eq!(names(&s), vec!["initial"]);

    let a = exec(&s, "e1", "initial", "a", "hello world", 6);
    assert_eq!(a["state_name"], "a");
    assert_eq!(a["error"], Value::Null);
    assert_eq!(a["usage"]["completion_tokens"], 6);
    let b = exec(&s, "e2", "a", "b", " the quick", 5);
    assert_eq!(b["state_name"], "b");
    let c = exec(&s, "e3", "a", "c", " the quick", 5);
    // A fork of the same state with the same input continues identically.
    assert_eq!(b["output"], c["output"]);
    let d = exec(&s, "e4", "a", "d", " brown fox", 5);
    assert_ne!(d["output"], Value::Null);

    let info_a = s.get("/states/a").json();
    let info_b = s.get("/states/b").json();
    let ta = info_a["tokens_count"].as_u64().unwrap();
    let tb = info_b["tokens_count"].as_u64().unwrap();
    assert!(tb > ta, "{ta} {tb}");
    assert!(info_b["text_tail"]
        .as_str()
        .unwrap()
        .ends_with(b["output"].as_str().unwrap()));
    assert_eq!(s.get("/states/initial").json()["tokens_count"], 0);

    // States are immutable: a name is used once.
    let again = s.post("/execute", &json!({"exec_id": "e5", "state_name": "a", "new_state_name": "b", "prompt": "x", "max_tokens": 2}));
    assert_eq!(again.status, 409);
    assert_eq!(s.get("/states/b").json()["tokens_count"], tb);

    let mut listed = names(&s);
    listed.sort();
    assert_eq!(listed, vec!["a", "b", "c", "d", "initial"]);
    let before = exec(&s, "e6", "b", "b1", " jumps", 6);
    s.stop();

    let s = Server::start(&model, &["--state-dir", &dir_arg]);
    let mut listed = names(&s);
    listed.sort();
    assert_eq!(listed, vec!["a", "b", "b1", "c", "d", "initial"]);
    assert_eq!(s.get("/states/b").json()["tokens_count"], tb);
    let after = exec(&s, "e7", "b", "b2", " jumps", 6);
    assert_eq!(before["output"], after["output"]);
    assert_eq!(
        s.get("/states/b1").json()["tokens_count"],
        s.get("/states/b2").json()["tokens_count"]
    );

    // Delete and reset.
    assert_eq!(s.request("DELETE", "/states/c", None, &[]).status, 200);
    assert_eq!(s.request("DELETE", "/states/c", None, &[]).status, 404);
    assert_eq!(
        s.request("DELETE", "/states/initial", None, &[]).status,
        400
    );
    assert!(!dir.join("c.zt").exists());
    let r = s.post("/reset", &json!({}));
    assert_eq!(r.status, 200);
    assert_eq!(names(&s), vec!["initial"]);
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    s.stop();
    let s = Server::start(&model, &["--state-dir", &dir_arg]);
    assert_eq!(names(&s), vec!["initial"]);
}

#[test]
fn failures_store_nothing_and_names_are_checked() {
    let model = fixture("llama-tiny-q8_0.gguf");
    let dir = temp_dir("states-bad");
    let s = Server::start(&model, &["--state-dir", dir.to_str().unwrap()]);
    // Too many tokens for the context: refused, nothing stored.
    let a = s.post("/execute", &json!({"exec_id": "x1", "state_name": "initial", "new_state_name": "big", "prompt": "hello", "max_tokens": 1000}));
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["error"]["param"], "max_tokens");
    // Unknown state.
    let a = s.post(
        "/execute",
        &json!({"exec_id": "x2", "state_name": "nope", "new_state_name": "n2", "prompt": "hello"}),
    );
    assert_eq!(a.status, 404);
    assert_eq!(s.get("/states/nope").status, 404);
    // Names: strict charset, no traversal.
    for bad in [
        "../x",
        "a/b",
        "..",
        "a.zt",
        "",
        "x y",
        "é",
        &"n".repeat(129),
    ] {
        let a = s.post("/execute", &json!({"exec_id": "x3", "state_name": "initial", "new_state_name": bad, "prompt": "hi", "max_tokens": 1}));
        assert_eq!(a.status, 400, "{bad:?}");
        assert_eq!(a.json()["error"]["param"], "new_state_name");
        let a = s.post(
            "/execute",
            &json!({"exec_id": "x3", "state_name": bad, "prompt": "hi", "max_tokens": 1}),
        );
        assert_eq!(a.status, 400, "{bad:?}");
    }
    for path in ["/states/..%2F..%2Fetc", "/states/a.zt", "/states/%2e%2e"] {
        let a = s.get(path);
        assert!(a.status == 400 || a.status == 404, "{path} {}", a.status);
        let d = s.request("DELETE", path, None, &[]);
        assert!(d.status == 400 || d.status == 404, "{path}");
    }
    for bad_id in ["", "a b", &"i".repeat(129)] {
        let a = s.post(
            "/execute",
            &json!({"exec_id": bad_id, "state_name": "initial", "prompt": "hi"}),
        );
        assert_eq!(a.status, 400);
    }
    // Neither or both of prompt and messages.
    let a = s.post(
        "/execute",
        &json!({"exec_id": "x4", "state_name": "initial"}),
    );
    assert_eq!(a.status, 400);
    assert_eq!(names(&s), vec!["initial"]);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    // No interrupt target.
    assert_eq!(
        s.post("/interrupt", &json!({"exec_id": "nobody"})).json()["interrupted"],
        false
    );
    // A default name is made when none is given.
    let a = s.post(
        "/execute",
        &json!({"exec_id": "x5", "state_name": "initial", "prompt": "hi", "max_tokens": 2}),
    );
    let name = a.json()["state_name"].as_str().unwrap().to_string();
    assert!(dir.join(format!("{name}.zt")).exists());
}

#[test]
fn interrupt_and_disconnect_store_nothing() {
    let model = fixture("llama-tiny-q8_0.gguf");
    let dir = temp_dir("states-int");
    // A long context makes a long run (the model is tiny).
    let s = Server::start(
        &model,
        &["--state-dir", dir.to_str().unwrap(), "--ctx", "16384"],
    );
    let body = json!({"exec_id": "long", "state_name": "initial", "new_state_name": "never",
                      "prompt": "hello", "max_tokens": 16000, "temperature": 0, "stream": true})
    .to_string();
    // Raw socket: read the first event, interrupt, read to the end.
    let mut sock = std::net::TcpStream::connect(s.addr()).unwrap();
    write!(
        sock,
        "POST /execute HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        crate::harness::KEY,
        body.len()
    )
    .unwrap();
    let mut first = [0u8; 256];
    let n = sock.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let i = s.post("/interrupt", &json!({"exec_id": "long"}));
    assert_eq!(i.json()["interrupted"], true);
    let mut rest = Vec::new();
    sock.read_to_end(&mut rest).unwrap();
    let all = [&first[..n], &rest[..]].concat();
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.contains("\"ename\":\"Interrupted\""),
        "{}",
        &text[text.len().saturating_sub(400)..]
    );
    assert!(text.contains("\"state_name\":null"));
    assert_eq!(names(&s), vec!["initial"]);
    assert!(!dir.join("never.zt").exists());
    // The id is free again.
    assert_eq!(
        s.post("/interrupt", &json!({"exec_id": "long"})).json()["interrupted"],
        false
    );

    // A client that vanishes mid-stream: the run stops, nothing is stored.
    let body = body
        .replace("\"never\"", "\"gone\"")
        .replace("\"long\"", "\"gone\"");
    let mut sock = std::net::TcpStream::connect(s.addr()).unwrap();
    write!(
        sock,
        "POST /execute HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        crate::harness::KEY,
        body.len()
    )
    .unwrap();
    let _ = sock.read(&mut first).unwrap();
    drop(sock);
    // The sequence is freed: a new request is served, and the running
    // gauge drops to 0.
    let t0 = std::time::Instant::now();
    loop {
        let m = s.get("/metrics").text();
        if m.contains("\nzt_requests_processing 0\n") {
            break;
        }
        assert!(t0.elapsed().as_secs() < 20, "the abandoned run kept going");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(names(&s), vec!["initial"]);
    assert!(!dir.join("gone.zt").exists());

    // Streaming execute that succeeds: events, then the result, then [DONE].
    let a = s.post("/execute", &json!({"exec_id": "ok", "state_name": "initial", "new_state_name": "ok1", "prompt": "hello", "max_tokens": 8, "temperature": 0, "stream": true}));
    let ev = sse_events(&a.body);
    let last = ev.last().unwrap();
    assert_eq!(last["state_name"], "ok1");
    let pieces: String = ev[..ev.len() - 1]
        .iter()
        .map(|e| e["output"].as_str().unwrap())
        .collect();
    assert_eq!(pieces, last["output"].as_str().unwrap());
    let plain = s.post("/execute", &json!({"exec_id": "ok2", "state_name": "initial", "new_state_name": "ok2", "prompt": "hello", "max_tokens": 8, "temperature": 0}));
    assert_eq!(plain.json()["output"], last["output"]);
}

#[test]
fn another_models_states_are_refused() {
    let dir_q = temp_dir("states-qwen");
    let q = Server::start(
        &fixture("qwen2-tiny-q8_0.gguf"),
        &["--state-dir", dir_q.to_str().unwrap()],
    );
    let a = q.post("/execute", &json!({"exec_id": "q", "state_name": "initial", "new_state_name": "fromqwen", "prompt": "hello", "max_tokens": 3}));
    assert_eq!(a.status, 200);
    q.stop();
    let dir_l = temp_dir("states-llama");
    std::fs::copy(dir_q.join("fromqwen.zt"), dir_l.join("fromqwen.zt")).unwrap();
    std::fs::write(dir_l.join("junk.zt"), b"not a snapshot").unwrap();
    let l = Server::start(
        &fixture("llama-tiny-q8_0.gguf"),
        &["--state-dir", dir_l.to_str().unwrap()],
    );
    assert_eq!(names(&l), vec!["initial"]);
    // Left alone on disk, and never overwritten by a new state of that name.
    let before = std::fs::read(dir_l.join("fromqwen.zt")).unwrap();
    for name in ["fromqwen", "junk"] {
        let a = l.post(
            "/execute",
            &json!({"exec_id": format!("x-{name}"), "state_name": "initial",
                    "new_state_name": name, "prompt": "hi", "max_tokens": 2}),
        );
        assert_eq!(a.status, 409, "{}", a.text());
        assert!(a.text().contains("left untouched"), "{}", a.text());
    }
    assert_eq!(std::fs::read(dir_l.join("fromqwen.zt")).unwrap(), before);
    assert_eq!(
        std::fs::read(dir_l.join("junk.zt")).unwrap(),
        b"not a snapshot"
    );
    assert_eq!(names(&l), vec!["initial"]);
}

#[test]
fn chat_messages_continue_a_state() {
    let model = fixture("qwen2-tiny-bpe-f32.gguf");
    let s = Server::start(&model, &[]);
    let a = s.post(
        "/execute",
        &json!({"exec_id": "c1", "state_name": "initial", "new_state_name": "t1",
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "temperature": 0}),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let t1 = s.get("/states/t1").json()["tokens_count"].as_u64().unwrap();
    let b = s.post(
        "/execute",
        &json!({"exec_id": "c2", "state_name": "t1", "new_state_name": "t2",
        "messages": [{"role": "user", "content": "more"}], "max_tokens": 8, "temperature": 0}),
    );
    assert_eq!(b.status, 200);
    let v = b.json();
    let t2 = s.get("/states/t2").json()["tokens_count"].as_u64().unwrap();
    assert!(t2 >= t1 + v["usage"]["prompt_tokens"].as_u64().unwrap());
}

#[test]
fn kill_9_during_state_writes_leaves_earlier_states_readable() {
    let model = fixture("llama-k-f16.gguf");
    let dir = temp_dir("states-kill");
    let dir_arg = dir.to_str().unwrap().to_string();
    let s = Server::start(&model, &["--state-dir", &dir_arg]);
    exec(&s, "k0", "initial", "k0", "hello world", 4);
    let first_tail = s.get("/states/k0").json()["text_tail"].clone();
    // Executions writing states one after another; the server is killed
    // (SIGKILL) while they run.
    let base = s.base.clone();
    let writer = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut made = 0;
        for i in 1..400 {
            let body = json!({"exec_id": format!("k{i}"), "state_name": "k0",
                              "new_state_name": format!("k{i}"), "prompt": " more",
                              "max_tokens": 40, "temperature": 0})
            .to_string();
            let r = agent
                .post(format!("{base}/execute"))
                .header("Authorization", format!("Bearer {}", crate::harness::KEY))
                .send(body.as_bytes());
            match r {
                Ok(resp) if resp.status() == 200 => made += 1,
                _ => break,
            }
        }
        made
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    s.stop(); // SIGKILL
    let made = writer.join().unwrap();
    assert!(made >= 1, "no state was written before the kill");
    let s = Server::start(&model, &["--state-dir", &dir_arg]);
    let listed = names(&s);
    assert!(listed.len() >= made, "{} listed, {made} made", listed.len());
    for n in &listed {
        let a = s.get(&format!("/states/{n}"));
        assert_eq!(a.status, 200, "{n}: {}", a.text());
    }
    assert_eq!(s.get("/states/k0").json()["text_tail"], first_tail);
    // The chain continues as before the kill: k1 was made by this very
    // execution.
    let again = exec(&s, "after", "k0", "k0-again", " more", 40);
    assert!(again["error"].is_null());
    let k1 = s.get("/states/k1").json();
    assert!(k1["text_tail"]
        .as_str()
        .unwrap()
        .ends_with(again["output"].as_str().unwrap()));
    // Half-written temporary files of the kill were cleared at start.
    let stray: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}
