//! The element-wise and per-row operations of a transformer layer: norms,
//! softmax, rotary embeddings, biases and gated activations.

use rayon::prelude::*;

/// In-place softmax (library `exp`: attention rows are short, and their
/// weights feed every later activation's 8-bit rounding).
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// The largest value (−∞ for none; NaNs are skipped).
pub fn max_of(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    wide(|| {
        let mut chunks = x.chunks_exact(16);
        for c in &mut chunks {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l = if v > *l { v } else { *l };
            }
        }
        for (l, &v) in lanes.iter_mut().zip(chunks.remainder()) {
            *l = if v > *l { v } else { *l };
        }
    });
    lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// The parts of a log-softmax over `x`: `(max, ln Σ e^(x − max))`, the sum
/// through [`exp_fast`] 16 lanes wide with the lanes added into an f64
/// every 1,024 values (a vocabulary of 262,144 logits keeps f64-like
/// accuracy). With +∞ values the probability is theirs, shared: `(+∞,
/// ln count)`. NaN parts if any value is NaN; `(−∞, NaN)` for no values or
/// all −∞ (no distribution). See [`log_prob`].
pub fn log_softmax_parts(x: &[f32]) -> (f32, f32) {
    if x.iter().any(|v| v.is_nan()) {
        return (f32::NAN, f32::NAN);
    }
    let max = max_of(x);
    if max == f32::INFINITY {
        let count = x.iter().filter(|&&v| v == f32::INFINITY).count();
        return (max, (count as f64).ln() as f32);
    }
    if max == f32::NEG_INFINITY {
        return (max, f32::NAN);
    }
    let mut total = 0f64;
    wide(|| {
        for block in x.chunks(1024) {
            let mut lanes = [0f32; 16];
            let mut chunks = block.chunks_exact(16);
            for c in &mut chunks {
                for (l, &v) in lanes.iter_mut().zip(c) {
                    *l += exp_fast(v - max);
                }
            }
            for (l, &v) in lanes.iter_mut().zip(chunks.remainder()) {
                *l += exp_fast(v - max);
            }
            total += lanes.iter().map(|&l| f64::from(l)).sum::<f64>();
        }
    });
    (max, total.ln() as f32)
}

/// The log-probability of logit `l` under [`log_softmax_parts`]:
/// `(l − max) − ln Σ` (the difference first, so large logits lose no
/// precision); with +∞ logits, `−ln count` for them and −∞ for the rest.
pub fn log_prob(l: f32, (max, ln_sum): (f32, f32)) -> f32 {
    if max == f32::INFINITY {
        return if l == f32::INFINITY {
            -ln_sum
        } else {
            f32::NEG_INFINITY
        };
    }
    (l - max) - ln_sum
}

/// RMS norm of each `w.len()`-long row of `x` into `out`, times `w`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    if d == 0 {
        return;
    }
    let row = |(xi, oi): (&[f32], &mut [f32])| {
        let ms = xi.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / d as f64;
        let s = 1.0 / ((ms as f32) + eps).sqrt();
        for ((o, v), g) in oi.iter_mut().zip(xi).zip(w) {
            *o = v * s * g;
        }
    };
    if x.len() >= PAR_MIN {
        x.par_chunks(d).zip(out.par_chunks_mut(d)).for_each(row);
    } else {
        x.chunks(d).zip(out.chunks_mut(d)).for_each(row);
    }
}

/// RMS norm of each `w.len()`-long row of `x` in place (per-head norms).
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let d = w.len();
    if d == 0 {
        return;
    }
    let row = |xi: &mut [f32]| {
        let ms = xi.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / d as f64;
        let s = 1.0 / ((ms as f32) + eps).sqrt();
        for (v, g) in xi.iter_mut().zip(w) {
            *v = *v * s * g;
        }
    };
    if x.len() >= PAR_MIN {
        x.par_chunks_mut(d).for_each(row);
    } else {
        x.chunks_mut(d).for_each(row);
    }
}

/// `x += b` for every `b.len()`-long row of `x`.
pub fn add_bias(x: &mut [f32], b: Option<&Vec<f32>>) {
    if let Some(b) = b {
        for row in x.chunks_mut(b.len()) {
            for (o, v) in row.iter_mut().zip(b) {
                *o += v;
            }
        }
    }
}

/// `x += y`.
pub fn add(x: &mut [f32], y: &[f32]) {
    par_pairs(x, y, |x, y| {
        for (a, b) in x.iter_mut().zip(y) {
            *a += b;
        }
    });
}

/// Element count from which the per-row and element-wise ops split over
/// the thread pool they are called in (a prefill's rows); below it (a
/// decode step's row) they stay on the calling thread. Either way every
/// value is computed by the same code: results do not depend on the split.
const PAR_MIN: usize = 1 << 15;

/// Runs `f` over matching pieces of `x` and `y`, in parallel from
/// [`PAR_MIN`] values.
fn par_pairs(x: &mut [f32], y: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    const PIECE: usize = 1 << 13;
    if x.len() >= PAR_MIN {
        x.par_chunks_mut(PIECE)
            .zip(y.par_chunks(PIECE))
            .for_each(|(x, y)| f(x, y));
    } else {
        f(x, y);
    }
}

/// RoPE pairing: adjacent values (llama, whose Q/K rows llama.cpp's
/// converter permuted) or halves of the head (qwen2, gemma3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    Normal,
    Neox,
}

/// θ_i / pos for each rotated pair: base^(−2i/d) / freq_factor_i.
pub fn rope_inv_freq(base: f32, rope_dim: usize, factors: Option<&[f32]>) -> Vec<f64> {
    (0..rope_dim / 2)
        .map(|p| {
            let inv = (base as f64).powf(-2.0 * p as f64 / rope_dim as f64);
            inv / factors.map_or(1.0, |f| f[p] as f64)
        })
        .collect()
}

/// Rotates the first `2 · inv_freq.len()` values of every `head_dim`-long
/// head of each token's `n_heads` heads; token `i` is at `pos0 + i`.
pub fn rope(
    x: &mut [f32],
    n_heads: usize,
    head_dim: usize,
    inv_freq: &[f64],
    style: RopeStyle,
    pos0: usize,
) {
    let rd = 2 * inv_freq.len();
    for (i, tok) in x.chunks_mut(n_heads * head_dim).enumerate() {
        let pos = (pos0 + i) as f64;
        for (p, f) in inv_freq.iter().enumerate() {
            let (s, co) = (pos * f).sin_cos();
            let (s, co) = (s as f32, co as f32);
            let (a, b) = match style {
                RopeStyle::Normal => (2 * p, 2 * p + 1),
                RopeStyle::Neox => (p, p + rd / 2),
            };
            for head in tok.chunks_mut(head_dim) {
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * co - x1 * s;
                head[b] = x0 * s + x1 * co;
            }
        }
    }
}

/// `e^x` without a library call, so loops of it vectorize: `n` = `x · log2 e`
/// rounded to nearest, `r = x − n · ln 2` (ln 2 in two parts, so `r` is
/// exact to f32), `e^r` by its degree-6 Taylor polynomial (|r| ≤ 0.35,
/// relative error < 3e-7), `2^n` put into the exponent bits. Saturates to
/// `e^−87` below −87 and to `e^88` above 88; NaN stays NaN.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let xc = x.clamp(-87.0, 88.0);
    // Round to nearest by the 1.5 · 2^23 trick (|x · log2 e| < 2^22).
    let n = (xc * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x.is_nan() {
        x
    } else {
        p * scale
    }
}

/// `tanh(x)` from [`exp_fast`]: `1 − 2 / (e^{2x} + 1)`, absolute error
/// < 3e-7 (|x| ≥ 10 gives ±1).
#[inline(always)]
pub fn tanh_fast(x: f32) -> f32 {
    1.0 - 2.0 / (exp_fast(2.0 * x.clamp(-10.0, 10.0)) + 1.0)
}

/// Runs `body`, compiled for AVX2+FMA where the CPU has them (the same
/// code: the element-wise loops vectorize 8 wide).
#[inline(always)]
fn wide(body: impl FnOnce()) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(body: impl FnOnce()) {
            body()
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: AVX2 and FMA were detected.
            return unsafe { avx2(body) };
        }
    }
    body()
}

/// `g = silu(g) · u` (SwiGLU).
pub fn silu_mul(g: &mut [f32], u: &[f32]) {
    par_pairs(g, u, |g, u| {
        wide(|| {
            for (g, u) in g.iter_mut().zip(u) {
                *g = *g / (1.0 + exp_fast(-*g)) * u;
            }
        })
    })
}

/// `g = gelu(g) · u` with the tanh approximation (GeGLU).
pub fn gelu_tanh_mul(g: &mut [f32], u: &[f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    par_pairs(g, u, |g, u| {
        wide(|| {
            for (g, u) in g.iter_mut().zip(u) {
                let x = *g;
                let t = tanh_fast(SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x));
                *g = 0.5 * x * (1.0 + t) * u;
            }
        })
    })
}

/// `x = cap · tanh(x / cap)`.
pub fn softcap(x: &mut [f32], cap: f32) {
    for v in x.iter_mut() {
        *v = cap * (*v / cap).tanh();
    }
}

/// `x *= s`.
pub fn scale(x: &mut [f32], s: f32) {
    for v in x.iter_mut() {
        *v *= s;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_softmax_matches_f64_on_a_large_vocabulary() {
        use super::{log_prob, log_softmax_parts as parts, max_of};
        // 262,144 logits (Gemma 3's vocabulary) spread over −30..20.
        let x: Vec<f32> = (0..262_144u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) >> 8) as f32 / 16_777_216.0) * 50.0 - 30.0)
            .collect();
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let ln_sum: f64 = x
            .iter()
            .map(|&v| (f64::from(v) - f64::from(max)).exp())
            .sum::<f64>()
            .ln();
        let p = parts(&x);
        assert_eq!(p.0, max);
        assert!(
            (f64::from(p.1) - ln_sum).abs() < 1e-5,
            "{} vs {ln_sum}",
            p.1
        );
        assert_eq!(max_of(&x), max);
        for i in [0, 1, 77, 262_143] {
            let want = f64::from(x[i]) - f64::from(max) - ln_sum;
            assert!((f64::from(log_prob(x[i], p)) - want).abs() < 1e-5);
        }
        // Large logits keep their precision: (l − max) is taken first.
        let big = [65_536.0f32, 65_535.0];
        let want = -(1.0 + (-1.0f64).exp()).ln();
        assert!((f64::from(log_prob(big[0], parts(&big))) - want).abs() < 1e-6);
        // Edge cases: none, all −∞, a NaN, +∞ (shared by two), one value,
        // a remainder past 16.
        assert!(parts(&[]).1.is_nan());
        assert!(log_prob(f32::NEG_INFINITY, parts(&[f32::NEG_INFINITY; 3])).is_nan());
        assert!(log_prob(1.0, parts(&[1.0, f32::NAN])).is_nan());
        let inf = [f32::INFINITY, 0.0, f32::INFINITY];
        assert!((log_prob(f32::INFINITY, parts(&inf)) + 2f32.ln()).abs() < 1e-7);
        assert_eq!(log_prob(0.0, parts(&inf)), f32::NEG_INFINITY);
        assert_eq!(log_prob(2.5, parts(&[2.5])), 0.0);
        let v: Vec<f32> = (0..37).map(|i| i as f32 * 0.1).collect();
        let z: f64 = v.iter().map(|&x| f64::from(x).exp()).sum();
        assert!((f64::from(log_prob(v[5], parts(&v))) - (f64::from(v[5]) - z.ln())).abs() < 1e-5);
        assert_eq!(max_of(&v), v[36]);
    }

    #[test]
    fn fast_exp_and_tanh_match_the_library() {
        let mut worst = (0f32, 0f32);
        for i in -20_000..=20_000 {
            let x = i as f32 / 200.0; // -100 .. 100
            let (e, want) = (super::exp_fast(x), x.exp());
            if x > -87.0 && x < 88.0 {
                worst.0 = worst.0.max(((e - want) / want).abs());
            }
            worst.1 = worst.1.max((super::tanh_fast(x) - x.tanh()).abs());
        }
        assert!(worst.0 < 5e-7, "exp relative error {}", worst.0);
        assert!(worst.1 < 5e-7, "tanh absolute error {}", worst.1);
        assert_eq!(super::exp_fast(-1000.0), super::exp_fast(-87.0));
        assert!(super::exp_fast(f32::NAN).is_nan());
        assert_eq!(super::tanh_fast(50.0), 1.0);
        assert_eq!(super::tanh_fast(-50.0), -1.0);
    }

    use super::*;

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut x = [1.0f32, 3.0, 2.0, -1.0];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[1] > x[2] && x[2] > x[0] && x[0] > x[3]);
    }

    #[test]
    fn rope_at_position_zero_is_identity_and_keeps_norm() {
        let inv = rope_inv_freq(10000.0, 8, None);
        let orig: Vec<f32> = (0..16).map(|i| i as f32 * 0.1 - 0.7).collect();
        for style in [RopeStyle::Normal, RopeStyle::Neox] {
            let mut x = orig.clone();
            rope(&mut x, 2, 8, &inv, style, 0);
            assert_eq!(x, orig);
            rope(&mut x, 2, 8, &inv, style, 7);
            let n0: f32 = orig.iter().map(|v| v * v).sum();
            let n1: f32 = x.iter().map(|v| v * v).sum();
            assert!((n0 - n1).abs() < 1e-4);
        }
    }

    #[test]
    fn gelu_tanh_matches_known_values() {
        let mut g = [0.0f32, 1.0, -1.0, 3.0];
        gelu_tanh_mul(&mut g, &[1.0; 4]);
        let want = [0.0f32, 0.841_192, -0.158_808, 2.996_363];
        for (a, b) in g.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn the_parallel_split_gives_the_same_bits() {
        use super::*;
        let n = PAR_MIN + 8 * 123 + 5;
        let g0: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 1001) as f32 - 500.0) / 97.0)
            .collect();
        let u: Vec<f32> = (0..n)
            .map(|i| ((i * 53 % 997) as f32 - 498.0) / 89.0)
            .collect();
        type Op = fn(&mut [f32], &[f32]);
        for op in [silu_mul as Op, gelu_tanh_mul, add] {
            let mut whole = g0.clone();
            op(&mut whole, &u);
            // Small pieces stay on this thread.
            let mut pieces = g0.clone();
            for (g, u) in pieces.chunks_mut(100).zip(u.chunks(100)) {
                op(g, u);
            }
            assert!(whole
                .iter()
                .zip(&pieces)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
        let d = 8 * 123 + 5;
        let w: Vec<f32> = u[..d].to_vec();
        let mut whole = vec![0f32; n];
        rms_norm(&g0, &w, 1e-6, &mut whole);
        let mut rows = vec![0f32; n];
        for (x, o) in g0.chunks(d).zip(rows.chunks_mut(d)) {
            rms_norm(x, &w, 1e-6, o);
        }
        assert!(whole
            .iter()
            .zip(&rows)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        let mut inplace = g0.clone();
        rms_norm_inplace(&mut inplace, &w, 1e-6);
        assert!(inplace
            .iter()
            .zip(&rows)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
