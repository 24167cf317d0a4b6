//! Weight rows unpacked for the prefill GEMM ([`super::gemm`]): every
//! quantized type becomes small integers `u` (int8, one per weight), and
//! per 16 weights a scale and an offset with
//! `w = scale · u + offset` — the layouts are ggml's (the same as the f32
//! decoders in `quant::decode`). An unpacked row is read by the GEMM for
//! every activation vector of a prefill, so it is made once per matmul.

use crate::engine::quant::{q3k_scales, scale_min_k4, WeightType, ACT_BLOCK};

/// Values per entry of [`Unpacked`]'s scales: the activation block.
pub const SUB: usize = ACT_BLOCK;

/// Weights per sub-block (one scale and offset each) and whether the type
/// has an offset term, for the types the GEMM covers.
pub fn sub_block(t: WeightType) -> Option<(usize, bool)> {
    use WeightType::*;
    Some(match t {
        Q8_0 => (32, false),
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q4K | Q5K => (32, true),
        Q2K | Q3K | Q6K => (16, true),
        _ => return None,
    })
}

/// Rows unpacked: `q[row · cols + e]`, and per `(row, 16 values)` the
/// scale, the offset (a 32-value sub-block's repeated for both halves)
/// and `-128 · Σu` (the correction for activations stored as `q + 128`).
#[derive(Debug, Default)]
pub struct Unpacked {
    pub cols: usize,
    pub q: Vec<i8>,
    pub scale: Vec<f32>,
    pub offset: Vec<f32>,
    pub corr: Vec<i32>,
}

impl Unpacked {
    /// Sub-blocks per row.
    pub fn per_row(&self) -> usize {
        self.cols / SUB
    }

    /// Unpacks the `m` rows of `rows` (each `row_bytes`, whole blocks of
    /// `t` for `cols` values; the caller checked both).
    pub fn fill(&mut self, t: WeightType, rows: &[u8], row_bytes: usize, m: usize, cols: usize) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected.
            return unsafe { self.fill_avx2(t, rows, row_bytes, m, cols) };
        }
        self.fill_with(t, rows, row_bytes, m, cols)
    }

    /// The same code compiled for AVX2, so the per-type loops vectorize.
    ///
    /// # Safety
    /// AVX2 available.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn fill_avx2(&mut self, t: WeightType, rows: &[u8], rb: usize, m: usize, cols: usize) {
        self.fill_with(t, rows, rb, m, cols)
    }

    /// Unpacks every block (its bytes into its weights, and its natural
    /// sub-blocks' scales and offsets), spreading the scales to entries of
    /// [`SUB`] values, then sums the corrections. The branch on `t` per
    /// block always goes the same way; no closure, so every unpacker
    /// inlines in the caller's instruction set.
    #[inline(always)]
    fn fill_with(&mut self, t: WeightType, rows: &[u8], row_bytes: usize, m: usize, cols: usize) {
        use WeightType::*;
        let Some((sub, _)) = sub_block(t) else {
            return;
        };
        let (be, bb) = (t.block_elems(), t.block_bytes());
        let nsb = cols / SUB;
        self.cols = cols;
        self.q.resize(m * cols, 0);
        self.scale.resize(m * nsb, 0.0);
        self.offset.resize(m * nsb, 0.0);
        self.corr.resize(m * nsb, 0);
        let (mut sc, mut off) = ([0f32; 16], [0f32; 16]);
        let per = be / sub;
        for r in 0..m {
            let row = &rows[r * row_bytes..(r + 1) * row_bytes];
            for (b, blk) in row.chunks_exact(bb).take(cols / be).enumerate() {
                let e0 = r * cols + b * be;
                let (q, bsc, boff) = (&mut self.q[e0..e0 + be], &mut sc[..per], &mut off[..per]);
                match t {
                    Q8_0 => unpack_q8_0(blk, q, bsc, boff),
                    Q4_0 => unpack_q4::<false>(blk, q, bsc, boff),
                    Q4_1 => unpack_q4::<true>(blk, q, bsc, boff),
                    Q5_0 => unpack_q5::<false>(blk, q, bsc, boff),
                    Q5_1 => unpack_q5::<true>(blk, q, bsc, boff),
                    Q4K => unpack_k45::<false>(blk, q, bsc, boff),
                    Q5K => unpack_k45::<true>(blk, q, bsc, boff),
                    Q6K => unpack_q6k(blk, q, bsc, boff),
                    Q3K => unpack_q3k(blk, q, bsc, boff),
                    Q2K => unpack_q2k(blk, q, bsc, boff),
                    F32 | F16 | BF16 => {}
                }
                let s0 = r * nsb + b * (be / SUB);
                for j in 0..be / SUB {
                    self.scale[s0 + j] = sc[j * SUB / sub];
                    self.offset[s0 + j] = off[j * SUB / sub];
                }
            }
            let qs = &self.q[r * cols..(r + 1) * cols];
            for (c, chunk) in self.corr[r * nsb..(r + 1) * nsb]
                .iter_mut()
                .zip(qs.chunks_exact(SUB))
            {
                *c = -128 * chunk.iter().map(|&v| v as i32).sum::<i32>();
            }
        }
    }
}

#[inline(always)]
fn unpack_q8_0(b: &[u8], q: &mut [i8], sc: &mut [f32], off: &mut [f32]) {
    sc[0] = f16_at(b, 0);
    off[0] = 0.0;
    for (o, &v) in q[..32].iter_mut().zip(&b[2..34]) {
        *o = v as i8;
    }
}

/// Q4_0 (`w = d·(u − 8)`) or, `MIN`, Q4_1 (`w = d·u + m`).
#[inline(always)]
fn unpack_q4<const MIN: bool>(b: &[u8], q: &mut [i8], sc: &mut [f32], off: &mut [f32]) {
    let d = f16_at(b, 0);
    sc[0] = d;
    off[0] = if MIN { f16_at(b, 2) } else { -8.0 * d };
    let at = if MIN { 4 } else { 2 };
    nibbles(&b[at..at + 16], q);
}

/// Q5_0 (`w = d·(u − 16)`) or, `MIN`, Q5_1 (`w = d·u + m`).
#[inline(always)]
fn unpack_q5<const MIN: bool>(b: &[u8], q: &mut [i8], sc: &mut [f32], off: &mut [f32]) {
    let d = f16_at(b, 0);
    sc[0] = d;
    off[0] = if MIN { f16_at(b, 2) } else { -16.0 * d };
    let at = if MIN { 4 } else { 2 };
    // Bit j of the 32-bit `qh` is bit 4 of value j, tested with a per-value
    // constant mask (no table, no variable shifts: the loop vectorizes).
    let qh = [b[at], b[at + 1], b[at + 2], b[at + 3]];
    let qs = &b[at + 4..at + 20];
    for j in 0..16 {
        let bit = 1u8 << (j % 8);
        let h0 = if qh[j / 8] & bit != 0 { 0x10 } else { 0 };
        let h1 = if qh[2 + j / 8] & bit != 0 { 0x10 } else { 0 };
        q[j] = ((qs[j] & 0xF) | h0) as i8;
        q[j + 16] = ((qs[j] >> 4) | h1) as i8;
    }
}

/// Q4_K or, `FIVE`, Q5_K: 8 sub-blocks of 32 with 6-bit scales and mins.
#[inline(always)]
fn unpack_k45<const FIVE: bool>(b: &[u8], q: &mut [i8], sc: &mut [f32], off: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    for j in 0..8 {
        let (s, m) = scale_min_k4(j, scales);
        sc[j] = d * s as f32;
        off[j] = -dmin * m as f32;
    }
    let ql0 = if FIVE { 48 } else { 16 };
    // Each value written once (nibble and high bit together): a
    // read-modify-write of the fresh stores stalled on store forwarding.
    let qh = &b[16..48];
    for c in 0..4 {
        let ql = &b[ql0 + 32 * c..ql0 + 32 * c + 32];
        let (lo, hi) = q[64 * c..64 * c + 64].split_at_mut(32);
        for l in 0..32 {
            let h = if FIVE { qh[l] >> (2 * c) } else { 0 };
            lo[l] = ((ql[l] & 0xF) | ((h & 1) << 4)) as i8;
            hi[l] = ((ql[l] >> 4) | ((h & 2) << 3)) as i8;
        }
    }
}

/// Q6_K: 16 sub-blocks of 16, `w = d·s·(u − 32)`.
#[inline(always)]
fn unpack_q6k(b: &[u8], q: &mut [i8], sc: &mut [f32], off: &mut [f32]) {
    let d = f16_at(b, 208);
    for j in 0..16 {
        let s = d * (b[192 + j] as i8) as f32;
        sc[j] = s;
        off[j] = -32.0 * s;
    }
    for n in 0..2 {
        let ql = &b[64 * n..64 * n + 64];
        let qh = &b[128 + 32 * n..128 + 32 * n + 32];
        let y = &mut q[128 * n..128 * n + 128];
        for l in 0..32 {
            y[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8;
            y[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8;
            y[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8;
            y[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8;
        }
    }
}

/// Q2_K: 16 sub-blocks of 16, `w = d·s·u − dmin·m`.
#[inline(always)]
fn unpack_q2k(b: &[u8], q: &mut [i8], sc: &mut [f32], off: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    for j in 0..16 {
        let s = b[j];
        sc[j] = d * (s & 0xF) as f32;
        off[j] = -dmin * (s >> 4) as f32;
    }
    for n in 0..2 {
        let qs = &b[16 + 32 * n..16 + 32 * n + 32];
        for j in 0..4 {
            let y = &mut q[128 * n + 32 * j..128 * n + 32 * j + 32];
            for l in 0..32 {
                y[l] = ((qs[l] >> (2 * j)) & 3) as i8;
            }
        }
    }
}

/// The f16 at `b[at..at + 2]`, converted arithmetically (the engine's
/// 256 KiB lookup table would push the weights out of the cache here).
#[inline(always)]
fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// 16 bytes of nibbles: low halves are values 0..16, high halves 16..32.
#[inline(always)]
fn nibbles(b: &[u8], q: &mut [i8]) {
    for j in 0..16 {
        q[j] = (b[j] & 0xF) as i8;
        q[j + 16] = (b[j] >> 4) as i8;
    }
}

#[inline(always)]
fn unpack_q3k(b: &[u8], q: &mut [i8], sc: &mut [f32], off: &mut [f32]) {
    let hm = &b[0..32];
    let d = f16_at(b, 108);
    for (j, &s6) in q3k_scales(b).iter().enumerate() {
        let s = d * (s6 as i32 - 32) as f32;
        sc[j] = s;
        off[j] = -4.0 * s;
    }
    for n in 0..2 {
        let qs = &b[32 + 32 * n..64 + 32 * n];
        for j in 0..4 {
            let bit = 1u8 << (4 * n + j);
            let y = &mut q[128 * n + 32 * j..128 * n + 32 * j + 32];
            for l in 0..32 {
                let h = if hm[l] & bit != 0 { 4 } else { 0 };
                y[l] = (((qs[l] >> (2 * j)) & 3) + h) as i8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::quant::dequant_row_scalar;
    use crate::engine::quant::test_rows::{random_rows, INT_TYPES};

    /// Every type's unpacked `scale · u + offset` equals its f32 decoder.
    #[test]
    fn unpacked_rows_decode_like_the_f32_decoders() {
        for t in INT_TYPES {
            let cols = 512;
            let rb = t.row_bytes(cols).unwrap();
            let bytes = random_rows(t, cols, 2, 97);
            let mut u = Unpacked::default();
            u.fill(t, &bytes, rb, 2, cols);
            for r in 0..2 {
                let mut want = vec![0f32; cols];
                dequant_row_scalar(t, &bytes[r * rb..(r + 1) * rb], &mut want);
                let nsb = u.per_row();
                for (e, &want) in want.iter().enumerate() {
                    let s = r * nsb + e / SUB;
                    let got = u.scale[s] * u.q[r * cols + e] as f32 + u.offset[s];
                    let tol = 1e-5 * (want.abs() + u.scale[s].abs() * 64.0 + 1e-3);
                    assert!(
                        (got - want).abs() <= tol,
                        "{} row {r} elem {e}: {got} vs {want}",
                        t.name()
                    );
                }
                for (sb, c) in u.corr[r * nsb..(r + 1) * nsb].iter().enumerate() {
                    let s: i32 = (0..SUB).map(|i| u.q[r * cols + sb * SUB + i] as i32).sum();
                    assert_eq!(*c, -128 * s);
                }
            }
        }
    }
}
