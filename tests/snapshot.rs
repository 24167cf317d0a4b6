//! Engine snapshots and states: a run interrupted by snapshot/restore (to a
//! file, to bytes, through a fork) continues token for token like the
//! uninterrupted run; every kind of bad snapshot is refused with a typed
//! error and leaves the engine as it was.

#![cfg(feature = "engine")]

mod common;

use common::snapshot::{rewrite_snapshot as rewrite, tiny_model};
use std::path::PathBuf;
use ztensor::cbor::Value;
use ztensor::engine::{Engine, EngineOptions, GenerateParams, KvType, SamplerConfig};
use ztensor::{Error, Reader, SnapshotFault};

fn other_model() -> Option<PathBuf> {
    let p = std::env::var_os("ZT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
        .join("gguf/llama-k-q8_0.gguf");
    p.exists().then_some(p)
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zt-snapshot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn engine(kv: KvType, n_ctx: usize) -> Engine {
    let options = EngineOptions {
        n_ctx,
        n_threads: 2,
        kv_type: kv,
        seed: 0,
    };
    Engine::open(tiny_model(), options).unwrap()
}

fn params(max_tokens: usize, seed: Option<u64>) -> GenerateParams {
    GenerateParams {
        max_tokens,
        sampler: SamplerConfig {
            temperature: 0.9,
            top_k: 40,
            top_p: 0.95,
            repeat_penalty: 1.1,
            penalty_last_n: 16,
            ..SamplerConfig::default()
        },
        stop: Vec::new(),
        grammar: None,
        seed,
    }
}

/// The ids of a generation.
fn run(e: &mut Engine, prompt: &str, p: &GenerateParams) -> Vec<u32> {
    let mut ids = Vec::new();
    e.generate(prompt, p, |t| {
        ids.push(t.id);
        true
    })
    .unwrap();
    ids
}

const PROMPT: &str = "Once upon a time";
const N: usize = 40;
const K: usize = 15;

fn uninterrupted(kv: KvType) -> Vec<u32> {
    let mut e = engine(kv, 128);
    run(&mut e, PROMPT, &params(N, Some(7)))
}

/// The first K tokens, in an engine ready to continue.
fn first_part(kv: KvType) -> (Engine, Vec<u32>) {
    let mut e = engine(kv, 128);
    let ids = run(&mut e, PROMPT, &params(K, Some(7)));
    (e, ids)
}

fn rest(e: &mut Engine) -> Vec<u32> {
    run(e, "", &params(N - K, None))
}

#[test]
fn restore_continues_token_for_token() {
    for kv in [KvType::F16, KvType::F32] {
        let whole = uninterrupted(kv);
        assert!(whole.len() > K, "the run ended early; pick another seed");

        // Through a file, into a new engine built from the snapshot alone.
        let (e, mut ids) = first_part(kv);
        let path = tmp(&format!("snap-{}.zt", kv.name()));
        e.snapshot(&path, false).unwrap();
        drop(e);
        let r = Reader::open(&path).unwrap();
        let mut restored = Engine::from_snapshot(&r, Some(&tiny_model()), 1).unwrap();
        assert_eq!(restored.kv_type(), kv);
        ids.extend(rest(&mut restored));
        assert_eq!(ids, whole, "file, {}", kv.name());

        // Through compressed bytes, into an engine that had other context.
        let (e, mut ids) = first_part(kv);
        let blob = e.snapshot_bytes(true).unwrap();
        let mut other = engine(kv, 128);
        run(&mut other, "unrelated text", &params(5, Some(3)));
        other.restore(&Reader::from_bytes(blob).unwrap()).unwrap();
        ids.extend(rest(&mut other));
        assert_eq!(ids, whole, "bytes, {}", kv.name());

        // Through a named state and a fork (the parent keeps its own way).
        let (mut e, mut ids) = first_part(kv);
        e.save_state("k").unwrap();
        let mut fork = e.fork(Some("k")).unwrap();
        run(&mut e, " and more", &params(6, Some(99)));
        ids.extend(rest(&mut fork));
        assert_eq!(ids, whole, "fork, {}", kv.name());
        // And back in the parent from the stored state.
        let (_, mut again) = first_part(kv);
        e.use_state("k").unwrap();
        again.extend(rest(&mut e));
        assert_eq!(again, whole, "state, {}", kv.name());
    }
}

#[test]
fn states_are_listed_dumped_loaded_and_deleted() {
    let (mut e, _) = first_part(KvType::F16);
    let st = e.save_state("a").unwrap();
    assert_eq!(st.tokens, e.tokens());
    let path = tmp("state-a.zt");
    e.dump_state("a", &path, true).unwrap();
    e.load_state("b", &Reader::open(&path).unwrap()).unwrap();
    assert_eq!(*e.state("b").unwrap(), *st);
    let names: Vec<&str> = e.states().map(|(n, _)| n).collect();
    assert_eq!(names, ["a", "b"]);
    // Immutable: a taken name is refused by every way of storing.
    assert!(matches!(e.save_state("b"), Err(Error::Usage(m)) if m.contains("taken")));
    let again = e.load_state("a", &Reader::open(&path).unwrap());
    assert!(matches!(again, Err(Error::Usage(m)) if m.contains("taken")));
    for bad in ["", "../a", "a.zt", "a/b"] {
        assert!(matches!(e.save_state(bad), Err(Error::Usage(_))), "{bad:?}");
    }
    assert_eq!(*e.state("b").unwrap(), *st);
    e.delete_state("a").unwrap();
    assert!(matches!(e.state("a"), Err(Error::NotFound { .. })));
    assert!(e.delete_state("a").is_err());
    e.save_state("a").unwrap();
}

#[test]
fn snapshot_info_reads_without_the_model() {
    let (e, _) = first_part(KvType::F16);
    let path = tmp("info.zt");
    e.snapshot(&path, false).unwrap();
    let info = ztensor::engine::snapshot::read_info(&Reader::open(&path).unwrap()).unwrap();
    assert_eq!(info.tokens_count, e.tokens().len());
    assert_eq!(info.n_ctx, 128);
    assert_eq!(info.arch, "llama");
    assert_eq!(info.kv_type, KvType::F16);
    assert_eq!(info.model_fingerprint, e.model().fingerprint().unwrap());
    assert_eq!(info.tokenizer_digest, e.tokenizer().digest());
    assert_eq!(
        info.model_path.as_deref(),
        Some(tiny_model().to_string_lossy().as_ref())
    );
}

fn set(desc: &mut [(Value, Value)], key: &str, value: Value) {
    for (k, v) in desc.iter_mut() {
        if k.as_str() == Some(key) {
            *v = value.clone();
        }
    }
}

fn keep(_: &mut Vec<(Value, Value)>) {}

fn same(_: &str, s: Vec<u64>, b: Vec<u8>) -> Option<(Vec<u64>, Vec<u8>)> {
    Some((s, b))
}

fn fault_of(e: Error) -> SnapshotFault {
    match e {
        Error::Snapshot { fault, .. } => fault,
        other => panic!("not a snapshot error: {other}"),
    }
}

#[test]
fn bad_snapshots_are_refused_and_leave_the_engine_as_it_was() {
    let (donor, _) = first_part(KvType::F16);
    let good = tmp("good.zt");
    donor.snapshot(&good, false).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let n_vocab = donor.config().n_vocab as u32;

    let mut cases: Vec<(&str, PathBuf, SnapshotFault)> = Vec::new();
    let truncated = tmp("truncated.zt");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    cases.push(("truncated", truncated, SnapshotFault::Malformed));
    let cut = tmp("cut.zt");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    cases.push(("cut in half", cut, SnapshotFault::Malformed));

    // One byte of the first layer's K flipped in place.
    let flipped = tmp("flipped.zt");
    let r = Reader::open(&good).unwrap();
    let at = r.object("kv.k.0").unwrap().parts["data"].blob.offset as usize + 3;
    let mut b = bytes.clone();
    b[at] ^= 0x20;
    std::fs::write(&flipped, &b).unwrap();
    cases.push(("flipped KV byte", flipped, SnapshotFault::Malformed));

    let p = tmp("other-model.zt");
    rewrite(
        &good,
        &p,
        |d| {
            set(
                d,
                "model_fingerprint",
                Value::text(format!("blake3:{}", "0".repeat(64))),
            )
        },
        same,
    );
    cases.push(("other model", p, SnapshotFault::Fingerprint));

    let p = tmp("other-tokenizer.zt");
    rewrite(
        &good,
        &p,
        |d| set(d, "tokenizer_digest", Value::text("blake3:00")),
        same,
    );
    cases.push(("other tokenizer", p, SnapshotFault::Tokenizer));

    let p = tmp("token-range.zt");
    rewrite(&good, &p, keep, |name, s, mut b| {
        if name == "tokens" {
            b[4..8].copy_from_slice(&n_vocab.to_le_bytes());
        }
        Some((s, b))
    });
    cases.push(("token id out of range", p, SnapshotFault::Malformed));

    let p = tmp("kv-shape.zt");
    rewrite(&good, &p, keep, |name, s, b| {
        if name == "kv.v.1" {
            let half = b.len() / 2;
            return Some((vec![s[0], s[1] / 2], b[..half].to_vec()));
        }
        Some((s, b))
    });
    cases.push(("wrong KV shape", p, SnapshotFault::Malformed));

    let p = tmp("missing.zt");
    rewrite(&good, &p, keep, |name, s, b| {
        (name != "kv.v.1").then_some((s, b))
    });
    cases.push(("missing part", p, SnapshotFault::Malformed));

    let p = tmp("layers.zt");
    rewrite(&good, &p, |d| set(d, "n_layer", Value::Uint(3)), same);
    cases.push(("layer count", p, SnapshotFault::Incompatible));

    let p = tmp("kv-layout.zt");
    rewrite(
        &good,
        &p,
        |d| set(d, "kv_layout", Value::text("ring:512")),
        same,
    );
    cases.push(("KV layout", p, SnapshotFault::Incompatible));

    let p = tmp("version.zt");
    rewrite(&good, &p, |d| set(d, "version", Value::Uint(99)), same);
    cases.push(("version", p, SnapshotFault::Malformed));

    // The engine under test has its own context; after each refusal it
    // must generate exactly what an untouched twin generates.
    let mut e = engine(KvType::F16, 128);
    run(&mut e, "The engine's own", &params(4, Some(5)));
    let before = (e.tokens().to_vec(), e.last_logits().to_vec(), e.rng_state());
    for (what, path, want) in &cases {
        let err = match ztensor::engine::snapshot::open(path) {
            Err(err) => err,
            Ok(r) => e.restore(&r).unwrap_err(),
        };
        assert_eq!(fault_of(err), *want, "{what}");
        assert_eq!(
            (e.tokens().to_vec(), e.last_logits().to_vec(), e.rng_state()),
            before,
            "{what}"
        );
    }
    // The context is too short for the snapshot's tokens.
    let mut small = engine(KvType::F16, 8);
    let err = small.restore(&Reader::open(&good).unwrap()).unwrap_err();
    assert_eq!(fault_of(err), SnapshotFault::Incompatible);
    // A KV type other than the cache's.
    let mut f32_engine = engine(KvType::F32, 128);
    let err = f32_engine
        .restore(&Reader::open(&good).unwrap())
        .unwrap_err();
    assert_eq!(fault_of(err), SnapshotFault::Incompatible);
    // A real other model.
    if let Some(other) = other_model() {
        let mut o = Engine::open(
            &other,
            EngineOptions {
                n_ctx: 128,
                n_threads: 1,
                ..EngineOptions::default()
            },
        )
        .unwrap();
        let err = o.restore(&Reader::open(&good).unwrap()).unwrap_err();
        assert_eq!(fault_of(err), SnapshotFault::Fingerprint);
    }
    // Still generating as its twin does.
    let mut twin = engine(KvType::F16, 128);
    run(&mut twin, "The engine's own", &params(4, Some(5)));
    assert_eq!(
        run(&mut e, "", &params(10, None)),
        run(&mut twin, "", &params(10, None))
    );
}

#[test]
fn a_gguf_and_its_conversion_share_the_fingerprint() {
    let Some(gguf) = other_model() else { return };
    let zt = tmp("conv.zt");
    ztensor::convert::convert(&gguf, &zt, ztensor::WriteOptions::default()).unwrap();
    let a = Reader::open(&gguf).unwrap();
    let b = Reader::open(&zt).unwrap();
    assert!(ztensor::fingerprint::cached(&a).is_none());
    let cached = ztensor::fingerprint::cached(&b).expect("convert caches the fingerprint");
    assert_eq!(cached, ztensor::fingerprint::compute(&a).unwrap());
    assert_eq!(cached, ztensor::fingerprint::compute(&b).unwrap());
    // A snapshot taken on the GGUF restores on the .zt.
    let o = EngineOptions {
        n_ctx: 64,
        n_threads: 1,
        ..EngineOptions::default()
    };
    let mut e = Engine::open(&gguf, o.clone()).unwrap();
    run(&mut e, "hello", &params(3, Some(1)));
    let blob = e.snapshot_bytes(false).unwrap();
    let mut f = Engine::open(&zt, o).unwrap();
    f.restore(&Reader::from_bytes(blob).unwrap()).unwrap();
    assert_eq!(f.tokens(), e.tokens());
}

/// Issue 11.7: the model path is stored resolved (a relative path still
/// restores from anywhere) and the sampler settings are shown and restored.
#[test]
fn snapshots_record_the_resolved_model_path_and_the_sampler() {
    // A relative path with a detour, as a user might type it (tests run in
    // the package directory).
    let relative = PathBuf::from("src/bin/zt/../zt/assets/llama-tiny-q8_0.zt");
    let options = EngineOptions {
        n_ctx: 64,
        n_threads: 1,
        kv_type: KvType::F16,
        seed: 0,
    };
    let mut e = Engine::open(&relative, options).unwrap();
    let p = params(4, Some(7));
    run(&mut e, PROMPT, &p);
    let path = tmp("resolved.zt");
    e.snapshot(&path, false).unwrap();
    let info = ztensor::engine::snapshot::read_info(&Reader::open(&path).unwrap()).unwrap();
    let stored = PathBuf::from(info.model_path.unwrap());
    assert!(stored.is_absolute(), "{}", stored.display());
    assert_eq!(stored, std::fs::canonicalize(tiny_model()).unwrap());
    assert_eq!(info.sampler, p.sampler);
    let restored = Engine::from_snapshot(&Reader::open(&path).unwrap(), None, 1).unwrap();
    assert_eq!(*restored.sampler(), p.sampler);
    assert_eq!(restored.tokens(), e.tokens());
}

/// Issue 11.5/11.6/11.8: why a generation ended, EOS yielded, cancel from
/// another thread, and a new state stored only after a natural end.
#[test]
fn generations_report_their_stop_reason_and_commit_states_only_on_success() {
    use ztensor::engine::StopReason;
    let mut e = engine(KvType::F32, 64);
    let eos = e.tokenizer().eos.unwrap();
    let mut ids = e.tokenize(PROMPT, None, true);
    ids.push(eos);
    e.eval(&ids).unwrap();
    // A window holding only EOS and a strongly negative presence penalty
    // make EOS the greedy choice.
    let mut to_eos = params(5, None);
    to_eos.sampler.temperature = 0.0;
    to_eos.sampler.presence_penalty = -1000.0;
    to_eos.sampler.penalty_last_n = 1;
    let n = e.tokens().len();
    let mut g = e.start("", &to_eos).unwrap();
    let t = e.next_token(&mut g, &to_eos).unwrap().unwrap();
    assert!(t.is_eos && t.id == eos && t.position == n);
    assert_eq!(t.stop_reason, Some(StopReason::Eos));
    assert_eq!(e.next_token(&mut g, &to_eos).unwrap(), None);
    assert_eq!(g.stop_reason(), Some(StopReason::Eos));
    assert_eq!(e.tokens().len(), n, "EOS is not added to the context");
    assert!(e.commit_state(&g, "after-eos").unwrap());

    // Length: the max_tokens-th token says so.
    let p = params(3, Some(1));
    let g = e.run_generation("", &p, |_| true).unwrap();
    assert_eq!((g.stop_reason(), g.produced), (Some(StopReason::Length), 3));

    // Cancelled from another thread: ends before its next token, and a new
    // state is not stored.
    let p = params(40, Some(1));
    let mut g = e.start(" and", &p).unwrap();
    assert!(e.next_token(&mut g, &p).unwrap().is_some());
    let handle = g.cancel_handle();
    std::thread::spawn(move || handle.cancel()).join().unwrap();
    assert_eq!(e.next_token(&mut g, &p).unwrap(), None);
    assert_eq!(g.stop_reason(), Some(StopReason::Interrupted));
    assert!(!e.commit_state(&g, "cut").unwrap());
    // Stopped by the caller: interrupted as well.
    let g = e.run_generation("", &p, |_| false).unwrap();
    assert_eq!(g.stop_reason(), Some(StopReason::Interrupted));
    assert!(!e.commit_state(&g, "cut").unwrap());
    let names: Vec<&str> = e.states().map(|(n, _)| n).collect();
    assert_eq!(names, ["after-eos"]);

    // A stop string: the tokens' texts add up to the cut text.
    e.reset();
    let mut p = params(30, Some(5));
    p.sampler.temperature = 0.0;
    let full = e.run_generation(PROMPT, &p, |_| true).unwrap().text;
    let stop: String = full.chars().skip(4).take(3).collect();
    p.stop = vec![stop.clone()];
    e.reset();
    let mut streamed = String::new();
    let mut last = None;
    let g = e
        .run_generation(PROMPT, &p, |t| {
            streamed.push_str(&t.text);
            last = t.stop_reason;
            true
        })
        .unwrap();
    assert_eq!(g.stop_reason(), Some(StopReason::Stop));
    assert_eq!(last, Some(StopReason::Stop));
    assert_eq!(g.text, full[..full.find(&stop).unwrap()]);
    assert_eq!(streamed, g.text);
}

/// A state whose sampler a run would refuse is refused at restore (a
/// trial restored `temperature = -1` and every later run failed).
#[test]
fn a_state_with_bad_sampler_settings_is_refused() {
    let (mut e, _) = first_part(KvType::F16);
    let good = e.capture().unwrap();
    let before = e.tokens().to_vec();
    let bad_settings: [fn(&mut ztensor::engine::SamplerConfig); 4] = [
        |s| s.temperature = -1.0,
        |s| s.top_p = 0.0,
        |s| s.min_p = 2.0,
        |s| s.repeat_penalty = 0.0,
    ];
    for set in bad_settings {
        let mut st = good.clone();
        set(&mut st.sampler);
        let r = e.restore_state(&st);
        assert!(
            matches!(&r, Err(Error::Snapshot { .. }) if r.as_ref().unwrap_err().to_string().contains("sampler")),
            "{r:?}"
        );
        assert_eq!(e.tokens(), before);
    }
    e.restore_state(&good).unwrap();
}
