//! f32 dot products: a scalar kernel and, chosen at run time, an AVX2+FMA
//! (x86-64) or NEON (aarch64) twin. The SIMD kernels sum in a different
//! order; tests bound their difference from the scalar one.

use std::sync::OnceLock;

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
        let acc = _mm256_add_ps(acc0, acc1);
        let hi = _mm256_extractf128_ps(acc, 1);
        let lo = _mm256_castps256_ps128(acc);
        let s4 = _mm_add_ps(hi, lo);
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        let s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
        let mut s = _mm_cvtss_f32(s1);
        while i < n {
            s += a[i] * b[i];
            i += 1;
        }
        s
    }
}

#[cfg(target_arch = "x86_64")]
fn dot_avx2_safe(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: only selected by `dot_fn` after AVX2 and FMA were detected.
    unsafe { x86::dot_avx2(a, b) }
}

#[cfg(target_arch = "aarch64")]
fn dot_neon(a: &[f32], b: &[f32]) -> f32 {
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

fn chosen() -> (DotFn, &'static str) {
    static CHOSEN: OnceLock<(DotFn, &'static str)> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return (dot_avx2_safe as DotFn, "avx2+fma");
        }
        #[cfg(target_arch = "aarch64")]
        return (dot_neon as DotFn, "neon");
        #[allow(unreachable_code)]
        (dot_scalar as DotFn, "scalar")
    })
}

/// The best kernel this CPU runs (detected once).
pub fn dot_fn() -> DotFn {
    chosen().0
}

/// Name of the chosen kernel, for benchmarks and logs.
pub fn kernel_name() -> &'static str {
    chosen().1
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
            let f = dot_fn()(&a, &b);
            let scale: f32 = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum::<f32>() + 1.0;
            prop_assert!((s - f).abs() <= 1e-5 * scale, "scalar {s} vs {} {f}", kernel_name());
        }
    }
}
