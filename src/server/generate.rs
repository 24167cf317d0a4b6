//! One generation on one sequence: prefill the prompt, then sample token
//! by token, with stop strings held back until they can no longer match,
//! stop tokens, log-probabilities, cancellation between tokens and timing.

use crate::engine::{Engine, GenerateParams, Generation, Rng, SamplerConfig};
use crate::Result;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Sampling settings of a request (OpenAI names).
#[derive(Debug, Clone)]
pub struct Sampling {
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    /// `None`: a fresh random seed.
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    /// Token ids that end the generation (a chat format's end marker); the
    /// token stays in the context, its text is not returned.
    pub stop_ids: Vec<u32>,
    /// Alternatives to report per token (`None`: no log-probabilities).
    pub logprobs: Option<usize>,
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
}

impl Finish {
    pub fn reason(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::Cancelled => "cancelled",
        }
    }
}

/// How a generation ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub text: String,
    pub tokens: Vec<TokenInfo>,
    pub finish: Finish,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub prefill_secs: f64,
    pub decode_secs: f64,
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

/// The longest suffix of `text` that is a proper prefix of a stop string
/// (that much must be held back: the next token may complete the stop).
fn held_back(text: &str, stops: &[String]) -> usize {
    let mut hold = 0;
    for s in stops {
        let max = s.len().saturating_sub(1).min(text.len());
        for n in (hold + 1..=max).rev() {
            let start = text.len() - n;
            if text.is_char_boundary(start) && s.starts_with(&text[start..]) {
                hold = n;
                break;
            }
        }
    }
    hold
}

/// The `k` most likely tokens of `logits` as (id, logprob).
fn top_logprobs(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    if k == 0 || logits.is_empty() {
        return Vec::new();
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let lse = max + sum.ln() as f32;
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    for (i, &l) in logits.iter().enumerate() {
        if best.len() < k || l > best[best.len() - 1].1 {
            let at = best.partition_point(|&(_, b)| b >= l);
            best.insert(at, (i as u32, l));
            best.truncate(k);
        }
    }
    best.into_iter().map(|(i, l)| (i, l - lse)).collect()
}

/// Appends `prompt` to the engine's context and generates. `emit` gets
/// text as soon as no stop string can claim it; returning `false` (the
/// client is gone) or setting `cancel` ends the run as
/// [`Finish::Cancelled`] between two tokens.
pub fn run(
    engine: &mut Engine,
    prompt: &[u32],
    s: &Sampling,
    cancel: &AtomicBool,
    emit: &mut dyn FnMut(Piece) -> bool,
) -> Result<Outcome> {
    engine.rng = Rng::seed(s.seed.unwrap_or_else(random_seed));
    let sampler = SamplerConfig {
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: 0,
        min_p: 0.0,
        ..SamplerConfig::default()
    };
    engine.sampler = sampler.clone();
    let params = GenerateParams {
        max_tokens: s.max_tokens,
        sampler,
        stop: Vec::new(),
        seed: None,
    };
    if cancel.load(Ordering::Relaxed) {
        return Ok(Outcome {
            text: String::new(),
            tokens: Vec::new(),
            finish: Finish::Cancelled,
            prompt_tokens: prompt.len(),
            completion_tokens: 0,
            prefill_secs: 0.0,
            decode_secs: 0.0,
        });
    }
    let t0 = Instant::now();
    engine.prefill(prompt)?;
    let prefill_secs = t0.elapsed().as_secs_f64();
    if engine.last_logits.is_empty() {
        return Err(crate::Error::usage(
            "nothing to continue: the context is empty and the prompt gave no tokens",
        ));
    }
    let t1 = Instant::now();
    let mut g = Generation::default();
    let mut sent = 0usize; // bytes of g.text already emitted
    let mut pending: Vec<TokenInfo> = Vec::new();
    let mut all: Vec<TokenInfo> = Vec::new();
    let mut finish = None;
    let mut text_end = None; // where a stop string cut the text
    while finish.is_none() {
        if cancel.load(Ordering::Relaxed) {
            finish = Some(Finish::Cancelled);
            break;
        }
        let top = match s.logprobs {
            Some(k) if k > 0 => top_logprobs(&engine.last_logits, k),
            _ => Vec::new(),
        };
        let before = g.text.len();
        let Some(t) = engine.next_token(&mut g, &params)? else {
            let full = g.produced >= s.max_tokens || engine.tokens.len() >= engine.n_ctx();
            finish = Some(if full { Finish::Length } else { Finish::Stop });
            break;
        };
        if s.stop_ids.contains(&t.id) {
            g.text.truncate(before);
            finish = Some(Finish::Stop);
            break;
        }
        if s.logprobs.is_some() {
            let mut bytes = Vec::new();
            engine.tokenizer.token_bytes(t.id, false, &mut bytes);
            let info = TokenInfo {
                id: t.id,
                text: String::from_utf8_lossy(&bytes).into_owned(),
                bytes,
                logprob: t.logprob,
                top: top
                    .into_iter()
                    .map(|(id, lp)| (engine.tokenizer.decode(&[id], false), lp))
                    .collect(),
            };
            pending.push(info.clone());
            all.push(info);
        }
        // A stop string may start in text already held back.
        let search_from = sent.saturating_sub(s.stop.iter().map(String::len).max().unwrap_or(0));
        let search_from = (0..=search_from)
            .rev()
            .find(|&i| g.text.is_char_boundary(i))
            .unwrap_or(0);
        if let Some(cut) = s
            .stop
            .iter()
            .filter_map(|st| {
                g.text[search_from..]
                    .find(st.as_str())
                    .map(|i| i + search_from)
            })
            .min()
        {
            text_end = Some(cut.max(sent));
            finish = Some(Finish::Stop);
            break;
        }
        let ready = g.text.len() - held_back(&g.text, &s.stop);
        if ready > sent {
            let piece = Piece {
                text: g.text[sent..ready].to_string(),
                tokens: std::mem::take(&mut pending),
            };
            sent = ready;
            if !emit(piece) {
                finish = Some(Finish::Cancelled);
            }
        }
    }
    let finish = finish.unwrap_or(Finish::Stop);
    let end = text_end.unwrap_or(g.text.len());
    if finish != Finish::Cancelled && (end > sent || !pending.is_empty()) {
        let piece = Piece {
            text: g.text[sent.min(end)..end].to_string(),
            tokens: std::mem::take(&mut pending),
        };
        emit(piece);
    }
    g.text.truncate(end);
    Ok(Outcome {
        text: g.text,
        tokens: all,
        finish,
        prompt_tokens: prompt.len(),
        completion_tokens: g.produced,
        prefill_secs,
        decode_secs: t1.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_back_is_the_longest_stop_prefix() {
        let stops = vec!["\nUser:".to_string(), "END".to_string()];
        assert_eq!(held_back("hello\nUs", &stops), 3);
        assert_eq!(held_back("hello EN", &stops), 2);
        assert_eq!(held_back("hello", &stops), 0);
        assert_eq!(held_back("", &stops), 0);
        assert_eq!(held_back("é", &["éx".to_string()]), 2);
    }

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
