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

/// `Σ a[i]·b[i]` with `a` in f16 (the KV cache), and `out += w·a`.
pub type DotF16Fn = fn(&[half::f16], &[f32]) -> f32;
pub type AxpyF16Fn = fn(&[half::f16], f32, &mut [f32]);

pub fn dot_f16_scalar(a: &[half::f16], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x.to_f32() * y).sum()
}

pub fn axpy_f16_scalar(a: &[half::f16], w: f32, out: &mut [f32]) {
    for (o, x) in out.iter_mut().zip(a) {
        *o += w * x.to_f32();
    }
}

#[cfg(target_arch = "x86_64")]
mod x86_f16 {
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2, FMA and F16C must be available.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot(a: &[half::f16], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        // SAFETY: 8 halfs and 8 floats at i ≤ n - 8.
        unsafe {
            while i + 8 <= n {
                let h = _mm256_cvtph_ps(_mm_loadu_si128(a.as_ptr().add(i) as *const __m128i));
                acc = _mm256_fmadd_ps(h, _mm256_loadu_ps(b.as_ptr().add(i)), acc);
                i += 8;
            }
        }
        // SAFETY: AVX2 is enabled for this function.
        let mut s = unsafe { super::hsum(acc) };
        while i < n {
            s += a[i].to_f32() * b[i];
            i += 1;
        }
        s
    }

    /// # Safety
    /// AVX2, FMA and F16C must be available.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn axpy(a: &[half::f16], w: f32, out: &mut [f32]) {
        let n = a.len().min(out.len());
        let vw = _mm256_set1_ps(w);
        let mut i = 0;
        // SAFETY: 8 halfs read and 8 floats read/written at i ≤ n - 8.
        unsafe {
            while i + 8 <= n {
                let h = _mm256_cvtph_ps(_mm_loadu_si128(a.as_ptr().add(i) as *const __m128i));
                let o = out.as_mut_ptr().add(i);
                _mm256_storeu_ps(o, _mm256_fmadd_ps(vw, h, _mm256_loadu_ps(o)));
                i += 8;
            }
        }
        while i < n {
            out[i] += w * a[i].to_f32();
            i += 1;
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn dot_f16_avx2(a: &[half::f16], b: &[f32]) -> f32 {
    // SAFETY: only selected after AVX2, FMA and F16C were detected.
    unsafe { x86_f16::dot(a, b) }
}

#[cfg(target_arch = "x86_64")]
fn axpy_f16_avx2(a: &[half::f16], w: f32, out: &mut [f32]) {
    // SAFETY: only selected after AVX2, FMA and F16C were detected.
    unsafe { x86_f16::axpy(a, w, out) }
}

fn f16_kernels() -> (DotF16Fn, AxpyF16Fn) {
    static CHOSEN: OnceLock<(DotF16Fn, AxpyF16Fn)> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
        {
            return (dot_f16_avx2 as DotF16Fn, axpy_f16_avx2 as AxpyF16Fn);
        }
        (dot_f16_scalar as DotF16Fn, axpy_f16_scalar as AxpyF16Fn)
    })
}

pub fn dot_f16_fn() -> DotF16Fn {
    f16_kernels().0
}

pub fn axpy_f16_fn() -> AxpyF16Fn {
    f16_kernels().1
}

/// Attention scores over f16 K rows: `scores[p] = scale · (K_p · q)`, row
/// `p` at `rows[p · stride..][..q.len()]`.
pub type ScoresF16Fn = fn(&[half::f16], usize, &[f32], f32, &mut [f32]);
/// The attention mix over f16 V rows: `out = Σ_p w[p] · V_p`.
pub type MixF16Fn = fn(&[half::f16], usize, &[f32], &mut [f32]);

pub fn scores_f16_scalar(
    rows: &[half::f16],
    stride: usize,
    q: &[f32],
    scale: f32,
    scores: &mut [f32],
) {
    for (p, s) in scores.iter_mut().enumerate() {
        *s = scale * dot_f16_scalar(&rows[p * stride..p * stride + q.len()], q);
    }
}

pub fn mix_f16_scalar(rows: &[half::f16], stride: usize, w: &[f32], out: &mut [f32]) {
    out.fill(0.0);
    let n = out.len();
    for (p, &wp) in w.iter().enumerate() {
        axpy_f16_scalar(&rows[p * stride..p * stride + n], wp, out);
    }
}

/// Whether `len` values hold `n` rows of `width` at `stride`.
fn rows_fit(len: usize, stride: usize, n: usize, width: usize) -> bool {
    n == 0
        || (n - 1)
            .checked_mul(stride)
            .and_then(|x| x.checked_add(width))
            .is_some_and(|end| end <= len)
}

#[cfg(target_arch = "x86_64")]
mod x86_attn {
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2, FMA and F16C available; `rows` holds `scores.len()` rows of
    /// `q.len()` (a multiple of 8) at `stride`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn scores(
        rows: &[half::f16],
        stride: usize,
        q: &[f32],
        scale: f32,
        out: &mut [f32],
    ) {
        let hd = q.len();
        let (rp, qp) = (rows.as_ptr(), q.as_ptr());
        for (p, o) in out.iter_mut().enumerate() {
            let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut i = 0;
            // SAFETY: row p's values i..i + 8 (or + 16) lie in `rows`, q's in `q`.
            unsafe {
                let r = rp.add(p * stride);
                while i + 16 <= hd {
                    let h0 = _mm256_cvtph_ps(_mm_loadu_si128(r.add(i) as *const __m128i));
                    let h1 = _mm256_cvtph_ps(_mm_loadu_si128(r.add(i + 8) as *const __m128i));
                    a0 = _mm256_fmadd_ps(h0, _mm256_loadu_ps(qp.add(i)), a0);
                    a1 = _mm256_fmadd_ps(h1, _mm256_loadu_ps(qp.add(i + 8)), a1);
                    i += 16;
                }
                if i < hd {
                    let h0 = _mm256_cvtph_ps(_mm_loadu_si128(r.add(i) as *const __m128i));
                    a0 = _mm256_fmadd_ps(h0, _mm256_loadu_ps(qp.add(i)), a0);
                }
                *o = scale * super::hsum(_mm256_add_ps(a0, a1));
            }
        }
    }

    /// # Safety
    /// AVX2, FMA and F16C available; `rows` holds `w.len()` rows of
    /// `out.len()` (a multiple of 8) at `stride`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn mix(rows: &[half::f16], stride: usize, w: &[f32], out: &mut [f32]) {
        let n = out.len();
        let rp = rows.as_ptr();
        let mut c = 0;
        // Four 8-wide accumulators stay in registers across all positions.
        while c < n {
            let width = (n - c).min(32);
            let mut acc = [_mm256_setzero_ps(); 4];
            for (p, &wp) in w.iter().enumerate() {
                let vw = _mm256_set1_ps(wp);
                // SAFETY: row p's values c..c + width lie in `rows`.
                unsafe {
                    let r = rp.add(p * stride + c);
                    for (k, a) in acc.iter_mut().enumerate().take(width / 8) {
                        let h = _mm256_cvtph_ps(_mm_loadu_si128(r.add(8 * k) as *const __m128i));
                        *a = _mm256_fmadd_ps(vw, h, *a);
                    }
                }
            }
            for (k, a) in acc.iter().enumerate().take(width / 8) {
                // SAFETY: out[c + 8k .. c + 8k + 8] lies in `out`.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(c + 8 * k), *a) };
            }
            c += width;
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn scores_f16_avx2(rows: &[half::f16], stride: usize, q: &[f32], scale: f32, out: &mut [f32]) {
    if !q.len().is_multiple_of(8) || !rows_fit(rows.len(), stride, out.len(), q.len()) {
        return scores_f16_scalar(rows, stride, q, scale, out);
    }
    // SAFETY: selected after AVX2, FMA and F16C were detected; sizes checked.
    unsafe { x86_attn::scores(rows, stride, q, scale, out) }
}

#[cfg(target_arch = "x86_64")]
fn mix_f16_avx2(rows: &[half::f16], stride: usize, w: &[f32], out: &mut [f32]) {
    if !out.len().is_multiple_of(8) || !rows_fit(rows.len(), stride, w.len(), out.len()) {
        return mix_f16_scalar(rows, stride, w, out);
    }
    // SAFETY: selected after AVX2, FMA and F16C were detected; sizes checked.
    unsafe { x86_attn::mix(rows, stride, w, out) }
}

/// The attention kernels for this CPU (detected once).
pub fn attn_f16_fns() -> (ScoresF16Fn, MixF16Fn) {
    static CHOSEN: OnceLock<(ScoresF16Fn, MixF16Fn)> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
        {
            return (scores_f16_avx2 as ScoresF16Fn, mix_f16_avx2 as MixF16Fn);
        }
        (scores_f16_scalar as ScoresF16Fn, mix_f16_scalar as MixF16Fn)
    })
}

#[cfg(test)]
mod attn_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn attention_twins_match_scalar(v in proptest::collection::vec(-3f32..3.0, 7 * 100), hd in 1usize..6, n in 1usize..7) {
            let hd = hd * 8 + if hd == 5 { 3 } else { 0 };
            let stride = 100;
            let rows: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
            let q = &v[..hd];
            let w: Vec<f32> = v[200..200 + n].to_vec();
            let (scores, mix) = attn_f16_fns();
            let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
            scores(&rows, stride, q, 0.5, &mut a);
            scores_f16_scalar(&rows, stride, q, 0.5, &mut b);
            for (x, y) in a.iter().zip(&b) {
                prop_assert!((x - y).abs() <= 1e-3 * (1.0 + y.abs()));
            }
            let (mut a, mut b) = (vec![1f32; hd], vec![2f32; hd]);
            mix(&rows, stride, &w, &mut a);
            mix_f16_scalar(&rows, stride, &w, &mut b);
            for (x, y) in a.iter().zip(&b) {
                prop_assert!((x - y).abs() <= 1e-3 * (1.0 + y.abs()));
            }
        }
    }
}

#[cfg(test)]
mod f16_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn f16_twins_match_scalar(v in proptest::collection::vec((-4f32..4.0, -4f32..4.0), 0..200), w in -2f32..2.0) {
            let a: Vec<half::f16> = v.iter().map(|p| half::f16::from_f32(p.0)).collect();
            let b: Vec<f32> = v.iter().map(|p| p.1).collect();
            let scale: f32 = a.iter().zip(&b).map(|(x, y)| (x.to_f32() * y).abs()).sum::<f32>() + 1.0;
            prop_assert!((dot_f16_scalar(&a, &b) - dot_f16_fn()(&a, &b)).abs() <= 1e-5 * scale);
            let (mut o1, mut o2) = (b.clone(), b.clone());
            axpy_f16_scalar(&a, w, &mut o1);
            axpy_f16_fn()(&a, w, &mut o2);
            for (x, y) in o1.iter().zip(&o2) {
                prop_assert!((x - y).abs() <= 1e-5 * (x.abs() + 1.0));
            }
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
fn tile4x2_avx2(rows: [&[f32]; 4], xs: [&[f32]; 2], len: usize) -> [[f32; 2]; 4] {
    assert!(rows.iter().all(|r| r.len() >= len) && xs.iter().all(|x| x.len() >= len));
    // SAFETY: chosen after AVX2 and FMA were detected; lengths checked above.
    unsafe { x86_tile::tile(rows, xs, len) }
}

pub fn tile4x2_fn() -> Tile4x2Fn {
    static CHOSEN: OnceLock<Tile4x2Fn> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return tile4x2_avx2 as Tile4x2Fn;
        }
        tile4x2_scalar as Tile4x2Fn
    })
}

/// `out[r][j] = rows[r] · xs[j]` for 4 rows and 4 vectors: the prefill
/// micro-kernel on CPUs with AVX-512 (32 registers hold the 16
/// accumulators, so each load feeds four multiply-adds).
pub type Tile4x4Fn = fn([&[f32]; 4], [&[f32]; 4], usize) -> [[f32; 4]; 4];

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
fn tile4x4_avx512(rows: [&[f32]; 4], xs: [&[f32]; 4], len: usize) -> [[f32; 4]; 4] {
    assert!(rows.iter().all(|r| r.len() >= len) && xs.iter().all(|x| x.len() >= len));
    // SAFETY: chosen after AVX-512F was detected; lengths checked above.
    unsafe { x86_tile512::tile(rows, xs, len) }
}

/// The 4 × 4 kernel, where the CPU has one (else prefill uses 4 × 2).
pub fn tile4x4_fn() -> Option<Tile4x4Fn> {
    static CHOSEN: OnceLock<Option<Tile4x4Fn>> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            return Some(tile4x4_avx512 as Tile4x4Fn);
        }
        None
    })
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
            let (a, b) = (tile4x2_scalar(rows, xs, len), tile4x2_fn()(rows, xs, len));
            for r in 0..4 {
                for j in 0..2 {
                    prop_assert!((a[r][j] - b[r][j]).abs() <= 1e-4 * (1.0 + a[r][j].abs()));
                }
            }
            let xs4 = [c[4], c[5], c[0], c[2]];
            let want = tile4x4_scalar(rows, xs4, len);
            if let Some(tile) = tile4x4_fn() {
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
