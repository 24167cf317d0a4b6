//! The engine against the fixtures' references: logits of every GGUF file
//! (read directly and converted to `.zt`) against transformers run on that
//! file's own weights, greedy continuations, and every tokenizer case.

#![cfg(feature = "engine")]

use serde_json::Value as Json;
use std::path::PathBuf;
use ztensor::engine::{Engine, EngineOptions, KvType};

fn fixtures() -> PathBuf {
    std::env::var_os("ZT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
}

/// "llama-tiny-bpe-f32" -> ("llama-tiny-bpe", "f32").
fn model_of(stem: &str) -> (&str, &str) {
    stem.rsplit_once('-').unwrap()
}

fn npy_f32(path: &PathBuf) -> (Vec<u64>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let a = ztensor::npy::decode(&bytes).unwrap();
    let v = a
        .data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (a.shape, v)
}

fn ref_tokens(model: &str) -> Vec<u32> {
    let j: Json = serde_json::from_str(
        &std::fs::read_to_string(
            fixtures()
                .join("reference")
                .join(model)
                .join("ref_tokens.json"),
        )
        .unwrap(),
    )
    .unwrap();
    j.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

/// The issue's bounds are 1e-4 (f32), 5e-3 (f16), 0.15 (quantized); the
/// engine keeps f32 activations and dequantizes exactly, so with an f32 KV
/// cache every type must land within f32 rounding of the reference.
/// Bound on |Δ| from the exact-weights reference. Dense weights are exact
/// to f32 rounding. Quantized weights in a batch of 5 or more tokens take
/// the integer GEMM where the CPU has AVX-512 VNNI (8-bit activations, as
/// llama.cpp's prefill), and one token at a time the integer dot
/// kernels: the issue's bound for 8-bit activations is 0.15 (llama.cpp
/// itself is at 0.06-0.11 on these fixtures).
fn tolerance(t: &str) -> f32 {
    if matches!(t, "f32" | "f16" | "bf16") {
        1e-4
    } else {
        0.15
    }
}

fn ggufs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures().join("gguf"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn opts() -> EngineOptions {
    EngineOptions {
        n_ctx: 64,
        n_threads: 2,
        kv_type: KvType::F32,
        seed: 0,
    }
}

#[test]
fn logits_match_transformers_on_every_fixture() {
    let dir = std::env::temp_dir().join(format!("zt-engine-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut report = Vec::new();
    for path in ggufs() {
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let (model, t) = model_of(&stem);
        let reference = fixtures()
            .join("reference")
            .join(model)
            .join(format!("ref_logits_gguf_{t}.npy"));
        let (shape, want) = npy_f32(&reference);
        let tokens = ref_tokens(model);
        assert_eq!(shape[0] as usize, tokens.len());
        // The GGUF read directly, and its .zt conversion.
        let zt = dir.join(format!("{stem}.zt"));
        ztensor::convert::convert(&path, &zt, ztensor::WriteOptions::default()).unwrap();
        for file in [&path, &zt] {
            let mut e = Engine::open(file, opts()).unwrap();
            let got = e.eval(&tokens).unwrap();
            assert_eq!(got.len(), want.len());
            let max = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            report.push(format!(
                "{stem} ({}): max |Δ| {max:.2e}",
                if file == &path { "gguf" } else { "zt" }
            ));
            assert!(
                max <= tolerance(t),
                "{stem}: max |Δ| {max} > {}",
                tolerance(t)
            );
        }
    }
    println!("{}", report.join("\n"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn greedy_continuations_match() {
    for path in ggufs() {
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let (model, t) = model_of(&stem);
        if t != "f32" && t != "f16" {
            continue;
        }
        let g: Json = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join("reference").join(model).join("greedy.json"))
                .unwrap(),
        )
        .unwrap();
        let want: Vec<u32> = g["by_type"][t]["transformers_gguf_weights"]["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let mut e = Engine::open(&path, opts()).unwrap();
        let mut logits = e.eval(&ref_tokens(model)).unwrap();
        let v = e.config().n_vocab;
        let mut got = Vec::new();
        for _ in 0..want.len() {
            let last = &logits[logits.len() - v..];
            let mut best = 0;
            for (i, &x) in last.iter().enumerate() {
                if x > last[best] {
                    best = i;
                }
            }
            got.push(best as u32);
            logits = e.eval(&[best as u32]).unwrap();
        }
        assert_eq!(got, want, "{stem}");
    }
}

#[test]
fn tokenizer_cases_match_llama_cpp() {
    for model in [
        "llama-tiny",
        "llama-tiny-bpe",
        "qwen2-tiny-bpe",
        "qwen2-tiny",
        "llama-k",
    ] {
        let cases: Json = serde_json::from_str(
            &std::fs::read_to_string(
                fixtures()
                    .join("reference")
                    .join(model)
                    .join("tokenize_cases.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let gguf = fixtures()
            .join("gguf")
            .join(cases["gguf"].as_str().unwrap());
        let e = Engine::open(&gguf, opts()).unwrap();
        let ids = |v: &Json| -> Vec<u32> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        };
        for c in cases["cases"].as_array().unwrap() {
            let text = c["text"].as_str().unwrap();
            let special = c["parse_special"].as_bool().unwrap();
            let got = e.tokenizer().encode(text, false, special);
            assert_eq!(got, ids(&c["ids"]), "{model}: {text:?}");
            assert_eq!(
                e.tokenizer().encode(text, true, special),
                ids(&c["ids_add_special"]),
                "{model}: {text:?} (add_special)"
            );
            assert_eq!(
                e.detokenize(&got),
                c["detok"].as_str().unwrap(),
                "{model}: detok {text:?}"
            );
        }
    }
}

#[test]
fn f16_kv_cache_stays_within_the_issue_bounds() {
    for stem in ["llama-tiny-f32", "qwen2-tiny-f16", "llama-k-q4_k_m"] {
        let (model, t) = model_of(stem);
        let path = fixtures().join("gguf").join(format!("{stem}.gguf"));
        let (_, want) = npy_f32(
            &fixtures()
                .join("reference")
                .join(model)
                .join(format!("ref_logits_gguf_{t}.npy")),
        );
        // The f16 cache's own effect: against the same engine with an f32
        // cache (same kernels otherwise), and against the reference within
        // the type's bound.
        let f32_kv = Engine::open(&path, opts())
            .unwrap()
            .eval(&ref_tokens(model))
            .unwrap();
        let mut e = Engine::open(
            &path,
            EngineOptions {
                kv_type: KvType::F16,
                ..opts()
            },
        )
        .unwrap();
        let got = e.eval(&ref_tokens(model)).unwrap();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let bound = tolerance(t).max(5e-3);
        assert!(worst <= bound, "{stem}: max |Δ| {worst} from the reference");
        let max = got
            .iter()
            .zip(&f32_kv)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // With 8-bit activations (quantized weights) the cache's rounding
        // can flip an activation's int8 rounding downstream, a step of the
        // activation quantization's own size: bounded by the type's bound.
        let kv_bound = if tolerance(t) > 5e-3 {
            tolerance(t)
        } else {
            5e-3
        };
        assert!(
            max <= kv_bound,
            "{stem}: max |Δ| {max} with an f16 KV cache"
        );
    }
}

#[test]
fn token_by_token_decoding_matches_the_reference() {
    // One token per step takes the decode kernels, not the batched path:
    // f32 fused kernels (exact up to f32 rounding) for f16 / q4_1 / q5_* /
    // q2_k / q3_k weights, 8-bit activations with integer dot products (as
    // llama.cpp does) for q8_0 / q4_0 / q4_k / q6_k; the issue's bound for
    // quantized types is 0.15, llama.cpp itself is at 0.06-0.11 here.
    for stem in [
        "llama-k-f16",
        "llama-k-q8_0",
        "llama-k-q4_0",
        "llama-k-q4_1",
        "llama-k-q4_k_m",
        "llama-k-q5_k_m",
        "llama-k-q6_k",
        "llama-k-q2_k",
        "llama-k-q3_k_m",
        "qwen2-tiny-q8_0",
    ] {
        let (model, t) = model_of(stem);
        let path = fixtures().join("gguf").join(format!("{stem}.gguf"));
        let (_, want) = npy_f32(
            &fixtures()
                .join("reference")
                .join(model)
                .join(format!("ref_logits_gguf_{t}.npy")),
        );
        let mut e = Engine::open(&path, opts()).unwrap();
        let v = e.config().n_vocab;
        // Every quantized fixture has q4_k/q6_k/q8_0/q4_0 tensors (the
        // output is q6_k), which take the integer path.
        let exact = t == "f16";
        let bound = if exact { 1e-4 } else { 0.15 };
        let mut worst = 0f32;
        for (i, &tok) in ref_tokens(model).iter().enumerate() {
            let got = e.eval(&[tok]).unwrap();
            let max = got
                .iter()
                .zip(&want[i * v..(i + 1) * v])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            worst = worst.max(max);
        }
        println!("{stem}: token-by-token max |Δ| {worst:.3e}");
        assert!(worst <= bound, "{stem}: max |Δ| {worst} > {bound}");
    }
}

/// A short prompt (up to the integer path's batch limit of 4 vectors)
/// evaluated in one batch
/// (the integer tile kernels, several vectors per weight block) and token
/// by token (the one-vector kernels) does the same integer arithmetic with
/// the same 8-bit activations, so every position's logits agree to f32
/// rounding, far tighter than either is to the exact-weights reference
/// (up to 0.15). Lengths: a partial tile (3) and one whole tile of 4
/// vectors.
#[test]
fn prefill_matches_token_by_token_decoding() {
    for stem in [
        "llama-k-q8_0",
        "llama-k-q4_0",
        "llama-k-q4_1",
        "llama-k-q5_0",
        "llama-k-q5_1",
        "llama-k-q4_k_m",
        "llama-k-q5_k_m",
        "llama-k-q6_k",
        "llama-k-q2_k",
        "llama-k-q3_k_m",
        "llama-tiny-q8_0",
        "qwen2-tiny-q8_0",
    ] {
        let (model, _) = model_of(stem);
        let path = fixtures().join("gguf").join(format!("{stem}.gguf"));
        let (mut worst, mut scale) = (0f32, 0f32);
        for len in [3, 4] {
            let tokens = &ref_tokens(model)[..len];
            let mut batch = Engine::open(&path, opts()).unwrap();
            let v = batch.config().n_vocab;
            let all = batch.eval(tokens).unwrap();
            assert_eq!(all.len(), tokens.len() * v);
            let mut step = Engine::open(&path, opts()).unwrap();
            for (i, &tok) in tokens.iter().enumerate() {
                let got = step.eval(&[tok]).unwrap();
                for (a, b) in got.iter().zip(&all[i * v..(i + 1) * v]) {
                    worst = worst.max((a - b).abs());
                    scale = scale.max(b.abs());
                }
            }
        }
        println!("{stem}: prefill vs decode max |Δ| {worst:.2e} (max |logit| {scale:.2})");
        assert!(
            worst <= 1e-3 * scale.max(1.0),
            "{stem}: prefill and decode differ by {worst} (max |logit| {scale})"
        );
    }
}

/// A prompt prefilled whole gives the same last logits, bit for bit, as its
/// first 8 or 16 tokens prefilled and then the rest (at least 5): what the
/// server's prefix cache relies on (it restores a cached prefix, cut to a
/// multiple of 4, and prefills the rest). Every weight type, so both GEMMs
/// (int8 and f32) and the tiles are covered; a 22-token prompt takes the
/// GEMMs where the CPU has them and its 6-token rest must take the same
/// kernels (a trial found greedy text changing with the cache when the f32
/// GEMM started at 16 vectors).
#[test]
fn a_prompt_split_at_a_cached_prefix_gives_the_same_logits() {
    for path in ggufs() {
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let (model, _) = model_of(&stem);
        let tokens: Vec<u32> = ref_tokens(model).iter().copied().cycle().take(22).collect();
        let mut whole = Engine::open(&path, opts()).unwrap();
        whole.eval(&tokens).unwrap();
        for cut in [8, 16] {
            let mut split = Engine::open(&path, opts()).unwrap();
            split.eval(&tokens[..cut]).unwrap();
            split.eval(&tokens[cut..]).unwrap();
            let same = whole
                .last_logits()
                .iter()
                .zip(split.last_logits())
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{stem}: prefix of {cut} then the rest differs from a whole prefill"
            );
        }
    }
}

/// Copies a model into a .zt, letting `edit` drop or change objects and
/// `attrs` change the metadata.
fn rewrite(
    src: &std::path::Path,
    dst: &std::path::Path,
    edit: impl Fn(&str, &mut ztensor::Object, &mut Vec<u8>) -> bool,
    attrs: impl FnOnce(&mut Vec<(ztensor::Value, ztensor::Value)>),
) {
    let r = ztensor::Reader::open(src).unwrap();
    let mut w = ztensor::Writer::create(dst).unwrap();
    for name in r.names() {
        let mut o = r.object(name).unwrap().clone();
        let mut bytes = r.part_bytes(name, "data").unwrap().into_owned();
        if !edit(name, &mut o, &mut bytes) {
            continue;
        }
        let p = o.parts["data"].clone();
        let part = w
            .write_part(
                &bytes,
                &ztensor::PartOptions {
                    etype: p.etype.clone(),
                    compression: None,
                    digest: None,
                },
            )
            .unwrap();
        o.parts.insert("data".into(), part);
        w.add_object(name, o).unwrap();
    }
    let mut entries = match r.attributes().unwrap().clone() {
        ztensor::Value::Map(e) => e,
        _ => unreachable!(),
    };
    attrs(&mut entries);
    w.set_attributes(ztensor::Value::map(entries).unwrap())
        .unwrap();
    w.finish().unwrap();
}

fn set(entries: &mut [(ztensor::Value, ztensor::Value)], key: &str, v: ztensor::Value) {
    for (k, val) in entries.iter_mut() {
        if k.as_str() == Some(key) {
            *val = v.clone();
        }
    }
}

#[test]
fn bad_models_give_errors_naming_the_tensor_or_key() {
    use ztensor::{DType, ElementType, Value};
    let src = fixtures().join("gguf").join("llama-tiny-f32.gguf");
    let dir = std::env::temp_dir().join(format!("zt-engine-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dst = dir.join("bad.zt");
    let expect = |what: &str| {
        let err = Engine::open(&dst, opts()).unwrap_err().to_string();
        assert!(err.contains(what), "expected {what:?} in {err:?}");
    };
    let keep_all = |_: &str, _: &mut ztensor::Object, _: &mut Vec<u8>| true;
    rewrite(&src, &dst, |n, _, _| n != "blk.0.attn_q.weight", |_| {});
    expect("blk.0.attn_q.weight");
    rewrite(
        &src,
        &dst,
        |n, o, _| {
            if n == "blk.1.ffn_up.weight" {
                o.shape.reverse();
            }
            true
        },
        |_| {},
    );
    expect("blk.1.ffn_up.weight");
    rewrite(
        &src,
        &dst,
        |n, o, _| {
            if n == "blk.0.ffn_gate.weight" {
                o.parts.get_mut("data").unwrap().etype = ElementType::plain(DType::I32);
            }
            true
        },
        |_| {},
    );
    expect("blk.0.ffn_gate.weight");
    rewrite(&src, &dst, keep_all, |e| {
        set(e, "llama.block_count", Value::text("two"))
    });
    expect("llama.block_count");
    rewrite(&src, &dst, keep_all, |e| {
        set(e, "llama.attention.head_count_kv", Value::Uint(3))
    });
    expect("head_count_kv");
    rewrite(&src, &dst, keep_all, |e| {
        set(e, "general.architecture", Value::text("gptj"))
    });
    expect("gptj");
    rewrite(&src, &dst, keep_all, |e| {
        set(e, "tokenizer.ggml.bos_token_id", Value::Uint(100_000))
    });
    expect("tokenizer.ggml.bos_token_id");
    rewrite(&src, &dst, keep_all, |e| {
        set(
            e,
            "tokenizer.ggml.scores",
            Value::Array(vec![Value::Float(0.0)]),
        )
    });
    expect("tokenizer.ggml.scores");
    rewrite(&src, &dst, keep_all, |e| {
        set(e, "llama.embedding_length", Value::Uint(1 << 40))
    });
    expect("llama.embedding_length");
    std::fs::remove_dir_all(&dir).ok();
}

mod grammar {
    use super::*;
    use std::sync::Arc;
    use ztensor::engine::grammar::{Grammar, Recognizer};
    use ztensor::engine::{GenerateParams, GrammarSpec, SamplerConfig, StopReason};

    fn engine() -> Engine {
        let path = fixtures().join("gguf").join("llama-tiny-bpe-f32.gguf");
        Engine::open(
            path,
            EngineOptions {
                n_ctx: 256,
                ..opts()
            },
        )
        .unwrap()
    }

    fn params(spec: GrammarSpec, temperature: f32, top_k: usize, seed: u64) -> GenerateParams {
        GenerateParams {
            max_tokens: 48,
            sampler: SamplerConfig {
                temperature,
                top_k,
                top_p: 1.0,
                min_p: 0.0,
                ..SamplerConfig::default()
            },
            seed: Some(seed),
            grammar: Some(spec),
            ..GenerateParams::default()
        }
    }

    /// Every sampler path (greedy, lazy top-k, full mask) keeps a random
    /// model's output inside the grammar and ends it only where the grammar
    /// can end.
    #[test]
    fn constrained_output_stays_in_the_grammar() {
        let gbnf = r#"root ::= ("yes" | "no" | "maybe") " " [0-9]{1,3}"#;
        let g = Arc::new(Grammar::parse(gbnf).unwrap());
        let mut e = engine();
        for (temp, top_k) in [(0.0, 0), (1.0, 40), (1.0, 0), (1.5, 3)] {
            for seed in 0..4 {
                e.reset();
                let p = params(GrammarSpec::Gbnf(gbnf.into()), temp, top_k, seed);
                let out = e.run_generation("the answer:", &p, |_| true).unwrap();
                let mut r = Recognizer::new(g.clone()).unwrap();
                r.accept_bytes(out.text.as_bytes())
                    .unwrap_or_else(|err| panic!("{:?} left the grammar: {err}", out.text));
                if out.stop_reason() == Some(StopReason::Eos) {
                    assert!(
                        r.can_end(),
                        "EOS where the grammar cannot end: {:?}",
                        out.text
                    );
                } else {
                    assert_eq!(
                        out.stop_reason(),
                        Some(StopReason::Length),
                        "{:?}",
                        out.text
                    );
                }
            }
        }
    }

    #[test]
    fn json_schema_output_is_a_prefix_of_valid_json() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"}},
            "required": ["n", "ok"],
            "additionalProperties": false
        });
        let gbnf = ztensor::engine::grammar::json_schema_to_gbnf(&schema).unwrap();
        let g = Arc::new(Grammar::parse(&gbnf).unwrap());
        let mut e = engine();
        for seed in 0..3 {
            e.reset();
            let p = params(GrammarSpec::JsonSchema(schema.clone()), 1.0, 0, seed);
            let out = e.run_generation("json:", &p, |_| true).unwrap();
            let mut r = Recognizer::new(g.clone()).unwrap();
            r.accept_bytes(out.text.as_bytes()).unwrap();
            if out.stop_reason() == Some(StopReason::Eos) {
                let v: Json = serde_json::from_str(&out.text).unwrap();
                assert!(v["n"].is_i64() && v["ok"].is_boolean(), "{v}");
            }
        }
    }

    /// A fork of a running constrained generation keeps its grammar state and
    /// continues exactly as the parent does.
    #[test]
    fn a_fork_continues_the_constrained_generation() {
        let gbnf = r#"root ::= "[" [a-z]+ ("," [a-z]+)* "]""#;
        let mut e = engine();
        let p = params(GrammarSpec::Gbnf(gbnf.into()), 1.0, 20, 5);
        let mut g = e.start("list:", &p).unwrap();
        let mut head = String::new();
        for _ in 0..4 {
            if let Some(t) = e.next_token(&mut g, &p).unwrap() {
                head.push_str(&t.text);
            }
        }
        let mut f = e.fork(None).unwrap();
        let cont = GenerateParams {
            seed: None,
            max_tokens: 20,
            ..p.clone()
        };
        let a = e.run_generation("", &cont, |_| true).unwrap().text;
        let b = f.run_generation("", &cont, |_| true).unwrap().text;
        assert_eq!(a, b);
        let mut r = Recognizer::new(Arc::new(Grammar::parse(gbnf).unwrap())).unwrap();
        r.accept_bytes(format!("{head}{a}").as_bytes()).unwrap();
    }

    #[test]
    fn a_bad_grammar_is_an_error_not_free_text() {
        let mut e = engine();
        let p = params(GrammarSpec::Gbnf("root ::= missing".into()), 0.0, 0, 0);
        let err = e.run_generation("x", &p, |_| true).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        let p = params(
            GrammarSpec::JsonSchema(serde_json::json!({"type": "object", "patternProperties": {}})),
            0.0,
            0,
            0,
        );
        assert!(e.run_generation("x", &p, |_| true).is_err());
    }
}

/// A prompt longer than one prefill chunk runs in chunks with the same
/// result as one pass, and a cancel set before the prefill runs none of it.
#[test]
fn long_prefills_run_in_chunks_and_stop_on_cancel() {
    use ztensor::engine::{CancelHandle, GenerateParams, StopReason, PREFILL_CHUNK};
    let path = ggufs()
        .into_iter()
        .find(|p| p.to_string_lossy().contains("llama-tiny-f32"))
        .expect("fixture llama-tiny-f32");
    let o = EngineOptions {
        n_ctx: 2 * PREFILL_CHUNK + 200,
        ..opts()
    };
    let mut whole = Engine::open(&path, o.clone()).unwrap();
    let n_vocab = whole.config().n_vocab as u32;
    let ids: Vec<u32> = (0..2 * PREFILL_CHUNK as u32 + 37)
        .map(|i| (i * 7919 + 13) % n_vocab)
        .collect();
    let one_pass = whole.eval(&ids).unwrap();
    let last_row = &one_pass[one_pass.len() - n_vocab as usize..];

    let params = GenerateParams {
        max_tokens: 4,
        ..GenerateParams::default()
    };
    let mut chunked = Engine::open(&path, o.clone()).unwrap();
    let g = chunked.start_tokens(&ids, &params).unwrap();
    assert!(!g.is_done());
    assert_eq!(chunked.tokens(), &ids[..]);
    let worst = last_row
        .iter()
        .zip(chunked.last_logits())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-3, "chunked prefill differs by {worst}");

    let mut stopped = Engine::open(&path, o).unwrap();
    let cancel = CancelHandle::default();
    cancel.cancel();
    let mut g = stopped.start_tokens_with(&ids, &params, cancel).unwrap();
    assert!(stopped.tokens().is_empty(), "a cancelled prefill ran");
    assert!(stopped.next_token(&mut g, &params).unwrap().is_none());
    assert_eq!(g.stop_reason(), Some(StopReason::Interrupted));
}

/// A thread count past the engine's limit is a usage error naming the
/// field, not a pool that spawns threads until the process dies.
#[test]
fn too_many_threads_is_a_usage_error() {
    let path = fixtures().join("gguf").join("llama-tiny-q8_0.gguf");
    let o = EngineOptions {
        n_threads: ztensor::engine::MAX_THREADS + 1,
        ..opts()
    };
    let err = Engine::open(&path, o).unwrap_err();
    assert!(matches!(err, ztensor::Error::Usage(_)), "{err}");
    assert!(err.to_string().contains("n_threads 1025"), "{err}");
    let o = EngineOptions {
        n_threads: ztensor::engine::MAX_THREADS,
        ..opts()
    };
    assert!(Engine::open(&path, o).is_ok());
}
