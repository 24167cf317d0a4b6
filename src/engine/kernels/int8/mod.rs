//! Integer dot products, as llama.cpp does them: the activations are
//! quantized once per matmul to int8 with f32 scales, and each weight
//! block is multiplied in int8 × int8 → int32 (AVX2 `maddubs`), the float
//! scales applied as late as the format allows. Two activation layouts:
//! blocks of 32 (one scale and sum each) for q8_0, q4_0, q4_1, q5_0, q5_1
//! ([`b32`]), and super-blocks of 256 (one scale, a sum per 16) for the
//! k-quants ([`k_quants`]), whose kernels sum a whole super-block in int32
//! and convert once. Each scalar twin does the same integer arithmetic
//! without SIMD.

mod b32;
pub(crate) mod gemm;
mod k_quants;
#[cfg(test)]
mod tests;
pub(crate) mod tile;
mod unpack;

use crate::engine::quant::{QRow, WeightType};

/// `row · x` with `x` quantized in the weight type's activation layout.
pub type IntDotFn = fn(WeightType, &[u8], QRow) -> f32;

/// The little-endian u32 at `b[at..at + 4]`.
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Σ w·a over 32 (or fewer) values.
fn idot(w: &[i32], a: &[i8]) -> i32 {
    w.iter().zip(a).map(|(x, y)| x * *y as i32).sum()
}

/// The scalar twin.
pub fn row_dot_scalar(t: WeightType, row: &[u8], a: QRow) -> f32 {
    match t {
        WeightType::Q8_0
        | WeightType::Q4_0
        | WeightType::Q4_1
        | WeightType::Q5_0
        | WeightType::Q5_1 => b32::dot_scalar(t, row, a),
        WeightType::Q2K => k_quants::q2k_scalar(row, a),
        WeightType::Q3K => k_quants::q3k_scalar(row, a),
        WeightType::Q4K => k_quants::q4k_scalar(row, a),
        WeightType::Q5K => k_quants::q5k_scalar(row, a),
        WeightType::Q6K => k_quants::q6k_scalar(row, a),
        _ => 0.0,
    }
}

/// `out[j] = row j · a` for consecutive rows of `row_bytes` in `rows`.
pub type RowsDotFn = fn(WeightType, &[u8], usize, QRow, &mut [f32]);

/// The scalar twin of the many-row kernel.
pub fn rows_dot_scalar(t: WeightType, rows: &[u8], row_bytes: usize, a: QRow, out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(rows.chunks(row_bytes.max(1))) {
        *o = row_dot_scalar(t, row, a);
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use super::{b32::x86 as b32, k_quants::x86 as kq};
    use super::{QRow, WeightType};
    use std::arch::x86_64::*;

    /// Whether `row` and `a` hold whole blocks of `t` for `a.q.len()` values.
    pub(super) fn fits(t: WeightType, row: &[u8], a: &QRow) -> bool {
        let elems = a.q.len();
        let per_scale = match t {
            WeightType::Q8_0
            | WeightType::Q4_0
            | WeightType::Q4_1
            | WeightType::Q5_0
            | WeightType::Q5_1 => 32,
            _ => 256,
        };
        // Sums: one per block of 32 (read 8 at a time by the 8-block
        // kernels), or one per 16 values of a super-block.
        a.d.len() * per_scale == elems
            && if per_scale == 32 {
                a.s.len() == a.d.len()
            } else {
                a.s.len() * 16 == elems
            }
            && t.row_bytes(elems).is_some_and(|b| b <= row.len())
    }

    /// `N` dot products of one row; `None` for types without a kernel.
    ///
    /// # Safety
    /// AVX2 and FMA available; every `a` passes [`fits`].
    #[inline(always)]
    pub(super) unsafe fn dots<const N: usize>(
        t: WeightType,
        row: &[u8],
        a: &[QRow; N],
    ) -> Option<[f32; N]> {
        // SAFETY: forwarded from the caller.
        unsafe {
            Some(match t {
                WeightType::Q8_0 => b32::q8_0::<N>(row, a),
                WeightType::Q4_0 => b32::q4_0::<N>(row, a),
                WeightType::Q4_1 if N == 1 => [b32::q4_1_by8(row, &a[0]); N],
                WeightType::Q4_1 => b32::unsigned32::<{ b32::Q4_1 }, N>(row, a),
                WeightType::Q5_0 if N == 1 => [b32::i32_by8::<{ b32::Q5_0 }>(row, &a[0]); N],
                WeightType::Q5_1 if N == 1 => [b32::i32_by8::<{ b32::Q5_1 }>(row, &a[0]); N],
                WeightType::Q5_0 => b32::unsigned32::<{ b32::Q5_0 }, N>(row, a),
                WeightType::Q5_1 => b32::unsigned32::<{ b32::Q5_1 }, N>(row, a),
                WeightType::Q2K => kq::q2k::<N>(row, a),
                WeightType::Q3K => kq::q3k::<N>(row, a),
                WeightType::Q4K => kq::q4k::<N>(row, a),
                WeightType::Q5K => kq::q5k::<N>(row, a),
                WeightType::Q6K => kq::q6k::<N>(row, a),
                _ => return None,
            })
        }
    }

    /// As [`dots`], the 32-value block types through the VNNI kernels
    /// (the k-quants, whose per-16 scales ride on `madd`, as AVX2).
    ///
    /// # Safety
    /// As [`dots`], and AVX-512 VNNI and VL available.
    #[inline(always)]
    pub(super) unsafe fn dots_vnni<const N: usize>(
        t: WeightType,
        row: &[u8],
        a: &[QRow; N],
    ) -> Option<[f32; N]> {
        // SAFETY: forwarded from the caller.
        unsafe {
            Some(match t {
                // One vector: the AVX2 8-block kernels, which fold 8
                // blocks before converting (faster than one conversion
                // per block even with VNNI).
                WeightType::Q4_0 | WeightType::Q4_1 | WeightType::Q5_0 | WeightType::Q5_1
                    if N == 1 =>
                {
                    return dots::<N>(t, row, a)
                }
                WeightType::Q8_0 => b32::vnni32::<{ b32::Q8_0 }, N>(row, a),
                WeightType::Q4_0 => b32::vnni32::<{ b32::Q4_0 }, N>(row, a),
                WeightType::Q4_1 => b32::vnni32::<{ b32::Q4_1 }, N>(row, a),
                WeightType::Q5_0 => b32::vnni32::<{ b32::Q5_0 }, N>(row, a),
                WeightType::Q5_1 => b32::vnni32::<{ b32::Q5_1 }, N>(row, a),
                _ => return dots::<N>(t, row, a),
            })
        }
    }

    pub fn row_dot_avx2_safe(t: WeightType, row: &[u8], a: QRow) -> f32 {
        if !fits(t, row, &a) {
            return super::row_dot_scalar(t, row, a);
        }
        // SAFETY: chosen after AVX2 and FMA were detected; sizes checked.
        unsafe { dots::<1>(t, row, &[a]) }
            .map_or_else(|| super::row_dot_scalar(t, row, a), |r| r[0])
    }

    pub fn rows_dot_avx2_safe(t: WeightType, rows: &[u8], rb: usize, a: QRow, out: &mut [f32]) {
        rows_dot::<false>(t, rows, rb, a, out)
    }

    /// The many-row kernel with AVX-512 VNNI for the 32-value block types.
    pub fn rows_dot_vnni_safe(t: WeightType, rows: &[u8], rb: usize, a: QRow, out: &mut [f32]) {
        rows_dot::<true>(t, rows, rb, a, out)
    }

    /// Only called through the two wrappers above, which the kernel table
    /// picks after detecting their features.
    fn rows_dot<const VNNI: bool>(t: WeightType, rows: &[u8], rb: usize, a: QRow, out: &mut [f32]) {
        let whole = out.len().checked_mul(rb).is_some_and(|n| n <= rows.len());
        if !whole
            || !fits(t, &rows[..rb.min(rows.len())], &a)
            || crate::engine::quant::act_blocks(t).is_none()
        {
            return super::rows_dot_scalar(t, rows, rb, a, out);
        }
        for (j, o) in out.iter_mut().enumerate() {
            let row = &rows[j * rb..(j + 1) * rb];
            // SAFETY: chosen after AVX2, FMA and F16C (and, for `VNNI`,
            // AVX-512 VNNI and VL) were detected; every row is `rb` bytes,
            // which fit `a` (checked above).
            let r = unsafe {
                if VNNI {
                    dots_vnni::<1>(t, row, &[a])
                } else {
                    dots::<1>(t, row, &[a])
                }
            };
            *o = r.map_or(0.0, |r| r[0]);
        }
    }

    /// The f16 at `b[at..at + 2]` (F16C; no table, which would crowd the
    /// weights out of the cache).
    #[target_feature(enable = "f16c")]
    #[inline]
    pub(super) fn h2f(b: &[u8], at: usize) -> f32 {
        let bits = u16::from_le_bytes([b[at], b[at + 1]]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn load32(p: *const i8) -> __m256i {
        // SAFETY: the caller guarantees 32 readable bytes.
        unsafe { _mm256_loadu_si256(p as *const __m256i) }
    }

    /// Sum of the 8 int32 lanes.
    #[target_feature(enable = "avx2")]
    pub(super) fn hsum_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    /// The 16 activation sums of super-block `bi`.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn sums16(a: &QRow, bi: usize) -> __m256i {
        // SAFETY: the caller checked `a.s` holds 16 sums per super-block.
        unsafe { _mm256_loadu_si256(a.s.as_ptr().add(16 * bi) as *const __m256i) }
    }
}
