//! Weight types the engine computes with, straight from their stored
//! bytes: dense f32/f16/bf16 rows and ggml blocks (Q4_0 … Q8_0, Q2_K …
//! Q6_K). Each type dequantizes one block into f32 (the layouts are
//! ggml's, `ggml-quants.c` `dequantize_row_*`); a row dot product walks the
//! row block by block through a small stack buffer, so no dequantized copy
//! of a weight ever exists.

use crate::error::{Error, Result};
use half::{bf16, f16};

/// A weight element type and its block geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
}

/// Largest block: the K-quants' 256 elements.
pub const MAX_BLOCK: usize = 256;

impl WeightType {
    /// From a `.zt` layout and storage dtype (`dense` + f32/f16/bf16, or
    /// `gguf.<type>/1`).
    pub fn from_layout(layout: &str, dtype: &str) -> Option<WeightType> {
        use WeightType::*;
        Some(match (layout, dtype) {
            ("dense", "f32") => F32,
            ("dense", "f16") => F16,
            ("dense", "bf16") => BF16,
            ("gguf.q4_0/1", _) => Q4_0,
            ("gguf.q4_1/1", _) => Q4_1,
            ("gguf.q5_0/1", _) => Q5_0,
            ("gguf.q5_1/1", _) => Q5_1,
            ("gguf.q8_0/1", _) => Q8_0,
            ("gguf.q2_k/1", _) => Q2K,
            ("gguf.q3_k/1", _) => Q3K,
            ("gguf.q4_k/1", _) => Q4K,
            ("gguf.q5_k/1", _) => Q5K,
            ("gguf.q6_k/1", _) => Q6K,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use WeightType::*;
        match self {
            F32 => "f32",
            F16 => "f16",
            BF16 => "bf16",
            Q4_0 => "q4_0",
            Q4_1 => "q4_1",
            Q5_0 => "q5_0",
            Q5_1 => "q5_1",
            Q8_0 => "q8_0",
            Q2K => "q2_k",
            Q3K => "q3_k",
            Q4K => "q4_k",
            Q5K => "q5_k",
            Q6K => "q6_k",
        }
    }

    /// Elements per block.
    pub fn block_elems(self) -> usize {
        use WeightType::*;
        match self {
            F32 | F16 | BF16 => 1,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 => 32,
            Q2K | Q3K | Q4K | Q5K | Q6K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        use WeightType::*;
        match self {
            F32 => 4,
            F16 | BF16 => 2,
            Q4_0 => 18,
            Q4_1 => 20,
            Q5_0 => 22,
            Q5_1 => 24,
            Q8_0 => 34,
            Q2K => 84,
            Q3K => 110,
            Q4K => 144,
            Q5K => 176,
            Q6K => 210,
        }
    }

    /// Bytes of one row of `n` elements; `None` unless `n` is whole blocks.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_elems()) {
            return None;
        }
        (n / self.block_elems()).checked_mul(self.block_bytes())
    }

    /// Elements decoded per step by [`dequant_chunk`]: a block, or 256
    /// dense values at a time.
    pub fn chunk_elems(self) -> usize {
        match self.block_elems() {
            1 => MAX_BLOCK,
            n => n,
        }
    }
}

/// Every f16 bit pattern as f32 (256 KiB, built once): block scales are
/// converted by lookup, as ggml does.
pub fn f16_table() -> &'static [f32; 65536] {
    static TABLE: std::sync::OnceLock<Box<[f32; 65536]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Box::new([0f32; 65536]);
        for (b, o) in t.iter_mut().enumerate() {
            *o = f16::from_bits(b as u16).to_f32();
        }
        t
    })
}

#[inline(always)]
pub fn f16_to_f32(bits: u16) -> f32 {
    f16_table()[bits as usize]
}

/// The f16 at byte `at` of `b`, as f32.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Dequantizes `out.len()` elements (one block for block types, any count
/// for dense types) from `b`.
pub fn dequant_chunk(t: WeightType, b: &[u8], out: &mut [f32]) {
    use WeightType::*;
    match t {
        F32 => {
            for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        F16 => {
            for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        BF16 => {
            for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        Q4_0 => {
            let d = f16_at(b, 0);
            let qs = &b[2..18];
            for j in 0..16 {
                out[j] = ((qs[j] & 0xF) as i32 - 8) as f32 * d;
                out[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
            }
        }
        Q4_1 => {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            let qs = &b[4..20];
            for j in 0..16 {
                out[j] = (qs[j] & 0xF) as f32 * d + m;
                out[j + 16] = (qs[j] >> 4) as f32 * d + m;
            }
        }
        Q5_0 | Q5_1 => {
            let (d, m, hoff) = if t == Q5_0 {
                (f16_at(b, 0), 0.0, 2)
            } else {
                (f16_at(b, 0), f16_at(b, 2), 4)
            };
            let qh = u32::from_le_bytes([b[hoff], b[hoff + 1], b[hoff + 2], b[hoff + 3]]);
            let qs = &b[hoff + 4..hoff + 20];
            let bias = if t == Q5_0 { 16 } else { 0 };
            for j in 0..16 {
                let h0 = (((qh >> j) << 4) & 0x10) as i32;
                let h1 = ((qh >> (j + 12)) & 0x10) as i32;
                let x0 = ((qs[j] & 0xF) as i32 | h0) - bias;
                let x1 = ((qs[j] >> 4) as i32 | h1) - bias;
                out[j] = x0 as f32 * d + m;
                out[j + 16] = x1 as f32 * d + m;
            }
        }
        Q8_0 => {
            let d = f16_at(b, 0);
            for (o, &q) in out.iter_mut().zip(&b[2..34]) {
                *o = q as i8 as f32 * d;
            }
        }
        Q2K => dequant_q2k(b, out),
        Q3K => dequant_q3k(b, out),
        Q4K => dequant_q4k(b, out),
        Q5K => dequant_q5k(b, out),
        Q6K => dequant_q6k(b, out),
    }
}

fn dequant_q2k(b: &[u8], out: &mut [f32]) {
    let scales = &b[0..16];
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    let mut y = 0;
    let mut is = 0;
    for n in [0usize, 32] {
        let q = &b[16 + n..16 + n + 32];
        for j in 0..4 {
            let shift = 2 * j;
            for half in [0usize, 16] {
                let sc = scales[is];
                is += 1;
                let (dl, ml) = (d * (sc & 0xF) as f32, dmin * (sc >> 4) as f32);
                for l in 0..16 {
                    out[y] = dl * ((q[l + half] >> shift) & 3) as f32 - ml;
                    y += 1;
                }
            }
        }
    }
}

fn dequant_q3k(b: &[u8], out: &mut [f32]) {
    let hm = &b[0..32];
    let d = f16_at(b, 108);
    let word = |i: usize| u32::from_le_bytes([b[96 + i], b[97 + i], b[98 + i], b[99 + i]]);
    let (a0, a1, tmp) = (word(0), word(4), word(8));
    let aux = [
        (a0 & 0x0f0f0f0f) | ((tmp & 0x03030303) << 4),
        (a1 & 0x0f0f0f0f) | (((tmp >> 2) & 0x03030303) << 4),
        ((a0 >> 4) & 0x0f0f0f0f) | (((tmp >> 4) & 0x03030303) << 4),
        ((a1 >> 4) & 0x0f0f0f0f) | (((tmp >> 6) & 0x03030303) << 4),
    ];
    let mut scales = [0i8; 16];
    for (i, w) in aux.iter().enumerate() {
        for (k, byte) in w.to_le_bytes().iter().enumerate() {
            scales[4 * i + k] = *byte as i8;
        }
    }
    let mut m = 1u8;
    let mut y = 0;
    let mut is = 0;
    for n in [0usize, 32] {
        let q = &b[32 + n..32 + n + 32];
        for j in 0..4 {
            let shift = 2 * j;
            for half in [0usize, 16] {
                let dl = d * (scales[is] as i32 - 32) as f32;
                is += 1;
                for l in 0..16 {
                    let hbit = if hm[l + half] & m != 0 { 0 } else { 4 };
                    out[y] = dl * (((q[l + half] >> shift) & 3) as i32 - hbit) as f32;
                    y += 1;
                }
            }
            m <<= 1;
        }
    }
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j`.
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

fn dequant_q4k(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    for c in 0..4 {
        let q = &b[16 + 32 * c..16 + 32 * c + 32];
        let (sc1, m1) = scale_min_k4(2 * c, scales);
        let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
        let (d1, mm1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, mm2) = (d * sc2 as f32, dmin * m2 as f32);
        for l in 0..32 {
            out[64 * c + l] = d1 * (q[l] & 0xF) as f32 - mm1;
            out[64 * c + 32 + l] = d2 * (q[l] >> 4) as f32 - mm2;
        }
    }
}

fn dequant_q5k(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    for c in 0..4 {
        let ql = &b[48 + 32 * c..48 + 32 * c + 32];
        let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
        let (sc1, m1) = scale_min_k4(2 * c, scales);
        let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
        let (d1, mm1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, mm2) = (d * sc2 as f32, dmin * m2 as f32);
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            out[64 * c + l] = d1 * ((ql[l] & 0xF) + h1) as f32 - mm1;
            out[64 * c + 32 + l] = d2 * ((ql[l] >> 4) + h2) as f32 - mm2;
        }
    }
}

fn dequant_q6k(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 208);
    for n in 0..2 {
        let ql = &b[64 * n..64 * n + 64];
        let qh = &b[128 + 32 * n..128 + 32 * n + 32];
        let sc = &b[192 + 8 * n..192 + 8 * n + 8];
        let y = &mut out[128 * n..128 * n + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8 as f32) * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8 as f32) * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8 as f32) * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8 as f32) * q4 as f32;
        }
    }
}

/// Dequantizes a whole row of `out.len()` elements.
pub fn dequant_row(t: WeightType, row: &[u8], out: &mut [f32]) -> Result<()> {
    let need = t.row_bytes(out.len()).ok_or_else(|| {
        Error::usage(format!(
            "{} elements are not whole {} blocks",
            out.len(),
            t.name()
        ))
    })?;
    if row.len() != need {
        return Err(Error::usage(format!(
            "{} row of {} bytes, need {need}",
            t.name(),
            row.len()
        )));
    }
    let step = t.chunk_elems();
    let bytes = t.row_bytes(step.min(out.len())).unwrap_or(0);
    let dequant = super::simd_dequant::dequant_fn();
    for (o, b) in out.chunks_mut(step).zip(row.chunks(bytes.max(1))) {
        dequant(t, b, o);
    }
    Ok(())
}

/// Dot products of one weight row with `out.len()` activation vectors
/// packed in `xs` (vector `k` is `xs[k * cols..(k + 1) * cols]`), written
/// to `out[k]`. The row is dequantized one chunk at a time and each chunk
/// is used for every vector, so a batch reads the weights once.
pub fn row_dots(t: WeightType, row: &[u8], xs: &[f32], cols: usize, out: &mut [f32]) {
    if out.len() == 1 {
        // Decoding: one vector, fused kernel.
        out[0] = super::simd_dot::row_dot_fn()(t, row, &xs[..cols]);
        return;
    }
    // A batch (prefill): dequantize the row once into this thread's
    // buffer, then one long dot product per vector.
    thread_local! {
        static ROW: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let dot = super::simd::dot_fn();
    let dequant = super::simd_dequant::dequant_fn();
    ROW.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.resize(cols, 0.0);
        let step = t.chunk_elems();
        let nb = t.row_bytes(step.min(cols)).unwrap_or(0);
        for (o, b) in buf.chunks_mut(step).zip(row.chunks(nb.max(1))) {
            dequant(t, b, o);
        }
        for (k, o) in out.iter_mut().enumerate() {
            *o = dot(&buf, &xs[k * cols..(k + 1) * cols]);
        }
    });
}

/// Dot products of 4 consecutive weight rows (`rows`, `4 × row_bytes`)
/// with the `n` vectors of `xs`: `out[r * n + k] = row_r · x_k`.
pub fn rows4_dots(t: WeightType, rows: &[u8], xs: &[f32], cols: usize, n: usize, out: &mut [f32]) {
    thread_local! {
        static ROWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let dequant = super::simd_dequant::dequant_fn();
    let tile = super::simd::tile4x2_fn();
    let dot = super::simd::dot_fn();
    let rb = rows.len() / 4;
    ROWS.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.resize(4 * cols, 0.0);
        let step = t.chunk_elems();
        let nb = t.row_bytes(step.min(cols)).unwrap_or(0);
        for r in 0..4 {
            let dst = &mut buf[r * cols..(r + 1) * cols];
            for (o, b) in dst
                .chunks_mut(step)
                .zip(rows[r * rb..(r + 1) * rb].chunks(nb.max(1)))
            {
                dequant(t, b, o);
            }
        }
        let w = [
            &buf[..cols],
            &buf[cols..2 * cols],
            &buf[2 * cols..3 * cols],
            &buf[3 * cols..],
        ];
        let mut k = 0;
        if let Some(tile4) = super::simd::tile4x4_fn() {
            while k + 4 <= n {
                let xs4: [&[f32]; 4] =
                    std::array::from_fn(|j| &xs[(k + j) * cols..(k + j + 1) * cols]);
                let o = tile4(w, xs4, cols);
                for r in 0..4 {
                    out[r * n + k..r * n + k + 4].copy_from_slice(&o[r]);
                }
                k += 4;
            }
        }
        while k + 2 <= n {
            let xs2 = [
                &xs[k * cols..(k + 1) * cols],
                &xs[(k + 1) * cols..(k + 2) * cols],
            ];
            let o = tile(w, xs2, cols);
            for r in 0..4 {
                out[r * n + k] = o[r][0];
                out[r * n + k + 1] = o[r][1];
            }
            k += 2;
        }
        if k < n {
            for r in 0..4 {
                out[r * n + k] = dot(w[r], &xs[k * cols..(k + 1) * cols]);
            }
        }
    });
}
