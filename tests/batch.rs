//! Batched decoding: the next token of several sequences (forks of one
//! engine at different positions) in one forward pass gives each the
//! logits it gets decoding alone, and a [`Batcher`] shared by threads
//! leaves every greedy generation unchanged while it batches their steps.

#![cfg(feature = "engine")]

use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::Duration;
use ztensor::engine::{Batcher, Engine, EngineOptions, GenerateParams, KvType, SamplerConfig};

fn fixture(name: &str) -> PathBuf {
    std::env::var_os("ZT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
        .join("gguf")
        .join(name)
}

/// The real Gemma 3 model when cached (see tests/gemma3.rs).
fn gemma3() -> Option<PathBuf> {
    cached("gemma-3-270m-q4_k_m.gguf")
}

/// A real model of the cache (scripts/fetch_models.py) when there.
fn cached(name: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os("ZT_MODEL_CACHE") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/ztensor-models"),
    };
    let p = dir.join(name);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("SKIPPED: {} is not cached", p.display());
        None
    }
}

fn open(path: &std::path::Path, kv_type: KvType) -> Engine {
    Engine::open(
        path,
        EngineOptions {
            n_ctx: 48,
            n_threads: 2,
            kv_type,
            seed: 0,
        },
    )
    .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

/// For 1..=6 sequences at different positions (past 4: the batched
/// kernels' second group of vectors), three batched steps in a row against
/// each sequence stepping alone; returns the worst |Δ|.
fn batched_equals_alone(path: &std::path::Path, kv_type: KvType) -> f32 {
    let base = open(path, kv_type);
    let n_vocab = base.config().n_vocab as u32;
    let prompt: Vec<u32> = (0..24).map(|i| (i * 37 + 11) % n_vocab).collect();
    let mut worst = 0f32;
    for k in 1..=6usize {
        // Sequence i holds the first 3 + 4i prompt tokens.
        let mut seqs: Vec<Engine> = (0..k)
            .map(|i| {
                let mut e = base.fork(None).unwrap();
                e.eval(&prompt[..3 + 4 * i]).unwrap();
                e
            })
            .collect();
        let mut alone: Vec<Engine> = seqs.iter().map(|e| e.fork(None).unwrap()).collect();
        let mut next: Vec<u32> = (0..k).map(|i| argmax(seqs[i].last_logits())).collect();
        for _step in 0..3 {
            let want: Vec<Vec<f32>> = alone
                .iter_mut()
                .zip(&next)
                .map(|(e, &t)| e.eval(&[t]).unwrap())
                .collect();
            let mut refs: Vec<&mut Engine> = seqs.iter_mut().collect();
            let got = Engine::eval_batch(&mut refs, &next).unwrap();
            let v = n_vocab as usize;
            assert_eq!(got.len(), k * v);
            for i in 0..k {
                let d = max_diff(&got[i * v..(i + 1) * v], &want[i]);
                worst = worst.max(d);
                assert_eq!(seqs[i].last_logits(), &got[i * v..(i + 1) * v]);
                assert_eq!(seqs[i].tokens(), alone[i].tokens());
            }
            next = want.iter().map(|l| argmax(l)).collect();
        }
    }
    worst
}

#[test]
fn batched_logits_equal_each_sequence_alone() {
    // f32 / f16 weights: f32 arithmetic either way (the batched matmul
    // sums in another order). Integer-path types (q8_0, q4_0, q4_k, q6_k
    // outputs): each row quantized and multiplied as alone, bit for bit.
    for (name, kv, bound) in [
        ("llama-tiny-f32.gguf", KvType::F32, 1e-4),
        ("llama-k-f16.gguf", KvType::F16, 1e-4),
        ("qwen2-tiny-f32.gguf", KvType::F32, 1e-4),
        ("llama-k-q8_0.gguf", KvType::F16, 0.0),
        ("llama-k-q4_0.gguf", KvType::F16, 0.0),
        ("llama-k-q4_k_m.gguf", KvType::F32, 0.0),
        ("qwen2-tiny-q8_0.gguf", KvType::F16, 0.0),
    ] {
        let worst = batched_equals_alone(&fixture(name), kv);
        println!("{name}: batched vs alone max |Δ| {worst:.3e}");
        assert!(worst <= bound, "{name}: max |Δ| {worst} > {bound}");
    }
}

#[test]
fn gemma3_batched_logits_equal_each_sequence_alone() {
    let Some(path) = gemma3() else { return };
    let worst = batched_equals_alone(&path, KvType::F16);
    println!("gemma3: batched vs alone max |Δ| {worst:.3e}");
    assert!(worst == 0.0, "gemma3: max |Δ| {worst}");
}

/// SmolLM2's q4_1 rows go through the batched 8-block kernel where they
/// are whole groups of 8 blocks (the FFN down projection) and through the
/// tiles elsewhere: still the bits of each sequence alone.
#[test]
fn smollm2_q4_1_batched_logits_equal_each_sequence_alone() {
    let Some(path) = cached("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let worst = batched_equals_alone(&path, KvType::F16);
    println!("smollm2: batched vs alone max |Δ| {worst:.3e}");
    assert!(worst == 0.0, "smollm2: max |Δ| {worst}");
}

/// A batched step of decode rows and prompts of 2..=9 tokens (short ones
/// take the integer tiles, long ones share one GEMM) against each
/// sequence alone, then two batched decode steps on the caches it left;
/// returns the worst |Δ|.
fn mixed_equals_alone(path: &std::path::Path, kv_type: KvType) -> f32 {
    let base = open(path, kv_type);
    let n_vocab = base.config().n_vocab as u32;
    let v = n_vocab as usize;
    let ids =
        |k: u32, n: u32| -> Vec<u32> { (0..n).map(|i| (i * 37 + k * 11) % n_vocab).collect() };
    // Sequences 0 and 3 decode after a prompt of their own; the others
    // prefill in the batch.
    let inputs: Vec<Vec<u32>> = vec![
        ids(1, 1),
        ids(2, 7),
        ids(3, 2),
        ids(4, 1),
        ids(5, 9),
        ids(6, 5),
    ];
    let mut seqs: Vec<Engine> = (0..inputs.len())
        .map(|_| base.fork(None).unwrap())
        .collect();
    seqs[0].eval(&ids(7, 3)).unwrap();
    seqs[3].eval(&ids(8, 6)).unwrap();
    let mut alone: Vec<Engine> = seqs.iter().map(|e| e.fork(None).unwrap()).collect();
    let want: Vec<Vec<f32>> = alone
        .iter_mut()
        .zip(&inputs)
        .map(|(e, t)| {
            e.prefill(t).unwrap();
            e.last_logits().to_vec()
        })
        .collect();
    let mut refs: Vec<&mut Engine> = seqs.iter_mut().collect();
    let slices: Vec<&[u32]> = inputs.iter().map(Vec::as_slice).collect();
    let got = Engine::extend_batch(&mut refs, &slices).unwrap();
    assert_eq!(got.len(), inputs.len() * v);
    let mut worst = 0f32;
    for (i, w) in want.iter().enumerate() {
        worst = worst.max(max_diff(&got[i * v..(i + 1) * v], w));
        assert_eq!(seqs[i].tokens(), alone[i].tokens());
        assert_eq!(seqs[i].last_logits(), &got[i * v..(i + 1) * v]);
    }
    let mut next: Vec<u32> = want.iter().map(|l| argmax(l)).collect();
    for _ in 0..2 {
        let want: Vec<Vec<f32>> = alone
            .iter_mut()
            .zip(&next)
            .map(|(e, &t)| e.eval(&[t]).unwrap())
            .collect();
        let mut refs: Vec<&mut Engine> = seqs.iter_mut().collect();
        let got = Engine::eval_batch(&mut refs, &next).unwrap();
        for (i, w) in want.iter().enumerate() {
            worst = worst.max(max_diff(&got[i * v..(i + 1) * v], w));
        }
        next = want.iter().map(|l| argmax(l)).collect();
    }
    worst
}

#[test]
fn prompts_batched_with_decode_rows_equal_each_sequence_alone() {
    // f32 / f16 weights: the decode rows and heads sum in another order
    // (as in `batched_logits_equal_each_sequence_alone`), and the f16
    // fixture's logits are larger; the integer path is bit for bit.
    for (name, kv, bound) in [
        ("llama-tiny-f32.gguf", KvType::F32, 1e-4),
        ("llama-k-f16.gguf", KvType::F16, 5e-4),
        ("llama-k-q8_0.gguf", KvType::F16, 0.0),
        ("llama-k-q4_0.gguf", KvType::F16, 0.0),
        ("llama-k-q4_k_m.gguf", KvType::F32, 0.0),
        ("qwen2-tiny-q8_0.gguf", KvType::F16, 0.0),
    ] {
        let worst = mixed_equals_alone(&fixture(name), kv);
        println!("{name}: prompts batched vs alone max |Δ| {worst:.3e}");
        assert!(worst <= bound, "{name}: max |Δ| {worst} > {bound}");
    }
    for path in [gemma3(), cached("SmolLM2-135M-Instruct.Q4_1.gguf")]
        .into_iter()
        .flatten()
    {
        let worst = mixed_equals_alone(&path, KvType::F16);
        println!(
            "{}: prompts batched vs alone max |Δ| {worst:.3e}",
            path.display()
        );
        assert!(worst == 0.0, "{}: max |Δ| {worst}", path.display());
    }
}

#[test]
fn bad_batches_are_errors_that_change_nothing() {
    let base = open(&fixture("llama-tiny-f32.gguf"), KvType::F32);
    let mut a = base.fork(None).unwrap();
    let mut b = base.fork(None).unwrap();
    a.eval(&[1, 2, 3]).unwrap();
    b.eval(&[4]).unwrap();
    let err = Engine::eval_batch(&mut [&mut a, &mut b], &[5]).unwrap_err();
    assert!(err.to_string().contains("2 engines but 1 tokens"), "{err}");
    let n_vocab = base.config().n_vocab as u32;
    let err = Engine::eval_batch(&mut [&mut a, &mut b], &[5, n_vocab]).unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    // Another model (same file, separately loaded) cannot join a batch.
    let mut other = open(&fixture("llama-tiny-f32.gguf"), KvType::F32);
    other.eval(&[1]).unwrap();
    let err = Engine::eval_batch(&mut [&mut a, &mut other], &[5, 6]).unwrap_err();
    assert!(err.to_string().contains("another model"), "{err}");
    // A full context.
    let mut full = base.fork(None).unwrap();
    let ids: Vec<u32> = (0..48).map(|i| i % n_vocab).collect();
    full.eval(&ids).unwrap();
    let err = Engine::eval_batch(&mut [&mut a, &mut full], &[5, 6]).unwrap_err();
    assert!(err.to_string().contains("context full"), "{err}");
    assert_eq!(a.tokens(), &[1, 2, 3]);
    assert_eq!(full.tokens().len(), 48);
    assert_eq!(b.tokens(), &[4]);
    // A batcher of another model is refused.
    let mut e = base.fork(None).unwrap();
    assert!(e.attach_batcher(Some(Batcher::new(&other))).is_err());
    assert!(Engine::eval_batch(&mut [], &[]).unwrap().is_empty());
    // A prompt that does not fit, or an empty one, fails the batch.
    let err = Engine::extend_batch(&mut [&mut a, &mut b], &[&[5], &ids]).unwrap_err();
    assert!(err.to_string().contains("context full"), "{err}");
    let err = Engine::extend_batch(&mut [&mut a, &mut b], &[&[5], &[]]).unwrap_err();
    assert!(err.to_string().contains("no tokens"), "{err}");
    assert_eq!((a.tokens(), b.tokens()), (&[1, 2, 3][..], &[4][..]));
}

fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        sampler: SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        },
        seed: Some(0),
        ..Default::default()
    }
}

/// Greedy ids of `prompt` on a fresh fork, decoding alone.
fn alone(base: &Engine, prompt: &str, max_tokens: usize) -> Vec<u32> {
    let mut e = base.fork(None).unwrap();
    let mut ids = Vec::new();
    e.generate(prompt, &greedy(max_tokens), |t| {
        ids.push(t.id);
        true
    })
    .unwrap();
    ids
}

const PROMPTS: [&str; 4] = [
    "hello world",
    "the quick brown fox",
    "predicts tokens",
    "fox",
];

#[test]
fn threads_sharing_a_batcher_generate_what_they_generate_alone() {
    for name in ["llama-k-q4_0.gguf", "llama-tiny-f32.gguf"] {
        let mut base = open(&fixture(name), KvType::F16);
        base.reset();
        // Different lengths: sequences leave the batch at different steps.
        let lens = [6usize, 9, 12, 15];
        let want: Vec<Vec<u32>> = (0..4).map(|i| alone(&base, PROMPTS[i], lens[i])).collect();
        // A gather longer than any test: a batch runs only when every
        // seated sequence has submitted, so every step here is batched
        // with everything still decoding (a seat kept after its generation
        // ended would hang the test).
        let batcher = Batcher::with_gather(&base, Duration::from_secs(3600));
        let start = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let mut e = base.fork(None).unwrap();
                e.attach_batcher(Some(batcher.clone())).unwrap();
                let start = start.clone();
                std::thread::spawn(move || {
                    let params = greedy(lens[i]);
                    let mut g = e.start(PROMPTS[i], &params).unwrap();
                    start.wait();
                    let mut ids = Vec::new();
                    let mut steps = 0;
                    while let Some(t) = e.next_token(&mut g, &params).unwrap() {
                        ids.push(t.id);
                        steps += usize::from(!t.is_eos);
                    }
                    (ids, steps)
                })
            })
            .collect();
        let mut steps = 0;
        for (i, t) in threads.into_iter().enumerate() {
            let (ids, n) = t.join().unwrap();
            assert_eq!(ids, want[i], "{name}: sequence {i}");
            steps += n as u64;
        }
        let stats = batcher.stats();
        println!("{name}: {stats:?}");
        assert_eq!(
            stats.prefills, 4,
            "{name}: every prompt went through the batcher"
        );
        assert_eq!(
            stats.rows,
            steps + stats.prefills,
            "{name}: every step went through the batcher"
        );
        assert_eq!(stats.max_rows, 4, "{name}: all four decoded together");
        assert!(stats.steps < stats.rows, "{name}: {stats:?}");
    }
}

#[test]
fn a_panicking_sequence_does_not_hold_the_others() {
    let base = open(&fixture("llama-tiny-f32.gguf"), KvType::F32);
    let want: Vec<Vec<u32>> = (0..3).map(|i| alone(&base, PROMPTS[i], 10)).collect();
    let batcher = Batcher::with_gather(&base, Duration::from_secs(3600));
    let start = Arc::new(Barrier::new(3));
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let mut e = base.fork(None).unwrap();
            e.attach_batcher(Some(batcher.clone())).unwrap();
            let start = start.clone();
            std::thread::spawn(move || {
                let params = greedy(10);
                let mut g = e.start(PROMPTS[i], &params).unwrap();
                start.wait();
                let mut ids = Vec::new();
                while let Some(t) = e.next_token(&mut g, &params).unwrap() {
                    ids.push(t.id);
                    // Sequence 0 dies mid-generation, holding its seat
                    // until the unwinding drops its generation.
                    assert!(!(i == 0 && ids.len() == 3), "sequence 0 fails");
                }
                ids
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        match t.join() {
            Ok(ids) => assert_eq!(ids, want[i], "sequence {i}"),
            Err(_) => assert_eq!(i, 0, "only sequence 0 panics"),
        }
    }
    // The batcher still works for a new sequence.
    let mut e = base.fork(None).unwrap();
    e.attach_batcher(Some(batcher.clone())).unwrap();
    let mut ids = Vec::new();
    e.generate(PROMPTS[1], &greedy(10), |t| {
        ids.push(t.id);
        true
    })
    .unwrap();
    assert_eq!(ids, want[1]);
}

#[test]
fn a_cancelled_sequence_leaves_the_batch_at_once() {
    let base = open(&fixture("llama-tiny-f32.gguf"), KvType::F32);
    let want = alone(&base, PROMPTS[1], 12);
    let batcher = Batcher::with_gather(&base, Duration::from_secs(3600));
    // Sequence A is seated and then cancelled before its first step; B
    // must not wait for it.
    let mut a = base.fork(None).unwrap();
    a.attach_batcher(Some(batcher.clone())).unwrap();
    let params = greedy(12);
    let mut ga = a.start(PROMPTS[0], &params).unwrap();
    let mut b = base.fork(None).unwrap();
    b.attach_batcher(Some(batcher.clone())).unwrap();
    let mut gb = b.start(PROMPTS[1], &params).unwrap();
    ga.cancel_handle().cancel();
    assert!(a.next_token(&mut ga, &params).unwrap().is_none());
    let mut ids = Vec::new();
    while let Some(t) = b.next_token(&mut gb, &params).unwrap() {
        ids.push(t.id);
    }
    assert_eq!(ids, want);
    // `ga` still exists: ending it gave its seat up.
    assert!(ga.is_done());
}
