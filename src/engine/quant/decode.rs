//! Scalar block decoders: one block (or a run of dense values) to f32,
//! following ggml's `dequantize_row_*` layouts. The SIMD kernels are
//! tested against these.

use super::{f16_at, WeightType};
use half::{bf16, f16};

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

/// Q3_K's 16 6-bit sub-block scales (before the −32 bias), unpacked from
/// their 12 bytes at offset 96.
pub(crate) fn q3k_scales(b: &[u8]) -> [i8; 16] {
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
    scales
}

fn dequant_q3k(b: &[u8], out: &mut [f32]) {
    let hm = &b[0..32];
    let d = f16_at(b, 108);
    let scales = q3k_scales(b);
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

/// Dequantizes a whole row with the scalar decoders (`row` must hold whole
/// blocks for `out.len()` values; the reference the SIMD kernels are
/// tested against).
pub fn dequant_row_scalar(t: WeightType, row: &[u8], out: &mut [f32]) {
    let step = t.chunk_elems();
    let bytes = t.row_bytes(step.min(out.len())).unwrap_or(0);
    for (o, b) in out.chunks_mut(step).zip(row.chunks(bytes.max(1))) {
        dequant_chunk(t, b, o);
    }
}
