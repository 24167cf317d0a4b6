//! Blocks of 32 (q8_0, q4_0, q4_1, q5_0, q5_1): one activation scale and
//! sum per block. The scalar twin and the AVX2 kernels.

use super::{idot, u32_at};
use crate::engine::quant::{f16_at, QRow, WeightType};

/// The scalar twin for the 32-value block types.
pub(super) fn dot_scalar(t: WeightType, row: &[u8], a: QRow) -> f32 {
    let mut total = 0f32;
    let mut w = [0i32; 32];
    let bytes = t.block_bytes();
    for (b, blk) in row.chunks_exact(bytes).take(a.d.len()).enumerate() {
        // Offset formats: the weights taken unsigned, the offset
        // (q4_0's 8, q5_0's 16) as offset · Σa, the min (q4_1,
        // q5_1) as m · d_a · Σa.
        let (qs, qh, offset, min) = match t {
            WeightType::Q8_0 => (&blk[2..34], 0, 0, 0.0),
            WeightType::Q4_0 => (&blk[2..18], 0, 8, 0.0),
            WeightType::Q4_1 => (&blk[4..20], 0, 0, f16_at(blk, 2)),
            WeightType::Q5_0 => (&blk[6..22], u32_at(blk, 2), 16, 0.0),
            _ => (&blk[8..24], u32_at(blk, 4), 0, f16_at(blk, 2)),
        };
        if t == WeightType::Q8_0 {
            for (o, &q) in w.iter_mut().zip(qs) {
                *o = q as i8 as i32;
            }
        } else {
            for j in 0..16 {
                w[j] = (qs[j] & 0xF) as i32 | (((qh >> j) & 1) << 4) as i32;
                w[j + 16] = (qs[j] >> 4) as i32 | (((qh >> (j + 16)) & 1) << 4) as i32;
            }
        }
        let s = a.s[b] as i32;
        let dot = idot(&w, &a.q[32 * b..32 * b + 32]) - offset * s;
        total += f16_at(blk, 0) * a.d[b] * dot as f32 + min * a.d[b] * s as f32;
    }
    total
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use super::super::x86::{h2f, load32};
    use crate::engine::kernels::f32::hsum;
    use crate::engine::quant::QRow;
    use std::arch::x86_64::*;

    /// The int32 lanes of Σ u·s over each 4 bytes of `u` (unsigned) and
    /// `s` (signed): `vpdpbusd` with VNNI, else `maddubs` then `madd` by
    /// ones. The same sums whenever no adjacent pair's Σ exceeds i16 (true
    /// for every caller: |u| ≤ 128 for q8_0's signs, ≤ 31 for the rest),
    /// so both bodies give identical results.
    macro_rules! udot {
        (true, $u:expr, $s:expr) => {
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), $u, $s)
        };
        (false, $u:expr, $s:expr) => {
            _mm256_madd_epi16(_mm256_maddubs_epi16($u, $s), _mm256_set1_epi16(1))
        };
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

    /// The 32-value block kernels, generated once per instruction set
    /// (`$feat`; `$vnni`: products through `vpdpbusd`), so that each body
    /// is compiled with its own features and the VNNI instruction inlines.
    macro_rules! b32_kernels {
        ($feat:literal, $vnni:tt, $blocks32:ident, $unsigned32:ident) => {
            /// Σ over 32-value blocks of `d_w · d_a · (w · a)` for `N` vectors,
            /// each weight block unpacked once.
            #[target_feature(enable = $feat)]
            unsafe fn $blocks32<const Q4: bool, const N: usize>(
                row: &[u8],
                a: &[QRow; N],
            ) -> [f32; N] {
                let bytes = if Q4 { 18 } else { 34 };
                let nb = row.len() / bytes;
                let nb = a.iter().fold(nb, |m, a| m.min(a.d.len()));
                let rp = row.as_ptr();
                // Two accumulators per vector (even and odd blocks), so one
                // vector's FMAs do not wait on each other.
                let mut even = [_mm256_setzero_ps(); N];
                let mut odd = [_mm256_setzero_ps(); N];
                let block = |b: usize, acc: &mut [__m256; N]| {
                    let dw = h2f(row, b * bytes);
                    // SAFETY: block b < nb lies in `row`; its 32 activation quants
                    // lie in every `a[k].q` (checked by the caller).
                    unsafe {
                        // A hint only: the address may lie past the row, so it is
                        // formed without `add`'s in-bounds requirement.
                        _mm_prefetch::<_MM_HINT_T0>(rp.wrapping_add(b * bytes + 512) as *const i8);
                        if Q4 {
                            // Nibbles unsigned into `maddubs`; the offset of 8
                            // comes off as 8 Σa.
                            let q = _mm_loadu_si128(rp.add(b * bytes + 2) as *const __m128i);
                            let w = _mm256_and_si256(
                                _mm256_set_m128i(_mm_srli_epi16(q, 4), q),
                                _mm256_set1_epi8(0xF),
                            );
                            for k in 0..N {
                                let x = load32(a[k].q.as_ptr().add(32 * b));
                                let p = udot!($vnni, w, x);
                                let p = _mm256_sub_epi32(
                                    p,
                                    _mm256_setr_epi32(8 * a[k].s[b] as i32, 0, 0, 0, 0, 0, 0, 0),
                                );
                                let s = _mm256_set1_ps(dw * a[k].d[b]);
                                acc[k] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(p), acc[k]);
                            }
                        } else {
                            let w = weights::<Q4>(rp.add(b * bytes));
                            let aw = _mm256_sign_epi8(w, w);
                            for k in 0..N {
                                let x = _mm256_sign_epi8(load32(a[k].q.as_ptr().add(32 * b)), w);
                                let p = udot!($vnni, aw, x);
                                let s = _mm256_set1_ps(dw * a[k].d[b]);
                                acc[k] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(p), acc[k]);
                            }
                        }
                    }
                };
                let mut b = 0;
                while b + 2 <= nb {
                    block(b, &mut even);
                    block(b + 1, &mut odd);
                    b += 2;
                }
                if b < nb {
                    block(b, &mut even);
                }
                // SAFETY: AVX2 is enabled for this function.
                unsafe {
                    let mut out = [0f32; N];
                    for k in 0..N {
                        out[k] = hsum(_mm256_add_ps(even[k], odd[k]));
                    }
                    out
                }
            }

            /// q4_1, q5_0, q5_1 (`K`): the 4- or 5-bit values unsigned into
            /// `maddubs` (each 16-bit pair at most 2 · 31 · 127), q5_0's offset of
            /// 16 taken off as 16 Σa in int32, the mins (q4_1, q5_1) added as
            /// m · d_a · Σa in f32 once per block.
            #[target_feature(enable = $feat)]
            pub(in crate::engine::kernels::int8) unsafe fn $unsigned32<
                const K: u8,
                const N: usize,
            >(
                row: &[u8],
                a: &[QRow; N],
            ) -> [f32; N] {
                let (bytes, qs_at) = match K {
                    Q4_1 => (20, 4),
                    Q5_0 => (22, 6),
                    _ => (24, 8),
                };
                let nb = a.iter().fold(row.len() / bytes, |m, a| m.min(a.d.len()));
                let rp = row.as_ptr();
                let low = _mm256_set1_epi8(0xF);
                let mut even = [_mm256_setzero_ps(); N];
                let mut odd = [_mm256_setzero_ps(); N];
                let mut mins = [0f32; N];
                let mut block = |b: usize, acc: &mut [__m256; N]| {
                    let at = b * bytes;
                    let dw = h2f(row, at);
                    let q = &row[at..at + bytes];
                    // SAFETY: block b < nb lies in `row` (`q` is its bytes); its 32
                    // activation quants and its sum lie in every `a[k]` (checked
                    // by the caller).
                    unsafe {
                        // A hint only: the address may lie past the row.
                        _mm_prefetch::<_MM_HINT_T0>(rp.wrapping_add(at + 512) as *const i8);
                        let nib = _mm_loadu_si128(q.as_ptr().add(qs_at) as *const __m128i);
                        let mut w =
                            _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(nib, 4), nib), low);
                        if K != Q4_1 {
                            let qh = u32::from_le_bytes([
                                q[qs_at - 4],
                                q[qs_at - 3],
                                q[qs_at - 2],
                                q[qs_at - 1],
                            ]);
                            w = _mm256_or_si256(w, high_bits(qh));
                        }
                        let m = if K == Q5_0 { 0.0 } else { h2f(q, 2) };
                        for k in 0..N {
                            let x = load32(a[k].q.as_ptr().add(32 * b));
                            let mut p = udot!($vnni, w, x);
                            let s = a[k].s[b] as i32;
                            if K == Q5_0 {
                                p = _mm256_sub_epi32(
                                    p,
                                    _mm256_setr_epi32(16 * s, 0, 0, 0, 0, 0, 0, 0),
                                );
                            } else {
                                mins[k] += m * a[k].d[b] * s as f32;
                            }
                            let sc = _mm256_set1_ps(dw * a[k].d[b]);
                            acc[k] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(p), acc[k]);
                        }
                    }
                };
                let mut b = 0;
                while b + 2 <= nb {
                    block(b, &mut even);
                    block(b + 1, &mut odd);
                    b += 2;
                }
                if b < nb {
                    block(b, &mut even);
                }
                let mut out = [0f32; N];
                for k in 0..N {
                    // SAFETY: AVX2 is enabled for this function.
                    out[k] = unsafe { hsum(_mm256_add_ps(even[k], odd[k])) } + mins[k];
                }
                out
            }
        };
    }

    b32_kernels!("avx2,fma,f16c", false, blocks32, unsigned32);
    b32_kernels!(
        "avx2,fma,f16c,avx512vnni,avx512vl",
        true,
        blocks32_vnni,
        unsigned32_vnni
    );

    pub(in crate::engine::kernels::int8) const Q8_0: u8 = 0;
    pub(in crate::engine::kernels::int8) const Q4_0: u8 = 4;
    pub(in crate::engine::kernels::int8) const Q4_1: u8 = 1;
    pub(in crate::engine::kernels::int8) const Q5_0: u8 = 2;
    pub(in crate::engine::kernels::int8) const Q5_1: u8 = 3;

    /// The 32 bits of `qh` as 32 bytes, 0x10 where the bit is set (byte i
    /// from bit i): each byte of `qh` is spread over 8 bytes, every byte
    /// but its own bit set to 1, and compared with all ones.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn high_bits(qh: u32) -> __m256i {
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(qh as i32),
            _mm256_setr_epi64x(
                0,
                0x0101_0101_0101_0101,
                0x0202_0202_0202_0202,
                0x0303_0303_0303_0303,
            ),
        );
        let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe_u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi8(-1));
        _mm256_and_si256(set, _mm256_set1_epi8(0x10))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::engine::kernels::int8) unsafe fn q8_0<const N: usize>(
        row: &[u8],
        a: &[QRow; N],
    ) -> [f32; N] {
        // SAFETY: same requirements as this function's.
        unsafe { blocks32::<false, N>(row, a) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::engine::kernels::int8) unsafe fn q4_0<const N: usize>(
        row: &[u8],
        a: &[QRow; N],
    ) -> [f32; N] {
        if N == 1 {
            // SAFETY: same requirements as this function's.
            return [unsafe { q4_0_by8(row, &a[0]) }; N];
        }
        // SAFETY: same requirements as this function's.
        unsafe { blocks32::<true, N>(row, a) }
    }

    /// The 32-value block types with AVX-512 VNNI (`vpdpbusd` on 256-bit
    /// vectors): q8_0 (`K` = 0), q4_0 (`K` = 4), q4_1, q5_0, q5_1; the
    /// same sums as the AVX2 kernels.
    ///
    /// # Safety
    /// As the AVX2 kernels, and AVX-512 VNNI and VL available.
    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    pub(in crate::engine::kernels::int8) unsafe fn vnni32<const K: u8, const N: usize>(
        row: &[u8],
        a: &[QRow; N],
    ) -> [f32; N] {
        // SAFETY: same requirements as this function's; VNNI and VL
        // enabled here, so the `VNNI` bodies may run.
        unsafe {
            match K {
                Q8_0 => blocks32_vnni::<false, N>(row, a),
                Q4_0 => blocks32_vnni::<true, N>(row, a),
                Q4_1 => unsigned32_vnni::<Q4_1, N>(row, a),
                Q5_0 => unsigned32_vnni::<Q5_0, N>(row, a),
                _ => unsigned32_vnni::<Q5_1, N>(row, a),
            }
        }
    }

    /// The first 4 bytes of the 8 blocks of `bytes` each from block `g`
    /// (a block's scale f16, then a min's or its next 2 bytes), one per
    /// 32-bit lane.
    ///
    /// # Safety
    /// Blocks `g..g + 8` lie in the memory at `rp` (the last read ends at
    /// bytes (g + 7) + 4 ≤ bytes (g + 8)); AVX2.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn heads8(rp: *const u8, bytes: usize, g: usize) -> __m256i {
        let step = bytes as i32;
        let offsets = _mm256_mullo_epi32(
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            _mm256_set1_epi32(step),
        );
        // SAFETY: forwarded from the caller.
        unsafe { _mm256_i32gather_epi32::<1>(rp.add(bytes * g) as *const i32, offsets) }
    }

    /// The f16 in the low 16 bits of each 32-bit lane, as 8 f32.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    fn low_f16s(d: __m256i) -> __m256 {
        // Picks the low 16 bits of each lane into the low 8 bytes of each
        // 128-bit half, then the two halves' 8 bytes together.
        let pick = _mm256_setr_epi8(
            0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8, 9, 12, 13, -1,
            -1, -1, -1, -1, -1, -1, -1,
        );
        let d = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(d, pick), 0b00_00_10_00);
        _mm256_cvtph_ps(_mm256_castsi256_si128(d))
    }

    /// The f16 in the high 16 bits of each 32-bit lane, as 8 f32.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    fn high_f16s(d: __m256i) -> __m256 {
        let h = _mm256_srli_epi32(d, 16);
        _mm256_cvtph_ps(_mm_packus_epi32(
            _mm256_castsi256_si128(h),
            _mm256_extracti128_si256(h, 1),
        ))
    }

    /// q4_1 · one vector, 8 blocks at a time, as [`q4_0_by8`] without
    /// the offset; one gather reads each block's scale and min (its first
    /// 4 bytes), and the mins apply as m · d_a · Σa in one more FMA.
    ///
    /// # Safety
    /// As [`q4_0_by8`], for q4_1 (20-byte) blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::engine::kernels::int8) unsafe fn q4_1_by8(row: &[u8], a: &QRow) -> f32 {
        let nb = a.d.len();
        let rp = row.as_ptr();
        let low = _mm256_set1_epi8(0xF);
        let mut acc = _mm256_setzero_ps();
        let mut g = 0;
        while g + 8 <= nb {
            // SAFETY: blocks g..g + 8 lie in `row` (the caller checked the
            // row holds nb blocks; the gather's last 4-byte read ends at
            // 20 (g + 7) + 4 ≤ 20 (g + 8)); quants 32 g .. 32 (g + 8) and
            // sums g .. g + 8 lie in `a`.
            unsafe {
                let mut m = [_mm256_setzero_si256(); 8];
                for (k, mk) in m.iter_mut().enumerate() {
                    let b = g + k;
                    let q = _mm_loadu_si128(rp.add(20 * b + 4) as *const __m128i);
                    let w = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), low);
                    *mk = _mm256_maddubs_epi16(w, load32(a.q.as_ptr().add(32 * b)));
                }
                let h01 = _mm256_hadd_epi16(m[0], m[1]);
                let h23 = _mm256_hadd_epi16(m[2], m[3]);
                let h45 = _mm256_hadd_epi16(m[4], m[5]);
                let h67 = _mm256_hadd_epi16(m[6], m[7]);
                let h = _mm256_hadd_epi16(_mm256_hadd_epi16(h01, h23), _mm256_hadd_epi16(h45, h67));
                // Each half holds the 8 blocks' partial sums; widen, add.
                let sums = _mm256_add_epi32(
                    _mm256_cvtepi16_epi32(_mm256_castsi256_si128(h)),
                    _mm256_cvtepi16_epi32(_mm256_extracti128_si256(h, 1)),
                );
                let s =
                    _mm256_cvtepi16_epi32(_mm_loadu_si128(a.s.as_ptr().add(g) as *const __m128i));
                let d = heads8(rp, 20, g);
                let (dw, mw) = (low_f16s(d), high_f16s(d));
                let ad = _mm256_loadu_ps(a.d.as_ptr().add(g));
                let scale = _mm256_mul_ps(dw, ad);
                acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums), acc);
                let ms = _mm256_mul_ps(mw, ad);
                acc = _mm256_fmadd_ps(ms, _mm256_cvtepi32_ps(s), acc);
            }
            g += 8;
        }
        // The last nb mod 8 blocks one at a time (rows of 576 or 640
        // values, as SmolLM2's and Gemma 3's, end in 2 or 4 of them).
        let mut tail = 0f32;
        for b in g..nb {
            // SAFETY: block b < nb lies in `row` and its quants in `a`.
            let dot = unsafe { nibbles_dot(rp.add(20 * b + 4), a.q.as_ptr().add(32 * b)) };
            let ad = a.d[b];
            tail += h2f(row, 20 * b) * ad * dot as f32 + h2f(row, 20 * b + 2) * ad * a.s[b] as f32;
        }
        // SAFETY: AVX2 is enabled for this function.
        unsafe { hsum(acc) + tail }
    }

    /// q5_0 or q5_1 (`K`) · one vector, 8 blocks at a time, as
    /// [`q4_1_by8`] but with the blocks' sums folded in int32 (16 bits
    /// would overflow: 8 · 2 · 31 · 127); q5_0's offset of 16 comes off as
    /// 16 Σa, q5_1's mins apply as m · d_a · Σa.
    ///
    /// # Safety
    /// As [`q4_0_by8`], for blocks of `K` (22 or 24 bytes). (q8_0 keeps
    /// its one-block VNNI kernel: as fast, its bytes bound by memory.)
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::engine::kernels::int8) unsafe fn i32_by8<const K: u8>(
        row: &[u8],
        a: &QRow,
    ) -> f32 {
        let bytes = if K == Q5_0 { 22 } else { 24 };
        let nb = a.d.len();
        let rp = row.as_ptr();
        let mut acc = _mm256_setzero_ps();
        let mut g = 0;
        while g + 8 <= nb {
            // SAFETY: blocks g..g + 8 lie in `row` (the caller checked the
            // row holds nb blocks; the gather's last 4-byte read ends at
            // bytes (g + 7) + 4 ≤ bytes (g + 8)); quants 32 g .. 32 (g + 8)
            // and sums g .. g + 8 lie in `a`.
            unsafe {
                let mut m = [_mm256_setzero_si256(); 8];
                for (k, mk) in m.iter_mut().enumerate() {
                    let b = g + k;
                    *mk = block_i32::<K>(rp.add(bytes * b), a.q.as_ptr().add(32 * b));
                }
                // Per 128-bit half: blocks 0-3's sums over their first
                // (low half) or last 16 values; the same for 4-7.
                let lo =
                    _mm256_hadd_epi32(_mm256_hadd_epi32(m[0], m[1]), _mm256_hadd_epi32(m[2], m[3]));
                let hi =
                    _mm256_hadd_epi32(_mm256_hadd_epi32(m[4], m[5]), _mm256_hadd_epi32(m[6], m[7]));
                let mut sums = _mm256_add_epi32(
                    _mm256_permute2x128_si256::<0x20>(lo, hi),
                    _mm256_permute2x128_si256::<0x31>(lo, hi),
                );
                let d = heads8(rp, bytes, g);
                let dw = low_f16s(d);
                let ad = _mm256_loadu_ps(a.d.as_ptr().add(g));
                if K == Q5_0 {
                    let s = _mm256_cvtepi16_epi32(_mm_loadu_si128(
                        a.s.as_ptr().add(g) as *const __m128i
                    ));
                    sums = _mm256_sub_epi32(sums, _mm256_slli_epi32(s, 4));
                }
                acc = _mm256_fmadd_ps(_mm256_mul_ps(dw, ad), _mm256_cvtepi32_ps(sums), acc);
                if K == Q5_1 {
                    let s = _mm256_cvtepi16_epi32(_mm_loadu_si128(
                        a.s.as_ptr().add(g) as *const __m128i
                    ));
                    let mw = high_f16s(d);
                    acc = _mm256_fmadd_ps(_mm256_mul_ps(mw, ad), _mm256_cvtepi32_ps(s), acc);
                }
            }
            g += 8;
        }
        let mut tail = 0f32;
        for b in g..nb {
            let at = bytes * b;
            // SAFETY: block b < nb lies in `row` and its quants in `a`.
            let dot = unsafe {
                super::super::x86::hsum_i32(block_i32::<K>(rp.add(at), a.q.as_ptr().add(32 * b)))
            };
            let (ad, s) = (a.d[b], a.s[b] as i32);
            tail += if K == Q5_0 {
                h2f(row, at) * ad * (dot - 16 * s) as f32
            } else {
                h2f(row, at) * ad * dot as f32 + h2f(row, at + 2) * ad * s as f32
            };
        }
        // SAFETY: AVX2 is enabled for this function.
        unsafe { hsum(acc) + tail }
    }

    /// The 8 int32 partial sums of one block of `K` (q5_0, q5_1) at `p`
    /// times the 32 activation quants at `x`, the values unsigned as stored.
    ///
    /// # Safety
    /// A whole block at `p`, 32 readable bytes at `x`; AVX2.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn block_i32<const K: u8>(p: *const u8, x: *const i8) -> __m256i {
        // SAFETY: forwarded from the caller.
        unsafe {
            let x = load32(x);
            let ones = _mm256_set1_epi16(1);
            let qs = p.add(if K == Q5_0 { 6 } else { 8 });
            let qh = u32::from_le((qs.sub(4) as *const u32).read_unaligned());
            let q = _mm_loadu_si128(qs as *const __m128i);
            let w = _mm256_and_si256(
                _mm256_set_m128i(_mm_srli_epi16(q, 4), q),
                _mm256_set1_epi8(0xF),
            );
            let w = _mm256_or_si256(w, high_bits(qh));
            _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones)
        }
    }

    /// Σ over one block of its 32 nibbles (16 bytes at `q`, low nibbles
    /// first) times the 32 activation quants at `x`, unsigned as stored.
    ///
    /// # Safety
    /// 16 readable bytes at `q`, 32 at `x`; AVX2.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn nibbles_dot(q: *const u8, x: *const i8) -> i32 {
        // SAFETY: forwarded from the caller.
        unsafe {
            let q = _mm_loadu_si128(q as *const __m128i);
            let w = _mm256_and_si256(
                _mm256_set_m128i(_mm_srli_epi16(q, 4), q),
                _mm256_set1_epi8(0xF),
            );
            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(w, load32(x)), _mm256_set1_epi16(1));
            super::super::x86::hsum_i32(p)
        }
    }

    /// q4_0 · one vector, 8 blocks at a time: the blocks' 16-bit partial
    /// sums are folded into one vector of 8 block sums (`hadd`, no
    /// overflow: each lane stays under 8 · 2 · 15 · 127), the offset of 8
    /// comes off through the activation sums, and the 8 scales (gathered
    /// f16 weights' scales × activation scales) apply in one FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_0_by8(row: &[u8], a: &QRow) -> f32 {
        let nb = a.d.len();
        let rp = row.as_ptr();
        let low = _mm256_set1_epi8(0xF);
        let mut acc = _mm256_setzero_ps();
        let mut g = 0;
        while g + 8 <= nb {
            // SAFETY: blocks g..g + 8 lie in `row` (the caller checked the
            // row holds nb blocks; the gather's last 4-byte read ends at
            // 18 (g + 7) + 4 ≤ 18 (g + 8)); quants 32 g .. 32 (g + 8) and
            // sums g .. g + 8 lie in `a`.
            unsafe {
                let mut m = [_mm256_setzero_si256(); 8];
                for (k, mk) in m.iter_mut().enumerate() {
                    let b = g + k;
                    let q = _mm_loadu_si128(rp.add(18 * b + 2) as *const __m128i);
                    let w = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), low);
                    *mk = _mm256_maddubs_epi16(w, load32(a.q.as_ptr().add(32 * b)));
                }
                let h01 = _mm256_hadd_epi16(m[0], m[1]);
                let h23 = _mm256_hadd_epi16(m[2], m[3]);
                let h45 = _mm256_hadd_epi16(m[4], m[5]);
                let h67 = _mm256_hadd_epi16(m[6], m[7]);
                let h = _mm256_hadd_epi16(_mm256_hadd_epi16(h01, h23), _mm256_hadd_epi16(h45, h67));
                // Each half holds the 8 blocks' partial sums; widen, add.
                let sums = _mm256_add_epi32(
                    _mm256_cvtepi16_epi32(_mm256_castsi256_si128(h)),
                    _mm256_cvtepi16_epi32(_mm256_extracti128_si256(h, 1)),
                );
                let s =
                    _mm256_cvtepi16_epi32(_mm_loadu_si128(a.s.as_ptr().add(g) as *const __m128i));
                let sums = _mm256_sub_epi32(sums, _mm256_slli_epi32(s, 3));
                let dw = low_f16s(heads8(rp, 18, g));
                let scale = _mm256_mul_ps(dw, _mm256_loadu_ps(a.d.as_ptr().add(g)));
                acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums), acc);
            }
            g += 8;
        }
        // The last nb mod 8 blocks one at a time.
        let mut tail = 0f32;
        for b in g..nb {
            // SAFETY: block b < nb lies in `row` and its quants in `a`.
            let dot = unsafe { nibbles_dot(rp.add(18 * b + 2), a.q.as_ptr().add(32 * b)) };
            tail += h2f(row, 18 * b) * a.d[b] * (dot - 8 * a.s[b] as i32) as f32;
        }
        // SAFETY: AVX2 is enabled for this function.
        unsafe { hsum(acc) + tail }
    }
}
