//! Cost of grammar token masks with a real 49k-token vocabulary.
//!
//! `cargo run --profile ci --example grammar_mask_bench [MODEL.gguf]`
//! (default: SmolLM2-135M-Instruct.Q4_1.gguf in $ZT_MODEL_CACHE or
//! ~/.cache/ztensor-models). Walks a JSON document token by token under
//! llama.cpp's json.gbnf and under a JSON-Schema grammar and prints, per
//! generated token: building the trie, a greedy pick when the model's best
//! token is allowed, a greedy pick when the best 100 are not, and a full
//! mask (cold and memoised).

#[cfg(feature = "engine")]
fn main() {
    bench::run();
}

#[cfg(not(feature = "engine"))]
fn main() {
    eprintln!("needs the engine feature");
}

#[cfg(feature = "engine")]
mod bench {
    use std::sync::Arc;
    use std::time::Instant;
    use ztensor::cbor::Value;
    use ztensor::engine::grammar::{Grammar, Recognizer, TokenMask};

    /// GPT-2 byte-level BPE: printable char → byte.
    fn unbyte() -> std::collections::HashMap<char, u8> {
        let mut map = std::collections::HashMap::new();
        let mut next = 256u32;
        for b in 0..256u32 {
            let printable =
                (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
            let c = if printable {
                b
            } else {
                next += 1;
                next - 1
            };
            map.insert(char::from_u32(c).expect("char"), b as u8);
        }
        map
    }

    fn vocab(path: &str) -> (Vec<Vec<u8>>, u32) {
        let r = ztensor::Reader::open(path).expect("open GGUF");
        let attrs = r.attributes().expect("metadata");
        let Some(Value::Array(toks)) = attrs.get("tokenizer.ggml.tokens") else {
            panic!("no tokenizer.ggml.tokens")
        };
        let types: Vec<i128> = match attrs.get("tokenizer.ggml.token_type") {
            Some(Value::Array(t)) => t.iter().map(|v| v.as_int().unwrap_or(1)).collect(),
            _ => vec![1; toks.len()],
        };
        let eos = attrs
            .get("tokenizer.ggml.eos_token_id")
            .and_then(Value::as_u64)
            .unwrap_or(0) as u32;
        let map = unbyte();
        let vocab = toks
            .iter()
            .zip(types)
            .map(|(t, ty)| {
                let s = t.as_str().unwrap_or("");
                if ty == 3 {
                    Vec::new() // control tokens print nothing
                } else {
                    s.chars()
                        .map(|c| map.get(&c).copied().unwrap_or(b'?'))
                        .collect()
                }
            })
            .collect();
        (vocab, eos)
    }

    /// Longest-match tokenisation (a stand-in for the model's choices).
    fn tokenize(vocab: &[Vec<u8>], text: &[u8]) -> Vec<u32> {
        let mut best: std::collections::HashMap<&[u8], u32> = Default::default();
        for (i, v) in vocab.iter().enumerate() {
            if !v.is_empty() {
                best.entry(v.as_slice()).or_insert(i as u32);
            }
        }
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < text.len() {
            let mut len = (text.len() - pos).min(16);
            while len > 1 && !best.contains_key(&text[pos..pos + len]) {
                len -= 1;
            }
            out.push(*best.get(&text[pos..pos + len]).expect("byte tokens exist"));
            pos += len;
        }
        out
    }

    fn per_token(total: f64, n: usize) -> String {
        format!("{:8.1} µs", total * 1e6 / n as f64)
    }

    fn walk(label: &str, g: Grammar, vocab: &[Vec<u8>], eos: u32, doc: &str) {
        let g = Arc::new(g);
        let t = Instant::now();
        let mut mask = TokenMask::new(g.clone(), vocab, &[eos]).expect("mask");
        let build = t.elapsed().as_secs_f64();
        let ids = tokenize(vocab, doc.as_bytes());
        let n = ids.len() + 1;
        let mut logits = vec![0.0f32; vocab.len()];
        let (mut hit, mut miss, mut cold, mut warm, mut one) = (0.0, 0.0, 0.0, 0.0, 0.0);
        let mut trans_warm = 0.0;
        let mut r = Recognizer::new(g).expect("recogniser");
        let mut n_allowed = 0usize;
        for step in 0..n {
            let want = ids.get(step).copied().unwrap_or(eos);
            // Pseudo-random logits with the wanted token on top.
            for (i, l) in logits.iter_mut().enumerate() {
                *l = ((i as u64 * 2654435761 + step as u64 * 97) % 1000) as f32 / 100.0;
            }
            logits[want as usize] = 100.0;
            let st = r.snapshot();
            mask.clear_all();
            let t = Instant::now();
            assert!(mask.allowed(&st, want));
            one += t.elapsed().as_secs_f64();
            mask.clear_memo();
            let t = Instant::now();
            let got = mask.greedy(&st, &logits).expect("allowed");
            hit += t.elapsed().as_secs_f64();
            assert_eq!(got, want, "the document is a sentence of the grammar");
            // Now the 100 best are all refused (worst case for lazy checks).
            let mut worst = logits.clone();
            worst[want as usize] = 0.0;
            for (k, w) in worst.iter_mut().enumerate() {
                if !mask.allowed(&st, k as u32) {
                    *w += 200.0;
                }
            }
            mask.clear_memo();
            let t = Instant::now();
            let _ = mask.greedy(&st, &worst);
            miss += t.elapsed().as_secs_f64();
            mask.clear_all();
            let t = Instant::now();
            n_allowed += mask.allowed_tokens(&st).expect("allowed").len();
            cold += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let _ = mask.allowed_tokens(&st);
            warm += t.elapsed().as_secs_f64();
            mask.clear_memo();
            let t = Instant::now();
            let _ = mask.allowed_tokens(&st);
            trans_warm += t.elapsed().as_secs_f64();
            if want != eos {
                r.accept_bytes(&vocab[want as usize]).expect("accepted");
            }
        }
        println!(
            "{label}: {n} tokens, {} vocab, trie {} nodes built in {:.1} ms, mean allowed {}",
            vocab.len(),
            mask.trie_nodes(),
            build * 1e3,
            n_allowed / n
        );
        println!(
            "  one allowed() check, cold memo               {}",
            per_token(one, n)
        );
        println!(
            "  greedy, best token allowed (lazy, cold memo) {}",
            per_token(hit, n)
        );
        println!(
            "  greedy, all top logits refused (cold memo)   {}",
            per_token(miss, n)
        );
        println!(
            "  full mask, all caches cold                   {}",
            per_token(cold, n)
        );
        println!(
            "  full mask, new state, transitions cached     {}",
            per_token(trans_warm, n)
        );
        println!(
            "  full mask, memoised state                    {}",
            per_token(warm, n)
        );
    }

    pub fn run() {
        let path = std::env::args().nth(1).unwrap_or_else(|| {
            let dir = std::env::var("ZT_MODEL_CACHE").unwrap_or_else(|_| {
                format!(
                    "{}/.cache/ztensor-models",
                    std::env::var("HOME").unwrap_or_default()
                )
            });
            format!("{dir}/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
        let (vocab, eos) = vocab(&path);
        let doc = r#"{"name": "Ada Lovelace", "born": 1815, "fields": ["mathematics", "computing"], "notes": {"first program": true, "quote": "That brain of mine is something more than merely mortal"}}"#;
        let json = include_str!("../tests/data/grammars/json.gbnf");
        walk(
            "json.gbnf",
            Grammar::parse(json).expect("json.gbnf"),
            &vocab,
            eos,
            doc,
        );
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "born": {"type": "integer", "minimum": 0, "maximum": 2100},
                "fields": {"type": "array", "items": {"type": "string"}},
                "notes": {"type": "object"}
            },
            "required": ["name", "born"]
        });
        let schema_doc = r#"{"born": 1815, "fields": ["mathematics", "computing"], "name": "Ada Lovelace", "notes": {"first program": true}}"#;
        let g = Grammar::from_json_schema(&schema).expect("schema");
        walk("json schema", g, &vocab, eos, schema_doc);
    }
}
