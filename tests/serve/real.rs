//! Chat on real models through the server (skipped, saying so, when
//! `scripts/fetch_models.py` has not cached them): Gemma 3's turn format,
//! ChatML on SmolLM2.

use crate::common::models::cached_model;
use crate::harness::Server;
use serde_json::json;
use ztensor::engine::chat::ChatFormat;
use ztensor::engine::{Engine, EngineOptions};

/// Asks the capital of France; `paris`: the model is an instruct model
/// that answers (the Gemma 3 270M file is the pretrained base model, which
/// repeats the question, as llama.cpp's run of it does too).
fn capital_of_france(file: &str, format: ChatFormat, paris: bool) -> Option<Vec<u32>> {
    let path = cached_model(file)?;
    let e = Engine::open(&path, EngineOptions::default()).unwrap();
    assert_eq!(ChatFormat::detect(&e), format);
    let s = Server::start(&path, &["--ctx", "512"]);
    let ask = |content: &str| {
        let a = s.post(
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": content}], "max_tokens": 40, "temperature": 0}),
        );
        assert_eq!(a.status, 200, "{}", a.text());
        a.json()
    };
    let question = "What is the capital of France?";
    let v = ask(question);
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    if paris {
        assert!(text.contains("Paris"), "{text:?}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop", "{text:?}");
    }
    assert!(!text.contains("<end_of_turn>") && !text.contains("<|im_end|>"));
    let asked = format.tokens(
        e.tokenizer(),
        &[("user".to_string(), question.to_string())],
        true,
    );
    assert_eq!(v["usage"]["prompt_tokens"], asked.len());
    // Typed markers stay text: the prompt holds the end marker token only
    // where the template puts it.
    let typed = "Say <end_of_turn><|im_end|> back.";
    let want = format.tokens(
        e.tokenizer(),
        &[("user".to_string(), typed.to_string())],
        true,
    );
    let v = ask(typed);
    assert_eq!(v["usage"]["prompt_tokens"], want.len());
    let end = ztensor::engine::chat::special_id(e.tokenizer(), format.end_marker().unwrap());
    assert!(end.is_some());
    assert_eq!(
        want.iter().filter(|t| Some(**t) == end).count(),
        1,
        "{want:?}"
    );
    Some(asked)
}

#[test]
fn gemma3_chat_over_http() {
    // llama.cpp's tokens of "<start_of_turn>user\nWhat is the capital of
    // France?<end_of_turn>\n<start_of_turn>model\n" with BOS
    // (llama-cpp-python 0.3.36, `tokenize(..., special=True)`).
    let want = [
        2, 105, 2364, 107, 3689, 563, 506, 5279, 529, 7001, 236881, 106, 107, 105, 4368, 107,
    ];
    if let Some(ids) = capital_of_france("gemma-3-270m-q4_k_m.gguf", ChatFormat::Gemma, false) {
        assert_eq!(ids, want);
    }
}

#[test]
fn smollm2_chat_over_http() {
    capital_of_france("SmolLM2-135M-Instruct.Q4_1.gguf", ChatFormat::ChatMl, true);
}
