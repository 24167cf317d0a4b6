//! Grammar state in engine snapshots (spec §20): a constrained generation
//! interrupted by snapshot/restore (file, bytes, named state, fork)
//! continues token for token under its grammar; a snapshot without a
//! grammar stays version 1 and restores; hostile grammar objects and
//! descriptions are refused with a typed error and leave the engine as it
//! was.

#![cfg(feature = "engine")]

mod common;

use common::snapshot::{rewrite_snapshot as rewrite, tiny_model};
use std::path::PathBuf;
use std::sync::Arc;
use ztensor::cbor::Value;
use ztensor::engine::grammar::{Grammar, Recognizer};
use ztensor::engine::{Engine, EngineOptions, GenerateParams, GrammarSpec, KvType, SamplerConfig};
use ztensor::{Error, Reader, SnapshotFault};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zt-snapshot-grammar-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn engine() -> Engine {
    let options = EngineOptions {
        n_ctx: 192,
        n_threads: 2,
        kv_type: KvType::F16,
        seed: 0,
    };
    Engine::open(tiny_model(), options).unwrap()
}

/// Long enough that the random model does not finish it in `N` tokens,
/// with nesting (deep stacks) and non-ASCII (split UTF-8 across tokens).
const GRAMMAR: &str = r#"
root  ::= "[" item ("," item){2,40} "]"
item  ::= "{" [a-z]{1,6} ":" value "}"
value ::= [0-9]{1,4} | "\"" [a-zé ]{0,8} "\"" | "[" value "]"
"#;

fn params(max_tokens: usize, seed: Option<u64>, top_k: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        sampler: SamplerConfig {
            temperature: 0.9,
            top_k,
            top_p: 1.0,
            min_p: 0.0,
            ..SamplerConfig::default()
        },
        stop: Vec::new(),
        seed,
        grammar: Some(GrammarSpec::Gbnf(GRAMMAR.to_string())),
    }
}

/// Ids and bytes of a generation.
fn run(e: &mut Engine, prompt: &str, p: &GenerateParams) -> (Vec<u32>, Vec<u8>) {
    let mut ids = Vec::new();
    e.generate(prompt, p, |t| {
        ids.push(t.id);
        true
    })
    .unwrap();
    let mut bytes = Vec::new();
    for &id in &ids {
        e.tokenizer().token_bytes(id, false, &mut bytes);
    }
    (ids, bytes)
}

const PROMPT: &str = "data:";
const N: usize = 48;
const K: usize = 17;

#[test]
fn restore_continues_a_constrained_generation_token_for_token() {
    let g = Arc::new(Grammar::parse(GRAMMAR).unwrap());
    for top_k in [0, 40] {
        let mut e = engine();
        let (whole, bytes) = run(&mut e, PROMPT, &params(N, Some(11), top_k));
        // The sampled text may complete the grammar before `N` tokens; every
        // continuation below must then end at the same token.
        assert!(
            whole.len() > K + 9,
            "the run ended at {} tokens",
            whole.len()
        );
        let mut r = Recognizer::new(g.clone()).unwrap();
        r.accept_bytes(&bytes)
            .expect("the output follows the grammar");

        // Through a file, into an engine built from the snapshot alone.
        let mut e = engine();
        let (mut ids, _) = run(&mut e, PROMPT, &params(K, Some(11), top_k));
        let path = tmp(&format!("g-{top_k}.zt"));
        e.snapshot(&path, false).unwrap();
        let snap = Reader::open(&path).unwrap();
        let desc = snap.attributes().unwrap().get("ztensor.snapshot").unwrap();
        assert_eq!(desc.get("version").and_then(Value::as_u64), Some(2));
        assert!(snap.object("grammar.entries").is_ok());
        let mut restored = Engine::from_snapshot(&snap, Some(&tiny_model()), 1).unwrap();
        let (more, _) = run(&mut restored, "", &params(N - K, None, top_k));
        ids.extend(more);
        assert_eq!(ids, whole, "file, top_k {top_k}");

        // Through compressed bytes into an engine that had other context.
        let mut other = engine();
        run(&mut other, "noise", &params(5, Some(3), top_k));
        other
            .restore(&Reader::from_bytes(e.snapshot_bytes(true).unwrap()).unwrap())
            .unwrap();
        let (more, _) = run(&mut other, "", &params(N - K, None, top_k));
        assert_eq!([&ids[..K], &more[..]].concat(), whole, "bytes");

        // A fork carries its own grammar state: the parent goes on under
        // the grammar (its own state moves), the fork still continues from
        // where the fork was taken, and so does a named state.
        e.save_state("mid").unwrap();
        let mut fork = e.fork(None).unwrap();
        let mut named = e.fork(Some("mid")).unwrap();
        let (parent_more, _) = run(&mut e, "", &params(9, Some(5), top_k));
        assert_eq!(parent_more.len(), 9);
        for (what, f) in [("fork", &mut fork), ("named", &mut named)] {
            let (more, _) = run(f, "", &params(N - K, None, top_k));
            assert_eq!([&ids[..K], &more[..]].concat(), whole, "{what}");
        }
        e.use_state("mid").unwrap();
        let (more, _) = run(&mut e, "", &params(N - K, None, top_k));
        assert_eq!([&ids[..K], &more[..]].concat(), whole, "use_state");
    }
}

/// A snapshot taken mid-way through constrained output, restored and
/// continued with no grammar given, goes on under the saved grammar (the
/// same tokens as the uninterrupted run); `clear_grammar` or a new prompt
/// drop it.
#[test]
fn restored_snapshot_continues_under_its_grammar_when_none_is_given() {
    let g = Arc::new(Grammar::parse(GRAMMAR).unwrap());
    let mut e = engine();
    let (whole, _) = run(&mut e, PROMPT, &params(N, Some(21), 40));
    // The continuation must exist (the grammar may complete before `N`).
    assert!(
        whole.len() > K + 4,
        "the run ended at {} tokens",
        whole.len()
    );
    let mut e = engine();
    let (first, _) = run(&mut e, PROMPT, &params(K, Some(21), 40));
    let path = tmp("continue-without.zt");
    e.snapshot(&path, false).unwrap();
    let snap = Reader::open(&path).unwrap();
    let mut free = params(N - K, None, 40);
    free.grammar = None;

    let mut back = Engine::from_snapshot(&snap, Some(&tiny_model()), 1).unwrap();
    assert_eq!(back.grammar_source(), Some(GRAMMAR));
    let (more, _) = run(&mut back, "", &free);
    assert_eq!([&first[..], &more[..]].concat(), whole);
    assert_eq!(back.grammar_source(), Some(GRAMMAR), "still live");

    // Cleared: the same continuation is unconstrained (the tiny random
    // model leaves the grammar at once).
    let mut back = Engine::from_snapshot(&snap, Some(&tiny_model()), 1).unwrap();
    back.clear_grammar();
    assert_eq!(back.grammar_source(), None);
    let (loose, loose_bytes) = run(&mut back, "", &free);
    assert_ne!([&first[..], &loose[..]].concat(), whole);
    let mut r = Recognizer::new(g.clone()).unwrap();
    let mut first_bytes = Vec::new();
    for &id in &first {
        back.tokenizer().token_bytes(id, false, &mut first_bytes);
    }
    r.accept_bytes(&first_bytes).unwrap();
    assert!(
        r.accept_bytes(&loose_bytes).is_err(),
        "free text happened to follow the grammar"
    );

    // A new prompt without a grammar generates freely too.
    let mut back = Engine::from_snapshot(&snap, Some(&tiny_model()), 1).unwrap();
    run(&mut back, " more", &free);
    assert_eq!(back.grammar_source(), None);
}

#[test]
fn snapshots_without_a_grammar_stay_version_1_and_restore() {
    let mut e = engine();
    let mut p = params(6, Some(1), 40);
    p.grammar = None;
    run(&mut e, PROMPT, &p);
    let path = tmp("plain.zt");
    e.snapshot(&path, false).unwrap();
    let r = Reader::open(&path).unwrap();
    let desc = r.attributes().unwrap().get("ztensor.snapshot").unwrap();
    assert_eq!(desc.get("version").and_then(Value::as_u64), Some(1));
    assert!(desc.get("grammar").is_none());
    assert!(r.names().all(|n| !n.starts_with("grammar.")));
    let mut back = engine();
    back.restore(&r).unwrap();
    assert_eq!(back.tokens(), e.tokens());
    // An engine in a grammar run restored from a plain snapshot is free
    // again: a continuation without a grammar is not constrained by it.
    let state = back.capture().unwrap();
    assert!(state.grammar.is_none());
}

/// Changes a snapshot's description.
type DescFn = dyn Fn(&mut Vec<(Value, Value)>);
/// Changes (or drops, `None`) a tensor: name, shape, bytes.
type TensorFn = dyn Fn(&str, Vec<u64>, Vec<u8>) -> Option<(Vec<u64>, Vec<u8>)>;

fn u32s(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn bytes_of(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

type DescEdit = Box<DescFn>;
type TensorEdit = Box<TensorFn>;

fn set(desc: &mut [(Value, Value)], key: &str, value: Value) {
    for (k, v) in desc.iter_mut() {
        if k.as_str() == Some(key) {
            *v = value.clone();
        }
    }
}

/// Sets `grammar.<key>` in the description.
fn set_grammar(key: &'static str, value: Value) -> DescEdit {
    Box::new(move |d| {
        for (k, v) in d.iter_mut() {
            if k.as_str() == Some("grammar") {
                let Value::Map(mut g) = v.clone() else {
                    panic!()
                };
                set(&mut g, key, value.clone());
                *v = Value::map(g).unwrap();
            }
        }
    })
}

fn keep() -> DescEdit {
    Box::new(|_| {})
}

fn same() -> TensorEdit {
    Box::new(|_, s, b| Some((s, b)))
}

/// Replaces tensor `name` with `f(values as u32)` (shape follows).
fn edit_u32(name: &'static str, f: fn(&mut Vec<u32>)) -> TensorEdit {
    Box::new(move |n, s, b| {
        if n != name {
            return Some((s, b));
        }
        let mut v = u32s(&b);
        f(&mut v);
        Some((vec![v.len() as u64], bytes_of(&v)))
    })
}

#[test]
fn hostile_grammar_state_is_refused_and_leaves_the_engine_as_it_was() {
    let mut donor = engine();
    run(&mut donor, PROMPT, &params(K, Some(11), 40));
    let good = tmp("good.zt");
    donor.snapshot(&good, false).unwrap();
    // A control: the rewrite itself keeps the snapshot valid.
    let ctl = tmp("control.zt");
    rewrite(&good, &ctl, keep(), same());
    engine().restore(&Reader::open(&ctl).unwrap()).unwrap();

    let cases: Vec<(&str, DescEdit, TensorEdit)> = vec![
        (
            "version 1 with grammar",
            Box::new(|d| set(d, "version", Value::Uint(1))),
            same(),
        ),
        (
            "version 2 without grammar",
            Box::new(|d| d.retain(|(k, _)| k.as_str() != Some("grammar"))),
            same(),
        ),
        (
            "grammar objects without a description",
            Box::new(|d| {
                set(d, "version", Value::Uint(1));
                d.retain(|(k, _)| k.as_str() != Some("grammar"));
            }),
            same(),
        ),
        (
            "other kind",
            set_grammar("kind", Value::text("regex")),
            same(),
        ),
        (
            "other layout",
            set_grammar("layout", Value::Uint(9)),
            same(),
        ),
        ("kind not text", set_grammar("kind", Value::Uint(1)), same()),
        (
            "huge source",
            set_grammar("source_bytes", Value::Uint(1 << 40)),
            same(),
        ),
        (
            "huge stack count",
            set_grammar("n_stacks", Value::Uint(u64::MAX)),
            same(),
        ),
        (
            "zero stacks",
            set_grammar("n_stacks", Value::Uint(0)),
            same(),
        ),
        (
            "entries count off by one",
            Box::new(|d| {
                let n = d
                    .iter()
                    .find(|(k, _)| k.as_str() == Some("grammar"))
                    .and_then(|(_, g)| g.get("n_entries"))
                    .and_then(Value::as_u64)
                    .unwrap();
                set_grammar("n_entries", Value::Uint(n + 1))(d)
            }),
            same(),
        ),
        (
            "source missing",
            keep(),
            Box::new(|n, s, b| (n != "grammar.source").then_some((s, b))),
        ),
        (
            "source not UTF-8",
            keep(),
            Box::new(|n, s, mut b| {
                if n == "grammar.source" {
                    b[1] = 0xFF;
                }
                Some((s, b))
            }),
        ),
        (
            "source another grammar",
            keep(),
            Box::new(|n, s, mut b| {
                if n == "grammar.source" {
                    // Same length, other language: the fingerprint differs.
                    let i = b.iter().position(|&c| c == b'[').unwrap();
                    b[i + 1] = b'(';
                    b[i + 2] = b'"';
                }
                Some((s, b))
            }),
        ),
        (
            "source not a grammar",
            keep(),
            Box::new(|n, s, mut b| {
                if n == "grammar.source" {
                    b.iter_mut().for_each(|c| *c = b'@');
                }
                Some((s, b))
            }),
        ),
        (
            "header short",
            keep(),
            edit_u32("grammar.header", |v| {
                v.pop();
            }),
        ),
        (
            "header version",
            keep(),
            edit_u32("grammar.header", |v| v[0] = 7),
        ),
        (
            "header fingerprint",
            keep(),
            edit_u32("grammar.header", |v| v[1] ^= 1),
        ),
        (
            "header partial UTF-8",
            keep(),
            edit_u32("grammar.header", |v| {
                v[3] = 0x3F;
                v[4] = 5;
                v[5] = 2;
            }),
        ),
        (
            "offsets not starting at 0",
            keep(),
            edit_u32("grammar.offsets", |v| v[0] = 1),
        ),
        (
            "offsets decreasing",
            keep(),
            edit_u32("grammar.offsets", |v| {
                let n = v.len();
                if n > 2 {
                    v[1] = u32::MAX;
                } else {
                    v[n - 1] = u32::MAX;
                }
            }),
        ),
        (
            "entry beyond the grammar",
            keep(),
            edit_u32("grammar.entries", |v| v[0] = 1 << 30),
        ),
        (
            "entry not a stack entry",
            keep(),
            // Element 0 (the root's opening "[") below the top of the
            // first stack, where only continuations after a rule
            // reference may sit.
            edit_u32("grammar.entries", |v| v[0] = 0),
        ),
        (
            "entries missing",
            keep(),
            Box::new(|n, s, b| {
                if n == "grammar.entries" {
                    return None;
                }
                Some((s, b))
            }),
        ),
    ];
    let mut victim = engine();
    let mut p = params(4, Some(2), 40);
    p.grammar = None;
    run(&mut victim, "before", &p);
    let before = (victim.tokens().to_vec(), victim.capture().unwrap().grammar);
    for (i, (what, edit_desc, edit)) in cases.iter().enumerate() {
        let path = tmp(&format!("bad-{i}.zt"));
        rewrite(&good, &path, edit_desc.as_ref(), edit.as_ref());
        let err = victim
            .restore(&Reader::open(&path).unwrap())
            .expect_err(what);
        match &err {
            Error::Snapshot { fault, detail } => {
                assert_eq!(*fault, SnapshotFault::Malformed, "{what}: {detail}");
                assert!(!detail.is_empty());
            }
            other => panic!("{what}: not a snapshot error: {other}"),
        }
        let now = (victim.tokens().to_vec(), victim.capture().unwrap().grammar);
        assert_eq!(now, before, "{what}: the engine changed");
    }
}
