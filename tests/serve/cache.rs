//! The prefix cache: greedy output with the cache on equals the cache
//! off; multi-turn chats reuse their history; the disk tier is reused
//! after a restart, stays within its budget and skips foreign or corrupt
//! files.

use crate::harness::{fixture, temp_dir, Server};
use serde_json::{json, Value};
use ztensor::engine::{Engine, EngineOptions, KvType};

/// The premise of the cache: prefilling a prompt in two parts, each longer
/// than the engine's 4-token integer batches and the first a whole number
/// of its 4-position tiles, leaves the logits of one prefill (up to
/// summation order: far below what could change a greedy choice).
#[test]
fn split_prefill_gives_the_same_logits() {
    let model = fixture("llama-tiny-q8_0.gguf");
    let open = || {
        Engine::open(
            &model,
            EngineOptions {
                n_threads: 1,
                kv_type: KvType::F16,
                ..EngineOptions::default()
            },
        )
        .unwrap()
    };
    let mut a = open();
    let ids = a.tokenize("the quick brown fox jumps over the lazy dog", None, false);
    a.prefill(&ids).unwrap();
    assert!(ids.len() >= 13, "{}", ids.len());
    for cut in [8, (ids.len() - 5) / 4 * 4] {
        let mut b = open();
        b.prefill(&ids[..cut]).unwrap();
        b.prefill(&ids[cut..]).unwrap();
        let d = a
            .last_logits()
            .iter()
            .zip(b.last_logits())
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-4, "cut {cut}: max diff {d}");
    }
}

fn metric(s: &Server, name: &str) -> u64 {
    let m = s.get("/metrics").text();
    m.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {m}"))
        .parse()
        .unwrap()
}

fn chat(s: &Server, messages: &[Value]) -> (String, Value) {
    let a = s.post(
        "/v1/chat/completions",
        &json!({"messages": messages, "max_tokens": 8, "temperature": 0}),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    (
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string(),
        v["usage"].clone(),
    )
}

/// Four turns of a chat on two servers, the prefix cache on and off: the
/// same replies, and from the second turn on the history is restored.
#[test]
fn multi_turn_chat_equals_cache_off() {
    let model = fixture("qwen2-tiny-bpe-f32.gguf");
    let on = Server::start(&model, &[]);
    let off = Server::start(&model, &["--cache-ram", "0"]);
    let mut history = vec![json!({"role": "system", "content": "You answer briefly."})];
    for turn in 0..4 {
        history.push(json!({"role": "user", "content": format!("question {turn}: foxes?")}));
        let (a, ua) = chat(&on, &history);
        let (b, ub) = chat(&off, &history);
        assert_eq!(a, b, "turn {turn}");
        assert_eq!(ua["prompt_tokens"], ub["prompt_tokens"]);
        let cached = ua["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap();
        assert_eq!(ub["prompt_tokens_details"]["cached_tokens"], 0);
        if turn > 0 {
            assert!(cached > 10, "turn {turn}: {ua}");
            assert!(cached < ua["prompt_tokens"].as_u64().unwrap() - 1);
        } else {
            assert_eq!(cached, 0);
        }
        history.push(json!({"role": "assistant", "content": a}));
    }
    assert_eq!(metric(&on, "zt_prefix_cache_hits_total"), 3);
    assert_eq!(metric(&on, "zt_prefix_cache_misses_total"), 1);
    assert!(metric(&on, "zt_prefix_cache_tokens_reused_total") > 30);
    assert_eq!(metric(&off, "zt_prefix_cache_hits_total"), 0);
}

/// Cache files in `dir`, with their sizes.
fn entries(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .filter(|(n, _)| n.starts_with('p') && n.ends_with(".zt"))
        .collect();
    v.sort();
    v
}

/// Waits until `dir` holds `n` cache files (the writer works in the
/// background).
fn wait_for(dir: &std::path::Path, n: usize) -> Vec<(String, u64)> {
    let t0 = std::time::Instant::now();
    loop {
        let e = entries(dir);
        if e.len() == n {
            return e;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(20),
            "{} cache files, {n} expected: {e:?}",
            e.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn completion_text(s: &Server, prompt: &str) -> (String, u64) {
    let a = s.post(
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 8, "temperature": 0}),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    (
        v["choices"][0]["text"].as_str().unwrap().to_string(),
        v["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap(),
    )
}

/// The disk tier: reused after a restart (memory tier off, so only the
/// files can serve), foreign and corrupt files skipped, the budget kept by
/// evicting the least recently used.
#[test]
fn disk_cache_survives_restart_refuses_foreign_files_and_keeps_its_budget() {
    let llama = fixture("llama-tiny-q8_0.gguf");
    let qwen = fixture("qwen2-tiny-bpe-f32.gguf");
    let dir = temp_dir("pcache");
    let qdir = temp_dir("pcache-q");
    let base =
        "once upon a time in a land far away there lived a fox who liked to jump over lazy dogs";
    let want = |p: &str| {
        let off = Server::start(&llama, &["--cache-ram", "0"]);
        completion_text(&off, p).0
    };
    let d = dir.to_str().unwrap();
    let big = [
        "--cache-ram",
        "0",
        "--cache-dir",
        d,
        "--cache-bytes",
        "100000000",
    ];
    {
        let s = Server::start(&llama, &big);
        let (_, cached) = completion_text(&s, base);
        assert_eq!(cached, 0);
        wait_for(&dir, 1);
        s.stop();
    }
    // Another model's entry and a corrupt one are put in the directory.
    {
        let q = qdir.to_str().unwrap();
        let s = Server::start(
            &qwen,
            &[
                "--cache-ram",
                "0",
                "--cache-dir",
                q,
                "--cache-bytes",
                "100000000",
            ],
        );
        completion_text(&s, base);
        let e = wait_for(&qdir, 1);
        std::fs::copy(qdir.join(&e[0].0), dir.join("pabc.zt")).unwrap();
    }
    std::fs::write(dir.join("pdead.zt"), b"ZTEN not a snapshot").unwrap();
    let size = entries(&dir)
        .iter()
        .find(|(n, _)| n != "pabc.zt" && n != "pdead.zt")
        .unwrap()
        .1;
    // After a restart the file serves the shared prefix.
    let next = format!("{base} and then one day the fox met a bear");
    let s = Server::start(&llama, &big);
    let (text, cached) = completion_text(&s, &next);
    assert!(cached > 15, "{cached}");
    assert_eq!(text, want(&next));
    assert_eq!(metric(&s, "zt_prefix_cache_hits_total"), 1);
    s.stop();
    // A budget of about two entries: older ones are evicted.
    std::fs::remove_file(dir.join("pabc.zt")).unwrap();
    std::fs::remove_file(dir.join("pdead.zt")).unwrap();
    let budget = (size * 5 / 2).to_string();
    let s = Server::start(
        &llama,
        &[
            "--cache-ram",
            "0",
            "--cache-dir",
            d,
            "--cache-bytes",
            &budget,
        ],
    );
    for (i, w) in ["alpha", "bravo", "charlie", "delta", "echo"]
        .iter()
        .enumerate()
    {
        let p = format!("{w} {w} the story of a fox number {i} who jumped over many lazy dogs");
        completion_text(&s, &p);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let e = entries(&dir);
        let total: u64 = e.iter().map(|x| x.1).sum();
        assert!(total <= size * 5 / 2, "{total} bytes in {e:?}");
        assert!(e.len() <= 2, "{e:?}");
    }
    // The most recent prompt is still cached; the first is gone.
    let (_, cached) = completion_text(
        &s,
        "echo echo the story of a fox number 4 who jumped over many lazy dogs again",
    );
    assert!(cached > 10);
    let (_, cached) = completion_text(
        &s,
        "alpha alpha the story of a fox number 0 who jumped over many lazy dogs again",
    );
    assert_eq!(cached, 0);
}
