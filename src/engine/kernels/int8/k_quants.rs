//! The k-quants (q2_k, q3_k, q4_k, q5_k, q6_k) against activations in
//! super-blocks of 256 (one scale, a sum per 16): the scalar twins and the
//! AVX2 kernels. Block layouts are ggml's (`ggml-common.h` `block_q*_K`).

use super::idot;
use crate::engine::quant::{f16_at, scale_min_k4, QRow};

/// The 16 signed 6-bit scales of a q3_k block (its 12 scale bytes),
/// unpacked as ggml's `dequantize_row_q3_K` does, offset of 32 removed.
pub(super) fn q3k_scales(s: &[u8]) -> [i8; 16] {
    const LOW4: u32 = 0x0f0f_0f0f;
    const TOP2: u32 = 0x0303_0303;
    let word = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    let (a0, a1, tmp) = (word(0), word(4), word(8));
    let aux = [
        (a0 & LOW4) | ((tmp & TOP2) << 4),
        (a1 & LOW4) | (((tmp >> 2) & TOP2) << 4),
        ((a0 >> 4) & LOW4) | (((tmp >> 4) & TOP2) << 4),
        ((a1 >> 4) & LOW4) | (((tmp >> 6) & TOP2) << 4),
    ];
    let mut out = [0i8; 16];
    for (o, b) in out.chunks_exact_mut(4).zip(aux) {
        for (x, y) in o.iter_mut().zip(b.to_le_bytes()) {
            *x = y as i8 - 32;
        }
    }
    out
}

/// q2_k: 2-bit values, a 4-bit scale and min per 16.
pub(super) fn q2k_scalar(row: &[u8], a: QRow) -> f32 {
    let mut total = 0f32;
    let mut w = [0i32; 32];
    for (bi, blk) in row.chunks_exact(84).take(a.d.len()).enumerate() {
        let (sc, qs) = (&blk[0..16], &blk[16..80]);
        let (d, dmin) = (f16_at(blk, 80), f16_at(blk, 82));
        let (aq, bs) = (&a.q[256 * bi..256 * bi + 256], &a.s[16 * bi..16 * bi + 16]);
        let (mut sumi, mut summ) = (0i32, 0i32);
        for n in 0..2 {
            for j in 0..4 {
                for (o, &x) in w.iter_mut().zip(&qs[32 * n..32 * n + 32]) {
                    *o = ((x >> (2 * j)) & 3) as i32;
                }
                let (s0, s1) = (sc[8 * n + 2 * j], sc[8 * n + 2 * j + 1]);
                let x = &aq[128 * n + 32 * j..128 * n + 32 * j + 32];
                sumi += (s0 & 0xF) as i32 * idot(&w[..16], &x[..16])
                    + (s1 & 0xF) as i32 * idot(&w[16..], &x[16..]);
            }
        }
        for (&s, &m) in bs.iter().zip(sc) {
            summ += s as i32 * (m >> 4) as i32;
        }
        total += d * a.d[bi] * sumi as f32 - dmin * a.d[bi] * summ as f32;
    }
    total
}

/// q3_k: 3-bit values (2 low bits, the high one in `hmask`, stored
/// offset by 4), a signed 6-bit scale per 16.
pub(super) fn q3k_scalar(row: &[u8], a: QRow) -> f32 {
    let mut total = 0f32;
    let mut w = [0i32; 32];
    for (bi, blk) in row.chunks_exact(110).take(a.d.len()).enumerate() {
        let (hm, qs) = (&blk[0..32], &blk[32..96]);
        let sc = q3k_scales(&blk[96..108]);
        let d = f16_at(blk, 108);
        let aq = &a.q[256 * bi..256 * bi + 256];
        let mut sumi = 0i32;
        for n in 0..2 {
            for j in 0..4 {
                let bit = 4 * n + j;
                for l in 0..32 {
                    let low = ((qs[32 * n + l] >> (2 * j)) & 3) as i32;
                    w[l] = low - if (hm[l] >> bit) & 1 == 1 { 0 } else { 4 };
                }
                let (s0, s1) = (sc[8 * n + 2 * j] as i32, sc[8 * n + 2 * j + 1] as i32);
                let x = &aq[128 * n + 32 * j..128 * n + 32 * j + 32];
                sumi += s0 * idot(&w[..16], &x[..16]) + s1 * idot(&w[16..], &x[16..]);
            }
        }
        total += d * a.d[bi] * sumi as f32;
    }
    total
}

/// q4_k: 4-bit values, a 6-bit scale and min per 32.
pub(super) fn q4k_scalar(row: &[u8], a: QRow) -> f32 {
    let mut total = 0f32;
    let mut w = [0i32; 32];
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
    total
}

/// q5_k: q4_k with a fifth bit per value in `qh`.
pub(super) fn q5k_scalar(row: &[u8], a: QRow) -> f32 {
    let mut total = 0f32;
    let mut w = [0i32; 32];
    for (bi, blk) in row.chunks_exact(176).take(a.d.len()).enumerate() {
        let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
        let qh = &blk[16..48];
        let (aq, bs) = (&a.q[256 * bi..256 * bi + 256], &a.s[16 * bi..16 * bi + 16]);
        let (mut sumi, mut summ) = (0i32, 0i32);
        for c in 0..4 {
            let q = &blk[48 + 32 * c..80 + 32 * c];
            for (half, shift) in [(0usize, 0u32), (1, 4)] {
                let j = 2 * c + half;
                let (sc, m) = scale_min_k4(j, &blk[4..16]);
                for ((o, &x), &h) in w.iter_mut().zip(q).zip(qh) {
                    *o = ((x >> shift) & 0xF) as i32 | ((((h >> j) & 1) as i32) << 4);
                }
                sumi += sc as i32 * idot(&w, &aq[32 * j..32 * j + 32]);
                summ += m as i32 * (bs[2 * j] as i32 + bs[2 * j + 1] as i32);
            }
        }
        total += d * a.d[bi] * sumi as f32 - dmin * a.d[bi] * summ as f32;
    }
    total
}

/// q6_k: 6-bit values stored offset by 32, a signed 8-bit scale per 16.
pub(super) fn q6k_scalar(row: &[u8], a: QRow) -> f32 {
    let mut total = 0f32;
    let mut w = [0i32; 32];
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
    total
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use super::super::x86::{h2f, hsum_i32, load32, sums16};
    use crate::engine::kernels::f32::hsum;
    use crate::engine::quant::QRow;
    use std::arch::x86_64::*;

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

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::engine::kernels::int8) unsafe fn q4k<const N: usize>(
        row: &[u8],
        a: &[QRow; N],
    ) -> [f32; N] {
        // SAFETY: same requirements as this function's.
        unsafe { q45k::<false, N>(row, a) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::engine::kernels::int8) unsafe fn q5k<const N: usize>(
        row: &[u8],
        a: &[QRow; N],
    ) -> [f32; N] {
        // SAFETY: same requirements as this function's.
        unsafe { q45k::<true, N>(row, a) }
    }

    /// q4_k, and q5_k (`FIVE`): per super-block, Σ_j sc_j (w_j · a_j) in
    /// int32 lanes (the values are unsigned, 0..15 or 0..31, so `maddubs`
    /// takes them directly), one conversion and FMA by `d · d_a`; the mins
    /// from the activation sums. q5_k's fifth bits: bit 2c (low nibbles)
    /// and 2c + 1 (high) of `qh[l]` for chunk c, taken from the low bit of
    /// each byte of `qh` shifted right by 2 per chunk. `N` vectors share
    /// each block's unpacking.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q45k<const FIVE: bool, const N: usize>(row: &[u8], a: &[QRow; N]) -> [f32; N] {
        let (bytes, qs_at) = if FIVE { (176, 48) } else { (144, 16) };
        let low = _mm256_set1_epi8(0xF);
        let one = _mm256_set1_epi8(1);
        let mut acc = [_mm256_setzero_ps(); N];
        let mut mins = [0f32; N];
        let nb = a.iter().fold(row.len() / bytes, |m, a| m.min(a.d.len()));
        for (bi, blk) in row.chunks_exact(bytes).take(nb).enumerate() {
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
            // SAFETY: 4 × 32 quant bytes (and q5_k's 32 high-bit bytes at
            // 16) of the block; 256 activation quants of super-block bi in
            // each vector (checked by the caller).
            unsafe {
                let mut sums = [_mm256_setzero_si256(); N];
                let mut hb = if FIVE {
                    _mm256_loadu_si256(blk.as_ptr().add(16) as *const __m256i)
                } else {
                    _mm256_setzero_si256()
                };
                for c in 0..4 {
                    let at = qs_at + 32 * c;
                    let q = _mm256_loadu_si256(blk.as_ptr().add(at) as *const __m256i);
                    let mut lo = _mm256_and_si256(q, low);
                    let mut hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
                    if FIVE {
                        let b0 = _mm256_and_si256(hb, one);
                        let b1 = _mm256_and_si256(_mm256_srli_epi16(hb, 1), one);
                        lo = _mm256_or_si256(lo, _mm256_slli_epi16(b0, 4));
                        hi = _mm256_or_si256(hi, _mm256_slli_epi16(b1, 4));
                        hb = _mm256_srli_epi16(hb, 2);
                    }
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
    pub(in crate::engine::kernels::int8) unsafe fn q6k<const N: usize>(
        row: &[u8],
        a: &[QRow; N],
    ) -> [f32; N] {
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

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::engine::kernels::int8) unsafe fn q2k<const N: usize>(
        row: &[u8],
        a: &[QRow; N],
    ) -> [f32; N] {
        // SAFETY: same requirements as this function's.
        unsafe { q23k::<false, N>(row, a) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::engine::kernels::int8) unsafe fn q3k<const N: usize>(
        row: &[u8],
        a: &[QRow; N],
    ) -> [f32; N] {
        // SAFETY: same requirements as this function's.
        unsafe { q23k::<true, N>(row, a) }
    }

    /// q2_k, and q3_k (`THREE`): 2-bit planes (value 128n + 32j + l in
    /// bits 2j of `qs[32n + l]`), scaled per 16 in int32 through `madd`.
    /// q2_k's values are unsigned with a 4-bit scale and min per 16, the
    /// mins applied as `dmin · d_a · Σ m Σa`. q3_k's high bit (bit 4n + j
    /// of `hmask[l]`, set meaning no offset) makes the value unsigned
    /// 0..7 = w + 4, and the offset comes off as 4 Σ sc Σa in int32.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q23k<const THREE: bool, const N: usize>(row: &[u8], a: &[QRow; N]) -> [f32; N] {
        let (bytes, qs_at) = if THREE { (110, 32) } else { (84, 16) };
        let three = _mm256_set1_epi8(3);
        let one = _mm256_set1_epi8(1);
        let mut acc = [_mm256_setzero_ps(); N];
        let mut mins = [0f32; N];
        let nb = a.iter().fold(row.len() / bytes, |m, a| m.min(a.d.len()));
        for (bi, blk) in row.chunks_exact(bytes).take(nb).enumerate() {
            // The 16 scales, and what multiplies the 16 activation sums:
            // q3_k's scales (for its offset), q2_k's mins.
            let (d, dmin, sc, by_sum) = if THREE {
                let sc = super::q3k_scales(&blk[96..108]);
                (h2f(blk, 108), 0.0, sc, sc.map(|s| s as i16))
            } else {
                let sc = std::array::from_fn::<i8, 16, _>(|i| (blk[i] & 0xF) as i8);
                let m = std::array::from_fn::<i16, 16, _>(|i| (blk[i] >> 4) as i16);
                (h2f(blk, 80), h2f(blk, 82), sc, m)
            };
            let mut offs = [0i32; N];
            // SAFETY: AVX2 is enabled; 16 sums per super-block (caller).
            unsafe {
                let c16 = _mm256_loadu_si256(by_sum.as_ptr() as *const __m256i);
                for k in 0..N {
                    offs[k] = hsum_i32(_mm256_madd_epi16(c16, sums16(&a[k], bi)));
                }
            }
            // SAFETY: the block's 64 quant bytes at `qs_at` (and q3_k's 32
            // hmask bytes at 0); 256 activation quants of super-block bi in
            // each vector (checked by the caller).
            unsafe {
                let mut sums = [_mm256_setzero_si256(); N];
                let mut hm = if THREE {
                    _mm256_loadu_si256(blk.as_ptr() as *const __m256i)
                } else {
                    _mm256_setzero_si256()
                };
                for n in 0..2 {
                    let q = _mm256_loadu_si256(blk.as_ptr().add(qs_at + 32 * n) as *const __m256i);
                    let planes = [
                        _mm256_and_si256(q, three),
                        _mm256_and_si256(_mm256_srli_epi16(q, 2), three),
                        _mm256_and_si256(_mm256_srli_epi16(q, 4), three),
                        _mm256_and_si256(_mm256_srli_epi16(q, 6), three),
                    ];
                    for (j, mut w) in planes.into_iter().enumerate() {
                        if THREE {
                            w = _mm256_or_si256(w, _mm256_slli_epi16(_mm256_and_si256(hm, one), 2));
                            hm = _mm256_srli_epi16(hm, 1);
                        }
                        let is = 8 * n + 2 * j;
                        let scales = _mm256_set_m128i(
                            _mm_set1_epi16(sc[is + 1] as i16),
                            _mm_set1_epi16(sc[is] as i16),
                        );
                        for k in 0..N {
                            let x = load32(a[k].q.as_ptr().add(256 * bi + 128 * n + 32 * j));
                            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), scales);
                            sums[k] = _mm256_add_epi32(sums[k], p);
                        }
                    }
                }
                for k in 0..N {
                    let mut sum = sums[k];
                    if THREE {
                        let off = _mm256_setr_epi32(4 * offs[k], 0, 0, 0, 0, 0, 0, 0);
                        sum = _mm256_sub_epi32(sum, off);
                    } else {
                        mins[k] += dmin * a[k].d[bi] * offs[k] as f32;
                    }
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
            out[k] = unsafe { hsum(acc[k]) } - mins[k];
        }
        out
    }
}
