//! llama.cpp's example grammars (tests/data/grammars, copied from
//! ggml-org/llama.cpp `grammars/`) constrain SmolLM2-135M-Instruct's
//! sampled output: what comes out re-parses under the same grammar with the
//! recogniser (a complete sentence when the model stopped at EOS, a valid
//! prefix when `max_tokens` cut it), and no run ends for lack of an allowed
//! token. Skipped with a message when the model is not cached (see
//! `scripts/fetch_models.py`). Bounded: 32 tokens per grammar.

#![cfg(feature = "engine")]

mod common;

use common::models::cached_model;
use std::path::PathBuf;
use std::sync::Arc;
use ztensor::engine::grammar::{Grammar, Recognizer};
use ztensor::engine::{
    Engine, EngineOptions, GenerateParams, GrammarSpec, KvType, SamplerConfig, StopReason,
};

fn smollm2() -> Option<PathBuf> {
    cached_model("SmolLM2-135M-Instruct.Q4_1.gguf")
}

const GRAMMARS: &[(&str, &str)] = &[
    ("json.gbnf", "A JSON object describing a cat:\n"),
    ("json_arr.gbnf", "A JSON list of three fruits:\n"),
    ("list.gbnf", "A shopping list:\n"),
    ("arithmetic.gbnf", "An arithmetic expression: "),
    ("chess.gbnf", "The first moves of a chess game: "),
    ("english.gbnf", "An English sentence: "),
    ("japanese.gbnf", "日本語の文: "),
    ("c.gbnf", "A small C program:\n"),
];

#[test]
fn llama_cpp_example_grammars_constrain_smollm2() {
    let Some(model) = smollm2() else { return };
    let options = EngineOptions {
        n_ctx: 256,
        n_threads: 2,
        kv_type: KvType::F16,
        seed: 0,
    };
    let mut e = Engine::open(&model, options).expect("SmolLM2");
    for (seed, (file, prompt)) in GRAMMARS.iter().enumerate() {
        let path = format!("{}/tests/data/grammars/{file}", env!("CARGO_MANIFEST_DIR"));
        let source = std::fs::read_to_string(&path).expect("grammar file");
        let params = GenerateParams {
            max_tokens: 32,
            sampler: SamplerConfig {
                temperature: 1.0,
                ..SamplerConfig::default()
            },
            stop: Vec::new(),
            seed: Some(seed as u64),
            grammar: Some(GrammarSpec::Gbnf(source.clone())),
        };
        e.reset();
        let mut ids = Vec::new();
        let mut reason = None;
        e.generate(prompt, &params, |t| {
            if !t.is_eos {
                ids.push(t.id);
            }
            reason = t.stop_reason.or(reason);
            true
        })
        .expect("generation");
        let mut bytes = Vec::new();
        for &id in &ids {
            e.tokenizer().token_bytes(id, false, &mut bytes);
        }
        let g = Arc::new(Grammar::parse(&source).expect("compiles"));
        let mut r = Recognizer::new(g).expect("recogniser");
        let shown = String::from_utf8_lossy(&bytes);
        assert!(!ids.is_empty(), "{file}: nothing generated");
        r.accept_bytes(&bytes)
            .unwrap_or_else(|err| panic!("{file}: {err} in {shown:?}"));
        match reason {
            Some(StopReason::Eos) => assert!(r.can_end(), "{file}: EOS mid-sentence {shown:?}"),
            Some(StopReason::Length) => {}
            other => panic!("{file}: ended with {other:?}: {shown:?}"),
        }
        eprintln!("{file}: {reason:?} {shown:?}");
    }
}
