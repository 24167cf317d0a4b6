//! Tokenizer speed on long inputs (issue 11 item 4): one 16,000-char word
//! and a 1 MB prompt made of long runs, per model.
//!
//! cargo run --profile ci --example tokenize_bench [-- model.gguf ...]
//!
//! Without arguments it uses the cached real models (SmolLM2, Gemma 3) and
//! the shared BPE fixture, whichever exist.

use std::path::PathBuf;
use std::time::Instant;
use ztensor::engine::Tokenizer;
use ztensor::Reader;

fn inputs() -> Vec<(&'static str, String)> {
    let word = "abcdefghij".repeat(1_600);
    let mut runs = String::with_capacity(1 << 20);
    let mut i = 0u32;
    while runs.len() < 1 << 20 {
        match i % 5 {
            0 => runs.push_str(&"x".repeat(20_000)),
            1 => runs.push_str(&"ab".repeat(10_000)),
            2 => runs.push_str(&" ".repeat(5_000)),
            3 => runs.push_str(&"1234567890".repeat(1_000)),
            _ => runs.push_str(&"The quick brown fox jumps over the lazy dog. ".repeat(200)),
        }
        runs.push('\n');
        i += 1;
    }
    let mut prose = String::with_capacity(1 << 20);
    while prose.len() < 1 << 20 {
        prose.push_str("Ünïcødé text, code `/// CPU time of this thread, in seconds (the machine may be shared, so
/// wall time alone can mislead).
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn main() {}` and numbers 3.14159; ");
    }
    vec![
        ("one 16,000-char word", word),
        ("1 MB of long runs", runs),
        ("1 MB of prose", prose),
    ]
}

/// CPU time of this thread, in seconds (the machine may be shared, so
/// wall time alone can mislead).
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn main() {
    let cache = std::env::var_os("ZT_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/ztensor-models")
        });
    let mut models: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if models.is_empty() {
        models = vec![
            cache.join("SmolLM2-135M-Instruct.Q4_1.gguf"),
            cache.join("gemma-3-270m-q4_k_m.gguf"),
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/fixtures/gguf/qwen2-tiny-bpe-f32.gguf"),
        ];
    }
    let inputs = inputs();
    for path in models.iter().filter(|p| p.exists()) {
        let reader = match Reader::open(path) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                continue;
            }
        };
        let Some(attrs) = reader.attributes() else {
            continue;
        };
        let t0 = Instant::now();
        let tok = match Tokenizer::from_attributes(attrs) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                continue;
            }
        };
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        println!(
            "{name}: {:?}, {} tokens, loaded in {:.0} ms",
            tok.kind,
            tok.n_vocab(),
            t0.elapsed().as_secs_f64() * 1e3
        );
        for (label, text) in &inputs {
            let (mut best, mut cpu) = (f64::INFINITY, f64::INFINITY);
            let mut n = 0;
            for _ in 0..3 {
                let (t, c) = (Instant::now(), thread_cpu());
                n = tok.encode(text, false, false).len();
                best = best.min(t.elapsed().as_secs_f64());
                cpu = cpu.min(thread_cpu() - c);
            }
            println!(
                "  {label:<22} {:>9} bytes -> {n:>7} tokens in {:>7.1} ms wall, {:>7.1} ms CPU ({:.1} MB/s CPU)",
                text.len(),
                best * 1e3,
                cpu * 1e3,
                text.len() as f64 / cpu / 1e6
            );
        }
    }
}
