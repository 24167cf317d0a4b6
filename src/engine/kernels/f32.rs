//! f32 dot products: a scalar kernel and, chosen at run time, an AVX2+FMA
//! (x86-64) or NEON (aarch64) twin. The SIMD kernels sum in a different
//! order; tests bound their difference from the scalar one.

/// `Σ a[i]·b[i]` over the shorter length.
pub type DotFn = fn(&[f32], &[f32]) -> f32;

/// The scalar kernel: 8 independent partial sums (so it vectorizes where
/// the compiler may, and rounds like the SIMD twins do).
pub fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let chunks = n / 8;
    for c in 0..chunks {
        for k in 0..8 {
            acc[k] += a[8 * c + k] * b[8 * c + k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..n {
        s += a[i] * b[i];
    }
    s
}

/// Sum of the 8 lanes.
///
/// # Safety
/// AVX must be available (every caller is an AVX2 kernel).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn hsum(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let s4 = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX2 and FMA (checked by the caller).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        // SAFETY: every load reads 8 floats at i < n - 15 (or n - 7),
        // inside both slices.
        unsafe {
            while i + 16 <= n {
                acc0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_loadu_ps(pb.add(i + 8)),
                    acc1,
                );
                i += 16;
            }
            if i + 8 <= n {
                acc0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
                i += 8;
            }
        }
        // SAFETY: AVX2 is enabled for this function.
        let mut s = unsafe { super::hsum(_mm256_add_ps(acc0, acc1)) };
        while i < n {
            s += a[i] * b[i];
            i += 1;
        }
        s
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) fn dot_avx2_safe(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: only selected by `dot_fn` after AVX2 and FMA were detected.
    unsafe { x86::dot_avx2(a, b) }
}

#[cfg(target_arch = "aarch64")]
pub(super) fn dot_neon(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::aarch64::*;
    let n = a.len().min(b.len());
    let mut i = 0;
    // SAFETY: NEON is part of the aarch64 baseline; loads read 4 floats at
    // i ≤ n - 4, inside both slices.
    let mut s = unsafe {
        let mut acc = vdupq_n_f32(0.0);
        while i + 4 <= n {
            acc = vfmaq_f32(
                acc,
                vld1q_f32(a.as_ptr().add(i)),
                vld1q_f32(b.as_ptr().add(i)),
            );
            i += 4;
        }
        vaddvq_f32(acc)
    };
    while i < n {
        s += a[i] * b[i];
        i += 1;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn simd_twin_matches_scalar(v in proptest::collection::vec((-4f32..4.0, -4f32..4.0), 0..300)) {
            let (a, b): (Vec<f32>, Vec<f32>) = v.into_iter().unzip();
            let s = dot_scalar(&a, &b);
            let f = (super::super::get().dot)(&a, &b);
            let scale: f32 = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum::<f32>() + 1.0;
            prop_assert!((s - f).abs() <= 1e-5 * scale, "scalar {s} vs {} {f}", super::super::get().name);
        }
    }
}

/// A 4 × 2 block of dot products: `out[r][j] = rows[r] · xs[j]` over
/// `len` values (`rows[r]` and `xs[j]` at least `len` long). The weight
/// and activation vectors are each loaded once per 8 values for all the
/// products that use them, so the loop is bound by multiply-adds rather
/// than loads.
pub type Tile4x2Fn = fn([&[f32]; 4], [&[f32]; 2], usize) -> [[f32; 2]; 4];

pub fn tile4x2_scalar(rows: [&[f32]; 4], xs: [&[f32]; 2], len: usize) -> [[f32; 2]; 4] {
    let mut out = [[0f32; 2]; 4];
    for (r, row) in rows.iter().enumerate() {
        for (j, x) in xs.iter().enumerate() {
            out[r][j] = dot_scalar(&row[..len], &x[..len]);
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86_tile {
    use super::hsum;
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2 and FMA must be available; every slice holds `len` values.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile(rows: [&[f32]; 4], xs: [&[f32]; 2], len: usize) -> [[f32; 2]; 4] {
        let mut acc = [[_mm256_setzero_ps(); 2]; 4];
        let mut k = 0;
        // SAFETY: loads of 8 values at k ≤ len - 8 from slices of ≥ len values.
        unsafe {
            while k + 8 <= len {
                let x0 = _mm256_loadu_ps(xs[0].as_ptr().add(k));
                let x1 = _mm256_loadu_ps(xs[1].as_ptr().add(k));
                for r in 0..4 {
                    let w = _mm256_loadu_ps(rows[r].as_ptr().add(k));
                    acc[r][0] = _mm256_fmadd_ps(w, x0, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(w, x1, acc[r][1]);
                }
                k += 8;
            }
        }
        let mut out = [[0f32; 2]; 4];
        for r in 0..4 {
            for j in 0..2 {
                let mut s = unsafe { hsum(acc[r][j]) };
                for i in k..len {
                    s += rows[r][i] * xs[j][i];
                }
                out[r][j] = s;
            }
        }
        out
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) fn tile4x2_avx2(rows: [&[f32]; 4], xs: [&[f32]; 2], len: usize) -> [[f32; 2]; 4] {
    assert!(rows.iter().all(|r| r.len() >= len) && xs.iter().all(|x| x.len() >= len));
    // SAFETY: chosen after AVX2 and FMA were detected; lengths checked above.
    unsafe { x86_tile::tile(rows, xs, len) }
}

/// `out[r][j] = rows[r] · xs[j]` for 4 rows and 4 vectors: the prefill
/// micro-kernel on CPUs with AVX-512 (32 registers hold the 16
/// accumulators, so each load feeds four multiply-adds).
pub type Tile4x4Fn = fn([&[f32]; 4], [&[f32]; 4], usize) -> [[f32; 4]; 4];

#[cfg_attr(not(test), allow(dead_code))]
pub fn tile4x4_scalar(rows: [&[f32]; 4], xs: [&[f32]; 4], len: usize) -> [[f32; 4]; 4] {
    std::array::from_fn(|r| std::array::from_fn(|j| dot_scalar(&rows[r][..len], &xs[j][..len])))
}

#[cfg(target_arch = "x86_64")]
mod x86_tile512 {
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512F must be available; every slice holds `len` values.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile(rows: [&[f32]; 4], xs: [&[f32]; 4], len: usize) -> [[f32; 4]; 4] {
        let mut acc = [[_mm512_setzero_ps(); 4]; 4];
        let mut k = 0;
        // SAFETY: loads of 16 values at k ≤ len - 16 from slices of ≥ len values.
        unsafe {
            while k + 16 <= len {
                let x = xs.map(|x| _mm512_loadu_ps(x.as_ptr().add(k)));
                for r in 0..4 {
                    let w = _mm512_loadu_ps(rows[r].as_ptr().add(k));
                    for j in 0..4 {
                        acc[r][j] = _mm512_fmadd_ps(w, x[j], acc[r][j]);
                    }
                }
                k += 16;
            }
        }
        let mut out = [[0f32; 4]; 4];
        for r in 0..4 {
            for j in 0..4 {
                let mut s = _mm512_reduce_add_ps(acc[r][j]);
                for i in k..len {
                    s += rows[r][i] * xs[j][i];
                }
                out[r][j] = s;
            }
        }
        out
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) fn tile4x4_avx512(rows: [&[f32]; 4], xs: [&[f32]; 4], len: usize) -> [[f32; 4]; 4] {
    assert!(rows.iter().all(|r| r.len() >= len) && xs.iter().all(|x| x.len() >= len));
    // SAFETY: chosen after AVX-512F was detected; lengths checked above.
    unsafe { x86_tile512::tile(rows, xs, len) }
}

#[cfg(test)]
mod tile_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn tile_twin_matches_scalar(v in proptest::collection::vec(-3f32..3.0, 6 * 77)) {
            let len = 77;
            let c: Vec<&[f32]> = v.chunks(len).collect();
            let rows = [c[0], c[1], c[2], c[3]];
            let xs = [c[4], c[5]];
            let (a, b) = (tile4x2_scalar(rows, xs, len), (super::super::get().tile4x2)(rows, xs, len));
            for r in 0..4 {
                for j in 0..2 {
                    prop_assert!((a[r][j] - b[r][j]).abs() <= 1e-4 * (1.0 + a[r][j].abs()));
                }
            }
            let xs4 = [c[4], c[5], c[0], c[2]];
            let want = tile4x4_scalar(rows, xs4, len);
            if let Some(tile) = super::super::get().tile4x4 {
                let got = tile(rows, xs4, len);
                for r in 0..4 {
                    for j in 0..4 {
                        prop_assert!((want[r][j] - got[r][j]).abs() <= 1e-4 * (1.0 + want[r][j].abs()));
                    }
                }
            }
        }
    }
}
