//! Attention over the f16 KV cache: dot and axpy of one row, and the
//! per-head scores and mix kernels (accumulators in registers), each with
//! its scalar twin.

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
        let mut s = unsafe { super::super::f32::hsum(acc) };
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
pub(super) fn dot_f16_avx2(a: &[half::f16], b: &[f32]) -> f32 {
    // SAFETY: only selected after AVX2, FMA and F16C were detected.
    unsafe { x86_f16::dot(a, b) }
}

#[cfg(target_arch = "x86_64")]
pub(super) fn axpy_f16_avx2(a: &[half::f16], w: f32, out: &mut [f32]) {
    // SAFETY: only selected after AVX2, FMA and F16C were detected.
    unsafe { x86_f16::axpy(a, w, out) }
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

    /// One position's `scale · (K_p · q)` on the pair of accumulators
    /// (even and odd 8-value chunks) every score uses, so that the 4-wide
    /// pass below gives each position the same bits.
    ///
    /// # Safety
    /// AVX2, FMA and F16C available; `r` points at `hd` halfs, `qp` at `hd`
    /// floats.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn pair(r: *const half::f16, qp: *const f32, hd: usize) -> (__m256, __m256) {
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        // SAFETY: values i..i + 8 (or + 16) lie in the row and in q.
        unsafe {
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
        }
        (a0, a1)
    }

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
        let vscale = _mm_set1_ps(scale);
        let mut p = 0;
        // Four positions per pass: their chains interleave, q's chunks are
        // loaded once for the four, and one 4×4 transpose does the four
        // horizontal sums in `hsum`'s order ((x0+x4)+(x2+x6)) + ((x1+x5)+
        // (x3+x7)), so every score has the bits of the one-at-a-time loop.
        while p + 4 <= out.len() {
            let (mut a, mut b) = ([_mm256_setzero_ps(); 4], [_mm256_setzero_ps(); 4]);
            let mut i = 0;
            // SAFETY: rows p..p + 4, values i..i + 16 (or + 8) lie in
            // `rows`; q's in `q`.
            unsafe {
                let r = rp.add(p * stride);
                while i + 16 <= hd {
                    let (q0, q1) = (_mm256_loadu_ps(qp.add(i)), _mm256_loadu_ps(qp.add(i + 8)));
                    for j in 0..4 {
                        let rj = r.add(j * stride + i);
                        let h0 = _mm256_cvtph_ps(_mm_loadu_si128(rj as *const __m128i));
                        let h1 = _mm256_cvtph_ps(_mm_loadu_si128(rj.add(8) as *const __m128i));
                        a[j] = _mm256_fmadd_ps(h0, q0, a[j]);
                        b[j] = _mm256_fmadd_ps(h1, q1, b[j]);
                    }
                    i += 16;
                }
                if i < hd {
                    let q0 = _mm256_loadu_ps(qp.add(i));
                    for (j, aj) in a.iter_mut().enumerate() {
                        let rj = r.add(j * stride + i);
                        let h0 = _mm256_cvtph_ps(_mm_loadu_si128(rj as *const __m128i));
                        *aj = _mm256_fmadd_ps(h0, q0, *aj);
                    }
                }
            }
            let u: [__m128; 4] = std::array::from_fn(|j| {
                let v = _mm256_add_ps(a[j], b[j]);
                _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v))
            });
            // Transpose: t_k holds lane k of u_0..u_3.
            let l01 = _mm_unpacklo_ps(u[0], u[1]);
            let h01 = _mm_unpackhi_ps(u[0], u[1]);
            let l23 = _mm_unpacklo_ps(u[2], u[3]);
            let h23 = _mm_unpackhi_ps(u[2], u[3]);
            let t0 = _mm_movelh_ps(l01, l23);
            let t1 = _mm_movehl_ps(l23, l01);
            let t2 = _mm_movelh_ps(h01, h23);
            let t3 = _mm_movehl_ps(h23, h01);
            let sums = _mm_add_ps(_mm_add_ps(t0, t2), _mm_add_ps(t1, t3));
            // SAFETY: out[p..p + 4] lies in `out`.
            unsafe { _mm_storeu_ps(out.as_mut_ptr().add(p), _mm_mul_ps(vscale, sums)) };
            p += 4;
        }
        while p < out.len() {
            // SAFETY: row p lies in `rows`.
            let (a0, a1) = unsafe { pair(rp.add(p * stride), qp, hd) };
            // SAFETY: AVX2 is enabled for this function.
            out[p] = scale * unsafe { super::super::f32::hsum(_mm256_add_ps(a0, a1)) };
            p += 1;
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
pub(super) fn scores_f16_avx2(
    rows: &[half::f16],
    stride: usize,
    q: &[f32],
    scale: f32,
    out: &mut [f32],
) {
    if !q.len().is_multiple_of(8) || !rows_fit(rows.len(), stride, out.len(), q.len()) {
        return scores_f16_scalar(rows, stride, q, scale, out);
    }
    // SAFETY: selected after AVX2, FMA and F16C were detected; sizes checked.
    unsafe { x86_attn::scores(rows, stride, q, scale, out) }
}

#[cfg(target_arch = "x86_64")]
pub(super) fn mix_f16_avx2(rows: &[half::f16], stride: usize, w: &[f32], out: &mut [f32]) {
    if !out.len().is_multiple_of(8) || !rows_fit(rows.len(), stride, w.len(), out.len()) {
        return mix_f16_scalar(rows, stride, w, out);
    }
    // SAFETY: selected after AVX2, FMA and F16C were detected; sizes checked.
    unsafe { x86_attn::mix(rows, stride, w, out) }
}

#[cfg(test)]
mod attn_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn attention_twins_match_scalar(v in proptest::collection::vec(-3f32..3.0, 10 * 100), hd in 1usize..6, n in 1usize..10) {
            let hd = hd * 8 + if hd == 5 { 3 } else { 0 };
            let stride = 100;
            let rows: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
            let q = &v[..hd];
            let w: Vec<f32> = v[200..200 + n].to_vec();
            let k = super::super::get();
            let (scores, mix) = (k.attn_scores, k.attn_mix);
            let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
            scores(&rows, stride, q, 0.5, &mut a);
            scores_f16_scalar(&rows, stride, q, 0.5, &mut b);
            for (x, y) in a.iter().zip(&b) {
                prop_assert!((x - y).abs() <= 1e-3 * (1.0 + y.abs()));
            }
            // A score does not depend on its neighbours (positions go 4
            // at a time, the rest one by one): the same bits alone.
            for (p, x) in a.iter().enumerate() {
                let mut one = [0f32];
                scores(&rows[p * stride..], stride, q, 0.5, &mut one);
                prop_assert_eq!(x.to_bits(), one[0].to_bits());
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
            prop_assert!((dot_f16_scalar(&a, &b) - (super::super::get().dot_f16)(&a, &b)).abs() <= 1e-5 * scale);
            let (mut o1, mut o2) = (b.clone(), b.clone());
            axpy_f16_scalar(&a, w, &mut o1);
            (super::super::get().axpy_f16)(&a, w, &mut o2);
            for (x, y) in o1.iter().zip(&o2) {
                prop_assert!((x - y).abs() <= 1e-5 * (x.abs() + 1.0));
            }
        }
    }
}
