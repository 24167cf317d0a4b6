//! Tokenizers built from a model's metadata, as llama.cpp runs them:
//! SentencePiece-style (`llama`: score-ordered merges, `▁` for spaces, an
//! optional leading space, `<0xNN>` byte fallback, user-defined tokens cut
//! out whole first) and byte-level BPE (`gpt2`, with every pre-tokenizer
//! llama.cpp names: see [`pretok`]). Special tokens are cut out as llama.cpp
//! does ([`special`]); decoding reassembles bytes, so UTF-8 split across
//! tokens comes out whole.
//!
//! Both merge loops are O(n log n) in the length of a word ([`bpe`],
//! [`spm`]).

mod bpe;
mod hash;
mod pretok;
mod special;
mod spm;
#[cfg(test)]
mod tests;

use crate::cbor::Value;
use crate::error::{Error, Result};
use hash::FastMap;
use std::collections::HashMap;

pub use pretok::{Pre, PreInfo, PreTokenizer};
use special::{Frag, Specials};

/// llama.cpp token types.
pub const TYPE_NORMAL: i64 = 1;
pub const TYPE_UNKNOWN: i64 = 2;
pub const TYPE_CONTROL: i64 = 3;
pub const TYPE_USER_DEFINED: i64 = 4;

/// Token texts that end a generation (llama.cpp's list in
/// `llama_vocab::impl::load`); such tokens are control tokens.
const END_OF_GENERATION: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];
pub const TYPE_UNUSED: i64 = 5;
pub const TYPE_BYTE: i64 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Spm,
    Bpe(Pre),
}

#[derive(Debug, Clone)]
pub struct Tokenizer {
    pub kind: Kind,
    pub tokens: Vec<String>,
    pub types: Vec<i64>,
    scores: Vec<f32>,
    ids: FastMap<String, u32>,
    /// BPE merges by symbol ids, and their text (`"a b\n"` per merge, rank
    /// order) for the digest.
    merges: Option<bpe::Merges>,
    merge_text: Vec<u8>,
    pretok: Option<PreTokenizer>,
    /// Control, unknown and user-defined tokens, for special matching.
    specials: Specials,
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
        let pre_name = match attrs.get("tokenizer.ggml.pre") {
            None => None,
            Some(v) => Some(v.as_str().ok_or_else(|| {
                bad(
                    "tokenizer.ggml.pre",
                    format!("expected text, found {}", v.kind()),
                )
            })?),
        };
        let (kind, info) = match model {
            "llama" => (Kind::Spm, None),
            "gpt2" => {
                let info = pretok::lookup(pre_name)?;
                (Kind::Bpe(info.pre), Some(info))
            }
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
        // As llama.cpp: a token whose text marks the end of a generation is
        // a control token whatever type the file gives it (so plain text
        // that spells `</s>` never becomes it when specials are not parsed).
        let mut types = types;
        for (t, ty) in tokens.iter().zip(types.iter_mut()) {
            if *ty != TYPE_CONTROL && END_OF_GENERATION.contains(&t.as_str()) {
                *ty = TYPE_CONTROL;
            }
        }
        let mut ids = FastMap::with_capacity_and_hasher(n, Default::default());
        for (i, t) in tokens.iter().enumerate() {
            ids.entry(t.clone()).or_insert(i as u32);
        }
        let mut merge_list: Vec<(String, String)> = Vec::new();
        let mut merge_text = Vec::new();
        if let Kind::Bpe(_) = kind {
            let merges = array(attrs, "tokenizer.ggml.merges")?
                .ok_or_else(|| bad("tokenizer.ggml.merges", "missing (required for gpt2)"))?;
            let mut seen = std::collections::HashSet::with_capacity(merges.len());
            for m in merges {
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
                let pair = (m[..split].to_string(), m[split + 1..].to_string());
                if seen.insert(pair.clone()) {
                    // "left right\n", as the digest has always hashed it.
                    merge_text.extend_from_slice(m.as_bytes());
                    merge_text.push(b'\n');
                    merge_list.push(pair);
                }
            }
        }
        let specials = Specials::new(
            types
                .iter()
                .enumerate()
                .filter(|(_, t)| matches!(**t, TYPE_CONTROL | TYPE_USER_DEFINED | TYPE_UNKNOWN))
                .map(|(i, t)| (tokens[i].clone(), i as u32, *t != TYPE_USER_DEFINED))
                .collect(),
        );
        let spm = kind == Kind::Spm;
        let (def_bos, def_eos) = if spm {
            (Some(1), Some(2))
        } else {
            (None, None)
        };
        let byte_char = byte_chars();
        let merges = match kind {
            Kind::Bpe(_) => Some(bpe::Merges::new(&merge_list, &ids, n, &byte_char)),
            Kind::Spm => None,
        };
        let pretok = match kind {
            Kind::Bpe(pre) => Some(PreTokenizer::new(pre)?),
            Kind::Spm => None,
        };
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
                .unwrap_or(spm || info.is_some_and(|i| i.add_bos)),
            add_eos: flag(attrs, "tokenizer.ggml.add_eos_token")?.unwrap_or(false),
            add_space_prefix: flag(attrs, "tokenizer.ggml.add_space_prefix")?.unwrap_or(spm),
            clean_spaces: info.is_some_and(|i| i.clean_spaces),
            ignore_merges: info.is_some_and(|i| i.ignore_merges),
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
            merges,
            merge_text,
            pretok,
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
        h.update(&self.merge_text);
        format!("blake3:{}", h.finalize().to_hex())
    }

    /// Tokens that end a generation: EOS and every control token whose
    /// text llama.cpp treats as an end of turn or of text.
    pub fn end_of_generation(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self.eos.into_iter().collect();
        for (i, (t, ty)) in self.tokens.iter().zip(&self.types).enumerate() {
            let id = i as u32;
            if *ty == TYPE_CONTROL && END_OF_GENERATION.contains(&t.as_str()) && !out.contains(&id)
            {
                out.push(id);
            }
        }
        out
    }

    pub fn is_control(&self, id: u32) -> bool {
        self.types
            .get(id as usize)
            .is_some_and(|t| *t == TYPE_CONTROL)
    }

    /// Tokenizes `text`. `add_special` adds BOS/EOS as the model asks.
    /// `parse_special` lets control tokens written in the text (e.g.
    /// `<|im_end|>`) become those tokens; without it they are tokenized as
    /// plain text. User-defined tokens are always matched whole, as in
    /// llama.cpp. Pass `parse_special = false` for any text a user typed.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let allowed: &[(usize, usize)] = if parse_special {
            &[(0, text.len())]
        } else {
            &[]
        };
        self.encode_allowed(text, allowed, add_special)
    }

    /// Tokenizes text made of pieces, as one text: control tokens are
    /// matched only inside pieces marked `true` (a chat template's own
    /// markup) and never inside pieces marked `false` (what users wrote), so
    /// a user who types `<|im_end|>` does not end the turn. Where no piece
    /// holds control-token text this equals `encode` of the joined text.
    pub fn encode_pieces(&self, pieces: &[(&str, bool)], add_special: bool) -> Vec<u32> {
        let mut text = String::with_capacity(pieces.iter().map(|p| p.0.len()).sum());
        let mut allowed: Vec<(usize, usize)> = Vec::new();
        for &(piece, markup) in pieces {
            let start = text.len();
            text.push_str(piece);
            if markup && !piece.is_empty() {
                match allowed.last_mut() {
                    Some(last) if last.1 == start => last.1 = text.len(),
                    _ => allowed.push((start, text.len())),
                }
            }
        }
        self.encode_allowed(&text, &allowed, add_special)
    }

    fn encode_allowed(
        &self,
        text: &str,
        allowed: &[(usize, usize)],
        add_special: bool,
    ) -> Vec<u32> {
        let mut out = Vec::new();
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        let mut prev_special = true;
        let mut buf = String::new();
        let mut work = bpe::Work::default();
        for frag in self.specials.partition(text, allowed) {
            match frag {
                Frag::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Frag::Text(a, b) => {
                    let t = &text[a..b];
                    match (&self.pretok, &self.merges) {
                        (Some(pre), Some(merges)) => {
                            for word in pre.split(t) {
                                self.bpe_word(merges, word, &mut work, &mut out);
                            }
                        }
                        _ => {
                            buf.clear();
                            if self.add_space_prefix && prev_special {
                                buf.push('\u{2581}');
                            }
                            for c in t.chars() {
                                buf.push(if c == ' ' { '\u{2581}' } else { c });
                            }
                            spm::merge(&buf, &self.ids, &self.scores, |r| match r {
                                Ok(id) => out.push(id),
                                Err((s, e)) => {
                                    for &byte in &buf.as_bytes()[s..e] {
                                        out.extend(self.byte_token(byte));
                                    }
                                }
                            });
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

    /// Splits text into the words byte-level BPE merges within (empty for
    /// SentencePiece vocabularies, which do not pre-split).
    pub fn pre_split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        self.pretok
            .as_ref()
            .map_or_else(Vec::new, |p| p.split(text))
    }

    fn byte_token(&self, b: u8) -> Option<u32> {
        match self.kind {
            Kind::Spm => self.ids.get(&format!("<0x{b:02X}>")).copied().or(self.unk),
            Kind::Bpe(_) => {
                let mut buf = [0u8; 4];
                self.ids
                    .get(&*self.byte_char[b as usize].encode_utf8(&mut buf))
                    .copied()
                    .or(self.unk)
            }
        }
    }

    fn bpe_word(&self, merges: &bpe::Merges, word: &str, work: &mut bpe::Work, out: &mut Vec<u32>) {
        if self.ignore_merges {
            let mapped: String = word.bytes().map(|b| self.byte_char[b as usize]).collect();
            if let Some(&id) = self.ids.get(&mapped) {
                out.push(id);
                return;
            }
        }
        let bytes = word.as_bytes();
        merges.merge(bytes, work, |r| match r {
            Ok(id) => out.push(id),
            Err((s, e)) => {
                for &b in &bytes[s..e] {
                    out.extend(self.byte_token(b));
                }
            }
        });
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
