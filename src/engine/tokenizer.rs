//! Tokenizers built from a model's metadata, as llama.cpp runs them:
//! SentencePiece-style (`llama`: score-ordered merges, `▁` for spaces, one
//! leading space, `<0xNN>` byte fallback) and byte-level BPE (`gpt2`, with
//! the `gpt-2`, `llama3`, `qwen2` and `default` pre-tokenizers). Control
//! tokens are matched as whole units when asked to; decoding reassembles
//! bytes, so UTF-8 split across tokens comes out whole.

use crate::cbor::Value;
use crate::error::{Error, Result};
use std::collections::HashMap;

/// llama.cpp token types.
pub const TYPE_NORMAL: i64 = 1;
pub const TYPE_UNKNOWN: i64 = 2;
pub const TYPE_CONTROL: i64 = 3;
pub const TYPE_USER_DEFINED: i64 = 4;
pub const TYPE_UNUSED: i64 = 5;
pub const TYPE_BYTE: i64 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Spm,
    Bpe(Pre),
}

/// BPE pre-tokenizer (the regex llama.cpp applies before merging).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pre {
    Gpt2,
    Llama3,
    Qwen2,
    Default,
}

#[derive(Debug, Clone)]
pub struct Tokenizer {
    pub kind: Kind,
    pub tokens: Vec<String>,
    pub types: Vec<i64>,
    scores: Vec<f32>,
    ids: HashMap<String, u32>,
    ranks: HashMap<(String, String), usize>,
    /// Control and user-defined tokens, longest first, for special matching.
    specials: Vec<(String, u32)>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    unk: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
    ignore_merges: bool,
    /// Byte → the char standing for it in byte-level BPE, and back.
    byte_char: [char; 256],
    char_byte: HashMap<char, u8>,
}

fn bad(key: &str, detail: impl Into<String>) -> Error {
    Error::Unsupported(format!("tokenizer metadata {key}: {}", detail.into()))
}

fn array<'a>(attrs: &'a Value, key: &str) -> Result<Option<&'a [Value]>> {
    match attrs.get(key) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(v) => Err(bad(key, format!("expected an array, found {}", v.kind()))),
    }
}

fn id_key(attrs: &Value, key: &str, n: usize) -> Result<Option<u32>> {
    match attrs.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(x) if (x as usize) < n => Ok(Some(x as u32)),
            _ => Err(bad(key, format!("{v} is not a token id below {n}"))),
        },
    }
}

fn flag(attrs: &Value, key: &str) -> Result<Option<bool>> {
    match attrs.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(bad(key, format!("expected a bool, found {}", v.kind()))),
    }
}

/// GPT-2's byte ↔ printable-char table.
fn byte_chars() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..256u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        out[b as usize] = if printable {
            char::from_u32(b).unwrap_or('\0')
        } else {
            let c = char::from_u32(next).unwrap_or('\0');
            next += 1;
            c
        };
    }
    out
}

impl Tokenizer {
    pub fn from_attributes(attrs: &Value) -> Result<Tokenizer> {
        let model = attrs
            .get("tokenizer.ggml.model")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("tokenizer.ggml.model", "missing"))?;
        let pre = attrs
            .get("tokenizer.ggml.pre")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let kind = match model {
            "llama" => Kind::Spm,
            "gpt2" => Kind::Bpe(match pre {
                "gpt-2" | "phi-2" | "mpt" | "olmo" | "jina-es" | "jina-de" => Pre::Gpt2,
                "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" => Pre::Llama3,
                "qwen2" | "deepseek-r1-qwen" | "megrez" => Pre::Qwen2,
                _ => Pre::Default,
            }),
            other => {
                return Err(bad(
                    "tokenizer.ggml.model",
                    format!("{other:?} is not llama or gpt2"),
                ))
            }
        };
        let toks = array(attrs, "tokenizer.ggml.tokens")?
            .ok_or_else(|| bad("tokenizer.ggml.tokens", "missing"))?;
        let tokens: Vec<String> = toks
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad("tokenizer.ggml.tokens", "an entry is not text"))
            })
            .collect::<Result<_>>()?;
        let n = tokens.len();
        if n == 0 || n > u32::MAX as usize {
            return Err(bad("tokenizer.ggml.tokens", format!("{n} tokens")));
        }
        let scores: Vec<f32> = match array(attrs, "tokenizer.ggml.scores")? {
            None => vec![0.0; n],
            Some(s) if s.len() == n => s
                .iter()
                .map(|v| match v {
                    Value::Float(x) => Ok(*x as f32),
                    _ => Err(bad("tokenizer.ggml.scores", "an entry is not a float")),
                })
                .collect::<Result<_>>()?,
            Some(s) => {
                return Err(bad(
                    "tokenizer.ggml.scores",
                    format!("{} entries for {n} tokens", s.len()),
                ))
            }
        };
        let types: Vec<i64> = match array(attrs, "tokenizer.ggml.token_type")? {
            None => vec![TYPE_NORMAL; n],
            Some(s) if s.len() == n => s
                .iter()
                .map(|v| {
                    v.as_int().map(|x| x as i64).ok_or_else(|| {
                        bad("tokenizer.ggml.token_type", "an entry is not an integer")
                    })
                })
                .collect::<Result<_>>()?,
            Some(s) => {
                return Err(bad(
                    "tokenizer.ggml.token_type",
                    format!("{} entries for {n} tokens", s.len()),
                ))
            }
        };
        let mut ids = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            ids.entry(t.clone()).or_insert(i as u32);
        }
        let mut ranks = HashMap::new();
        if let Kind::Bpe(_) = kind {
            let merges = array(attrs, "tokenizer.ggml.merges")?
                .ok_or_else(|| bad("tokenizer.ggml.merges", "missing (required for gpt2)"))?;
            for (r, m) in merges.iter().enumerate() {
                let m = m
                    .as_str()
                    .ok_or_else(|| bad("tokenizer.ggml.merges", "an entry is not text"))?;
                let split = m
                    .char_indices()
                    .skip(1)
                    .find(|(_, c)| *c == ' ')
                    .map(|(i, _)| i)
                    .ok_or_else(|| {
                        bad("tokenizer.ggml.merges", format!("entry {m:?} has no space"))
                    })?;
                ranks
                    .entry((m[..split].to_string(), m[split + 1..].to_string()))
                    .or_insert(r);
            }
        }
        let mut specials: Vec<(String, u32)> = types
            .iter()
            .enumerate()
            .filter(|(i, t)| {
                (**t == TYPE_CONTROL || **t == TYPE_USER_DEFINED) && !tokens[*i].is_empty()
            })
            .map(|(i, _)| (tokens[i].clone(), i as u32))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let spm = kind == Kind::Spm;
        let (def_bos, def_eos) = if spm {
            (Some(1), Some(2))
        } else {
            (None, None)
        };
        let byte_char = byte_chars();
        Ok(Tokenizer {
            bos: id_key(attrs, "tokenizer.ggml.bos_token_id", n)?
                .or(def_bos.filter(|&b| (b as usize) < n)),
            eos: id_key(attrs, "tokenizer.ggml.eos_token_id", n)?
                .or(def_eos.filter(|&b| (b as usize) < n)),
            unk: id_key(attrs, "tokenizer.ggml.unknown_token_id", n)?.or(if spm {
                Some(0)
            } else {
                None
            }),
            add_bos: flag(attrs, "tokenizer.ggml.add_bos_token")?
                .unwrap_or(spm || kind == Kind::Bpe(Pre::Llama3)),
            add_eos: flag(attrs, "tokenizer.ggml.add_eos_token")?.unwrap_or(false),
            add_space_prefix: flag(attrs, "tokenizer.ggml.add_space_prefix")?.unwrap_or(spm),
            clean_spaces: !spm && kind != Kind::Bpe(Pre::Qwen2),
            ignore_merges: kind == Kind::Bpe(Pre::Llama3),
            char_byte: byte_char
                .iter()
                .enumerate()
                .map(|(b, c)| (*c, b as u8))
                .collect(),
            byte_char,
            kind,
            tokens,
            types,
            scores,
            ids,
            ranks,
            specials,
        })
    }

    pub fn n_vocab(&self) -> usize {
        self.tokens.len()
    }

    /// A stable digest of everything that decides tokenization.
    pub fn digest(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(
            format!(
                "{:?}|{}|{}|{}|",
                self.kind, self.add_bos, self.add_eos, self.add_space_prefix
            )
            .as_bytes(),
        );
        for ((t, ty), s) in self.tokens.iter().zip(&self.types).zip(&self.scores) {
            h.update(&(t.len() as u64).to_le_bytes());
            h.update(t.as_bytes());
            h.update(&ty.to_le_bytes());
            h.update(&s.to_le_bytes());
        }
        let mut ranks: Vec<_> = self.ranks.iter().collect();
        ranks.sort_by_key(|(_, r)| **r);
        for ((a, b), _) in ranks {
            h.update(a.as_bytes());
            h.update(b" ");
            h.update(b.as_bytes());
            h.update(b"\n");
        }
        format!("blake3:{}", h.finalize().to_hex())
    }

    pub fn is_control(&self, id: u32) -> bool {
        self.types
            .get(id as usize)
            .is_some_and(|t| *t == TYPE_CONTROL)
    }

    /// Tokenizes `text`. `add_special` adds BOS/EOS as the model asks;
    /// `parse_special` matches control tokens written in the text.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        let mut prev_special = true;
        for frag in self.partition(text, parse_special) {
            match frag {
                Frag::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Frag::Text(t) => {
                    match self.kind {
                        Kind::Spm => {
                            let mut s = String::with_capacity(t.len() + 3);
                            if self.add_space_prefix && prev_special {
                                s.push(' ');
                            }
                            s.push_str(t);
                            self.spm(&s.replace(' ', "\u{2581}"), &mut out);
                        }
                        Kind::Bpe(pre) => {
                            for word in pre_split(pre, t) {
                                self.bpe_word(word, &mut out);
                            }
                        }
                    }
                    prev_special = false;
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    fn partition<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Frag<'t>> {
        let mut out = Vec::new();
        let mut start = 0usize;
        let specials: Vec<&(String, u32)> = self
            .specials
            .iter()
            .filter(|(_, id)| parse_special || self.types[*id as usize] == TYPE_USER_DEFINED)
            .collect();
        if specials.is_empty() {
            if !text.is_empty() {
                out.push(Frag::Text(text));
            }
            return out;
        }
        let mut i = 0usize;
        while i < text.len() {
            let hit = specials
                .iter()
                .find(|(s, _)| text[i..].starts_with(s.as_str()));
            match hit {
                Some((s, id)) => {
                    if i > start {
                        out.push(Frag::Text(&text[start..i]));
                    }
                    out.push(Frag::Token(*id));
                    i += s.len();
                    start = i;
                }
                None => i += text[i..].chars().next().map_or(1, char::len_utf8),
            }
        }
        if start < text.len() {
            out.push(Frag::Text(&text[start..]));
        }
        out
    }

    fn byte_token(&self, b: u8) -> Option<u32> {
        match self.kind {
            Kind::Spm => self.ids.get(&format!("<0x{b:02X}>")).copied().or(self.unk),
            Kind::Bpe(_) => self
                .ids
                .get(self.byte_char[b as usize].to_string().as_str())
                .copied()
                .or(self.unk),
        }
    }

    fn spm(&self, text: &str, out: &mut Vec<u32>) {
        // Symbols as (text range) in a linked list, merged best score first.
        let mut sym: Vec<(usize, usize)> = text
            .char_indices()
            .map(|(i, c)| (i, i + c.len_utf8()))
            .collect();
        let n = sym.len();
        if n == 0 {
            return;
        }
        let mut prev: Vec<isize> = (0..n as isize).map(|i| i - 1).collect();
        let mut next: Vec<isize> = (1..=n as isize)
            .map(|i| if i == n as isize { -1 } else { i })
            .collect();
        let mut alive = vec![true; n];
        let mut heap = std::collections::BinaryHeap::new();
        let mut rev: HashMap<(usize, usize), (usize, usize, usize, usize)> = HashMap::new();
        let push = |heap: &mut std::collections::BinaryHeap<(
            OrdF32,
            std::cmp::Reverse<usize>,
            usize,
            usize,
        )>,
                    rev: &mut HashMap<(usize, usize), (usize, usize, usize, usize)>,
                    sym: &[(usize, usize)],
                    l: usize,
                    r: usize| {
            let (s, e) = (sym[l].0, sym[r].1);
            if let Some(&id) = self.ids.get(&text[s..e]) {
                heap.push((
                    OrdF32(self.scores[id as usize]),
                    std::cmp::Reverse(l),
                    r,
                    e - s,
                ));
                rev.insert((s, e), (sym[l].0, sym[l].1, sym[r].0, sym[r].1));
            }
        };
        for i in 1..n {
            push(&mut heap, &mut rev, &sym, i - 1, i);
        }
        while let Some((_, std::cmp::Reverse(l), r, size)) = heap.pop() {
            if !alive[l]
                || !alive[r]
                || sym[l].1 - sym[l].0 + sym[r].1 - sym[r].0 != size
                || next[l] != r as isize
            {
                continue;
            }
            sym[l].1 = sym[r].1;
            alive[r] = false;
            next[l] = next[r];
            if next[r] >= 0 {
                prev[next[r] as usize] = l as isize;
            }
            if prev[l] >= 0 {
                push(&mut heap, &mut rev, &sym, prev[l] as usize, l);
            }
            if next[l] >= 0 {
                push(&mut heap, &mut rev, &sym, l, next[l] as usize);
            }
        }
        let mut i = 0isize;
        while i >= 0 {
            let (s, e) = sym[i as usize];
            self.resegment(text, s, e, &rev, out);
            i = next[i as usize];
        }
    }

    fn resegment(
        &self,
        text: &str,
        s: usize,
        e: usize,
        rev: &HashMap<(usize, usize), (usize, usize, usize, usize)>,
        out: &mut Vec<u32>,
    ) {
        if let Some(&id) = self.ids.get(&text[s..e]) {
            out.push(id);
            return;
        }
        if let Some(&(a, b, c, d)) = rev.get(&(s, e)) {
            self.resegment(text, a, b, rev, out);
            self.resegment(text, c, d, rev, out);
            return;
        }
        for b in text[s..e].bytes() {
            out.extend(self.byte_token(b));
        }
    }

    fn bpe_word(&self, word: &str, out: &mut Vec<u32>) {
        let mapped: String = word.bytes().map(|b| self.byte_char[b as usize]).collect();
        if self.ignore_merges {
            if let Some(&id) = self.ids.get(&mapped) {
                out.push(id);
                return;
            }
        }
        let mut syms: Vec<String> = mapped.chars().map(String::from).collect();
        loop {
            let best = syms
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| {
                    self.ranks
                        .get(&(w[0].clone(), w[1].clone()))
                        .map(|r| (*r, i))
                })
                .min();
            let Some((_, i)) = best else { break };
            let right = syms.remove(i + 1);
            syms[i].push_str(&right);
        }
        for s in syms {
            match self.ids.get(&s) {
                Some(&id) => out.push(id),
                None => {
                    for c in s.chars() {
                        if let Some(&b) = self.char_byte.get(&c) {
                            out.extend(self.byte_token(b));
                        }
                    }
                }
            }
        }
    }

    /// The bytes a token stands for; control tokens give nothing unless
    /// `special`.
    pub fn token_bytes(&self, id: u32, special: bool, out: &mut Vec<u8>) {
        let Some(t) = self.tokens.get(id as usize) else {
            return;
        };
        let ty = self.types[id as usize];
        if ty == TYPE_CONTROL || ty == TYPE_UNKNOWN {
            if special {
                out.extend_from_slice(t.as_bytes());
            }
            return;
        }
        if ty == TYPE_UNUSED {
            return;
        }
        match self.kind {
            Kind::Spm => {
                if ty == TYPE_BYTE {
                    if let Some(b) = t
                        .strip_prefix("<0x")
                        .and_then(|h| h.strip_suffix('>'))
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        out.push(b);
                        return;
                    }
                }
                out.extend_from_slice(t.replace('\u{2581}', " ").as_bytes());
            }
            Kind::Bpe(_) => {
                if ty == TYPE_USER_DEFINED {
                    out.extend_from_slice(t.as_bytes());
                    return;
                }
                for c in t.chars() {
                    match self.char_byte.get(&c) {
                        Some(&b) => out.push(b),
                        None => {
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        }
                    }
                }
            }
        }
    }

    /// Decodes ids to text as llama.cpp's detokenize does (the leading
    /// space SPM adds is dropped from the first token; BPE cleans the
    /// spaces before `?!.,` and contractions where the model asks).
    pub fn decode(&self, ids: &[u32], special: bool) -> String {
        let mut bytes = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let start = bytes.len();
            self.token_bytes(id, special, &mut bytes);
            if i == 0 && self.add_space_prefix && bytes.get(start) == Some(&b' ') {
                bytes.remove(start);
            }
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if self.clean_spaces {
            clean_up_spaces(&text)
        } else {
            text
        }
    }
}

/// HF's `clean_up_tokenization_spaces`: no space before `?!.,` and common
/// contractions.
fn clean_up_spaces(text: &str) -> String {
    let mut s = text.to_string();
    for (from, to) in [
        (" ?", "?"),
        (" !", "!"),
        (" .", "."),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ] {
        s = s.replace(from, to);
    }
    s
}

#[derive(Debug)]
enum Frag<'t> {
    Text(&'t str),
    Token(u32),
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct OrdF32(f32);
impl Eq for OrdF32 {}
impl PartialOrd for OrdF32 {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for OrdF32 {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

fn is_letter(c: char) -> bool {
    c.is_alphabetic()
}

fn is_number(c: char) -> bool {
    c.is_numeric() && !c.is_alphabetic()
}

fn is_other(c: char) -> bool {
    !c.is_whitespace() && !is_letter(c) && !is_number(c)
}

fn run(cs: &[char], i: usize, f: impl Fn(char) -> bool) -> usize {
    cs[i..].iter().take_while(|&&c| f(c)).count()
}

/// `\s+(?!\S)` at `i`: a whitespace run, less its last char when a
/// non-space follows.
fn spaces_not_before_text(cs: &[char], i: usize) -> usize {
    let n = run(cs, i, char::is_whitespace);
    if n == 0 || i + n == cs.len() {
        n
    } else {
        n - 1
    }
}

fn contraction(cs: &[char], i: usize, fold: bool) -> usize {
    if cs[i] != '\'' {
        return 0;
    }
    let low = |k: usize| {
        cs.get(i + k)
            .map(|c| if fold { c.to_ascii_lowercase() } else { *c })
    };
    match (low(1), low(2)) {
        (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')) => 3,
        (Some('s' | 't' | 'm' | 'd'), _) => 2,
        _ => 0,
    }
}

/// Length in chars of the match at `i` for one pre-tokenizer.
fn match_at(pre: Pre, cs: &[char], i: usize) -> usize {
    let c = cs[i];
    let sp = usize::from(c == ' ');
    match pre {
        Pre::Gpt2 | Pre::Default => {
            let k = contraction(cs, i, false);
            if k > 0 {
                return k;
            }
            for f in [is_letter as fn(char) -> bool, is_number, is_other] {
                if i + sp < cs.len() {
                    let n = run(cs, i + sp, f);
                    if n > 0 {
                        return sp + n;
                    }
                }
            }
            match spaces_not_before_text(cs, i) {
                0 => run(cs, i, char::is_whitespace).max(1),
                n => n,
            }
        }
        Pre::Llama3 | Pre::Qwen2 => {
            let k = contraction(cs, i, true);
            if k > 0 {
                return k;
            }
            // [^\r\n\p{L}\p{N}]?\p{L}+
            let lead = usize::from(c != '\r' && c != '\n' && !is_letter(c) && !is_number(c));
            if lead == 1 && i + 1 < cs.len() {
                let n = run(cs, i + 1, is_letter);
                if n > 0 {
                    return 1 + n;
                }
            }
            let n = run(cs, i, is_letter);
            if n > 0 {
                return n;
            }
            let n = run(cs, i, is_number);
            if n > 0 {
                return if pre == Pre::Llama3 { n.min(3) } else { 1 };
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
            if i + sp < cs.len() {
                let n = run(cs, i + sp, is_other);
                if n > 0 {
                    let tail = run(cs, i + sp + n, |c| c == '\r' || c == '\n');
                    return sp + n + tail;
                }
            }
            // `\s*[\r\n]+`
            let ws = run(cs, i, char::is_whitespace);
            if let Some(last) = (i..i + ws).rev().find(|&j| cs[j] == '\r' || cs[j] == '\n') {
                return last + 1 - i;
            }
            match spaces_not_before_text(cs, i) {
                0 => ws.max(1),
                n => n,
            }
        }
    }
}

/// Splits text into the words BPE merges within.
pub fn pre_split(pre: Pre, text: &str) -> Vec<&str> {
    let cs: Vec<char> = text.chars().collect();
    let offs: Vec<usize> = text
        .char_indices()
        .map(|(o, _)| o)
        .chain([text.len()])
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < cs.len() {
        let n = match_at(pre, &cs, i).max(1);
        out.push(&text[offs[i]..offs[i + n]]);
        i += n;
    }
    out
}

/// Turns a stream of token bytes into text without splitting a UTF-8
/// character: bytes of an unfinished character wait for the next token.
#[derive(Debug, Default, Clone)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(e) => e.valid_up_to() + e.error_len().unwrap_or(1),
        };
        let out = String::from_utf8_lossy(&self.pending[..valid]).into_owned();
        self.pending.drain(..valid);
        out
    }

    /// What is left at the end (an unfinished character, replaced).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}
