//! `/execute` runs over time: a continuation without a seed goes on with
//! the state's RNG, `POST /reset` interrupts the runs it overtakes, and an
//! interrupted run answers with the text it made (a queued one with
//! `finish_reason: "cancelled"`).

use crate::harness::{agent, fixture, sse_events, temp_dir, Server, KEY};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

fn names(s: &Server) -> Vec<String> {
    serde_json::from_value(s.get("/states").json()["states"].clone()).unwrap()
}

fn ok(s: &Server, path: &str, body: &Value) -> Value {
    let a = s.post(path, body);
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()
}

/// Waits until `n` sequences are running.
fn wait_running(s: &Server, n: usize) {
    let want = format!("\nzt_requests_processing {n}\n");
    let t0 = Instant::now();
    while !s.get("/metrics").text().contains(&want) {
        assert!(t0.elapsed() < Duration::from_secs(30), "never {n} running");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Posts `body` to `/execute` from another thread, once no sequence runs
/// (a run that answered may still count as running for a moment).
fn spawn_execute(s: &Server, body: Value) -> std::thread::JoinHandle<Value> {
    wait_running(s, 0);
    let url = format!("{}/execute", s.base);
    std::thread::spawn(move || {
        let mut r = agent()
            .post(url)
            .header("Authorization", format!("Bearer {KEY}"))
            .send(body.to_string().as_bytes())
            .unwrap();
        assert_eq!(r.status(), 200);
        serde_json::from_slice(&crate::harness::read_body(&mut r)).unwrap()
    })
}

fn long_run(id: &str, new: &str) -> Value {
    json!({"exec_id": id, "state_name": "initial", "new_state_name": new,
           "prompt": "hello", "max_tokens": 16000, "temperature": 0})
}

#[test]
fn continuation_without_seed_is_the_uninterrupted_run() {
    let s = Server::start(&fixture("llama-tiny-q8_0.gguf"), &[]);
    let run = |id: &str, from: &str, to: &str, prompt: &str, n: usize, seed: Option<u64>| {
        let mut body = json!({"exec_id": id, "state_name": from, "new_state_name": to,
                              "prompt": prompt, "max_tokens": n, "temperature": 0.9});
        if let Some(seed) = seed {
            body["seed"] = json!(seed);
        }
        ok(&s, "/execute", &body)
    };
    let a = run("a", "initial", "a", "The weather today", 10, Some(3));
    assert_eq!(a["finish_reason"], "length", "{a}");
    let b = run("b", "a", "b", "", 10, None);
    assert_eq!(b["finish_reason"], "length", "{b}");
    let x = run("x", "initial", "x", "The weather today", 20, Some(3));
    assert_eq!(x["usage"]["completion_tokens"], 20);
    // Token for token (the states' texts) and text for text.
    let tail = |n: &str| s.get(&format!("/states/{n}")).json()["text_tail"].clone();
    assert_eq!(tail("b"), tail("x"));
    let joined = format!(
        "{}{}",
        a["output"].as_str().unwrap(),
        b["output"].as_str().unwrap()
    );
    assert_eq!(joined, x["output"].as_str().unwrap());
    // The same continuation again, streamed, and through Connect.
    assert_eq!(run("b2", "a", "b2", "", 10, None)["output"], b["output"]);
    let streamed = s.post(
        "/execute",
        &json!({"exec_id": "b3", "state_name": "a", "new_state_name": "b3", "prompt": "",
                "max_tokens": 10, "temperature": 0.9, "stream": true}),
    );
    let ev = sse_events(&streamed.body);
    assert_eq!(ev.last().unwrap()["output"], b["output"]);
    let c = ok(
        &s,
        "/ztensor.v1.Engine/Execute",
        &json!({"exec_id": "b4", "state_name": "a", "new_state_name": "b4", "prompt": "",
                "max_tokens": 10, "temperature": 0.9}),
    );
    assert_eq!(c["output"], b["output"]);
    // A seed reseeds: two continuations with one seed agree with each other.
    let d1 = run("d1", "a", "d1", "", 10, Some(99));
    let d2 = run("d2", "a", "d2", "", 10, Some(99));
    assert_eq!(d1["output"], d2["output"]);
}

#[test]
fn reset_interrupts_running_executions() {
    let dir = temp_dir("reset-run");
    let s = Server::start(
        &fixture("llama-tiny-q8_0.gguf"),
        &["--state-dir", dir.to_str().unwrap(), "--ctx", "16384"],
    );
    ok(
        &s,
        "/execute",
        &json!({"exec_id": "k", "state_name": "initial", "new_state_name": "keep",
                "prompt": "hi", "max_tokens": 2}),
    );
    let running = spawn_execute(&s, long_run("long", "during_reset"));
    wait_running(&s, 1);
    let r = ok(&s, "/reset", &json!({}));
    assert_eq!(r["deleted"], 1, "{r}");
    assert_eq!(r["interrupted"], 1, "{r}");
    let v = running.join().unwrap();
    assert_eq!(v["state_name"], Value::Null, "{v}");
    assert_eq!(v["error"]["ename"], "Interrupted", "{v}");
    assert!(
        v["error"]["evalue"].as_str().unwrap().contains("reset"),
        "{v}"
    );
    assert_eq!(v["finish_reason"], "cancelled");
    assert_eq!(names(&s), vec!["initial"]);
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
    // Executions after the reset store as usual.
    let after = ok(
        &s,
        "/execute",
        &json!({"exec_id": "after", "state_name": "initial", "new_state_name": "after",
                "prompt": "hi", "max_tokens": 2}),
    );
    assert_eq!(after["state_name"], "after");
}

#[test]
fn interrupted_runs_answer_with_their_output() {
    let s = Server::start(&fixture("llama-tiny-q8_0.gguf"), &["--ctx", "16384"]);
    // Not streamed: interrupted once it has made tokens (retried if the
    // interrupt lands in the prefill).
    let mut made = None;
    for i in 0..20 {
        let run = spawn_execute(&s, long_run(&format!("n{i}"), &format!("never{i}")));
        wait_running(&s, 1);
        std::thread::sleep(Duration::from_millis(50 * (i + 1)));
        let int = ok(&s, "/interrupt", &json!({"exec_id": format!("n{i}")}));
        assert_eq!(int["interrupted"], true);
        let v = run.join().unwrap();
        assert_eq!(v["finish_reason"], "cancelled", "{v}");
        assert_eq!(v["state_name"], Value::Null);
        assert_eq!(v["error"]["ename"], "Interrupted");
        if v["usage"]["completion_tokens"].as_u64().unwrap() > 0 {
            made = Some(v);
            break;
        }
    }
    let v = made.expect("no interrupted run made a token");
    let out = v["output"].as_str().unwrap();
    assert!(!out.is_empty(), "{v}");
    // Greedy: the partial output is the start of the uninterrupted run's.
    let full = ok(
        &s,
        "/execute",
        &json!({"exec_id": "full", "state_name": "initial", "prompt": "hello",
                "max_tokens": v["usage"]["completion_tokens"], "temperature": 0}),
    );
    assert_eq!(full["output"].as_str().unwrap(), out);
    assert_eq!(names(&s).len(), 2, "only the full run stored a state");

    // Streamed: the pieces sent add up to the output of the result.
    let body = json!({"exec_id": "st", "state_name": "initial", "prompt": "hello",
                      "max_tokens": 16000, "temperature": 0, "stream": true});
    let mut resp = agent()
        .post(format!("{}/execute", s.base))
        .header("Authorization", format!("Bearer {KEY}"))
        .send(body.to_string().as_bytes())
        .unwrap();
    let mut reader = BufReader::new(resp.body_mut().as_reader());
    let mut first = String::new();
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "stream ended");
        first.push_str(&line);
        if line.contains("\"output\":\"") && !line.contains("\"output\":\"\"") {
            break;
        }
    }
    assert_eq!(
        ok(&s, "/interrupt", &json!({"exec_id": "st"}))["interrupted"],
        true
    );
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    let ev = sse_events(format!("{first}{rest}").as_bytes());
    let last = ev.last().unwrap();
    assert_eq!(last["finish_reason"], "cancelled", "{last}");
    let pieces: String = ev[..ev.len() - 1]
        .iter()
        .map(|e| e["output"].as_str().unwrap())
        .collect();
    assert!(!pieces.is_empty());
    assert_eq!(pieces, last["output"].as_str().unwrap());
}

#[test]
fn interrupting_a_queued_run_cancels_it() {
    // One sequence: the second run waits in the queue.
    let s = Server::start(
        &fixture("llama-tiny-q8_0.gguf"),
        &["--ctx", "16384", "--parallel", "1"],
    );
    for stream in [false, true] {
        let first_id = format!("first-{stream}");
        let first = spawn_execute(&s, long_run(&first_id, &first_id));
        wait_running(&s, 1);
        let id = format!("queued-{stream}");
        let mut body = long_run(&id, &id);
        body["stream"] = json!(stream);
        let url = format!("{}/execute", s.base);
        let queued = std::thread::spawn(move || {
            let mut r = agent()
                .post(url)
                .header("Authorization", format!("Bearer {KEY}"))
                .send(body.to_string().as_bytes())
                .unwrap();
            crate::harness::read_body(&mut r)
        });
        let t0 = Instant::now();
        while ok(&s, "/interrupt", &json!({"exec_id": id}))["interrupted"] != true {
            assert!(t0.elapsed() < Duration::from_secs(30), "never queued");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The queued run is answered when the sequence frees up.
        ok(&s, "/interrupt", &json!({"exec_id": first_id}));
        assert_eq!(first.join().unwrap()["finish_reason"], "cancelled");
        let raw = queued.join().unwrap();
        let v = if stream {
            sse_events(&raw).pop().unwrap()
        } else {
            serde_json::from_slice(&raw).unwrap()
        };
        assert_eq!(v["finish_reason"], "cancelled", "{v}");
        assert_eq!(v["output"], "");
        assert_eq!(v["state_name"], Value::Null);
        assert_eq!(v["error"]["ename"], "Interrupted");
    }
    assert_eq!(names(&s), vec!["initial"]);
}

#[test]
fn messages_continue_as_the_template_renders_the_whole_conversation() {
    // A ChatML model; turns of no generated tokens keep the texts exact.
    let s = Server::start(&fixture("qwen2-tiny-bpe-f32.gguf"), &[]);
    let turn = |id: &str, from: &str, user: &str| {
        ok(
            &s,
            "/execute",
            &json!({"exec_id": id, "state_name": from, "new_state_name": id,
                    "messages": [{"role": "user", "content": user}], "max_tokens": 0}),
        )
    };
    turn("t1", "initial", "hi");
    turn("t2", "t1", "more");
    let whole = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n\
                 <|im_start|>user\nmore<|im_end|>\n<|im_start|>assistant\n";
    let ids = ok(
        &s,
        "/tokenize",
        &json!({"content": whole, "add_special": true}),
    )["tokens"]
        .clone();
    let text = ok(&s, "/detokenize", &json!({"tokens": ids}))["content"].clone();
    let t2 = s.get("/states/t2").json();
    assert_eq!(t2["tokens_count"], ids.as_array().unwrap().len(), "{t2}");
    assert_eq!(t2["text_tail"], text);
}
