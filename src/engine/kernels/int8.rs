//! Integer dot products, as llama.cpp does them: the activations are
//! quantized once per matmul to int8 with f32 scales, and each weight
//! block is multiplied in int8 × int8 → int32 (AVX2 `maddubs`), the float
//! scales applied as late as the format allows. Two activation layouts:
//! blocks of 32 (one scale and sum each) for q8_0/q4_0, and super-blocks of
//! 256 (one scale, a sum per 16) for the k-quants, whose kernels then sum a
//! whole super-block in int32 and convert once. The scalar twin does the
//! same integer arithmetic without SIMD.

use crate::engine::quant::{f16_at, scale_min_k4, QRow, WeightType};

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
    let mut total = 0f32;
    let mut w = [0i32; 32];
    match t {
        WeightType::Q8_0
        | WeightType::Q4_0
        | WeightType::Q4_1
        | WeightType::Q5_0
        | WeightType::Q5_1 => {
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
        }
        WeightType::Q4K => {
            for (bi, blk) in row.chunks_exact(144).take(a.d.len()).enumerate() {
                let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
                let (aq, bs) = (&a.q[256 * bi..256 * bi + 256], &a.s[16 * bi..16 * bi + 16]);
                let (mut sumi, mut summ) = (0i32, 0i32);
                for c in 0..4 {
                    let q = &blk[16 + 32 * c..48 + 32 * c];
                    for (half, shift) in [(0usize, 0u32), (1, 4)] {
                        let j = 2 * c + half;
                        let (sc, m) = scale_min_k4(j, &blk[4..16]);
                        for (o, &x) in w.iter_mut().zip(q) {
                            *o = ((x >> shift) & 0xF) as i32;
                        }
                        sumi += sc as i32 * idot(&w, &aq[32 * j..32 * j + 32]);
                        summ += m as i32 * (bs[2 * j] as i32 + bs[2 * j + 1] as i32);
                    }
                }
                total += d * a.d[bi] * sumi as f32 - dmin * a.d[bi] * summ as f32;
            }
        }
        WeightType::Q6K => {
            for (bi, blk) in row.chunks_exact(210).take(a.d.len()).enumerate() {
                let d = f16_at(blk, 208);
                let aq = &a.q[256 * bi..256 * bi + 256];
                let mut sumi = 0i32;
                for n in 0..2 {
                    let (ql, qh, sc) = (
                        &blk[64 * n..64 * n + 64],
                        &blk[128 + 32 * n..160 + 32 * n],
                        &blk[192 + 8 * n..200 + 8 * n],
                    );
                    for j in 0..4 {
                        for l in 0..32 {
                            let lo = if j % 2 == 0 { ql[l] } else { ql[l + 32] };
                            let lo = if j < 2 { lo & 0xF } else { lo >> 4 };
                            w[l] = (lo | (((qh[l] >> (2 * j)) & 3) << 4)) as i32 - 32;
                        }
                        let x = &aq[128 * n + 32 * j..128 * n + 32 * j + 32];
                        let (s0, s1) = (sc[2 * j] as i8 as i32, sc[2 * j + 1] as i8 as i32);
                        sumi += s0 * idot(&w[..16], &x[..16]) + s1 * idot(&w[16..], &x[16..]);
                    }
                }
                total += d * a.d[bi] * sumi as f32;
            }
        }
        _ => {}
    }
    total
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
    use super::super::f32::hsum;
    use super::{QRow, WeightType};
    use std::arch::x86_64::*;

    /// Whether `row` and `a` hold whole blocks of `t` for `a.q.len()` values.
    fn fits(t: WeightType, row: &[u8], a: &QRow) -> bool {
        let elems = a.q.len();
        let per_scale = match t {
            WeightType::Q8_0
            | WeightType::Q4_0
            | WeightType::Q4_1
            | WeightType::Q5_0
            | WeightType::Q5_1 => 32,
            _ => 256,
        };
        a.d.len() * per_scale == elems
            && (per_scale == 32 || a.s.len() * 16 == elems)
            && t.row_bytes(elems).is_some_and(|b| b <= row.len())
    }

    /// `N` dot products of one row; `None` for types without a kernel.
    ///
    /// # Safety
    /// AVX2 and FMA available; every `a` passes [`fits`].
    #[inline(always)]
    unsafe fn dots<const N: usize>(t: WeightType, row: &[u8], a: &[QRow; N]) -> Option<[f32; N]> {
        // SAFETY: forwarded from the caller.
        unsafe {
            Some(match t {
                WeightType::Q8_0 => q8_0::<N>(row, a),
                WeightType::Q4_0 => q4_0::<N>(row, a),
                WeightType::Q4_1 if N == 1 && a[0].d.len().is_multiple_of(8) => {
                    [q4_1_by8(row, &a[0]); N]
                }
                WeightType::Q4_1 => unsigned32::<Q4_1, N>(row, a),
                WeightType::Q5_0 => unsigned32::<Q5_0, N>(row, a),
                WeightType::Q5_1 => unsigned32::<Q5_1, N>(row, a),
                WeightType::Q4K => q4k::<N>(row, a),
                WeightType::Q6K => q6k::<N>(row, a),
                _ => return None,
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
        let whole = out.len().checked_mul(rb).is_some_and(|n| n <= rows.len());
        if !whole
            || !fits(t, &rows[..rb.min(rows.len())], &a)
            || crate::engine::quant::act_blocks(t).is_none()
        {
            return super::rows_dot_scalar(t, rows, rb, a, out);
        }
        for (j, o) in out.iter_mut().enumerate() {
            let row = &rows[j * rb..(j + 1) * rb];
            // SAFETY: chosen after AVX2, FMA and F16C were detected; every
            // row is `rb` bytes, which fit `a` (checked above).
            *o = unsafe { dots::<1>(t, row, &[a]) }.map_or(0.0, |r| r[0]);
        }
    }

    /// The f16 at `b[at..at + 2]` (F16C; no table, which would crowd the
    /// weights out of the cache).
    #[target_feature(enable = "f16c")]
    #[inline]
    fn h2f(b: &[u8], at: usize) -> f32 {
        let bits = u16::from_le_bytes([b[at], b[at + 1]]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
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

    /// Σ over 32-value blocks of `d_w · d_a · (w · a)` for `N` vectors,
    /// each weight block unpacked once.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn blocks32<const Q4: bool, const N: usize>(row: &[u8], a: &[QRow; N]) -> [f32; N] {
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
                _mm_prefetch::<_MM_HINT_T0>(rp.add(b * bytes + 512) as *const i8);
                let ones = _mm256_set1_epi16(1);
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
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones);
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
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, x), ones);
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

    const Q4_1: u8 = 1;
    const Q5_0: u8 = 2;
    const Q5_1: u8 = 3;

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

    /// q4_1, q5_0, q5_1 (`K`): the 4- or 5-bit values unsigned into
    /// `maddubs` (each 16-bit pair at most 2 · 31 · 127), q5_0's offset of
    /// 16 taken off as 16 Σa in int32, the mins (q4_1, q5_1) added as
    /// m · d_a · Σa in f32 once per block.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unsigned32<const K: u8, const N: usize>(row: &[u8], a: &[QRow; N]) -> [f32; N] {
        let (bytes, qs_at) = match K {
            Q4_1 => (20, 4),
            Q5_0 => (22, 6),
            _ => (24, 8),
        };
        let nb = a.iter().fold(row.len() / bytes, |m, a| m.min(a.d.len()));
        let rp = row.as_ptr();
        let low = _mm256_set1_epi8(0xF);
        let ones = _mm256_set1_epi16(1);
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
                _mm_prefetch::<_MM_HINT_T0>(rp.add(at + 512) as *const i8);
                let nib = _mm_loadu_si128(q.as_ptr().add(qs_at) as *const __m128i);
                let mut w = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(nib, 4), nib), low);
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
                    let mut p = _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones);
                    let s = a[k].s[b] as i32;
                    if K == Q5_0 {
                        p = _mm256_sub_epi32(p, _mm256_setr_epi32(16 * s, 0, 0, 0, 0, 0, 0, 0));
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

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q8_0<const N: usize>(row: &[u8], a: &[QRow; N]) -> [f32; N] {
        // SAFETY: same requirements as this function's.
        unsafe { blocks32::<false, N>(row, a) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_0<const N: usize>(row: &[u8], a: &[QRow; N]) -> [f32; N] {
        if N == 1 && a[0].d.len().is_multiple_of(8) {
            // SAFETY: same requirements as this function's; whole groups
            // of 8 blocks (checked).
            return [unsafe { q4_0_by8(row, &a[0]) }; N];
        }
        // SAFETY: same requirements as this function's.
        unsafe { blocks32::<true, N>(row, a) }
    }

    /// q4_1 · one vector, 8 blocks at a time, as [`q4_0_by8`] without
    /// the offset; one gather reads each block's scale and min (its first
    /// 4 bytes), and the mins apply as m · d_a · Σa in one more FMA.
    ///
    /// # Safety
    /// As [`q4_0_by8`], for q4_1 (20-byte) blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_1_by8(row: &[u8], a: &QRow) -> f32 {
        let nb = a.d.len();
        let rp = row.as_ptr();
        let low = _mm256_set1_epi8(0xF);
        // Byte offsets of the 8 blocks' scales; the gather reads 4 bytes
        // at each: the scale's f16, then the min's.
        let offsets = _mm256_setr_epi32(0, 20, 40, 60, 80, 100, 120, 140);
        // Picks the low 16 bits of each 32-bit lane into the low 8 bytes
        // of each 128-bit half.
        let pick = _mm256_setr_epi8(
            0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8, 9, 12, 13, -1,
            -1, -1, -1, -1, -1, -1, -1,
        );
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
                let d = _mm256_i32gather_epi32::<1>(rp.add(20 * g) as *const i32, offsets);
                let dm = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(d, pick), 0b00_00_10_00);
                let dw = _mm256_cvtph_ps(_mm256_castsi256_si128(dm));
                let mw = _mm256_cvtph_ps(_mm_packus_epi32(
                    _mm256_castsi256_si128(_mm256_srli_epi32(d, 16)),
                    _mm256_extracti128_si256(_mm256_srli_epi32(d, 16), 1),
                ));
                let ad = _mm256_loadu_ps(a.d.as_ptr().add(g));
                let scale = _mm256_mul_ps(dw, ad);
                acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums), acc);
                let ms = _mm256_mul_ps(mw, ad);
                acc = _mm256_fmadd_ps(ms, _mm256_cvtepi32_ps(s), acc);
            }
            g += 8;
        }
        // SAFETY: AVX2 is enabled for this function.
        unsafe { hsum(acc) }
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
        // Byte offsets of the 8 blocks' scales; the gather reads 4 bytes
        // at each, of which the low 2 are the f16.
        let offsets = _mm256_setr_epi32(0, 18, 36, 54, 72, 90, 108, 126);
        // Picks the low 16 bits of each 32-bit lane into the low 8 bytes
        // of each 128-bit half.
        let pick = _mm256_setr_epi8(
            0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8, 9, 12, 13, -1,
            -1, -1, -1, -1, -1, -1, -1,
        );
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
                let d = _mm256_i32gather_epi32::<1>(rp.add(18 * g) as *const i32, offsets);
                let d = _mm256_shuffle_epi8(d, pick);
                let d = _mm256_permute4x64_epi64(d, 0b00_00_10_00);
                let dw = _mm256_cvtph_ps(_mm256_castsi256_si128(d));
                let scale = _mm256_mul_ps(dw, _mm256_loadu_ps(a.d.as_ptr().add(g)));
                acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums), acc);
            }
            g += 8;
        }
        // SAFETY: AVX2 is enabled for this function.
        unsafe { hsum(acc) }
    }

    /// The 8 six-bit scales and mins of a q4_k/q5_k block (`get_scale_min_k4`
    /// for j = 0..8 at once), unpacked with 32-bit masks.
    #[inline(always)]
    fn scales_mins(q: &[u8]) -> ([u8; 8], [u8; 8]) {
        const LOW6: u32 = 0x3f3f_3f3f;
        const LOW4: u32 = 0x0f0f_0f0f;
        const TOP2: u32 = 0x0303_0303;
        let word =
            |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
        let (w0, w1, w2) = (word(0), word(1), word(2));
        let sc_lo = w0 & LOW6;
        let sc_hi = (w2 & LOW4) | (((w0 >> 6) & TOP2) << 4);
        let m_lo = w1 & LOW6;
        let m_hi = ((w2 >> 4) & LOW4) | (((w1 >> 6) & TOP2) << 4);
        let join = |a: u32, b: u32| (a as u64 | ((b as u64) << 32)).to_le_bytes();
        (join(sc_lo, sc_hi), join(m_lo, m_hi))
    }

    /// Sum of the 8 int32 lanes.
    #[target_feature(enable = "avx2")]
    fn hsum_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    /// The 16 activation sums of super-block `bi`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn sums16(a: &QRow, bi: usize) -> __m256i {
        // SAFETY: the caller checked `a.s` holds 16 sums per super-block.
        unsafe { _mm256_loadu_si256(a.s.as_ptr().add(16 * bi) as *const __m256i) }
    }

    /// q4_k: per super-block, Σ_j sc_j (w_j · a_j) in int32 lanes (nibbles
    /// are unsigned, so `maddubs` takes them directly), one conversion and
    /// FMA by `d · d_a`; the mins from the activation sums. `N` vectors
    /// share each block's unpacking.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4k<const N: usize>(row: &[u8], a: &[QRow; N]) -> [f32; N] {
        let low = _mm256_set1_epi8(0xF);
        let mut acc = [_mm256_setzero_ps(); N];
        let mut mins = [0f32; N];
        let nb = a.iter().fold(row.len() / 144, |m, a| m.min(a.d.len()));
        for (bi, blk) in row.chunks_exact(144).take(nb).enumerate() {
            let d = h2f(blk, 0);
            let dmin = h2f(blk, 2);
            let (sc, m) = scales_mins(&blk[4..16]);
            // Each min covers 32 values, two of the 16-value sums.
            // SAFETY: AVX2 is enabled; 16 sums per super-block (caller).
            unsafe {
                let m8 = _mm_cvtepu8_epi16(_mm_loadl_epi64(m.as_ptr() as *const __m128i));
                let m16 = _mm256_set_m128i(_mm_unpackhi_epi16(m8, m8), _mm_unpacklo_epi16(m8, m8));
                for k in 0..N {
                    let summ = hsum_i32(_mm256_madd_epi16(m16, sums16(&a[k], bi)));
                    mins[k] += dmin * a[k].d[bi] * summ as f32;
                }
            }
            // SAFETY: 4 × 32 quant bytes of the block; 256 activation
            // quants of super-block bi in each vector (checked by the caller).
            unsafe {
                let mut sums = [_mm256_setzero_si256(); N];
                for c in 0..4 {
                    let q = _mm256_loadu_si256(blk.as_ptr().add(16 + 32 * c) as *const __m256i);
                    let lo = _mm256_and_si256(q, low);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
                    let (s_lo, s_hi) = (
                        _mm256_set1_epi16(sc[2 * c] as i16),
                        _mm256_set1_epi16(sc[2 * c + 1] as i16),
                    );
                    for k in 0..N {
                        let aq = a[k].q.as_ptr().add(256 * bi + 64 * c);
                        let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load32(aq)), s_lo);
                        let p1 =
                            _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load32(aq.add(32))), s_hi);
                        sums[k] = _mm256_add_epi32(sums[k], _mm256_add_epi32(p0, p1));
                    }
                }
                for k in 0..N {
                    acc[k] = _mm256_fmadd_ps(
                        _mm256_set1_ps(d * a[k].d[bi]),
                        _mm256_cvtepi32_ps(sums[k]),
                        acc[k],
                    );
                }
            }
        }
        let mut out = [0f32; N];
        for k in 0..N {
            // SAFETY: AVX2 is enabled for this function.
            out[k] = unsafe { hsum(acc[k]) } - mins[k];
        }
        out
    }

    /// q6k: the 6-bit values taken unsigned (0..63) through `maddubs`,
    /// scaled per 16 in int32, and the offset of 32 removed through the
    /// activation sums: Σ sc (w − 32)·a = Σ sc w·a − 32 Σ sc Σa.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q6k<const N: usize>(row: &[u8], a: &[QRow; N]) -> [f32; N] {
        let low = _mm256_set1_epi8(0xF);
        let three = _mm256_set1_epi8(3);
        let mut acc = [_mm256_setzero_ps(); N];
        let nb = a.iter().fold(row.len() / 210, |m, a| m.min(a.d.len()));
        for (bi, blk) in row.chunks_exact(210).take(nb).enumerate() {
            let d = h2f(blk, 208);
            let sc = &blk[192..208];
            let mut offset = [0i32; N];
            // SAFETY: AVX2 is enabled; 16 scale bytes; 16 sums per
            // super-block (caller).
            unsafe {
                let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(sc.as_ptr() as *const __m128i));
                for k in 0..N {
                    offset[k] = hsum_i32(_mm256_madd_epi16(sc16, sums16(&a[k], bi)));
                }
            }
            // SAFETY: ql, qh and scale bytes of the block; 256 activation
            // quants of super-block bi in each vector (checked by the caller).
            unsafe {
                let mut sums = [_mm256_setzero_si256(); N];
                for n in 0..2 {
                    let ql0 = _mm256_loadu_si256(blk.as_ptr().add(64 * n) as *const __m256i);
                    let ql1 = _mm256_loadu_si256(blk.as_ptr().add(64 * n + 32) as *const __m256i);
                    let qh = _mm256_loadu_si256(blk.as_ptr().add(128 + 32 * n) as *const __m256i);
                    let hbits = |h: __m256i| _mm256_slli_epi16(_mm256_and_si256(h, three), 4);
                    let ws = [
                        _mm256_or_si256(_mm256_and_si256(ql0, low), hbits(qh)),
                        _mm256_or_si256(
                            _mm256_and_si256(ql1, low),
                            hbits(_mm256_srli_epi16(qh, 2)),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low),
                            hbits(_mm256_srli_epi16(qh, 4)),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low),
                            hbits(_mm256_srli_epi16(qh, 6)),
                        ),
                    ];
                    let s = &sc[8 * n..8 * n + 8];
                    for (j, w) in ws.into_iter().enumerate() {
                        let scales = _mm256_set_m128i(
                            _mm_set1_epi16(s[2 * j + 1] as i8 as i16),
                            _mm_set1_epi16(s[2 * j] as i8 as i16),
                        );
                        for k in 0..N {
                            let x = load32(a[k].q.as_ptr().add(256 * bi + 128 * n + 32 * j));
                            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), scales);
                            sums[k] = _mm256_add_epi32(sums[k], p);
                        }
                    }
                }
                for k in 0..N {
                    let sum = _mm256_sub_epi32(
                        sums[k],
                        _mm256_setr_epi32(32 * offset[k], 0, 0, 0, 0, 0, 0, 0),
                    );
                    acc[k] = _mm256_fmadd_ps(
                        _mm256_set1_ps(d * a[k].d[bi]),
                        _mm256_cvtepi32_ps(sum),
                        acc[k],
                    );
                }
            }
        }
        let mut out = [0f32; N];
        for k in 0..N {
            // SAFETY: AVX2 is enabled for this function.
            out[k] = unsafe { hsum(acc[k]) };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::quant::{self, act_blocks, QAct};
    use proptest::prelude::*;

    fn row(t: WeightType, seed: &[u8], n: usize) -> Vec<u8> {
        let len = t.row_bytes(n).unwrap();
        let mut r: Vec<u8> = (0..len)
            .map(|i| seed[i % seed.len()].wrapping_add((i * 13) as u8))
            .collect();
        let fields: &[usize] = match t {
            WeightType::Q8_0 | WeightType::Q4_0 | WeightType::Q5_0 => &[0],
            WeightType::Q4_1 | WeightType::Q5_1 => &[0, 2],
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
        /// Rows of 7 blocks of 32: the one-block-at-a-time kernels (the
        /// 8-block ones need whole groups of 8).
        #[test]
        fn simd_twin_matches_scalar_on_odd_block_counts(seed in proptest::collection::vec(any::<u8>(), 8..48), x in proptest::collection::vec(-3f32..3.0, 224)) {
            let mut a = QAct::default();
            for t in [WeightType::Q8_0, WeightType::Q4_0, WeightType::Q4_1, WeightType::Q5_0, WeightType::Q5_1] {
                a.quantize(act_blocks(t).unwrap(), &x, 224);
                let r = row(t, &seed, 224);
                let scalar = row_dot_scalar(t, &r, a.row(0));
                let simd = (super::super::get().int_row_dot)(t, &r, a.row(0));
                let mut w = vec![0f32; 224];
                quant::dequant_row_scalar(t, &r, &mut w);
                let mag: f32 = w.iter().zip(&x).map(|(p, q)| (p * q).abs()).sum::<f32>() + 1e-3;
                let exact: f32 = w.iter().zip(&x).map(|(p, q)| p * q).sum();
                prop_assert!((scalar - simd).abs() <= 1e-4 * mag, "{}: {scalar} vs {simd}", t.name());
                prop_assert!((scalar - exact).abs() <= 0.02 * mag, "{}: {scalar} vs exact {exact}", t.name());
            }
        }

        #[test]
        fn simd_twin_matches_scalar_and_approximates_f32(seed in proptest::collection::vec(any::<u8>(), 8..48), x in proptest::collection::vec(-3f32..3.0, 512)) {
            let mut a = QAct::default();
            for t in [
                WeightType::Q8_0,
                WeightType::Q4_0,
                WeightType::Q4_1,
                WeightType::Q5_0,
                WeightType::Q5_1,
                WeightType::Q4K,
                WeightType::Q6K,
            ] {
                a.quantize(act_blocks(t).unwrap(), &x, 512);
                let r = row(t, &seed, 512);
                let scalar = row_dot_scalar(t, &r, a.row(0));
                let simd = (super::super::get().int_row_dot)(t, &r, a.row(0));
                let mut w = vec![0f32; 512];
                quant::dequant_row_scalar(t, &r, &mut w);
                let mag: f32 = w.iter().zip(&x).map(|(p, q)| (p * q).abs()).sum::<f32>() + 1e-3;
                let exact: f32 = w.iter().zip(&x).map(|(p, q)| p * q).sum();
                prop_assert!((scalar - simd).abs() <= 1e-4 * mag, "{}: {scalar} vs {simd}", t.name());
                // The many-row kernel: three rows (the second shifted) at once.
                let mut rows = r.clone();
                rows.extend(r.iter().map(|b| b.wrapping_add(1)));
                rows.extend_from_slice(&r);
                for (b, f) in (0..rows.len()).step_by(t.block_bytes()).zip(0..) {
                    let h = half::f16::from_f32(f as f32 / 97.0 - 0.5);
                    let at = b + if t == WeightType::Q6K { 208 } else { 0 };
                    rows[at..at + 2].copy_from_slice(&h.to_le_bytes());
                }
                let (mut many, mut twin) = ([0f32; 3], [0f32; 3]);
                (super::super::get().int_rows_dot)(t, &rows, r.len(), a.row(0), &mut many);
                rows_dot_scalar(t, &rows, r.len(), a.row(0), &mut twin);
                for (x, y) in many.iter().zip(&twin) {
                    prop_assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()) * mag, "{}: {x} vs {y}", t.name());
                }
                prop_assert_eq!(twin[2], row_dot_scalar(t, &rows[2 * r.len()..], a.row(0)));
                // 8-bit activations: within 2% of the magnitude of the terms.
                prop_assert!((scalar - exact).abs() <= 0.02 * mag, "{}: {scalar} vs exact {exact}", t.name());
            }
        }
    }
}
