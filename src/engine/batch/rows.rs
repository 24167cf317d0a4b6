//! The batched decode's integer products: each weight row unpacked once
//! for several sequences' activation vectors, and every result bit for bit
//! what the single-row kernel ([`Kernels::int_rows_dot`]) gives that
//! vector alone — so a sequence's logits do not depend on what else is in
//! its batch.
//!
//! Which kernel keeps the bits, by weight type:
//! - q4_0 and q4_1: a single vector takes the 8-block kernels (block sums
//!   folded 8 at a time, then one FMA per 8 blocks; the last nb mod 8
//!   blocks one at a time), which the integer tiles do not reproduce.
//!   [`x86::by8`] does the same float operations in the same order for up
//!   to 4 vectors, sharing the unpacking of the weights and the gather of
//!   their scales.
//! - q5_0 and q5_1: also 8-block kernels for a single vector; a batch runs
//!   them one vector at a time.
//! - every other type: the single-row kernel is the tile kernel's
//!   one-vector instance, so the tiles ([`Kernels::int_tile`]) give the
//!   same bits.
//!
//! The tests below check both claims against `int_rows_dot` on every type.
//!
//! [`Kernels::int_rows_dot`]: crate::engine::kernels::Kernels
//! [`Kernels::int_tile`]: crate::engine::kernels::Kernels

use crate::engine::kernels;
use crate::engine::quant::{QAct, WeightType};

/// `outs[k][j] = row j · a.row(k)` for the `outs[k].len()` rows of
/// `row_bytes` in `rows` and the first `outs.len()` vectors of `a`, each
/// exactly as `int_rows_dot(t, rows, row_bytes, a.row(k), outs[k])`.
pub(super) fn rows_many(
    t: WeightType,
    rows: &[u8],
    row_bytes: usize,
    a: &QAct,
    outs: &mut [&mut [f32]],
) {
    let k = kernels::get();
    if outs.is_empty() {
        return;
    }
    if !by8_kernel(t) {
        (k.int_tile)(t, rows, row_bytes, a, outs);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if x86::by8(t, rows, row_bytes, a, outs) {
        return;
    }
    // q5_0 / q5_1 (no batched twin of their 8-block kernel yet), or rows
    // the batched kernel refused: one vector at a time.
    for (i, out) in outs.iter_mut().enumerate() {
        (k.int_rows_dot)(t, rows, row_bytes, a.row(i), out);
    }
}

/// Whether the single-row kernel for `t` is an 8-block kernel (the CPU
/// has them and the type has one), which the tiles do not reproduce.
fn by8_kernel(t: WeightType) -> bool {
    matches!(
        t,
        WeightType::Q4_0 | WeightType::Q4_1 | WeightType::Q5_0 | WeightType::Q5_1
    ) && x86_avx2()
}

#[cfg(target_arch = "x86_64")]
fn x86_avx2() -> bool {
    std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
}

#[cfg(not(target_arch = "x86_64"))]
fn x86_avx2() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::engine::kernels::f32::hsum;
    use crate::engine::quant::{f16_at, QAct, QRow, WeightType};
    use std::arch::x86_64::*;

    /// The 8-block kernels for several vectors: `false` (nothing written)
    /// unless `rows` holds whole rows of q4_0 / q4_1 blocks for every
    /// vector and AVX2, FMA and F16C are there.
    pub(super) fn by8(
        t: WeightType,
        rows: &[u8],
        rb: usize,
        a: &QAct,
        outs: &mut [&mut [f32]],
    ) -> bool {
        let q41 = match t {
            WeightType::Q4_0 => false,
            WeightType::Q4_1 => true,
            _ => return false,
        };
        let bytes = if q41 { 20 } else { 18 };
        let n = outs.len();
        let m = outs[0].len();
        let nb = a.cols / 32;
        let fits = super::x86_avx2()
            && a.cols.is_multiple_of(32)
            && n <= a.rows()
            && outs.iter().all(|o| o.len() == m)
            && rb == nb * bytes
            && m.checked_mul(rb).is_some_and(|b| b <= rows.len())
            && (0..n).all(|k| {
                let r = a.row(k);
                r.d.len() == nb && r.q.len() == 32 * nb && r.s.len() == nb
            });
        if !fits {
            return false;
        }
        let mut k = 0;
        while k < n {
            let c = (n - k).min(4);
            // SAFETY: AVX2, FMA and F16C detected; every row is `rb` bytes
            // of `nb` blocks and every vector holds `nb` blocks (checked
            // above).
            unsafe {
                match (q41, c) {
                    (false, 4) => columns::<false, 4>(rows, rb, a, k, outs),
                    (false, 3) => columns::<false, 3>(rows, rb, a, k, outs),
                    (false, 2) => columns::<false, 2>(rows, rb, a, k, outs),
                    (false, _) => columns::<false, 1>(rows, rb, a, k, outs),
                    (true, 4) => columns::<true, 4>(rows, rb, a, k, outs),
                    (true, 3) => columns::<true, 3>(rows, rb, a, k, outs),
                    (true, 2) => columns::<true, 2>(rows, rb, a, k, outs),
                    (true, _) => columns::<true, 1>(rows, rb, a, k, outs),
                }
            }
            k += c;
        }
        true
    }

    /// Vectors `k..k + N` against every row.
    ///
    /// # Safety
    /// As [`dots`], for every row; `k + N <= outs.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn columns<const Q41: bool, const N: usize>(
        rows: &[u8],
        rb: usize,
        a: &QAct,
        k: usize,
        outs: &mut [&mut [f32]],
    ) {
        let xs: [QRow; N] = std::array::from_fn(|i| a.row(k + i));
        for j in 0..outs[k].len() {
            // SAFETY: forwarded from the caller.
            let r = unsafe { dots::<Q41, N>(&rows[j * rb..(j + 1) * rb], &xs) };
            for (i, v) in r.into_iter().enumerate() {
                outs[k + i][j] = v;
            }
        }
    }

    /// One q4_0 (`Q41` false) or q4_1 row against `N` vectors, 8 blocks
    /// at a time: per vector the operations of the single-vector 8-block
    /// kernels (`q4_0_by8`, `q4_1_by8` in `kernels::int8::b32`), in their
    /// order — the 16-bit partial sums folded by `hadd` into 8 exact block
    /// sums, the offset (q4_0) or min (q4_1) through the activation sums,
    /// scales applied in one FMA per 8 blocks into one accumulator, one
    /// horizontal sum — with the weights unpacked and their scales gathered
    /// once for all `N`.
    ///
    /// # Safety
    /// AVX2, FMA and F16C available; `row` holds `nb` blocks of the type
    /// and every `a[k]` holds `nb` blocks (32 `nb` quants, `nb` scales and
    /// sums).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dots<const Q41: bool, const N: usize>(row: &[u8], a: &[QRow; N]) -> [f32; N] {
        let bytes = if Q41 { 20 } else { 18 };
        let qs_at = if Q41 { 4 } else { 2 };
        let nb = a[0].d.len();
        let rp = row.as_ptr();
        let low = _mm256_set1_epi8(0xF);
        let step = bytes as i32;
        let offsets = _mm256_setr_epi32(
            0,
            step,
            2 * step,
            3 * step,
            4 * step,
            5 * step,
            6 * step,
            7 * step,
        );
        // Picks the low 16 bits of each 32-bit lane into the low 8 bytes
        // of each 128-bit half.
        let pick = _mm256_setr_epi8(
            0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8, 9, 12, 13, -1,
            -1, -1, -1, -1, -1, -1, -1,
        );
        let mut acc = [_mm256_setzero_ps(); N];
        let mut g = 0;
        while g + 8 <= nb {
            // SAFETY: blocks g..g + 8 lie in `row` (the gather's last
            // 4-byte read ends at bytes (g + 7) + 4 ≤ bytes (g + 8)); quants
            // 32 g .. 32 (g + 8), scales and sums g .. g + 8 lie in every
            // `a[k]` (the caller's contract).
            unsafe {
                let mut w = [_mm256_setzero_si256(); 8];
                for (i, wi) in w.iter_mut().enumerate() {
                    let q = _mm_loadu_si128(rp.add(bytes * (g + i) + qs_at) as *const __m128i);
                    *wi = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), low);
                }
                let d = _mm256_i32gather_epi32::<1>(rp.add(bytes * g) as *const i32, offsets);
                let dw = _mm256_cvtph_ps(_mm256_castsi256_si128(_mm256_permute4x64_epi64(
                    _mm256_shuffle_epi8(d, pick),
                    0b00_00_10_00,
                )));
                let mw = if Q41 {
                    _mm256_cvtph_ps(_mm_packus_epi32(
                        _mm256_castsi256_si128(_mm256_srli_epi32(d, 16)),
                        _mm256_extracti128_si256(_mm256_srli_epi32(d, 16), 1),
                    ))
                } else {
                    _mm256_setzero_ps()
                };
                for k in 0..N {
                    let x = a[k].q.as_ptr().add(32 * g);
                    let mut p = [_mm256_setzero_si256(); 8];
                    for (i, pi) in p.iter_mut().enumerate() {
                        let xi = _mm256_loadu_si256(x.add(32 * i) as *const __m256i);
                        *pi = _mm256_maddubs_epi16(w[i], xi);
                    }
                    let h01 = _mm256_hadd_epi16(p[0], p[1]);
                    let h23 = _mm256_hadd_epi16(p[2], p[3]);
                    let h45 = _mm256_hadd_epi16(p[4], p[5]);
                    let h67 = _mm256_hadd_epi16(p[6], p[7]);
                    let h =
                        _mm256_hadd_epi16(_mm256_hadd_epi16(h01, h23), _mm256_hadd_epi16(h45, h67));
                    let sums = _mm256_add_epi32(
                        _mm256_cvtepi16_epi32(_mm256_castsi256_si128(h)),
                        _mm256_cvtepi16_epi32(_mm256_extracti128_si256(h, 1)),
                    );
                    let s = _mm256_cvtepi16_epi32(_mm_loadu_si128(
                        a[k].s.as_ptr().add(g) as *const __m128i
                    ));
                    let ad = _mm256_loadu_ps(a[k].d.as_ptr().add(g));
                    if Q41 {
                        let scale = _mm256_mul_ps(dw, ad);
                        acc[k] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums), acc[k]);
                        let ms = _mm256_mul_ps(mw, ad);
                        acc[k] = _mm256_fmadd_ps(ms, _mm256_cvtepi32_ps(s), acc[k]);
                    } else {
                        let sums = _mm256_sub_epi32(sums, _mm256_slli_epi32(s, 3));
                        let scale = _mm256_mul_ps(dw, ad);
                        acc[k] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums), acc[k]);
                    }
                }
            }
            g += 8;
        }
        // The last nb mod 8 blocks one at a time, as the single-vector
        // kernels do: an exact integer sum per block, then the same f32
        // expression.
        let mut tail = [0f32; N];
        for b in g..nb {
            let at = bytes * b;
            let (dw, mw) = (f16_at(row, at), if Q41 { f16_at(row, at + 2) } else { 0.0 });
            // SAFETY: block b < nb lies in `row` (the caller's contract).
            let w = unsafe {
                let q = _mm_loadu_si128(rp.add(at + qs_at) as *const __m128i);
                _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), low)
            };
            for k in 0..N {
                // SAFETY: quants 32 b .. 32 b + 32 lie in `a[k]`.
                let dot = unsafe {
                    let x = _mm256_loadu_si256(a[k].q.as_ptr().add(32 * b) as *const __m256i);
                    hsum_i32(_mm256_madd_epi16(
                        _mm256_maddubs_epi16(w, x),
                        _mm256_set1_epi16(1),
                    ))
                };
                let ad = a[k].d[b];
                tail[k] += if Q41 {
                    dw * ad * dot as f32 + mw * ad * a[k].s[b] as f32
                } else {
                    dw * ad * (dot - 8 * a[k].s[b] as i32) as f32
                };
            }
        }
        let mut out = [0f32; N];
        for k in 0..N {
            // SAFETY: AVX2 and FMA are enabled for this function.
            out[k] = unsafe { hsum(acc[k]) } + tail[k];
        }
        out
    }

    /// Sum of the 8 int32 lanes (exact, in any order).
    #[target_feature(enable = "avx2")]
    fn hsum_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::quant::act_blocks;
    use crate::engine::quant::test_rows::{random_rows, INT_TYPES as TYPES};

    /// Whether the batched kernel gives `int_rows_dot`'s bits on every
    /// type, at row lengths of whole and partial groups of 8 blocks (and
    /// of 1 and 3 super-blocks), for 1 to 9 vectors.
    #[test]
    fn batched_rows_equal_the_single_row_kernel_bit_for_bit() {
        let dot = kernels::get().int_rows_dot;
        for t in TYPES {
            for cols in [256, 768, 288, 576, 640] {
                if t.row_bytes(cols).is_none() {
                    continue;
                }
                let (m, rb) = (5, t.row_bytes(cols).unwrap());
                let w = random_rows(t, cols, m, cols as u32 + t as u32);
                for n in 1..=9 {
                    let x: Vec<f32> = (0..n * cols)
                        .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 97.0)
                        .collect();
                    let mut a = QAct::default();
                    a.quantize(act_blocks(t).unwrap(), &x, cols);
                    let mut got = vec![vec![f32::NAN; m]; n];
                    let mut outs: Vec<&mut [f32]> =
                        got.iter_mut().map(|v| v.as_mut_slice()).collect();
                    rows_many(t, &w, rb, &a, &mut outs);
                    for (k, g) in got.iter().enumerate() {
                        let mut want = vec![0f32; m];
                        dot(t, &w, rb, a.row(k), &mut want);
                        let same = g.iter().zip(&want).all(|(p, q)| p.to_bits() == q.to_bits());
                        assert!(
                            same,
                            "{t:?} cols {cols} n {n} vector {k}: {g:?} vs {want:?}"
                        );
                    }
                }
            }
        }
    }

    /// Rows that are not what they claim fall back instead of reading past
    /// the end.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_8_block_kernel_refuses_short_rows() {
        let t = WeightType::Q4_0;
        let cols = 256;
        let rb = t.row_bytes(cols).unwrap();
        let w = random_rows(t, cols, 2, 7);
        let x = vec![0.5f32; 2 * cols];
        let mut a = QAct::default();
        a.quantize(act_blocks(t).unwrap(), &x, cols);
        let mut got = vec![vec![0f32; 3]; 2];
        let mut outs: Vec<&mut [f32]> = got.iter_mut().map(|v| v.as_mut_slice()).collect();
        assert!(!x86::by8(t, &w, rb, &a, &mut outs));
        let mut one = vec![vec![0f32; 2]; 3];
        let mut outs: Vec<&mut [f32]> = one.iter_mut().map(|v| v.as_mut_slice()).collect();
        assert!(!x86::by8(t, &w, rb, &a, &mut outs), "3 vectors of 2");
    }
}
