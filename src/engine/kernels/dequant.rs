//! AVX2 twins of the block dequantizers for the common types (f16, bf16,
//! q8_0, q4_0, q4_1, q4_k, q5_k, q6_k); other types use the scalar code.
//! Each twin does the same f32 operations in the same order as its scalar
//! kernel (no fused multiply-add), so results are bit-identical; the tests
//! compare them on random blocks.

use crate::engine::quant::WeightType;

/// Dequantizes one chunk (see [`quant::dequant_chunk`]).
pub type DequantFn = fn(WeightType, &[u8], &mut [f32]);

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use crate::engine::quant::{self, f16_at, scale_min_k4, WeightType};
    use std::arch::x86_64::*;

    pub fn dequant_avx2_safe(t: WeightType, b: &[u8], out: &mut [f32]) {
        let full = t.block_elems() > 1 || out.len().is_multiple_of(8);
        let long_enough = b.len() >= t.row_bytes(out.len()).unwrap_or(usize::MAX);
        if !full || !long_enough {
            return quant::dequant_chunk(t, b, out);
        }
        // SAFETY: selected by `dequant_fn` only after AVX2 and F16C were
        // detected; every kernel reads within `b`'s block and writes within
        // `out`, whose lengths were checked above.
        unsafe {
            match t {
                WeightType::F16 => f16s(b, out),
                WeightType::BF16 => bf16s(b, out),
                WeightType::Q8_0 => q8_0(b, out),
                WeightType::Q4_0 => q4(b, out, false),
                WeightType::Q4_1 => q4(b, out, true),
                WeightType::Q4K => q4k(b, out),
                WeightType::Q5K => q5k(b, out),
                WeightType::Q6K => q6k(b, out),
                _ => quant::dequant_chunk(t, b, out),
            }
        }
    }

    /// 8 bytes at `p` widened to i32 (unsigned).
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn u8x8(p: *const u8) -> __m256i {
        // SAFETY: the caller guarantees 8 readable bytes at `p`.
        unsafe { _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i)) }
    }

    #[target_feature(enable = "avx2,f16c")]
    unsafe fn f16s(b: &[u8], out: &mut [f32]) {
        for (i, o) in out.chunks_exact_mut(8).enumerate() {
            // SAFETY: 16 bytes per 8 values, within `b` (checked by caller).
            unsafe {
                let h = _mm_loadu_si128(b.as_ptr().add(16 * i) as *const __m128i);
                _mm256_storeu_ps(o.as_mut_ptr(), _mm256_cvtph_ps(h));
            }
        }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn bf16s(b: &[u8], out: &mut [f32]) {
        for (i, o) in out.chunks_exact_mut(8).enumerate() {
            // SAFETY: 16 bytes per 8 values, within `b`.
            unsafe {
                let h = _mm_loadu_si128(b.as_ptr().add(16 * i) as *const __m128i);
                let w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
                _mm256_storeu_ps(o.as_mut_ptr(), _mm256_castsi256_ps(w));
            }
        }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn q8_0(b: &[u8], out: &mut [f32]) {
        let d = _mm256_set1_ps(f16_at(b, 0));
        for k in 0..4 {
            // SAFETY: bytes 2 + 8k .. 10 + 8k of a 34-byte block; 8 outputs at 8k.
            unsafe {
                let q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(
                    b.as_ptr().add(2 + 8 * k) as *const __m128i
                ));
                _mm256_storeu_ps(
                    out.as_mut_ptr().add(8 * k),
                    _mm256_mul_ps(_mm256_cvtepi32_ps(q), d),
                );
            }
        }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn q4(b: &[u8], out: &mut [f32], with_min: bool) {
        let d = _mm256_set1_ps(f16_at(b, 0));
        let (m, qs) = if with_min {
            (f16_at(b, 2), 4)
        } else {
            (0.0, 2)
        };
        let vm = _mm256_set1_ps(m);
        let eight = _mm256_set1_epi32(8);
        let low = _mm256_set1_epi32(0xF);
        for k in 0..2 {
            // SAFETY: 8 of the 16 `qs` bytes; outputs k*8.. and 16 + k*8...
            unsafe {
                let q = u8x8(b.as_ptr().add(qs + 8 * k));
                let mut lo = _mm256_and_si256(q, low);
                let mut hi = _mm256_srli_epi32(q, 4);
                if !with_min {
                    lo = _mm256_sub_epi32(lo, eight);
                    hi = _mm256_sub_epi32(hi, eight);
                }
                let mut flo = _mm256_mul_ps(_mm256_cvtepi32_ps(lo), d);
                let mut fhi = _mm256_mul_ps(_mm256_cvtepi32_ps(hi), d);
                if with_min {
                    flo = _mm256_add_ps(flo, vm);
                    fhi = _mm256_add_ps(fhi, vm);
                }
                _mm256_storeu_ps(out.as_mut_ptr().add(8 * k), flo);
                _mm256_storeu_ps(out.as_mut_ptr().add(16 + 8 * k), fhi);
            }
        }
    }

    /// `out[i] = scale * q[i] - min` for 8 lanes.
    #[target_feature(enable = "avx2")]
    unsafe fn affine(q: __m256i, scale: f32, min: f32, out: *mut f32) {
        let v = _mm256_sub_ps(
            _mm256_mul_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(q)),
            _mm256_set1_ps(min),
        );
        // SAFETY: the caller guarantees 8 writable floats at `out`.
        unsafe { _mm256_storeu_ps(out, v) }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn q4k(b: &[u8], out: &mut [f32]) {
        let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
        let scales = &b[4..16];
        let low = _mm256_set1_epi32(0xF);
        for c in 0..4 {
            let (sc1, m1) = scale_min_k4(2 * c, scales);
            let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
            let (d1, mm1) = (d * sc1 as f32, dmin * m1 as f32);
            let (d2, mm2) = (d * sc2 as f32, dmin * m2 as f32);
            for k in 0..4 {
                // SAFETY: 8 of the chunk's 32 bytes; outputs within the 256.
                unsafe {
                    let q = u8x8(b.as_ptr().add(16 + 32 * c + 8 * k));
                    affine(
                        _mm256_and_si256(q, low),
                        d1,
                        mm1,
                        out.as_mut_ptr().add(64 * c + 8 * k),
                    );
                    affine(
                        _mm256_srli_epi32(q, 4),
                        d2,
                        mm2,
                        out.as_mut_ptr().add(64 * c + 32 + 8 * k),
                    );
                }
            }
        }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn q5k(b: &[u8], out: &mut [f32]) {
        let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
        let scales = &b[4..16];
        let low = _mm256_set1_epi32(0xF);
        let one = _mm256_set1_epi32(1);
        for c in 0..4 {
            let (sc1, m1) = scale_min_k4(2 * c, scales);
            let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
            let (d1, mm1) = (d * sc1 as f32, dmin * m1 as f32);
            let (d2, mm2) = (d * sc2 as f32, dmin * m2 as f32);
            let (s1, s2) = (
                _mm_cvtsi32_si128(2 * c as i32),
                _mm_cvtsi32_si128(2 * c as i32 + 1),
            );
            for k in 0..4 {
                // SAFETY: qh bytes 16 + 8k.., ql bytes 48 + 32c + 8k..; outputs within the 256.
                unsafe {
                    let qh = u8x8(b.as_ptr().add(16 + 8 * k));
                    let ql = u8x8(b.as_ptr().add(48 + 32 * c + 8 * k));
                    let h1 = _mm256_slli_epi32(_mm256_and_si256(_mm256_srl_epi32(qh, s1), one), 4);
                    let h2 = _mm256_slli_epi32(_mm256_and_si256(_mm256_srl_epi32(qh, s2), one), 4);
                    let q1 = _mm256_add_epi32(_mm256_and_si256(ql, low), h1);
                    let q2 = _mm256_add_epi32(_mm256_srli_epi32(ql, 4), h2);
                    affine(q1, d1, mm1, out.as_mut_ptr().add(64 * c + 8 * k));
                    affine(q2, d2, mm2, out.as_mut_ptr().add(64 * c + 32 + 8 * k));
                }
            }
        }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn q6k(b: &[u8], out: &mut [f32]) {
        let d = f16_at(b, 208);
        let low = _mm256_set1_epi32(0xF);
        let three = _mm256_set1_epi32(3);
        let bias = _mm256_set1_epi32(32);
        for n in 0..2 {
            let sc = &b[192 + 8 * n..200 + 8 * n];
            for k in 0..4 {
                let l = 8 * k;
                let is = l / 16;
                // SAFETY: ql bytes 64n + l.. and 64n + l + 32.., qh bytes
                // 128 + 32n + l..; outputs 128n + l + {0,32,64,96}.. within the 256.
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
                    let q1 =
                        _mm256_sub_epi32(_mm256_or_si256(_mm256_and_si256(ql0, low), hb(0)), bias);
                    let q2 =
                        _mm256_sub_epi32(_mm256_or_si256(_mm256_and_si256(ql1, low), hb(2)), bias);
                    let q3 =
                        _mm256_sub_epi32(_mm256_or_si256(_mm256_srli_epi32(ql0, 4), hb(4)), bias);
                    let q4 =
                        _mm256_sub_epi32(_mm256_or_si256(_mm256_srli_epi32(ql1, 4), hb(6)), bias);
                    let o = out.as_mut_ptr().add(128 * n + l);
                    for (q, off, s) in [
                        (q1, 0, is),
                        (q2, 32, is + 2),
                        (q3, 64, is + 4),
                        (q4, 96, is + 6),
                    ] {
                        let scale = d * (sc[s] as i8 as f32);
                        _mm256_storeu_ps(
                            o.add(off),
                            _mm256_mul_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(q)),
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TYPES: [WeightType; 13] = [
        WeightType::F32,
        WeightType::F16,
        WeightType::BF16,
        WeightType::Q4_0,
        WeightType::Q4_1,
        WeightType::Q5_0,
        WeightType::Q5_1,
        WeightType::Q8_0,
        WeightType::Q2K,
        WeightType::Q3K,
        WeightType::Q4K,
        WeightType::Q5K,
        WeightType::Q6K,
    ];

    /// Random bytes with every f16 field set to a finite value.
    fn block(t: WeightType, seed: &[u8], n: usize) -> Vec<u8> {
        let len = t.row_bytes(n).unwrap();
        let mut b: Vec<u8> = (0..len)
            .map(|i| seed[i % seed.len()].wrapping_mul(i as u8 | 1))
            .collect();
        let finite = |b: &mut Vec<u8>, at: usize| {
            let v = half::f16::from_f32(((b[at] as f32) - 128.0) / 97.0);
            b[at..at + 2].copy_from_slice(&v.to_le_bytes());
        };
        let fields: &[usize] = match t {
            WeightType::Q4_0 | WeightType::Q5_0 | WeightType::Q8_0 => &[0],
            WeightType::Q4_1 | WeightType::Q5_1 | WeightType::Q4K | WeightType::Q5K => &[0, 2],
            WeightType::Q2K => &[80, 82],
            WeightType::Q3K => &[108],
            WeightType::Q6K => &[208],
            WeightType::F16 => &[],
            _ => &[],
        };
        for &f in fields {
            finite(&mut b, f);
        }
        if t == WeightType::F16 {
            for i in (0..len).step_by(2) {
                finite(&mut b, i);
            }
        }
        if t == WeightType::F32 {
            for c in b.chunks_exact_mut(4) {
                c.copy_from_slice(&((c[0] as f32) / 3.0).to_le_bytes());
            }
        }
        b
    }

    proptest! {
        #[test]
        fn simd_dequant_equals_scalar(seed in proptest::collection::vec(any::<u8>(), 1..64)) {
            for t in TYPES {
                let n = t.block_elems().max(256);
                let b = block(t, &seed, n);
                let (mut want, mut got) = (vec![0f32; n], vec![0f32; n]);
                crate::engine::quant::dequant_row_scalar(t, &b, &mut want);
                let step = if t.block_elems() == 1 { 256 } else { t.block_elems() };
                let bytes = t.row_bytes(step).unwrap();
                for (o, c) in got.chunks_mut(step).zip(b.chunks(bytes)) {
                    (super::super::get().dequant)(t, c, o);
                }
                for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                    prop_assert!(w.to_bits() == g.to_bits() || (w.is_nan() && g.is_nan()), "{} [{i}]: {w} vs {g}", t.name());
                }
            }
        }
    }
}
