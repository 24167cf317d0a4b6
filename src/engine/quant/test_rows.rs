//! Test support: pseudo-random quantized rows with finite scales, shared
//! by every kernel's tests.

use super::WeightType;

/// Every type with integer kernels (and the prefill GEMM).
pub(crate) const INT_TYPES: [WeightType; 10] = [
    WeightType::Q8_0,
    WeightType::Q4_0,
    WeightType::Q4_1,
    WeightType::Q5_0,
    WeightType::Q5_1,
    WeightType::Q2K,
    WeightType::Q3K,
    WeightType::Q4K,
    WeightType::Q5K,
    WeightType::Q6K,
];

/// Byte offsets of a block's f16 scales (d, and dmin/m where the type has one).
pub(crate) fn scale_fields(t: WeightType) -> &'static [usize] {
    match t {
        WeightType::Q8_0 | WeightType::Q4_0 | WeightType::Q5_0 => &[0],
        WeightType::Q4_1 | WeightType::Q5_1 | WeightType::Q4K | WeightType::Q5K => &[0, 2],
        WeightType::Q2K => &[80, 82],
        WeightType::Q3K => &[108],
        _ => &[208],
    }
}

/// `n` pseudo-random rows of `cols` values of `t` (xorshift bytes from
/// `seed`), each f16 scale rewritten to a finite value in ±0.43.
pub(crate) fn random_rows(t: WeightType, cols: usize, n: usize, seed: u32) -> Vec<u8> {
    let len = t.row_bytes(cols).unwrap_or(0) * n;
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    let mut r: Vec<u8> = (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as u8
        })
        .collect();
    for b in 0..len / t.block_bytes() {
        for &f in scale_fields(t) {
            let at = b * t.block_bytes() + f;
            let h = half::f16::from_f32((r[at] as f32 - 128.0) / 300.0);
            r[at..at + 2].copy_from_slice(&h.to_le_bytes());
        }
    }
    r
}
