//! One generation on one sequence: prefill the prompt, then sample token
//! by token, with stop strings held back until they can no longer match,
//! stop tokens, log-probabilities, cancellation between tokens and timing.

use crate::engine::{CancelHandle, Engine, GenerateParams, GrammarSpec, SamplerConfig, StopReason};
use crate::Result;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Sampling settings of a request (OpenAI names).
#[derive(Debug, Clone)]
pub struct Sampling {
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    /// 0: off.
    pub top_k: usize,
    /// 0: off.
    pub min_p: f32,
    /// 1: off.
    pub repeat_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    /// `Some`: reseed the RNG. `None`: a fresh random seed, unless
    /// `continue_rng` is set.
    pub seed: Option<u64>,
    /// With no `seed`, keep the engine's live RNG (a restored state's, so a
    /// continuation samples as the uninterrupted run would): the engine's
    /// rule for `seed: None`. Set by `/execute`; the routes that start on a
    /// fresh context draw a fresh seed instead.
    pub continue_rng: bool,
    pub stop: Vec<String>,
    /// Token ids that end the generation (a chat format's end marker); the
    /// token stays in the context, its text is not returned.
    pub stop_ids: Vec<u32>,
    /// Alternatives to report per token (`None`: no log-probabilities).
    pub logprobs: Option<usize>,
    /// The grammar the output must follow (see [`super::constraint`]).
    pub grammar: Option<GrammarSpec>,
}

/// One generated token as reported with log-probabilities.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub id: u32,
    pub text: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
    /// The most likely alternatives at that step: (text, logprob).
    pub top: Vec<(String, f32)>,
}

/// Text ready to send, with the tokens that produced it.
#[derive(Debug, Clone, Default)]
pub struct Piece {
    pub text: String,
    pub tokens: Vec<TokenInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// End of sequence, a stop string or a stop token.
    Stop,
    /// `max_tokens` or the context is full.
    Length,
    /// Interrupted, or the client went away.
    Cancelled,
    /// The grammar allowed no next token: the output is cut short.
    Grammar,
}

impl Finish {
    pub fn reason(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::Cancelled => "cancelled",
            // OpenAI has no value for it: "length" says the text may be
            // incomplete (see `server::constraint`).
            Finish::Grammar => "length",
        }
    }
}

/// How a generation ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub text: String,
    pub tokens: Vec<TokenInfo>,
    pub finish: Finish,
    /// The engine's stop reason (`None`: cancelled before it started).
    pub stop: Option<StopReason>,
    pub prompt_tokens: usize,
    /// Prompt tokens restored from the prefix cache (not prefilled).
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    pub prefill_secs: f64,
    pub decode_secs: f64,
}

impl Outcome {
    /// A run cancelled before it started (interrupted in the queue).
    pub fn cancelled(prompt_tokens: usize) -> Outcome {
        Outcome {
            text: String::new(),
            tokens: Vec::new(),
            finish: Finish::Cancelled,
            stop: None,
            prompt_tokens,
            cached_tokens: 0,
            completion_tokens: 0,
            prefill_secs: 0.0,
            decode_secs: 0.0,
        }
    }
}

/// A seed nobody chose.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// The `k` most likely tokens of `logits` as (id, logprob).
fn top_logprobs(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    if k == 0 || logits.is_empty() {
        return Vec::new();
    }
    // The same log-softmax as each token's own logprob.
    let parts = crate::engine::ops::log_softmax_parts(logits);
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    for (i, &l) in logits.iter().enumerate() {
        if best.len() < k || l > best[best.len() - 1].1 {
            let at = best.partition_point(|&(_, b)| b >= l);
            best.insert(at, (i as u32, l));
            best.truncate(k);
        }
    }
    best.into_iter()
        .map(|(i, l)| (i, crate::engine::ops::log_prob(l, parts)))
        .collect()
}

/// Appends `prompt` to the engine's context and generates through the
/// engine's run API (stop strings held back, stop reasons, EOS). `emit`
/// gets text as soon as the engine gives it out; returning `false` (the
/// client is gone) or setting `cancel` ends the run as
/// [`Finish::Cancelled`] between two tokens.
pub fn run(
    engine: &mut Engine,
    prompt: &[u32],
    s: &Sampling,
    cancel: &Arc<AtomicBool>,
    emit: &mut dyn FnMut(Piece) -> bool,
) -> Result<Outcome> {
    let params = GenerateParams {
        max_tokens: s.max_tokens,
        sampler: SamplerConfig {
            temperature: s.temperature,
            top_p: s.top_p,
            top_k: s.top_k,
            min_p: s.min_p,
            repeat_penalty: s.repeat_penalty,
            frequency_penalty: s.frequency_penalty,
            presence_penalty: s.presence_penalty,
            ..SamplerConfig::default()
        },
        stop: s.stop.clone(),
        grammar: s.grammar.clone(),
        seed: match s.seed {
            Some(seed) => Some(seed),
            None if s.continue_rng => None,
            None => Some(random_seed()),
        },
    };
    if cancel.load(Ordering::Relaxed) {
        return Ok(Outcome::cancelled(prompt.len()));
    }
    let t0 = Instant::now();
    // The request's flag (set by `/interrupt` or a vanished client) is the
    // generation's cancel handle: the engine watches it between prefill
    // chunks and between tokens, ending with `StopReason::Interrupted`.
    let handle = CancelHandle::from_flag(cancel.clone());
    let mut g = engine.start_tokens_with(prompt, &params, handle)?;
    let prefill_secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut all: Vec<TokenInfo> = Vec::new();
    let mut pending: Vec<TokenInfo> = Vec::new();
    // Where each token of `all` starts in the output, in characters.
    let (mut starts, mut chars, mut partial) = (Vec::new(), 0usize, Vec::new());
    // Bytes of `g.text` given to `emit` (the pieces are its prefix).
    let mut emitted = 0usize;
    let mut gone = false;
    loop {
        let top = match s.logprobs {
            Some(k) if k > 0 => top_logprobs(engine.last_logits(), k),
            _ => Vec::new(),
        };
        let Some(t) = engine.next_token(&mut g, &params)? else {
            break;
        };
        // A chat format's end marker the engine does not treat as EOS:
        // it stays in the context, its text is not returned.
        let marker = !t.is_eos && s.stop_ids.contains(&t.id);
        if s.logprobs.is_some() && !t.is_eos && !marker {
            let tok = engine.tokenizer();
            let mut bytes = Vec::new();
            tok.token_bytes(t.id, false, &mut bytes);
            let info = TokenInfo {
                id: t.id,
                text: String::from_utf8_lossy(&bytes).into_owned(),
                bytes,
                logprob: t.logprob,
                top: top
                    .into_iter()
                    .map(|(id, lp)| (tok.decode(&[id], false), lp))
                    .collect(),
            };
            let (at, done) = token_offsets(&mut partial, &[&info.bytes]);
            starts.push(chars + at[0]);
            chars += done;
            pending.push(info.clone());
            all.push(info);
        }
        if marker {
            g.end(StopReason::Stop);
        } else if t.stop_reason == Some(StopReason::Stop) {
            // A stop string cut the output: the tokens that begin past
            // the cut made only the stop string, which is not returned
            // (nor are their log-probabilities, as OpenAI's).
            let cut = g.text.chars().count();
            let keep = starts
                .partition_point(|&b| b < cut)
                .max(all.len() - pending.len());
            let drop = all.len() - keep;
            all.truncate(keep);
            starts.truncate(keep);
            pending.truncate(pending.len() - drop);
        }
        if !t.text.is_empty() || (t.stop_reason.is_some() && !pending.is_empty()) {
            emitted += t.text.len();
            let piece = Piece {
                text: t.text,
                tokens: std::mem::take(&mut pending),
            };
            if !emit(piece) {
                gone = true;
                g.end(StopReason::Interrupted);
                break;
            }
        }
        if g.is_done() {
            break;
        }
    }
    let finish = match g.stop_reason() {
        Some(StopReason::Interrupted) => Finish::Cancelled,
        Some(StopReason::Length) => Finish::Length,
        Some(StopReason::Grammar) => Finish::Grammar,
        _ => Finish::Stop,
    };
    if finish == Finish::Cancelled {
        // An interrupted run keeps the text it made: what was held back
        // (a possible start of a stop string, an unfinished character) is
        // given out now, so the pieces add up to the output.
        let tail = g.text.get(emitted..).unwrap_or("");
        let unsent = !tail.is_empty() || !pending.is_empty();
        if unsent && !gone {
            emit(Piece {
                text: tail.to_string(),
                tokens: std::mem::take(&mut pending),
            });
        }
    }
    Ok(Outcome {
        text: std::mem::take(&mut g.text),
        tokens: all,
        finish,
        stop: g.stop_reason(),
        prompt_tokens: prompt.len(),
        cached_tokens: 0,
        completion_tokens: g.produced,
        prefill_secs,
        decode_secs: t1.elapsed().as_secs_f64(),
    })
}

/// Where each token starts in the text, in characters, given the bytes
/// of each (`tokens`) and those of a character begun before them
/// (`partial`, refilled with one they begin and do not end). A token
/// holding the middle or end of a character starts where the character
/// does; an invalid byte is the one U+FFFD it decodes to, so a token after
/// it starts after it. Returns the offsets relative to the text before
/// them, and the characters the tokens complete.
pub fn token_offsets(partial: &mut Vec<u8>, tokens: &[&[u8]]) -> (Vec<usize>, usize) {
    let mut buf = std::mem::take(partial);
    let mut starts = Vec::with_capacity(tokens.len());
    for t in tokens {
        starts.push(buf.len());
        buf.extend_from_slice(t);
    }
    // Byte ends of the characters, in order; what is left is unfinished.
    let mut ends = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        match std::str::from_utf8(&buf[at..]) {
            Ok(rest) => {
                ends.extend(rest.char_indices().map(|(i, c)| at + i + c.len_utf8()));
                at = buf.len();
            }
            Err(e) => {
                let ok = std::str::from_utf8(&buf[at..at + e.valid_up_to()]).unwrap_or("");
                ends.extend(ok.char_indices().map(|(i, c)| at + i + c.len_utf8()));
                at += e.valid_up_to();
                match e.error_len() {
                    Some(bad) => {
                        at += bad;
                        ends.push(at);
                    }
                    None => break,
                }
            }
        }
    }
    let offsets = starts
        .iter()
        .map(|&b| ends.partition_point(|&end| end <= b))
        .collect();
    *partial = buf.split_off(at);
    (offsets, ends.len())
}

#[cfg(test)]
mod offset_tests {
    use super::token_offsets;

    #[test]
    fn tokens_start_where_their_character_does() {
        let mut p = Vec::new();
        // "aé€b😀" with "é" over two tokens, "€" over three, "😀" over two.
        let toks: [&[u8]; 8] = [
            b"a",
            &[0xC3],
            &[0xA9],
            &[0xE2, 0x82],
            &[0xAC, b'b'],
            &[0xF0, 0x9F],
            &[0x98],
            &[0x80],
        ];
        let (offsets, done) = token_offsets(&mut p, &toks);
        assert_eq!(offsets, [0, 1, 1, 2, 2, 4, 4, 4]);
        assert_eq!((done, p.len()), (5, 0));
        // A character left unfinished waits for the next call.
        let (offsets, done) = token_offsets(&mut p, &[b"x", &[0xE2]]);
        assert_eq!((offsets, done, p.clone()), (vec![0, 1], 1, vec![0xE2]));
        let (offsets, done) = token_offsets(&mut p, &[&[0x82, 0xAC]]);
        assert_eq!((offsets, done, p.len()), (vec![0], 1, 0));
        // An invalid byte is one U+FFFD: the token after it starts after it.
        let (offsets, done) = token_offsets(&mut p, &[&[0xC3], b"e", &[0xFF], b"x"]);
        assert_eq!((offsets, done), (vec![0, 1, 2, 3], 4));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_logprobs_are_sorted_and_normalised() {
        let t = top_logprobs(&[0.0, 2.0, 1.0, -1.0], 2);
        assert_eq!(t.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!(t[0].1 > t[1].1 && t[0].1 < 0.0);
        let sum: f32 = top_logprobs(&[0.0, 2.0, 1.0, -1.0], 4)
            .iter()
            .map(|x| x.1.exp())
            .sum();
        assert!((sum - 1.0).abs() < 1e-5);
    }
}
