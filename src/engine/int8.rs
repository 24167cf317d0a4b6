//! Integer dot products for decoding, as llama.cpp does them: the
//! activation vector is quantized once per matmul to blocks of 32 int8
//! values with an f32 scale (and the blocks' sums), and each weight block
//! is multiplied in int8 × int8 → int32 with AVX2 (`maddubs`), the float
//! scales applied per 32 (or 16) values. Covers q8_0, q4_0, q4_k and q6_k
//! (the types of q8_0, q4_0, q4_k_m and q6_k files); the scalar twin does
//! the same integer arithmetic without SIMD.

use super::quant::{f16_at, scale_min_k4, WeightType};
use std::sync::OnceLock;

/// An activation vector quantized to blocks of 32.
#[derive(Debug, Default, Clone)]
pub struct QAct {
    pub d: Vec<f32>,
    pub q: Vec<i8>,
    /// Σ q of each block.
    pub s: Vec<i32>,
}

impl QAct {
    /// Quantizes `x` (a multiple of 32 long): `d = max|x| / 127`,
    /// `q = round(x / d)`.
    pub fn quantize(&mut self, x: &[f32]) {
        let nb = x.len() / 32;
        self.d.clear();
        self.s.clear();
        self.q.resize(x.len(), 0);
        for (b, xs) in x.chunks_exact(32).enumerate() {
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for (o, v) in self.q[32 * b..32 * b + 32].iter_mut().zip(xs) {
                let q = (v * id).round().clamp(-127.0, 127.0) as i8;
                *o = q;
                sum += q as i32;
            }
            self.d.push(d);
            self.s.push(sum);
        }
        debug_assert_eq!(self.d.len(), nb);
    }
}

/// Whether the integer path covers a weight type.
pub fn supports(t: WeightType) -> bool {
    matches!(
        t,
        WeightType::Q8_0 | WeightType::Q4_0 | WeightType::Q4K | WeightType::Q6K
    )
}

/// `row · x` with `x` given quantized.
pub type IntDotFn = fn(WeightType, &[u8], &QAct) -> f32;

/// Σ w·a over 32 (or fewer) values.
fn idot(w: &[i32], a: &[i8]) -> i32 {
    w.iter().zip(a).map(|(x, y)| x * *y as i32).sum()
}

/// The scalar twin.
pub fn row_dot_scalar(t: WeightType, row: &[u8], a: &QAct) -> f32 {
    let mut total = 0f32;
    let mut w = [0i32; 32];
    match t {
        WeightType::Q8_0 | WeightType::Q4_0 => {
            let bytes = t.block_bytes();
            for (b, blk) in row.chunks_exact(bytes).take(a.d.len()).enumerate() {
                if t == WeightType::Q8_0 {
                    for (o, &q) in w.iter_mut().zip(&blk[2..34]) {
                        *o = q as i8 as i32;
                    }
                } else {
                    for j in 0..16 {
                        w[j] = (blk[2 + j] & 0xF) as i32 - 8;
                        w[j + 16] = (blk[2 + j] >> 4) as i32 - 8;
                    }
                }
                let dot = idot(&w, &a.q[32 * b..32 * b + 32]);
                total += f16_at(blk, 0) * a.d[b] * dot as f32;
            }
        }
        WeightType::Q4K => {
            for (bi, blk) in row.chunks_exact(144).take(a.d.len() / 8).enumerate() {
                let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
                for c in 0..4 {
                    let q = &blk[16 + 32 * c..48 + 32 * c];
                    for (half, shift) in [(0usize, 0u32), (1, 4)] {
                        let g = 8 * bi + 2 * c + half;
                        let (sc, m) = scale_min_k4(2 * c + half, &blk[4..16]);
                        for (o, &x) in w.iter_mut().zip(q) {
                            *o = ((x >> shift) & 0xF) as i32;
                        }
                        let dot = idot(&w, &a.q[32 * g..32 * g + 32]);
                        total += d * sc as f32 * a.d[g] * dot as f32
                            - dmin * m as f32 * a.d[g] * a.s[g] as f32;
                    }
                }
            }
        }
        WeightType::Q6K => {
            for (bi, blk) in row.chunks_exact(210).take(a.d.len() / 8).enumerate() {
                let d = f16_at(blk, 208);
                for n in 0..2 {
                    let (ql, qh, sc) = (
                        &blk[64 * n..64 * n + 64],
                        &blk[128 + 32 * n..160 + 32 * n],
                        &blk[192 + 8 * n..200 + 8 * n],
                    );
                    for j in 0..4 {
                        let g = 8 * bi + 4 * n + j;
                        for l in 0..32 {
                            let lo = if j % 2 == 0 { ql[l] } else { ql[l + 32] };
                            let lo = if j < 2 { lo & 0xF } else { lo >> 4 };
                            w[l] = (lo | (((qh[l] >> (2 * j)) & 3) << 4)) as i32 - 32;
                        }
                        let aq = &a.q[32 * g..32 * g + 32];
                        let (d0, d1) = (idot(&w[..16], &aq[..16]), idot(&w[16..], &aq[16..]));
                        let (s0, s1) = (sc[2 * j] as i8 as f32, sc[2 * j + 1] as i8 as f32);
                        total += d * a.d[g] * (s0 * d0 as f32 + s1 * d1 as f32);
                    }
                }
            }
        }
        _ => {}
    }
    total
}

/// The kernel for this CPU (detected once).
pub fn row_dot_fn() -> IntDotFn {
    static CHOSEN: OnceLock<IntDotFn> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return x86::row_dot_avx2_safe as IntDotFn;
        }
        row_dot_scalar as IntDotFn
    })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::simd::hsum;
    use super::{f16_at, QAct, WeightType};
    use std::arch::x86_64::*;

    pub fn row_dot_avx2_safe(t: WeightType, row: &[u8], a: &QAct) -> f32 {
        let elems = a.d.len() * 32;
        if t.row_bytes(elems).is_none_or(|b| b > row.len()) || a.q.len() < elems {
            return super::row_dot_scalar(t, row, a);
        }
        // SAFETY: chosen after AVX2 and FMA were detected; the row holds
        // the blocks for `elems` values and `a` holds `elems` quants.
        unsafe {
            match t {
                WeightType::Q8_0 => q8_0(row, a),
                WeightType::Q4_0 => q4_0(row, a),
                WeightType::Q4K => q4k(row, a),
                WeightType::Q6K => q6k(row, a),
                _ => super::row_dot_scalar(t, row, a),
            }
        }
    }

    /// Σ w·a in i32 lanes: `w` signed, via |w| and sign(a, w).
    #[target_feature(enable = "avx2")]
    unsafe fn dot_i8(w: __m256i, a: __m256i) -> __m256i {
        let p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
        _mm256_madd_epi16(p, _mm256_set1_epi16(1))
    }

    /// Σ w·a in i32 lanes: `w` unsigned (0..=127).
    #[target_feature(enable = "avx2")]
    unsafe fn dot_u8(w: __m256i, a: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1))
    }

    #[target_feature(enable = "avx2")]
    unsafe fn load32(p: *const i8) -> __m256i {
        // SAFETY: the caller guarantees 32 readable bytes.
        unsafe { _mm256_loadu_si256(p as *const __m256i) }
    }

    /// The 32 weights of the block at `p` as signed bytes (q4_0 or q8_0).
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn weights<const Q4: bool>(p: *const u8) -> __m256i {
        // SAFETY: the caller points at a whole q4_0 (18-byte) or q8_0
        // (34-byte) block.
        unsafe {
            if Q4 {
                let q = _mm_loadu_si128(p.add(2) as *const __m128i);
                let both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
                _mm256_sub_epi8(
                    _mm256_and_si256(both, _mm256_set1_epi8(0xF)),
                    _mm256_set1_epi8(8),
                )
            } else {
                load32(p.add(2) as *const i8)
            }
        }
    }

    /// Σ over 32-value blocks of `d_w · d_a · (w · a)`, two blocks per
    /// step into independent accumulators.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn blocks32<const Q4: bool>(row: &[u8], a: &QAct) -> f32 {
        let bytes = if Q4 { 18 } else { 34 };
        let tab = super::super::quant::f16_table();
        let nb = a.d.len().min(row.len() / bytes);
        let (rp, qp) = (row.as_ptr(), a.q.as_ptr());
        let scale = |b: usize| {
            tab[u16::from_le_bytes([row[b * bytes], row[b * bytes + 1]]) as usize] * a.d[b]
        };
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut b = 0;
        // SAFETY: blocks b, b + 1 < nb lie in `row`; their 32 activation
        // quants lie in `a.q` (checked by the caller).
        unsafe {
            while b + 2 <= nb {
                let p0 = dot_i8(weights::<Q4>(rp.add(b * bytes)), load32(qp.add(32 * b)));
                let p1 = dot_i8(
                    weights::<Q4>(rp.add((b + 1) * bytes)),
                    load32(qp.add(32 * b + 32)),
                );
                acc0 = _mm256_fmadd_ps(_mm256_set1_ps(scale(b)), _mm256_cvtepi32_ps(p0), acc0);
                acc1 = _mm256_fmadd_ps(_mm256_set1_ps(scale(b + 1)), _mm256_cvtepi32_ps(p1), acc1);
                b += 2;
            }
            if b < nb {
                let p0 = dot_i8(weights::<Q4>(rp.add(b * bytes)), load32(qp.add(32 * b)));
                acc0 = _mm256_fmadd_ps(_mm256_set1_ps(scale(b)), _mm256_cvtepi32_ps(p0), acc0);
            }
            hsum(_mm256_add_ps(acc0, acc1))
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn q8_0(row: &[u8], a: &QAct) -> f32 {
        // SAFETY: same requirements as this function's.
        unsafe { blocks32::<false>(row, a) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn q4_0(row: &[u8], a: &QAct) -> f32 {
        // SAFETY: same requirements as this function's.
        unsafe { blocks32::<true>(row, a) }
    }

    /// The 8 six-bit scales and mins of a q4_k/q5_k block (`get_scale_min_k4`
    /// for j = 0..8 at once).
    #[inline(always)]
    fn scales_mins(q: &[u8]) -> ([u8; 8], [u8; 8]) {
        let (mut sc, mut m) = ([0u8; 8], [0u8; 8]);
        for j in 0..4 {
            sc[j] = q[j] & 63;
            m[j] = q[j + 4] & 63;
            sc[j + 4] = (q[j + 8] & 0xF) | ((q[j] >> 6) << 4);
            m[j + 4] = (q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4);
        }
        (sc, m)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn q4k(row: &[u8], a: &QAct) -> f32 {
        let tab = super::super::quant::f16_table();
        let low = _mm256_set1_epi8(0xF);
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut mins = 0f32;
        for (bi, blk) in row.chunks_exact(144).take(a.d.len() / 8).enumerate() {
            let d = tab[u16::from_le_bytes([blk[0], blk[1]]) as usize];
            let dmin = tab[u16::from_le_bytes([blk[2], blk[3]]) as usize];
            let (sc, m) = scales_mins(&blk[4..16]);
            let g0 = 8 * bi;
            for c in 0..4 {
                let (g, h) = (g0 + 2 * c, g0 + 2 * c + 1);
                // SAFETY: 32 quant bytes of chunk c; activation groups g, h.
                unsafe {
                    let q = _mm256_loadu_si256(blk.as_ptr().add(16 + 32 * c) as *const __m256i);
                    let lo = _mm256_and_si256(q, low);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
                    let p0 = dot_u8(lo, load32(a.q.as_ptr().add(32 * g)));
                    let p1 = dot_u8(hi, load32(a.q.as_ptr().add(32 * h)));
                    acc0 = _mm256_fmadd_ps(
                        _mm256_set1_ps(d * sc[2 * c] as f32 * a.d[g]),
                        _mm256_cvtepi32_ps(p0),
                        acc0,
                    );
                    acc1 = _mm256_fmadd_ps(
                        _mm256_set1_ps(d * sc[2 * c + 1] as f32 * a.d[h]),
                        _mm256_cvtepi32_ps(p1),
                        acc1,
                    );
                }
                mins += dmin
                    * (m[2 * c] as f32 * a.d[g] * a.s[g] as f32
                        + m[2 * c + 1] as f32 * a.d[h] * a.s[h] as f32);
            }
        }
        unsafe { hsum(_mm256_add_ps(acc0, acc1)) - mins }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn q6k(row: &[u8], a: &QAct) -> f32 {
        let low = _mm256_set1_epi8(0xF);
        let three = _mm256_set1_epi8(3);
        let bias = _mm256_set1_epi8(32);
        let mut acc = _mm256_setzero_ps();
        for (bi, blk) in row.chunks_exact(210).take(a.d.len() / 8).enumerate() {
            let d = f16_at(blk, 208);
            for n in 0..2 {
                // SAFETY: ql, qh and scale bytes of half n; activation groups.
                unsafe {
                    let ql0 = _mm256_loadu_si256(blk.as_ptr().add(64 * n) as *const __m256i);
                    let ql1 = _mm256_loadu_si256(blk.as_ptr().add(64 * n + 32) as *const __m256i);
                    let qh = _mm256_loadu_si256(blk.as_ptr().add(128 + 32 * n) as *const __m256i);
                    let sc = &blk[192 + 8 * n..200 + 8 * n];
                    let hbits = |s: i32| {
                        let h = match s {
                            0 => qh,
                            2 => _mm256_srli_epi16(qh, 2),
                            4 => _mm256_srli_epi16(qh, 4),
                            _ => _mm256_srli_epi16(qh, 6),
                        };
                        _mm256_slli_epi16(_mm256_and_si256(h, three), 4)
                    };
                    let ws = [
                        _mm256_or_si256(_mm256_and_si256(ql0, low), hbits(0)),
                        _mm256_or_si256(_mm256_and_si256(ql1, low), hbits(2)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low), hbits(4)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low), hbits(6)),
                    ];
                    for (j, w) in ws.into_iter().enumerate() {
                        let g = 8 * bi + 4 * n + j;
                        let w = _mm256_sub_epi8(w, bias);
                        let x = load32(a.q.as_ptr().add(32 * g));
                        let base = d * a.d[g];
                        let s = _mm256_setr_m128(
                            _mm_set1_ps(base * sc[2 * j] as i8 as f32),
                            _mm_set1_ps(base * sc[2 * j + 1] as i8 as f32),
                        );
                        acc = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(dot_i8(w, x)), acc);
                    }
                }
            }
        }
        unsafe { hsum(acc) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::quant;
    use proptest::prelude::*;

    fn row(t: WeightType, seed: &[u8], n: usize) -> Vec<u8> {
        let len = t.row_bytes(n).unwrap();
        let mut r: Vec<u8> = (0..len)
            .map(|i| seed[i % seed.len()].wrapping_add((i * 13) as u8))
            .collect();
        let fields: &[usize] = match t {
            WeightType::Q8_0 | WeightType::Q4_0 => &[0],
            WeightType::Q4K => &[0, 2],
            _ => &[208],
        };
        for b in 0..len / t.block_bytes() {
            for &f in fields {
                let at = b * t.block_bytes() + f;
                let h = half::f16::from_f32((r[at] as f32 - 128.0) / 300.0);
                r[at..at + 2].copy_from_slice(&h.to_le_bytes());
            }
        }
        r
    }

    proptest! {
        #[test]
        fn simd_twin_matches_scalar_and_approximates_f32(seed in proptest::collection::vec(any::<u8>(), 8..48), x in proptest::collection::vec(-3f32..3.0, 512)) {
            let mut a = QAct::default();
            a.quantize(&x);
            for t in [WeightType::Q8_0, WeightType::Q4_0, WeightType::Q4K, WeightType::Q6K] {
                let r = row(t, &seed, 512);
                let scalar = row_dot_scalar(t, &r, &a);
                let simd = row_dot_fn()(t, &r, &a);
                let mut w = vec![0f32; 512];
                quant::dequant_row(t, &r, &mut w).unwrap();
                let mag: f32 = w.iter().zip(&x).map(|(p, q)| (p * q).abs()).sum::<f32>() + 1e-3;
                let exact: f32 = w.iter().zip(&x).map(|(p, q)| p * q).sum();
                prop_assert!((scalar - simd).abs() <= 1e-4 * mag, "{}: {scalar} vs {simd}", t.name());
                // 8-bit activations: within 2% of the magnitude of the terms.
                prop_assert!((scalar - exact).abs() <= 0.02 * mag, "{}: {scalar} vs exact {exact}", t.name());
            }
        }
    }
}
