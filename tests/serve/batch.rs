//! `--parallel 4` with four requests at once: their decode steps go
//! through the shared batcher (batched forward passes, visible in
//! `/metrics`), and each answer is still exactly what the engine generates
//! alone for that prompt.

use crate::harness::{completion, engine_greedy, fixture, sse_events, Server};
use serde_json::json;
use std::sync::{Arc, Barrier};

/// `zt_NAME VALUE` from a `/metrics` text.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("zt_{name} ")))
        .unwrap_or_else(|| panic!("no zt_{name} in {text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn four_concurrent_greedy_requests_equal_the_engine_alone() {
    for name in ["llama-k-q4_0.gguf", "llama-tiny-f32.gguf"] {
        let model = fixture(name);
        let prompts = [
            "hello world",
            "the quick brown fox jumps over",
            "predicts tokens",
            "fox",
        ];
        let want: Vec<String> = prompts
            .iter()
            .map(|p| engine_greedy(&model, p, 24).0)
            .collect();
        let s = Arc::new(Server::start(&model, &["--parallel", "4"]));
        let start = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let (s, start) = (s.clone(), start.clone());
                let prompt = prompts[i];
                std::thread::spawn(move || {
                    let mut req = completion(prompt, 24);
                    req["stream"] = json!(i % 2 == 0);
                    start.wait();
                    let a = s.post("/v1/completions", &req);
                    assert_eq!(a.status, 200, "{}", a.text());
                    if i % 2 == 0 {
                        sse_events(&a.body)
                            .iter()
                            .filter_map(|e| e["choices"][0]["text"].as_str().map(str::to_string))
                            .collect::<String>()
                    } else {
                        a.json()["choices"][0]["text"].as_str().unwrap().to_string()
                    }
                })
            })
            .collect();
        for (i, t) in threads.into_iter().enumerate() {
            assert_eq!(t.join().unwrap(), want[i], "{name}: request {i}");
        }
        let m = s.get("/metrics").text();
        let (passes, rows) = (
            metric(&m, "decode_batches_total"),
            metric(&m, "decode_batch_rows_total"),
        );
        println!("{name}: {rows} sequence steps in {passes} batched passes");
        assert!(passes > 0 && rows >= passes, "{m}");
        assert!(metric(&m, "decode_batch_rows_max") <= 4, "{m}");
    }
}
