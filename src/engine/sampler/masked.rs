//! Sampling under a grammar, in the order penalties → grammar mask →
//! temperature → top-k → top-p → min-p: the filters of [`super::sample`]
//! applied to the tokens the grammar allows. The reference is the *full
//! path* ([`sample_full`]): build the mask over the whole vocabulary, keep
//! the allowed tokens whose scaled logit `x = logit / temperature` is
//! neither NaN nor -inf, then the plain sampler's `draw` — the `k` best by
//! `x` (ties: lower id), weights `w = exp(x - x_best)` in `f32`, top-p keeps
//! the shortest prefix whose running `f32` sum reaches `top_p` × the sum of
//! all `k` weights (the allowed-renormalised distribution), min-p keeps the
//! weights ≥ `min_p`, and one draw `r = u · Σw` (`f64`) over what is left.
//!
//! The faster paths and how each matches it:
//! * greedy: candidates in logit order until one is allowed;
//! * top-k, top-p and min-p in any combination ([`sample_lazy`]):
//!   candidates in that same order, tested one by one, until the kept
//!   prefix is decided — every weight the untested tokens could add is at
//!   most the next candidate's, so the total lies in a known interval and
//!   top-p's cut, widened by a bound on `f32` rounding, is certain or not
//!   yet. The kept tokens, their weights and the one draw are then those of
//!   the full path: the same token for the same RNG state, not only the
//!   same distribution. Past [`LAZY_MAX_TESTS`] candidates the full path
//!   decides;
//! * pure temperature (no top-k, top-p or min-p): rejection sampling (see
//!   [`sample_rejection`]), the same distribution but other draws than the
//!   full path (which would need the mass of every allowed token).
//!
//! When the grammar allows no token (EOS included) the answer is
//! [`GrammarError::NoTokenAllowed`]: the caller stops, never samples freely.

use super::{draw, penalize, pick_prefix, rank, Rng, SampleScratch, SamplerConfig};
use crate::engine::grammar::{GrammarError, GrammarState, TokenMask};

/// Candidates tested lazily before the full mask decides.
const LAZY_MAX_TESTS: usize = 4096;
/// Candidates sorted first (then three times as many as sorted so far).
const FIRST_CHUNK: usize = 64;

/// [`super::sample`] under a grammar (see the module documentation). Fails
/// with [`GrammarError::NoTokenAllowed`] when the grammar allows no token.
pub fn sample_masked(
    cfg: &SamplerConfig,
    logits: &[f32],
    history: &[u32],
    rng: &mut Rng,
    s: &mut SampleScratch,
    mask: &mut TokenMask,
    state: &GrammarState,
) -> Result<u32, GrammarError> {
    if logits.len() != mask.n_vocab() {
        return Err(GrammarError::BadVocab {
            detail: format!("{} logits for {} tokens", logits.len(), mask.n_vocab()),
        });
    }
    penalize(cfg, logits, history, s);
    if cfg.temperature <= 0.0 {
        return mask.greedy(state, &s.logits);
    }
    if cfg.top_k > 0 || cfg.top_p < 1.0 || cfg.min_p > 0.0 {
        sample_lazy(cfg, rng, s, mask, state).map(|(t, _)| t)
    } else {
        sample_rejection(cfg, rng, s, mask, state)
    }
}

/// The scaled logit of a candidate, or None for NaN and -inf (never drawn).
fn scaled(cfg: &SamplerConfig, logit: f32) -> Option<f32> {
    let x = logit / cfg.temperature;
    (!x.is_nan() && x != f32::NEG_INFINITY).then_some(x)
}

/// The full path: the mask over the whole vocabulary, then the plain
/// sampler's filters and draw on the allowed tokens (penalties and
/// temperature > 0 already applied to `s.logits`).
fn sample_full(
    cfg: &SamplerConfig,
    rng: &mut Rng,
    s: &mut SampleScratch,
    mask: &mut TokenMask,
    state: &GrammarState,
) -> Result<u32, GrammarError> {
    let allowed = mask.allowed_tokens(state)?;
    s.work.clear();
    for &t in allowed.iter() {
        if let Some(x) = scaled(cfg, s.logits[t as usize]) {
            s.work.push((x, t));
        }
    }
    if s.work.is_empty() {
        return Err(GrammarError::NoTokenAllowed);
    }
    Ok(draw(cfg, &mut s.work, rng))
}

/// How a lazy walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// The kept prefix of `found` has this length.
    Kept(usize),
    /// `found` holds every token the full path would filter.
    Complete,
    /// Undecided within the budget.
    Budget,
}

/// Top-k / top-p / min-p under a grammar without the full mask when the
/// answer is decided earlier (see the module documentation). Draws the
/// same token as [`sample_full`] for the same RNG state; also says how the
/// walk ended.
fn sample_lazy(
    cfg: &SamplerConfig,
    rng: &mut Rng,
    s: &mut SampleScratch,
    mask: &mut TokenMask,
    state: &GrammarState,
) -> Result<(u32, Walk), GrammarError> {
    s.work.clear();
    for (i, &l) in s.logits.iter().enumerate() {
        if let Some(x) = scaled(cfg, l) {
            s.work.push((x, i as u32));
        }
    }
    let n = s.work.len();
    let kcap = if cfg.top_k > 0 { cfg.top_k } else { usize::MAX };
    s.found.clear();
    s.found_w.clear();
    s.found_acc.clear();
    let (mut sorted, mut tested) = (0usize, 0usize);
    let mut sum = 0f64;
    let mut q = mask.query(state);
    let walk = loop {
        if tested == sorted {
            if sorted == n {
                break Walk::Complete;
            }
            if tested >= LAZY_MAX_TESTS {
                break Walk::Budget;
            }
            // Sort the next chunk of candidates (the rest stay unsorted,
            // each ranked below every sorted one).
            let end = n.min(sorted + FIRST_CHUNK.max(3 * sorted));
            if end < n {
                s.work[sorted..].select_nth_unstable_by(end - sorted - 1, rank);
            }
            s.work[sorted..end].sort_unstable_by(rank);
            sorted = end;
        }
        let (x, t) = s.work[tested];
        tested += 1;
        if q.allowed(t) {
            let w = (x - s.found.first().map_or(x, |f| f.0)).exp();
            s.found.push((x, t));
            s.found_w.push((w, t));
            let acc = s.found_acc.last().copied().unwrap_or(0.0) + w;
            s.found_acc.push(acc);
            sum += f64::from(w);
            if s.found.len() == kcap {
                break Walk::Complete;
            }
        }
        if s.found.is_empty() || tested == n {
            continue;
        }
        // Every untested candidate ranks at or below this one (the next
        // sorted candidate, or the last tested one at a chunk's end).
        let next_x = if tested < sorted { s.work[tested].0 } else { x };
        let next_w = (next_x - s.found[0].0).exp();
        let unseen = (kcap - s.found.len()).min(n - tested);
        if let Some(keep) = decide(cfg, &s.found_w, &s.found_acc, sum, next_w, unseen) {
            break Walk::Kept(keep);
        }
    };
    let t = match walk {
        Walk::Kept(keep) => pick_prefix(&s.found_w[..keep], rng),
        Walk::Complete if s.found.is_empty() => return Err(GrammarError::NoTokenAllowed),
        Walk::Complete => {
            std::mem::swap(&mut s.work, &mut s.found);
            draw(cfg, &mut s.work, rng)
        }
        Walk::Budget => sample_full(cfg, rng, s, mask, state)?,
    };
    Ok((t, walk))
}

/// The length of the prefix of the allowed tokens found so far (`w`: their
/// weights, best first; `acc`: running `f32` sums of `w`; `sum`: their sum
/// in `f64`) that top-p and min-p keep, if it is already certain whatever
/// the at most `unseen` untested allowed tokens of weight at most `next_w`
/// each turn out to be; `None` while it is not.
fn decide(
    cfg: &SamplerConfig,
    w: &[(f32, u32)],
    acc: &[f32],
    sum: f64,
    next_w: f32,
    unseen: usize,
) -> Option<usize> {
    let use_top_p = cfg.top_p < 1.0;
    let use_min_p = cfg.min_p > 0.0;
    // min-p: the found tokens passing it form a prefix (`m_known`); the
    // count is final once one found token fails it or no untested one can
    // pass. `kept` computes the threshold the same way.
    let threshold = w[0].0 * cfg.min_p;
    let m_known = if use_min_p {
        w.partition_point(|e| e.0 >= threshold)
    } else {
        w.len()
    };
    let m_final = use_min_p && (m_known < w.len() || next_w < threshold);
    // top-p: the f32 total of every weight lies in [sum, sum + rest] up to
    // rounding; `clean` leading sums are surely below the cutoff, and a cut
    // is certain where a sum surely reaches it.
    let (clean, cut) = if !use_top_p {
        (w.len(), None)
    } else if cfg.top_p <= 0.0 {
        // (Not NaN: `use_top_p` holds.)
        (0, Some(0))
    } else {
        let terms = (w.len() + unseen.min(1 << 30)) as f64;
        let slack = (terms + 4.0) * f64::from(f32::EPSILON);
        let rest = unseen as f64 * f64::from(next_w);
        let p = f64::from(cfg.top_p);
        let lo = p * sum * (1.0 - slack);
        let hi = p * (sum + rest) * (1.0 + slack);
        let j = acc.partition_point(|&a| f64::from(a) < lo);
        let cut = (j < acc.len() && f64::from(acc[j]) >= hi).then_some(j);
        (j, cut)
    };
    if let Some(j) = cut {
        // Kept by top-p: j + 1; min-p then keeps max(1, min(j + 1, m)),
        // and m < j + 1 <= found means m is already final.
        return Some(if use_min_p {
            (j + 1).min(m_known).max(1)
        } else {
            j + 1
        });
    }
    if m_final {
        // top-p keeps more than `clean`: with m <= clean + 1 the answer is m.
        let m = m_known.max(1);
        if !use_top_p || m <= clean + 1 {
            return Some(m);
        }
    }
    None
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
    let mut q = mask.query(state);
    for _ in 0..MAX_REJECTIONS {
        if total.is_nan() || total <= 0.0 {
            break;
        }
        let t = pick(&s.weights, rng.next_f64() * total);
        if q.allowed(t) {
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

#[cfg(test)]
mod tests {
    use super::*;
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

    /// A vocabulary of `n` random byte strings over JSON-ish characters
    /// (every single character first), with EOS as the last id.
    fn random_vocab(rng: &mut Rng, n: usize) -> Vec<Vec<u8>> {
        let alphabet = b"{}[]\":, \n0123456789-.eEabcdefnrstu\\";
        let mut v: Vec<Vec<u8>> = alphabet.iter().map(|&c| vec![c]).collect();
        v.push("é".as_bytes().to_vec());
        while v.len() + 1 < n {
            let len = 1 + (rng.next_u64() % 6) as usize;
            let tok: Vec<u8> = (0..len)
                .map(|_| alphabet[(rng.next_u64() % alphabet.len() as u64) as usize])
                .collect();
            v.push(tok);
        }
        v.push(b"</s>".to_vec());
        v
    }

    /// Logits with ties, spreads from flat to peaked, the allowed tokens
    /// sometimes far below the refused ones, and a few -inf and NaN.
    fn random_logits(rng: &mut Rng, n: usize, allowed: &[u32]) -> Vec<f32> {
        let spread = 0.5 + 8.0 * rng.next_f64();
        let quantise = rng.next_u64().is_multiple_of(3);
        let mut l: Vec<f32> = (0..n)
            .map(|_| {
                // Box-Muller.
                let (u, v) = (rng.next_f64().max(1e-12), rng.next_f64());
                let g = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
                let x = (g * spread) as f32;
                if quantise {
                    (x * 2.0).round() / 2.0
                } else {
                    x
                }
            })
            .collect();
        let shift = match rng.next_u64() % 3 {
            0 => -6.0,
            1 => 0.0,
            _ => 3.0,
        };
        for &t in allowed {
            l[t as usize] += shift;
        }
        for _ in 0..(rng.next_u64() % 4) {
            let i = (rng.next_u64() % n as u64) as usize;
            l[i] = if rng.next_u64().is_multiple_of(2) {
                f32::NEG_INFINITY
            } else {
                f32::NAN
            };
        }
        l
    }

    /// The lazy top-k / top-p / min-p path draws the very token the full
    /// mask path draws (same RNG state before and after), on random
    /// grammars, parser states, logits and sampler settings; and it mostly
    /// decides before it has seen every allowed token.
    #[test]
    fn lazy_path_draws_what_the_full_mask_draws() {
        let grammars = [
            crate::engine::grammar::json_schema_to_gbnf(&serde_json::json!({})).expect("json"),
            r#"root ::= "{" [ ]? "\"k\"" [ ]? ":" [ ]? [0-9]{1,5} [ ]? "}""#.to_string(),
            r#"root ::= ([a-f] | [0-9] | " " | "\n")*"#.to_string(),
            r#"root ::= "[" ([0-9]+ ("," [0-9]+)*)? "]""#.to_string(),
        ];
        let mut gen = Rng::seed(11);
        let mut walks = std::collections::HashMap::new();
        let mut cases = 0usize;
        for (gi, src) in grammars.iter().enumerate() {
            let n_vocab = if gi == 3 { 6000 } else { 1500 };
            let vocab = random_vocab(&mut gen, n_vocab);
            let eos = (vocab.len() - 1) as u32;
            let g = Arc::new(Grammar::parse(src).expect("grammar"));
            let mut mask = TokenMask::new(g.clone(), &vocab, &[eos]).expect("mask");
            let mut rec = Recognizer::new(g).expect("recogniser");
            for _step in 0..12 {
                let state = rec.snapshot();
                let Ok(allowed) = mask.allowed_tokens(&state) else {
                    break;
                };
                for _ in 0..25 {
                    let logits = random_logits(&mut gen, vocab.len(), &allowed);
                    let cfg = SamplerConfig {
                        temperature: [0.3, 0.8, 1.0, 2.0][(gen.next_u64() % 4) as usize],
                        top_k: [0, 1, 3, 40, 5000][(gen.next_u64() % 5) as usize],
                        top_p: [1.0, 0.95, 0.7, 0.3, 0.0][(gen.next_u64() % 5) as usize],
                        min_p: [0.0, 0.05, 0.2, 1.5][(gen.next_u64() % 4) as usize],
                        ..SamplerConfig::default()
                    };
                    if cfg.top_k == 0 && cfg.top_p >= 1.0 && cfg.min_p <= 0.0 {
                        continue;
                    }
                    let seed = gen.next_u64();
                    let (mut ra, mut rb) = (Rng::seed(seed), Rng::seed(seed));
                    let mut s = SampleScratch::default();
                    penalize(&cfg, &logits, &[], &mut s);
                    let lazy = sample_lazy(&cfg, &mut ra, &mut s, &mut mask, &state);
                    let full = sample_full(&cfg, &mut rb, &mut s, &mut mask, &state);
                    assert_eq!(
                        lazy.clone().map(|x| x.0),
                        full,
                        "grammar {gi}, {cfg:?}, seed {seed}"
                    );
                    assert_eq!(ra, rb);
                    if let Ok((t, walk)) = lazy {
                        assert!(allowed.contains(&t));
                        let kind = match walk {
                            Walk::Kept(_) => "kept",
                            Walk::Complete => "complete",
                            Walk::Budget => "budget",
                        };
                        *walks.entry(kind).or_insert(0usize) += 1;
                    }
                    cases += 1;
                }
                // Move on along the grammar by a random allowed token.
                let t = allowed[(gen.next_u64() % allowed.len() as u64) as usize];
                if t == eos {
                    break;
                }
                rec.accept_bytes(&vocab[t as usize]).expect("allowed token");
            }
        }
        let kept = walks.get("kept").copied().unwrap_or(0);
        assert!(cases > 500, "{cases} cases");
        assert!(kept * 2 > cases, "{walks:?} of {cases}");
        assert!(walks.contains_key("complete"), "{walks:?}");
    }
}
