//! Sampling: repetition / frequency / presence penalties, temperature,
//! top-k, top-p, min-p, then a draw from a pinned RNG (xoshiro256**,
//! seeded through splitmix64) whose four state words can be saved and
//! restored, so a resumed run draws exactly what an uninterrupted one
//! would. Temperature 0 is greedy and draws nothing.
//!
//! Under a grammar ([`sample_masked`]) the order is: penalties → grammar
//! mask → temperature → top-k / top-p → min-p. The mask is never built
//! over the whole vocabulary when it need not be, and the result is the
//! same distribution as masking first:
//! * greedy: candidates in logit order until one is allowed;
//! * top-k: candidates in logit order until k are allowed (the k best
//!   allowed tokens, exactly what top-k sees after the mask);
//! * pure temperature (no top-k, top-p or min-p): rejection sampling —
//!   draw from the unmasked distribution, keep an allowed token, otherwise
//!   zero the refused one and redraw; the first allowed token drawn has
//!   probability `p(t) / p(allowed)`, the masked distribution;
//! * min-p alone: the best allowed token lazily, then rejection sampling
//!   among the tokens within `min_p` of it (the same filter as without a
//!   grammar, applied to the allowed tokens only);
//! * top-p without top-k: the full mask (the nucleus needs the total mass
//!   of the allowed tokens).

use super::grammar::{GrammarError, GrammarState, TokenMask};

/// xoshiro256** (Blackman and Vigna), the engine's only randomness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rng {
    pub state: [u64; 4],
}

impl Rng {
    pub fn seed(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            state: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Sampling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    pub temperature: f32,
    /// 0 = off.
    pub top_k: usize,
    /// 1.0 = off.
    pub top_p: f32,
    /// 0.0 = off.
    pub min_p: f32,
    /// 1.0 = off; applies to every token in the last `penalty_last_n`.
    pub repeat_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    /// Window of recent tokens the penalties look at (0 = none).
    pub penalty_last_n: usize,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
        }
    }
}

/// Log-softmax value of `logits[id]`.
pub fn logprob(logits: &[f32], id: usize) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    (logits[id] - max) - sum.ln() as f32
}

fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// Reused buffers of the sampler (no allocation per token once warm).
#[derive(Debug, Default, Clone)]
pub struct SampleScratch {
    logits: Vec<f32>,
    window: Vec<u32>,
    work: Vec<(f32, u32)>,
    weights: Vec<f64>,
}

/// Picks the next token from `logits` given the `history` of the context.
pub fn sample(
    cfg: &SamplerConfig,
    logits: &[f32],
    history: &[u32],
    rng: &mut Rng,
    s: &mut SampleScratch,
) -> u32 {
    penalize(cfg, logits, history, s);
    if cfg.temperature <= 0.0 {
        return argmax(&s.logits) as u32;
    }
    s.work.clear();
    s.work.extend(
        s.logits
            .iter()
            .enumerate()
            .map(|(i, &x)| (x / cfg.temperature, i as u32)),
    );
    draw(cfg, &mut s.work, rng)
}

/// [`sample`] under a grammar, in the order penalties → grammar mask →
/// temperature → top-k / top-p → min-p. Greedy and top-k test candidates
/// lazily in logit order (only until enough pass), pure temperature and
/// min-p alone draw by rejection (see the module documentation for why
/// each is exact); only top-p without top-k masks the whole vocabulary. Fails with [`GrammarError::NoTokenAllowed`] when
/// the grammar allows no token: the caller must stop, never sample freely.
pub fn sample_masked(
    cfg: &SamplerConfig,
    logits: &[f32],
    history: &[u32],
    rng: &mut Rng,
    s: &mut SampleScratch,
    mask: &mut TokenMask,
    state: &GrammarState,
) -> Result<u32, GrammarError> {
    penalize(cfg, logits, history, s);
    if cfg.temperature <= 0.0 {
        return mask.greedy(state, &s.logits);
    }
    s.work.clear();
    if cfg.top_k > 0 && cfg.top_k < s.logits.len() {
        let top = mask.top_k(state, &s.logits, cfg.top_k)?;
        s.work.extend(
            top.iter()
                .map(|&t| (s.logits[t as usize] / cfg.temperature, t)),
        );
    } else if cfg.top_p >= 1.0 && cfg.min_p <= 0.0 {
        return sample_rejection(cfg, rng, s, mask, state);
    } else if cfg.top_p >= 1.0 {
        return sample_min_p(cfg, rng, s, mask, state);
    } else {
        mask.apply(state, &mut s.logits)?;
        s.work.extend(
            s.logits
                .iter()
                .enumerate()
                .filter(|(_, &x)| x != f32::NEG_INFINITY)
                .map(|(i, &x)| (x / cfg.temperature, i as u32)),
        );
    }
    if s.work.is_empty() {
        return Err(GrammarError::NoTokenAllowed);
    }
    Ok(draw(cfg, &mut s.work, rng))
}

/// Draws rejected before the full mask is built (each costs one scan of
/// the weights and one grammar check).
const MAX_REJECTIONS: usize = 32;

/// Pure temperature sampling under a grammar by rejection: draw from the
/// softmax of the scaled logits over the whole vocabulary; a token the
/// grammar allows is the answer, a refused one gets weight 0 and the draw
/// is repeated. The first allowed token of such a draw-without-replacement
/// sequence has exactly the probability `p(t) / p(allowed)` — the
/// distribution of masking first, then applying temperature — and most
/// draws are accepted at once, so the grammar costs one or two token
/// checks instead of a mask over the vocabulary. After
/// [`MAX_REJECTIONS`] refusals the full mask is built and the draw is made
/// among the allowed tokens (the same distribution).
fn sample_rejection(
    cfg: &SamplerConfig,
    rng: &mut Rng,
    s: &mut SampleScratch,
    mask: &mut TokenMask,
    state: &GrammarState,
) -> Result<u32, GrammarError> {
    let max = s
        .logits
        .iter()
        .copied()
        .filter(|x| !x.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    s.weights.clear();
    if max.is_infinite() {
        // Nothing finite to weigh (or an infinite logit): the mask decides.
        s.weights.resize(s.logits.len(), 0.0);
    } else {
        let t = f64::from(cfg.temperature);
        s.weights.extend(s.logits.iter().map(|&x| {
            if x.is_nan() {
                0.0
            } else {
                ((f64::from(x) - f64::from(max)) / t).exp()
            }
        }));
    }
    let mut total: f64 = s.weights.iter().sum();
    for _ in 0..MAX_REJECTIONS {
        if total.is_nan() || total <= 0.0 {
            break;
        }
        let t = pick(&s.weights, rng.next_f64() * total);
        if mask.allowed(state, t) {
            return Ok(t);
        }
        total -= s.weights[t as usize];
        s.weights[t as usize] = 0.0;
        // Sums drift when many weights are removed: recompute.
        total = total.min(s.weights.iter().sum());
    }
    let allowed = mask.allowed_tokens(state)?;
    let mut total = 0.0;
    for &t in allowed.iter() {
        total += s.weights[t as usize];
    }
    if total.is_nan() || total <= 0.0 {
        // Every allowed token has weight 0 (logits -inf or far below the
        // refused ones): the best allowed one, as the masked path would.
        return allowed
            .iter()
            .copied()
            .filter(|&t| !s.logits[t as usize].is_nan())
            .max_by(|&a, &b| {
                s.logits[a as usize]
                    .total_cmp(&s.logits[b as usize])
                    .then(b.cmp(&a))
            })
            .ok_or(GrammarError::NoTokenAllowed);
    }
    let mut r = rng.next_f64() * total;
    let mut last = allowed[0];
    for &t in allowed.iter() {
        let w = s.weights[t as usize];
        if w > 0.0 {
            last = t;
            r -= w;
            if r < 0.0 {
                return Ok(t);
            }
        }
    }
    Ok(last)
}

/// The index where the running sum of `weights` first exceeds `r` (the
/// last positive weight if rounding leaves `r` beyond the sum).
fn pick(weights: &[f64], mut r: f64) -> u32 {
    let mut last = 0;
    for (i, &w) in weights.iter().enumerate() {
        if w > 0.0 {
            last = i;
            r -= w;
            if r < 0.0 {
                return i as u32;
            }
        }
    }
    last as u32
}

/// min-p without top-k / top-p under a grammar. The best allowed token `b`
/// is found lazily (candidates in logit order); min-p then keeps the
/// allowed tokens whose weight is at least `min_p` of `b`'s — a subset of
/// the candidates `C` (allowed or not) passing that test, computed with the
/// same `f32` arithmetic as [`draw`]. Drawing from `C` in proportion to the
/// weights and rejecting (zeroing) refused tokens yields exactly the
/// masked-then-filtered distribution, as in [`sample_rejection`]; after
/// [`MAX_REJECTIONS`] refusals the full mask decides which of `C` remain.
fn sample_min_p(
    cfg: &SamplerConfig,
    rng: &mut Rng,
    s: &mut SampleScratch,
    mask: &mut TokenMask,
    state: &GrammarState,
) -> Result<u32, GrammarError> {
    let best = mask.greedy(state, &s.logits)?;
    let top = s.logits[best as usize] / cfg.temperature;
    if !top.is_finite() {
        return Ok(best);
    }
    s.work.clear();
    s.weights.clear();
    for (i, &l) in s.logits.iter().enumerate() {
        let x = l / cfg.temperature;
        // Tokens above the best allowed one were all refused by `greedy`.
        if x.is_nan() || x > top {
            continue;
        }
        let e = (x - top).exp();
        if e >= cfg.min_p {
            s.work.push((e, i as u32));
            s.weights.push(f64::from(e));
        }
    }
    if s.work.is_empty() {
        // min_p above 1: only the best survives, as in `draw`.
        return Ok(best);
    }
    let mut total: f64 = s.weights.iter().sum();
    for _ in 0..MAX_REJECTIONS {
        if total.is_nan() || total <= 0.0 {
            break;
        }
        let j = pick(&s.weights, rng.next_f64() * total) as usize;
        let t = s.work[j].1;
        if mask.allowed(state, t) {
            return Ok(t);
        }
        total -= s.weights[j];
        s.weights[j] = 0.0;
        total = total.min(s.weights.iter().sum());
    }
    let allowed = mask.allowed_tokens(state)?;
    let mut total = 0.0;
    for (j, &(_, t)) in s.work.iter().enumerate() {
        if allowed.binary_search(&t).is_err() {
            s.weights[j] = 0.0;
        }
        total += s.weights[j];
    }
    if total.is_nan() || total <= 0.0 {
        return Ok(best);
    }
    let j = pick(&s.weights, rng.next_f64() * total) as usize;
    Ok(s.work[j].1)
}

/// Copies `logits` to the scratch and applies the repetition, frequency
/// and presence penalties over the last `penalty_last_n` of `history`.
fn penalize(cfg: &SamplerConfig, logits: &[f32], history: &[u32], s: &mut SampleScratch) {
    s.logits.clear();
    s.logits.extend_from_slice(logits);
    let l = &mut s.logits;
    let window = &history[history.len().saturating_sub(cfg.penalty_last_n)..];
    if !window.is_empty()
        && (cfg.repeat_penalty != 1.0
            || cfg.frequency_penalty != 0.0
            || cfg.presence_penalty != 0.0)
    {
        // Count each distinct token of the window: sort a copy, walk runs.
        s.window.clear();
        s.window.extend_from_slice(window);
        s.window.sort_unstable();
        for run in s.window.chunk_by(|a, b| a == b) {
            let Some(x) = l.get_mut(run[0] as usize) else {
                continue;
            };
            if cfg.repeat_penalty != 1.0 {
                *x = if *x > 0.0 {
                    *x / cfg.repeat_penalty
                } else {
                    *x * cfg.repeat_penalty
                };
            }
            *x -= run.len() as f32 * cfg.frequency_penalty + cfg.presence_penalty;
        }
    }
}

/// Top-k, top-p, min-p over temperature-scaled `(logit, id)` pairs (not
/// empty), then one draw.
fn draw(cfg: &SamplerConfig, work: &mut Vec<(f32, u32)>, rng: &mut Rng) -> u32 {
    // Only the top k need sorting.
    if cfg.top_k > 0 && cfg.top_k < work.len() {
        work.select_nth_unstable_by(cfg.top_k - 1, |a, b| {
            b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
        });
        work.truncate(cfg.top_k);
    }
    work.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let max = work[0].0;
    for e in work.iter_mut() {
        e.0 = (e.0 - max).exp();
    }
    let total: f32 = work.iter().map(|e| e.0).sum();
    if cfg.top_p < 1.0 {
        let cutoff = cfg.top_p * total;
        let mut acc = 0.0;
        let mut keep = work.len();
        for (i, e) in work.iter().enumerate() {
            acc += e.0;
            if acc >= cutoff {
                keep = i + 1;
                break;
            }
        }
        work.truncate(keep.max(1));
    }
    if cfg.min_p > 0.0 {
        let threshold = work[0].0 * cfg.min_p;
        let keep = work.iter().take_while(|e| e.0 >= threshold).count();
        work.truncate(keep.max(1));
    }
    let sum: f64 = work.iter().map(|e| e.0 as f64).sum();
    let mut r = rng.next_f64() * sum;
    for e in work.iter() {
        r -= e.0 as f64;
        if r < 0.0 {
            return e.1;
        }
    }
    work[work.len() - 1].1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_stream_is_pinned() {
        // xoshiro256** from splitmix64(0): the reference implementation's
        // first outputs for this seeding.
        let mut r = Rng::seed(0);
        let first: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        let mut again = Rng::seed(0);
        assert_eq!(first, (0..3).map(|_| again.next_u64()).collect::<Vec<_>>());
        assert_eq!(first[0], 0x99EC_5F36_CB75_F2B4);
    }

    #[test]
    fn greedy_and_filters() {
        let logits = [0.1f32, 3.0, 2.9, -1.0];
        let mut rng = Rng::seed(7);
        let mut w = SampleScratch::default();
        let greedy = SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        };
        assert_eq!(sample(&greedy, &logits, &[], &mut rng, &mut w), 1);
        // A repeat penalty on token 1 makes 2 the greedy pick.
        let pen = SamplerConfig {
            temperature: 0.0,
            repeat_penalty: 1.5,
            ..SamplerConfig::default()
        };
        assert_eq!(sample(&pen, &logits, &[1], &mut rng, &mut w), 2);
        // top_k 1 always picks the best, whatever the draw.
        let k1 = SamplerConfig {
            temperature: 1.0,
            top_k: 1,
            ..SamplerConfig::default()
        };
        for _ in 0..20 {
            assert_eq!(sample(&k1, &logits, &[], &mut rng, &mut w), 1);
        }
        // Sampling follows the distribution.
        let free = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..SamplerConfig::default()
        };
        let mut counts = [0usize; 4];
        for _ in 0..20000 {
            counts[sample(&free, &logits, &[], &mut rng, &mut w) as usize] += 1;
        }
        let p1 = counts[1] as f64 / 20000.0;
        let want = (3.0f64).exp()
            / [0.1f64, 3.0, 2.9, -1.0]
                .iter()
                .map(|x| x.exp())
                .sum::<f64>();
        assert!((p1 - want).abs() < 0.02, "{p1} vs {want}");
    }

    use crate::engine::grammar::{Grammar, Recognizer};
    use std::sync::Arc;

    /// A grammar over a small vocabulary where many tokens are refused.
    fn masked_setup() -> (TokenMask, GrammarState, Vec<f32>) {
        let g = Arc::new(Grammar::parse("root ::= [ab] [a-d]*").expect("grammar"));
        let vocab: Vec<Vec<u8>> = ["a", "b", "c", "d", "ab", "ca", "x", "bd", "dd", "q"]
            .iter()
            .map(|t| t.as_bytes().to_vec())
            .collect();
        let mask = TokenMask::new(g.clone(), &vocab, &[]).expect("mask");
        let state = Recognizer::new(g).expect("recogniser").snapshot();
        // The refused tokens (c, d, ca, x, dd, q) carry most of the mass.
        let logits = vec![0.5, -0.3, 3.0, 2.5, 0.1, 2.8, 3.2, -1.0, 2.0, 1.5];
        (mask, state, logits)
    }

    #[test]
    fn rejection_sampling_is_the_masked_distribution() {
        let (mut mask, state, logits) = masked_setup();
        let cfg = SamplerConfig {
            temperature: 0.7,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..SamplerConfig::default()
        };
        let allowed = [0usize, 1, 4, 7];
        let z: f64 = allowed
            .iter()
            .map(|&i| (f64::from(logits[i]) / 0.7).exp())
            .sum();
        let (mut rng, mut w) = (Rng::seed(3), SampleScratch::default());
        let n = 40_000;
        let mut counts = [0usize; 10];
        for _ in 0..n {
            let t = sample_masked(&cfg, &logits, &[], &mut rng, &mut w, &mut mask, &state)
                .expect("allowed");
            counts[t as usize] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            let want = if allowed.contains(&i) {
                (f64::from(logits[i]) / 0.7).exp() / z
            } else {
                0.0
            };
            let got = c as f64 / n as f64;
            assert!((got - want).abs() < 0.01, "token {i}: {got} vs {want}");
        }
        // Same seed, same draws.
        let (mut a, mut b) = (Rng::seed(9), Rng::seed(9));
        for _ in 0..50 {
            let x = sample_masked(&cfg, &logits, &[], &mut a, &mut w, &mut mask, &state);
            let y = sample_masked(&cfg, &logits, &[], &mut b, &mut w, &mut mask, &state);
            assert_eq!(x, y);
        }
        // Everything refused but one token far below the rest: the fallback
        // mask still finds it.
        let mut low = logits.clone();
        low[7] = -80.0;
        for i in [0, 1, 4] {
            low[i] = f32::NEG_INFINITY;
        }
        let t = sample_masked(&cfg, &low, &[], &mut rng, &mut w, &mut mask, &state);
        assert_eq!(t, Ok(7));
    }

    #[test]
    fn min_p_by_rejection_is_the_masked_distribution() {
        let (mut mask, state, logits) = masked_setup();
        let allowed = [0usize, 1, 4, 7];
        for min_p in [0.05f32, 0.3, 0.9] {
            let cfg = SamplerConfig {
                temperature: 1.3,
                top_k: 0,
                top_p: 1.0,
                min_p,
                ..SamplerConfig::default()
            };
            // The reference: mask first, then the plain sampler's min-p.
            let best = allowed
                .iter()
                .map(|&i| logits[i] / 1.3)
                .fold(f32::NEG_INFINITY, f32::max);
            let kept: Vec<usize> = allowed
                .iter()
                .copied()
                .filter(|&i| (logits[i] / 1.3 - best).exp() >= min_p)
                .collect();
            let z: f64 = kept
                .iter()
                .map(|&i| f64::from((logits[i] / 1.3 - best).exp()))
                .sum();
            let (mut rng, mut w) = (Rng::seed(5), SampleScratch::default());
            let n = 30_000;
            let mut counts = [0usize; 10];
            for _ in 0..n {
                let t = sample_masked(&cfg, &logits, &[], &mut rng, &mut w, &mut mask, &state)
                    .expect("allowed");
                counts[t as usize] += 1;
            }
            for (i, &c) in counts.iter().enumerate() {
                let want = if kept.contains(&i) {
                    f64::from((logits[i] / 1.3 - best).exp()) / z
                } else {
                    0.0
                };
                let got = c as f64 / n as f64;
                assert!(
                    (got - want).abs() < 0.012,
                    "min_p {min_p} token {i}: {got} vs {want}"
                );
            }
        }
    }
}
