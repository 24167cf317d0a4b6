//! Fused row · vector kernels for decoding (one activation vector): each
//! block's quants are widened and multiplied into the vector directly,
//! with the block scale applied once per block (or sub-block), instead of
//! writing dequantized floats and reading them back. AVX2+FMA versions for
//! f16, q8_0, q4_0, q4_1, q4_k, q5_k and q6_k; the scalar twin of each is
//! dequantize-then-dot, and the tests bound their difference.

use super::f32 as simd;
use crate::engine::quant::{self, WeightType, MAX_BLOCK};

/// `row · x` for a row of `x.len()` elements of type `t`.
pub type RowDotFn = fn(WeightType, &[u8], &[f32]) -> f32;

/// The scalar twin: dequantize each chunk, then dot.
pub fn row_dot_scalar(t: WeightType, row: &[u8], x: &[f32]) -> f32 {
    let step = t.chunk_elems();
    let mut buf = [0f32; MAX_BLOCK];
    let mut sum = 0f32;
    let (mut at, mut byte) = (0usize, 0usize);
    while at < x.len() {
        let len = step.min(x.len() - at);
        let nb = t.row_bytes(len).unwrap_or(0);
        quant::dequant_chunk(t, &row[byte..byte + nb], &mut buf[..len]);
        sum += simd::dot_scalar(&buf[..len], &x[at..at + len]);
        at += len;
        byte += nb;
    }
    sum
}

/// Dequantize with the best dequantizer, dot with the best dot.
pub(super) fn generic(t: WeightType, row: &[u8], x: &[f32]) -> f32 {
    let step = t.chunk_elems();
    let mut buf = [0f32; MAX_BLOCK];
    let dequant = super::get().dequant;
    let dot = super::get().dot;
    let mut sum = 0f32;
    let (mut at, mut byte) = (0usize, 0usize);
    while at < x.len() {
        let len = step.min(x.len() - at);
        let nb = t.row_bytes(len).unwrap_or(0);
        dequant(t, &row[byte..byte + nb], &mut buf[..len]);
        sum += dot(&buf[..len], &x[at..at + len]);
        at += len;
        byte += nb;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use super::super::dequant::x86::u8x8;
    use super::super::f32::hsum;
    use super::WeightType;
    use crate::engine::quant::{f16_at, scale_min_k4};
    use std::arch::x86_64::*;

    pub fn row_dot_avx2_safe(t: WeightType, row: &[u8], x: &[f32]) -> f32 {
        let n = x.len();
        let fits = t.row_bytes(n).is_some_and(|b| b <= row.len()) && n.is_multiple_of(32);
        if !fits {
            return super::generic(t, row, x);
        }
        // SAFETY: chosen only after AVX2, FMA and F16C were detected; the
        // row holds `n` whole blocks (checked above) and every kernel reads
        // block `i` and x[i*block ..] within those bounds.
        unsafe {
            match t {
                WeightType::F16 => f16(row, x),
                WeightType::Q8_0 => q8_0(row, x),
                WeightType::Q4_0 => q4(row, x, false),
                WeightType::Q4_1 => q4(row, x, true),
                WeightType::Q4K => q45k(row, x, false),
                WeightType::Q5K => q45k(row, x, true),
                WeightType::Q6K => q6k(row, x),
                _ => super::generic(t, row, x),
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16(row: &[u8], x: &[f32]) -> f32 {
        // Four accumulators: one would leave the loop waiting on the FMA
        // latency instead of on memory.
        let mut acc = [_mm256_setzero_ps(); 4];
        let (rp, xp) = (row.as_ptr(), x.as_ptr());
        let n = x.len();
        let mut i = 0;
        // SAFETY: 8 halfs at byte 2(i + 8k) and 8 floats at i + 8k, in
        // bounds (the caller checked the row holds `x.len()` halfs).
        unsafe {
            let step = |i: usize, acc: __m256| {
                let h = _mm256_cvtph_ps(_mm_loadu_si128(rp.add(2 * i) as *const __m128i));
                _mm256_fmadd_ps(h, _mm256_loadu_ps(xp.add(i)), acc)
            };
            while i + 32 <= n {
                for (k, a) in acc.iter_mut().enumerate() {
                    *a = step(i + 8 * k, *a);
                }
                i += 32;
            }
            while i + 8 <= n {
                acc[0] = step(i, acc[0]);
                i += 8;
            }
            let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            hsum(s)
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn q8_0(row: &[u8], x: &[f32]) -> f32 {
        let mut total = _mm256_setzero_ps();
        for (bi, b) in row.chunks_exact(34).take(x.len() / 32).enumerate() {
            let mut acc = _mm256_setzero_ps();
            for k in 0..4 {
                // SAFETY: bytes 2 + 8k.. of a 34-byte block; x[32bi + 8k..+8].
                unsafe {
                    let q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(
                        b.as_ptr().add(2 + 8 * k) as *const __m128i
                    ));
                    acc = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(q),
                        _mm256_loadu_ps(x.as_ptr().add(32 * bi + 8 * k)),
                        acc,
                    );
                }
            }
            total = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b, 0)), acc, total);
        }
        unsafe { hsum(total) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn q4(row: &[u8], x: &[f32], with_min: bool) -> f32 {
        let (bytes, qs) = if with_min { (20, 4) } else { (18, 2) };
        let low = _mm256_set1_epi32(0xF);
        let eight = _mm256_set1_ps(8.0);
        let mut total = _mm256_setzero_ps();
        for (bi, b) in row.chunks_exact(bytes).take(x.len() / 32).enumerate() {
            let (mut qx, mut sx) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            for k in 0..2 {
                // SAFETY: 8 of the 16 quant bytes; x[32bi + 8k..] and x[32bi + 16 + 8k..].
                unsafe {
                    let q = u8x8(b.as_ptr().add(qs + 8 * k));
                    let xl = _mm256_loadu_ps(x.as_ptr().add(32 * bi + 8 * k));
                    let xh = _mm256_loadu_ps(x.as_ptr().add(32 * bi + 16 + 8 * k));
                    qx = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(q, low)), xl, qx);
                    qx = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(q, 4)), xh, qx);
                    sx = _mm256_add_ps(sx, _mm256_add_ps(xl, xh));
                }
            }
            let d = _mm256_set1_ps(f16_at(b, 0));
            total = _mm256_fmadd_ps(d, qx, total);
            // q4_0 values are q - 8: subtract 8·d·Σx; q4_1 adds m·Σx.
            total = if with_min {
                _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b, 2)), sx, total)
            } else {
                _mm256_fnmadd_ps(_mm256_mul_ps(d, eight), sx, total)
            };
        }
        unsafe { hsum(total) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn q45k(row: &[u8], x: &[f32], five: bool) -> f32 {
        let bytes = if five { 176 } else { 144 };
        let low = _mm256_set1_epi32(0xF);
        let one = _mm256_set1_epi32(1);
        let mut total = _mm256_setzero_ps();
        for (bi, b) in row.chunks_exact(bytes).take(x.len() / 256).enumerate() {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let scales = &b[4..16];
            let xb = 256 * bi;
            let ql_at = if five { 48 } else { 16 };
            for c in 0..4 {
                let (sc1, m1) = scale_min_k4(2 * c, scales);
                let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
                let (mut qx1, mut qx2) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let (mut sx1, mut sx2) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let (s1, s2) = (
                    _mm_cvtsi32_si128(2 * c as i32),
                    _mm_cvtsi32_si128(2 * c as i32 + 1),
                );
                for k in 0..4 {
                    // SAFETY: quant bytes within the block; x[xb + 64c + 8k..] and
                    // x[xb + 64c + 32 + 8k..] within the row's 256 values.
                    unsafe {
                        let q = u8x8(b.as_ptr().add(ql_at + 32 * c + 8 * k));
                        let (mut lo, mut hi) = (_mm256_and_si256(q, low), _mm256_srli_epi32(q, 4));
                        if five {
                            let qh = u8x8(b.as_ptr().add(16 + 8 * k));
                            lo = _mm256_add_epi32(
                                lo,
                                _mm256_slli_epi32(
                                    _mm256_and_si256(_mm256_srl_epi32(qh, s1), one),
                                    4,
                                ),
                            );
                            hi = _mm256_add_epi32(
                                hi,
                                _mm256_slli_epi32(
                                    _mm256_and_si256(_mm256_srl_epi32(qh, s2), one),
                                    4,
                                ),
                            );
                        }
                        let x1 = _mm256_loadu_ps(x.as_ptr().add(xb + 64 * c + 8 * k));
                        let x2 = _mm256_loadu_ps(x.as_ptr().add(xb + 64 * c + 32 + 8 * k));
                        qx1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), x1, qx1);
                        qx2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), x2, qx2);
                        sx1 = _mm256_add_ps(sx1, x1);
                        sx2 = _mm256_add_ps(sx2, x2);
                    }
                }
                total = _mm256_fmadd_ps(_mm256_set1_ps(d * sc1 as f32), qx1, total);
                total = _mm256_fnmadd_ps(_mm256_set1_ps(dmin * m1 as f32), sx1, total);
                total = _mm256_fmadd_ps(_mm256_set1_ps(d * sc2 as f32), qx2, total);
                total = _mm256_fnmadd_ps(_mm256_set1_ps(dmin * m2 as f32), sx2, total);
            }
        }
        unsafe { hsum(total) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn q6k(row: &[u8], x: &[f32]) -> f32 {
        let low = _mm256_set1_epi32(0xF);
        let three = _mm256_set1_epi32(3);
        let bias = _mm256_set1_epi32(32);
        let mut total = _mm256_setzero_ps();
        for (bi, b) in row.chunks_exact(210).take(x.len() / 256).enumerate() {
            let d = f16_at(b, 208);
            for n in 0..2 {
                let sc = &b[192 + 8 * n..200 + 8 * n];
                let xb = 256 * bi + 128 * n;
                // Accumulators per scale group: 4 outputs × 2 halves of 16.
                let mut acc = [_mm256_setzero_ps(); 8];
                for k in 0..4 {
                    let l = 8 * k;
                    // SAFETY: quant bytes within the 210-byte block; x values
                    // xb + l + {0, 32, 64, 96} .. + 8 within the row.
                    unsafe {
                        let ql0 = u8x8(b.as_ptr().add(64 * n + l));
                        let ql1 = u8x8(b.as_ptr().add(64 * n + l + 32));
                        let qh = u8x8(b.as_ptr().add(128 + 32 * n + l));
                        let hb = |s: i32| {
                            _mm256_slli_epi32(
                                _mm256_and_si256(_mm256_srl_epi32(qh, _mm_cvtsi32_si128(s)), three),
                                4,
                            )
                        };
                        let qs = [
                            _mm256_sub_epi32(
                                _mm256_or_si256(_mm256_and_si256(ql0, low), hb(0)),
                                bias,
                            ),
                            _mm256_sub_epi32(
                                _mm256_or_si256(_mm256_and_si256(ql1, low), hb(2)),
                                bias,
                            ),
                            _mm256_sub_epi32(
                                _mm256_or_si256(_mm256_srli_epi32(ql0, 4), hb(4)),
                                bias,
                            ),
                            _mm256_sub_epi32(
                                _mm256_or_si256(_mm256_srli_epi32(ql1, 4), hb(6)),
                                bias,
                            ),
                        ];
                        for (j, q) in qs.into_iter().enumerate() {
                            let xv = _mm256_loadu_ps(x.as_ptr().add(xb + 32 * j + l));
                            let a = &mut acc[2 * j + l / 16];
                            *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), xv, *a);
                        }
                    }
                }
                for j in 0..4 {
                    for h in 0..2 {
                        let s = d * (sc[h + 2 * j] as i8 as f32);
                        total = _mm256_fmadd_ps(_mm256_set1_ps(s), acc[2 * j + h], total);
                    }
                }
            }
        }
        unsafe { hsum(total) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn finite_f16(b: &mut [u8], at: usize, v: u8) {
        let h = half::f16::from_f32((v as f32 - 128.0) / 311.0);
        b[at..at + 2].copy_from_slice(&h.to_le_bytes());
    }

    proptest! {
        #[test]
        fn fused_kernels_match_the_scalar_twin(seed in proptest::collection::vec(any::<u8>(), 8..64), xs in proptest::collection::vec(-2f32..2.0, 512)) {
            for t in [WeightType::F16, WeightType::Q8_0, WeightType::Q4_0, WeightType::Q4_1, WeightType::Q4K, WeightType::Q5K, WeightType::Q6K, WeightType::Q2K] {
                let n = 512;
                let len = t.row_bytes(n).unwrap();
                let mut row: Vec<u8> = (0..len).map(|i| seed[i % seed.len()].wrapping_add((i * 7) as u8)).collect();
                let bb = t.block_bytes();
                for blk in 0..len / bb {
                    let o = blk * bb;
                    let fields: &[usize] = match t {
                        WeightType::F16 => &[0],
                        WeightType::Q8_0 | WeightType::Q4_0 => &[0],
                        WeightType::Q4_1 | WeightType::Q4K | WeightType::Q5K => &[0, 2],
                        WeightType::Q6K => &[208],
                        WeightType::Q2K => &[80, 82],
                        _ => &[],
                    };
                    for &f in fields {
                        let v = row[o + f];
                        finite_f16(&mut row, o + f, v);
                    }
                }
                let want = row_dot_scalar(t, &row, &xs);
                let got = (super::super::get().row_dot)(t, &row, &xs);
                // Bound: f32 rounding of a sum of |terms|.
                let mut deq = vec![0f32; n];
                crate::engine::quant::dequant_row_scalar(t, &row, &mut deq);
                let mag: f32 = deq.iter().zip(&xs).map(|(a, b)| (a * b).abs()).sum::<f32>() + 1e-3;
                prop_assert!((want - got).abs() <= 2e-5 * mag, "{}: {want} vs {got} (mag {mag})", t.name());
            }
        }
    }
}
