//! A bounded load loop over loopback: 200 concurrent mixed streaming and
//! plain requests, 8 at a time, each answered correctly (no mix-ups) or
//! refused with 503 and Retry-After, and clients that vanish mid-stream
//! (their sequences are freed; the server keeps answering).

use crate::harness::{completion, engine_greedy, fixture, sse_events, Server, KEY};
use serde_json::json;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[test]
fn two_hundred_requests_eight_at_a_time_with_vanishing_clients() {
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
    let s = Arc::new(Server::start(&model, &["--parallel", "2", "--queue", "5"]));
    let next = Arc::new(AtomicUsize::new(0));
    let (ok, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let vanished = Arc::new(AtomicUsize::new(0));
    let vanish_refused = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (s, next, ok, refused) = (s.clone(), next.clone(), ok.clone(), refused.clone());
            let (vanished, vanish_refused) = (vanished.clone(), vanish_refused.clone());
            let want = want.clone();
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= TOTAL {
                    return;
                }
                if i % 10 == 5 {
                    if !vanish(&s.addr()) {
                        vanish_refused.fetch_add(1, Ordering::Relaxed);
                    }
                    vanished.fetch_add(1, Ordering::Relaxed);
                    continue;
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
    let vanished = vanished.load(Ordering::Relaxed);
    assert_eq!(ok + refused + vanished, TOTAL);
    assert_eq!(vanished, TOTAL / 10);
    assert!(ok >= 60, "{ok} served, {refused} refused");
    // Every sequence is free again: the vanished clients' runs ended.
    let t0 = std::time::Instant::now();
    while !s
        .get("/metrics")
        .text()
        .contains("\nzt_requests_processing 0\n")
    {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "runs left behind"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let a = s.post("/v1/completions", &completion(prompts[1], 12));
    assert_eq!(a.json()["choices"][0]["text"], want[1].as_str());
    let m = s.get("/metrics").text();
    assert!(
        m.contains(&format!(
            "\nzt_requests_refused_total {}\n",
            refused + vanish_refused.load(Ordering::Relaxed)
        )),
        "{m}"
    );
    assert!(m.contains("\nzt_parallel 2\n"));
}

const TOTAL: usize = 200;

/// A raw client that starts a long streamed completion, reads its first
/// event and goes away; false when it was refused with 503 instead.
fn vanish(addr: &str) -> bool {
    let body = r#"{"prompt": "a long story about", "temperature": 0, "stream": true}"#;
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        c,
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.windows(6).any(|w| w == b"data: ") && !got.starts_with(b"HTTP/1.1 503") {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200") || got.starts_with(b"HTTP/1.1 503"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // Dropped here, mid-stream.
    got.starts_with(b"HTTP/1.1 200")
}
