//! A bounded load loop over loopback: concurrent mixed streaming and plain
//! requests, each answered correctly (no mix-ups) or refused with 503 and
//! Retry-After.

use crate::harness::{completion, engine_greedy, fixture, sse_events, Server};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[test]
fn fifty_requests_eight_at_a_time() {
    let model = fixture("llama-tiny-q8_0.gguf");
    let prompts = [
        "hello world",
        "the quick brown fox",
        "predicts tokens",
        "fox",
    ];
    let want: Vec<String> = prompts
        .iter()
        .map(|p| engine_greedy(&model, p, 12).0)
        .collect();
    let s = Arc::new(Server::start(&model, &["--parallel", "2", "--queue", "3"]));
    let next = Arc::new(AtomicUsize::new(0));
    let (ok, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (s, next, ok, refused) = (s.clone(), next.clone(), ok.clone(), refused.clone());
            let want = want.clone();
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= 50 {
                    return;
                }
                let k = i % prompts.len();
                let mut req = completion(prompts[k], 12);
                let stream = i % 2 == 0;
                req["stream"] = json!(stream);
                let a = s.post("/v1/completions", &req);
                match a.status {
                    200 => {
                        let text: String = if stream {
                            sse_events(&a.body)
                                .iter()
                                .filter_map(|e| {
                                    e["choices"][0]["text"].as_str().map(str::to_string)
                                })
                                .collect()
                        } else {
                            a.json()["choices"][0]["text"].as_str().unwrap().to_string()
                        };
                        assert_eq!(text, want[k], "request {i}");
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    503 => {
                        assert_eq!(a.retry_after.as_deref(), Some("1"));
                        assert_eq!(a.json()["error"]["type"], "unavailable_error");
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("request {i}: {other} {}", a.text()),
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (ok, refused) = (ok.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    assert_eq!(ok + refused, 50);
    assert!(ok >= 5, "{ok} served, {refused} refused");
    let m = s.get("/metrics").text();
    assert!(
        m.contains(&format!("\nzt_requests_refused_total {refused}\n")),
        "{m}"
    );
    assert!(m.contains("\nzt_parallel 2\n"));
}
