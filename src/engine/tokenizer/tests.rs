//! Tokenizer unit tests on synthetic vocabularies: the fast merge loops
//! against the old quadratic twin, the pre-tokenizer table, special-token
//! partitioning and chat pieces. Real-model checks live in
//! `tests/tokenizer_real.rs`.

use super::pretok::{self, Pre, PreTokenizer};
use super::*;
use std::collections::HashMap;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn attrs(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (text(k), v)).collect())
}

/// A byte-level BPE vocabulary: the 256 byte chars, then random merges over
/// a few of them (some results left out of the vocabulary, some merges
/// repeated), plus `<|im_end|>` as a control token.
fn random_bpe(seed: u64, pre: &str) -> (Tokenizer, Vec<(String, String)>) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let bc = byte_chars();
    let mut tokens: Vec<String> = bc.iter().map(|c| c.to_string()).collect();
    let base: Vec<String> = [b'a', b'b', b'c', b' ', b'1', 0xC3, 0xA9]
        .iter()
        .map(|&b| bc[b as usize].to_string())
        .collect();
    let mut pool = base.clone();
    let mut merges = Vec::new();
    for _ in 0..150 {
        let a = pool[rng.below(pool.len())].clone();
        let b = pool[rng.below(pool.len())].clone();
        if a.chars().count() + b.chars().count() > 8 {
            continue;
        }
        merges.push((a.clone(), b.clone()));
        let m = format!("{a}{b}");
        if rng.below(5) != 0 && !tokens.contains(&m) {
            tokens.push(m.clone());
        }
        pool.push(m);
        if rng.below(7) == 0 {
            merges.push((a, b));
        }
    }
    let mut types = vec![Value::Uint(TYPE_NORMAL as u64); tokens.len()];
    tokens.push("<|im_end|>".into());
    types.push(Value::Uint(TYPE_CONTROL as u64));
    let tok = Tokenizer::from_attributes(&attrs(vec![
        ("tokenizer.ggml.model", text("gpt2")),
        ("tokenizer.ggml.pre", text(pre)),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.iter().map(|t| text(t)).collect()),
        ),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        (
            "tokenizer.ggml.merges",
            Value::Array(
                merges
                    .iter()
                    .map(|(a, b)| text(&format!("{a} {b}")))
                    .collect(),
            ),
        ),
    ]))
    .unwrap();
    (tok, merges)
}

/// What the old string-based loop gives for one word.
fn reference_word(tok: &Tokenizer, merges: &[(String, String)], word: &str) -> Vec<u32> {
    let mut ranks = HashMap::new();
    for (r, m) in merges.iter().enumerate() {
        ranks.entry(m.clone()).or_insert(r);
    }
    let mapped: String = word.bytes().map(|b| tok.byte_char[b as usize]).collect();
    let mut out = Vec::new();
    for s in bpe::reference_merge(&ranks, &mapped) {
        match tok.ids.get(&s) {
            Some(&id) => out.push(id),
            None => {
                for c in s.chars() {
                    out.extend(tok.byte_token(tok.char_byte[&c]));
                }
            }
        }
    }
    out
}

fn fast_word(tok: &Tokenizer, word: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let mut work = bpe::Work::default();
    tok.bpe_word(tok.merges.as_ref().unwrap(), word, &mut work, &mut out);
    out
}

fn random_word(rng: &mut Rng, len: usize) -> String {
    const ALPHABET: &[&str] = &["a", "b", "c", " ", "1", "é", "z"];
    (0..len)
        .map(|_| ALPHABET[rng.below(ALPHABET.len())])
        .collect()
}

#[test]
fn fast_bpe_equals_the_quadratic_twin_on_random_vocabularies() {
    for seed in 0..40 {
        let (tok, merges) = random_bpe(seed, "gpt-2");
        let mut rng = Rng(seed + 1000);
        for _ in 0..60 {
            let len = rng.below(120);
            let w = random_word(&mut rng, len);
            assert_eq!(
                fast_word(&tok, &w),
                reference_word(&tok, &merges, &w),
                "seed {seed}: {w:?}"
            );
        }
        // Runs of one repeated pattern, where ties of equal rank decide.
        for unit in ["a", "ab", "abc", "aab", " a"] {
            let w = unit.repeat(1 + rng.below(200) / unit.len());
            assert_eq!(
                fast_word(&tok, &w),
                reference_word(&tok, &merges, &w),
                "seed {seed}: {w:?}"
            );
        }
    }
}

#[test]
fn a_50000_char_word_tokenizes_and_matches_the_twin_on_a_prefix() {
    let (tok, merges) = random_bpe(7, "gpt-2");
    let long = "abcab".repeat(10_000);
    let ids = tok.encode(&long, false, false);
    assert_eq!(tok.decode(&ids, false), long);
    let short = &long[..2_000];
    assert_eq!(fast_word(&tok, short), reference_word(&tok, &merges, short));
    // One pre-split word of 50,000 chars through the whole encoder.
    assert_eq!(tok.pre_split(&long).len(), 1);
    assert_eq!(ids, fast_word(&tok, &long));
}

/// A SentencePiece vocabulary over a few chars with random scores.
fn random_spm(seed: u64, add_space_prefix: bool) -> Tokenizer {
    let mut rng = Rng(seed | 1);
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![TYPE_UNKNOWN, TYPE_CONTROL, TYPE_CONTROL];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(TYPE_BYTE);
    }
    let base = ["a", "b", "\u{2581}", "x"];
    let mut pool: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    for s in &pool {
        tokens.push(s.clone());
        types.push(TYPE_NORMAL);
    }
    for _ in 0..120 {
        let m = format!(
            "{}{}",
            pool[rng.below(pool.len())],
            pool[rng.below(pool.len())]
        );
        if m.chars().count() <= 8 && !tokens.contains(&m) {
            tokens.push(m.clone());
            types.push(TYPE_NORMAL);
            pool.push(m);
        }
    }
    tokens.push("\n\n".into());
    types.push(TYPE_USER_DEFINED);
    let scores: Vec<Value> = (0..tokens.len())
        .map(|_| Value::Float(-(rng.below(1000) as f64) / 10.0))
        .collect();
    Tokenizer::from_attributes(&attrs(vec![
        ("tokenizer.ggml.model", text("llama")),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.iter().map(|t| text(t)).collect()),
        ),
        ("tokenizer.ggml.scores", Value::Array(scores)),
        (
            "tokenizer.ggml.token_type",
            Value::Array(types.iter().map(|&t| Value::Uint(t as u64)).collect()),
        ),
        (
            "tokenizer.ggml.add_space_prefix",
            Value::Bool(add_space_prefix),
        ),
        ("tokenizer.ggml.bos_token_id", Value::Uint(1)),
    ]))
    .unwrap()
}

#[test]
fn spm_handles_a_50000_char_word_and_keeps_user_defined_tokens_whole() {
    let tok = random_spm(3, false);
    let long = "abxab".repeat(10_000);
    let ids = tok.encode(&long, false, false);
    assert_eq!(tok.decode(&ids, false), long);
    // add_space_prefix = false: no leading ▁ token is invented.
    let nl = tok.ids["\n\n"];
    let ids = tok.encode("ab\n\nba", false, false);
    assert!(ids.contains(&nl), "{ids:?}");
    assert_eq!(tok.decode(&ids, false), "ab\n\nba");
    let with_prefix = random_spm(3, true);
    assert_eq!(
        with_prefix.decode(&with_prefix.encode("ab", false, false), false),
        "ab"
    );
    assert_eq!(tok.encode("ab", true, false)[0], 1);
}

#[test]
fn every_pre_tokenizer_name_compiles_and_unknown_names_fail() {
    let names = [
        "default",
        "llama3",
        "llama-v3",
        "llama-bpe",
        "falcon3",
        "pixtral",
        "deepseek-llm",
        "deepseek-coder",
        "deepseek-v3",
        "falcon",
        "mpt",
        "starcoder",
        "gpt-2",
        "phi-2",
        "refact",
        "command-r",
        "qwen2",
        "stablelm2",
        "olmo",
        "dbrx",
        "smaug-bpe",
        "poro-chat",
        "chatglm-bpe",
        "glm4",
        "viking",
        "jais",
        "tekken",
        "smollm",
        "codeshell",
        "bloom",
        "gpt3-finnish",
        "exaone",
        "chameleon",
        "minerva-7b",
        "megrez",
        "gpt-4o",
        "llama4",
        "superbpe",
        "trillion",
        "bailingmoe",
        "seed-coder",
        "hunyuan",
        "hunyuan-dense",
        "kanana2",
        "tiny_aya",
        "grok-2",
        "exaone-moe",
        "qwen35",
        "youtu",
        "spark2_5",
        "jais-2",
        "granite-embed-multi-97m",
        "ufakzeka",
        "laguna",
        "minicpm5",
        "minimax-m2",
        "deepseek-r1-qwen",
        "jina-v2-code",
    ];
    for name in names {
        let info = pretok::lookup(Some(name)).unwrap();
        let p = PreTokenizer::new(info.pre).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Splitting keeps every char, in order.
        let s = "Hello, World! it's 12345 ünïcødé 中文字 \n\n\t  x  ";
        assert_eq!(p.split(s).concat(), s, "{name}");
    }
    assert!(pretok::lookup(Some("no-such-pre")).is_err());
    assert!(pretok::lookup(Some("gemma4")).is_err());
    assert_eq!(pretok::lookup(None).unwrap().pre, Pre::Default);
    let err = random_bpe_err("no-such-pre");
    assert!(
        err.contains("no-such-pre") && err.contains("unknown"),
        "{err}"
    );
}

fn random_bpe_err(pre: &str) -> String {
    Tokenizer::from_attributes(&attrs(vec![
        ("tokenizer.ggml.model", text("gpt2")),
        ("tokenizer.ggml.pre", text(pre)),
        ("tokenizer.ggml.tokens", Value::Array(vec![text("a")])),
        ("tokenizer.ggml.merges", Value::Array(vec![])),
    ]))
    .unwrap_err()
    .to_string()
}

fn split(name: &str, s: &str) -> Vec<String> {
    let p = PreTokenizer::new(pretok::lookup(Some(name)).unwrap().pre).unwrap();
    p.split(s).into_iter().map(String::from).collect()
}

#[test]
fn pre_tokenizers_split_as_llama_cpp() {
    // smollm: digits one by one first, then GPT-2's rule.
    assert_eq!(
        split("smollm", "Hello world! 123"),
        ["Hello", " world", "!", " ", "1", "2", "3"]
    );
    // llama3: numbers in threes, a leading non-letter joins letters.
    assert_eq!(
        split("llama-bpe", "x 12345 $abc\n\n"),
        ["x", " ", "123", "45", " $", "abc", "\n\n"]
    );
    // qwen2: digits one by one inside the single expression.
    assert_eq!(split("qwen2", "ab 123"), ["ab", " ", "1", "2", "3"]);
    // deepseek-coder: newlines alone, letters with one leading space.
    assert_eq!(split("deepseek-coder", "a\nbc d"), ["a", "\n", "bc", " d"]);
    // falcon: punctuation runs first, then digits in threes.
    assert_eq!(split("falcon", "a,, 12345"), ["a", ",,", " ", "123", "45"]);
    // bloom / poro: anything but spaces and .,!? with one leading space.
    assert_eq!(split("bloom", "ab cd. e"), ["ab", " cd", ".", " e"]);
    // gpt-4o: camel case splits, contractions stay on the word.
    assert_eq!(
        split("gpt-4o", "HelloWorld don't"),
        ["Hello", "World", " don't"]
    );
    // tekken: '/' runs may carry the punctuation.
    assert_eq!(split("tekken", "a//b"), ["a", "//", "b"]);
}

#[test]
fn regex_engine_agrees_with_the_hand_written_matchers() {
    // llama.cpp's hand-written GPT-2 and Llama 3 matchers are shortcuts
    // for two expressions; running those expressions through our regex
    // path must give the same words on any text.
    const ALPHABET: &[char] = &[
        'a', 'Z', '1', '\'', 's', 't', 'l', 'e', ' ', ' ', '\n', '\r', '\t', '.', ',', '~', '$',
        'é', 'ß', '中', '٣', '\u{301}', '\u{a0}', '\u{2003}', '😀', '②', '\u{1f}', '_',
    ];
    let gpt2 = PreTokenizer::new(Pre::Gpt2).unwrap();
    let llama3 = PreTokenizer::new(Pre::Llama3).unwrap();
    let gpt2_re = PreTokenizer::regex_only(Pre::Gpt2).unwrap();
    let llama3_re = PreTokenizer::regex_only(Pre::Llama3).unwrap();
    let qwen2 = PreTokenizer::new(Pre::Qwen2).unwrap();
    let qwen2_re = PreTokenizer::regex_only(Pre::Qwen2).unwrap();
    let mut rng = Rng(99);
    for _ in 0..3000 {
        let len = rng.below(24);
        let s: String = (0..len)
            .map(|_| ALPHABET[rng.below(ALPHABET.len())])
            .collect();
        assert_eq!(gpt2.split(&s), gpt2_re.split(&s), "gpt2 {s:?}");
        assert_eq!(llama3.split(&s), llama3_re.split(&s), "llama3 {s:?}");
        assert_eq!(qwen2.split(&s), qwen2_re.split(&s), "qwen2 {s:?}");
    }
}

#[test]
fn specials_are_cut_longest_first_as_llama_cpp_does() {
    let sp = Specials::new(vec![
        ("ab".into(), 1, true),
        ("bcd".into(), 2, true),
        ("\n\n".into(), 3, false),
    ]);
    let all = [(0usize, 100usize)];
    assert_eq!(
        sp.partition("abcd", &all),
        [Frag::Text(0, 1), Frag::Token(2)]
    );
    // Control tokens need permission; user-defined ones do not.
    assert_eq!(
        sp.partition("ab\n\nab", &[]),
        [Frag::Text(0, 2), Frag::Token(3), Frag::Text(4, 6)]
    );
    assert_eq!(
        sp.partition("ab\n\nab", &[(4, 6)]),
        [Frag::Text(0, 2), Frag::Token(3), Frag::Token(1)]
    );
}

#[test]
fn user_text_in_chat_pieces_never_becomes_a_control_token() {
    let (tok, _) = random_bpe(5, "gpt-2");
    let end = tok.ids["<|im_end|>"];
    let typed = "hi<|im_end|>there";
    let ids = tok.encode_pieces(&[("ab", true), (typed, false), ("<|im_end|>", true)], false);
    assert_eq!(ids.iter().filter(|&&i| i == end).count(), 1, "{ids:?}");
    assert_eq!(*ids.last().unwrap(), end);
    assert_eq!(tok.decode(&ids, true), format!("ab{typed}<|im_end|>"));
    // Without control text in user pieces it is plain `encode`.
    assert_eq!(
        tok.encode_pieces(&[("ab<|im_end|>", true), ("c", false)], false),
        tok.encode("ab<|im_end|>c", false, true)
    );
    // And plain encode without parse_special ignores the marker too.
    assert!(!tok.encode(typed, false, false).contains(&end));
}

#[test]
fn fast_bpe_equals_the_twin_on_the_fixture_vocabularies() {
    let fixtures = std::env::var_os("ZT_FIXTURES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")
        });
    for file in ["llama-tiny-bpe-f32.gguf", "qwen2-tiny-bpe-f32.gguf"] {
        let path = fixtures.join("gguf").join(file);
        let reader = crate::Reader::open(&path).unwrap();
        let tok = Tokenizer::from_attributes(reader.attributes().unwrap()).unwrap();
        let merges: Vec<(String, String)> = String::from_utf8(tok.merge_text.clone())
            .unwrap()
            .lines()
            .map(|l| {
                let i = l.char_indices().skip(1).find(|(_, c)| *c == ' ').unwrap().0;
                (l[..i].to_string(), l[i + 1..].to_string())
            })
            .collect();
        // Words drawn from the vocabulary's own pieces, glued at random.
        let pieces: Vec<String> = tok
            .tokens
            .iter()
            .take(400)
            .map(|t| {
                t.chars()
                    .filter_map(|c| tok.char_byte.get(&c))
                    .map(|&b| b as char)
                    .collect::<String>()
            })
            .filter(|s: &String| !s.is_empty() && s.is_ascii())
            .collect();
        let mut rng = Rng(17);
        for _ in 0..300 {
            let w: String = (0..1 + rng.below(40))
                .map(|_| pieces[rng.below(pieces.len())].as_str())
                .collect();
            assert_eq!(
                fast_word(&tok, &w),
                reference_word(&tok, &merges, &w),
                "{file}: {w:?}"
            );
        }
    }
}

#[test]
fn long_whitespace_runs_split_as_the_rules_say() {
    // A run of 1.5M spaces splits as the expression says (the run less its
    // last space, then " x") on the hand-written matchers. (The regex
    // engine's backtracking stack holds about a million entries: a single
    // match longer than that is the known limit of the other types.)
    for name in ["qwen2", "stablelm2", "llama-bpe", "smollm", "gpt-2"] {
        let s = format!("{}x", " ".repeat(1_500_000));
        let words = split(name, &s);
        assert_eq!(words.len(), 2, "{name}");
        assert_eq!(words[0].len(), 1_499_999, "{name}");
        assert_eq!(words[1], " x", "{name}");
        let s = format!("{}\n{}x", " ".repeat(700_000), "\t".repeat(700_000));
        assert_eq!(split(name, &s).concat(), s, "{name}");
    }
}
