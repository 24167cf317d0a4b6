//! The f32 prefill GEMM: many activation vectors against many dense (or
//! dequantized) rows, for the weights the integer GEMM does not take (f16,
//! bf16, f32; q4_1 and q5_1, kept in f32 for accuracy). The activations are
//! laid out once per matmul as panels of 16 vectors side by side
//! ([`Panel`]: value `k` of the 16 vectors is one 64-byte line); a task's
//! rows are dequantized once into f32. The AVX-512 kernel then computes
//! 8 rows × 32 vectors per pass: each step loads value `k` of two panels
//! and multiplies them by value `k` of each of the 8 rows (broadcast), so
//! every f32 lane is one (row, vector) sum and nothing is reduced
//! horizontally (the 4 × 4 dot-product tiles reduce 16 sums per tile and
//! read the activations once per 4 rows).
//!
//! Every lane is one sequential chain of fused multiply-adds over `k` in
//! order; the scalar twin computes the same chains with `mul_add`, so the
//! two agree bit for bit.

/// Vectors per panel (one AVX-512 register of f32).
pub const LANES: usize = 16;

/// `n` activation vectors of `cols` values as panels of [`LANES`] vectors:
/// `x[(g · cols + k) · LANES + l]` is value `k` of vector `16 g + l`
/// (zeros past the `n`-th vector).
#[derive(Debug, Default)]
pub struct Panel {
    pub n: usize,
    pub cols: usize,
    pub x: Vec<f32>,
}

impl Panel {
    /// Lays out the `n` vectors of `x` (each `cols` long, one after the
    /// other); vectors `x` does not hold whole are zeros.
    pub fn fill(&mut self, x: &[f32], n: usize, cols: usize) {
        let groups = n.div_ceil(LANES);
        self.n = n;
        self.cols = cols;
        if x.len() / cols.max(1) < n {
            // Missing vectors: no stale values from an earlier fill.
            self.x.clear();
        }
        // Every value of the first n vectors is written below, so only the
        // lanes past them need zeros (no clearing of the whole panel).
        self.x.resize(groups * cols * LANES, 0.0);
        for (v, src) in x.chunks_exact(cols.max(1)).take(n).enumerate() {
            let (g, l) = (v / LANES, v % LANES);
            let base = g * cols * LANES + l;
            for (k, &val) in src.iter().enumerate() {
                self.x[base + k * LANES] = val;
            }
        }
        if !n.is_multiple_of(LANES) {
            let last = (groups - 1) * cols * LANES;
            for line in self.x[last..].chunks_exact_mut(LANES) {
                line[n % LANES..].fill(0.0);
            }
        }
    }

    /// Number of panels.
    pub fn groups(&self) -> usize {
        self.n.div_ceil(LANES)
    }
}

/// `outs[v][j] = row j · vector v` for the `m` rows of `w` (row-major,
/// `a.cols` values each) and every vector of `a` (`outs.len() == a.n`,
/// each output `m` long). Mismatched shapes write nothing.
pub type GemmFn = fn(&[f32], usize, &Panel, &mut [&mut [f32]]);

/// Whether the arguments are `m` whole rows and one output per vector.
fn shape_ok(w: &[f32], m: usize, a: &Panel, outs: &[&mut [f32]]) -> bool {
    m.checked_mul(a.cols).is_some_and(|len| len <= w.len())
        && outs.len() == a.n
        && outs.iter().all(|o| o.len() == m)
        && a.x.len() == a.groups() * a.cols * LANES
}

/// Writes the 16 lanes of row `r` in panel `g` to the outputs of the
/// vectors that exist.
fn put(outs: &mut [&mut [f32]], g: usize, r: usize, lanes: &[f32; LANES]) {
    for (o, &v) in outs.iter_mut().skip(g * LANES).zip(lanes) {
        o[r] = v;
    }
}

/// The scalar twin.
pub fn gemm_scalar(w: &[f32], m: usize, a: &Panel, outs: &mut [&mut [f32]]) {
    if !shape_ok(w, m, a, outs) {
        return;
    }
    let cols = a.cols;
    for g in 0..a.groups() {
        let p = &a.x[g * cols * LANES..(g + 1) * cols * LANES];
        for r in 0..m {
            let row = &w[r * cols..(r + 1) * cols];
            let mut acc = [0f32; LANES];
            for (k, &wk) in row.iter().enumerate() {
                for (l, s) in acc.iter_mut().enumerate() {
                    *s = wk.mul_add(p[k * LANES + l], *s);
                }
            }
            put(outs, g, r, &acc);
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::{put, shape_ok, Panel, LANES};
    use std::arch::x86_64::*;

    /// `R` rows from `r0` × the `G` panels from `g0`, accumulated over every
    /// value `k` in order.
    ///
    /// # Safety
    /// AVX-512F; rows `r0..r0 + R` lie in `w` and panels `g0..g0 + G` in
    /// `a` (the caller checked the shapes).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn pass<const R: usize, const G: usize>(
        w: &[f32],
        r0: usize,
        a: &Panel,
        g0: usize,
    ) -> [[__m512; G]; R] {
        let cols = a.cols;
        let mut acc = [[_mm512_setzero_ps(); G]; R];
        let wp = w.as_ptr();
        let xp = a.x.as_ptr();
        // SAFETY: k < cols: row r0 + r's value k is at (r0 + r) cols + k <
        // m cols ≤ w.len(); panel g0 + j's value k is 16 values at
        // ((g0 + j) cols + k) 16 < groups · cols · 16 = a.x.len().
        unsafe {
            for k in 0..cols {
                // No closures here: they would not inherit AVX-512.
                let mut x = [_mm512_setzero_ps(); G];
                for (j, x) in x.iter_mut().enumerate() {
                    *x = _mm512_loadu_ps(xp.add(((g0 + j) * cols + k) * LANES));
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let wk = _mm512_set1_ps(*wp.add((r0 + r) * cols + k));
                    for j in 0..G {
                        acc[j] = _mm512_fmadd_ps(wk, x[j], acc[j]);
                    }
                }
            }
        }
        acc
    }

    /// Writes the sums of `R` rows from `r0` × `G` panels from `g`.
    #[target_feature(enable = "avx512f")]
    fn store<const R: usize, const G: usize>(
        acc: &[[__m512; G]; R],
        g: usize,
        r0: usize,
        outs: &mut [&mut [f32]],
    ) {
        let mut lanes = [0f32; LANES];
        for (r, acc) in acc.iter().enumerate() {
            for (j, v) in acc.iter().enumerate() {
                // SAFETY: `lanes` holds 16 values.
                unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), *v) };
                put(outs, g + j, r0 + r, &lanes);
            }
        }
    }

    /// Runs `R` rows from `r0` against every panel, two at a time.
    ///
    /// # Safety
    /// As [`pass`], for all of `a`'s panels.
    #[target_feature(enable = "avx512f")]
    unsafe fn rows<const R: usize>(w: &[f32], r0: usize, a: &Panel, outs: &mut [&mut [f32]]) {
        let groups = a.groups();
        let mut g = 0;
        // SAFETY: forwarded; panels g..g + 2 (or g) exist.
        unsafe {
            while g + 2 <= groups {
                store(&pass::<R, 2>(w, r0, a, g), g, r0, outs);
                g += 2;
            }
            if g < groups {
                store(&pass::<R, 1>(w, r0, a, g), g, r0, outs);
            }
        }
    }

    /// The AVX-512 kernel: 8 rows at a time, then 4, 2, 1.
    ///
    /// # Safety
    /// AVX-512F available.
    #[target_feature(enable = "avx512f")]
    unsafe fn gemm(w: &[f32], m: usize, a: &Panel, outs: &mut [&mut [f32]]) {
        let mut r = 0;
        // SAFETY: AVX-512F (the caller's); rows r.. r + R < m lie in `w`
        // (shapes checked by the caller).
        unsafe {
            while r + 8 <= m {
                rows::<8>(w, r, a, outs);
                r += 8;
            }
            if r + 4 <= m {
                rows::<4>(w, r, a, outs);
                r += 4;
            }
            if r + 2 <= m {
                rows::<2>(w, r, a, outs);
                r += 2;
            }
            if r < m {
                rows::<1>(w, r, a, outs);
            }
        }
    }

    pub fn gemm_avx512_safe(w: &[f32], m: usize, a: &Panel, outs: &mut [&mut [f32]]) {
        if !shape_ok(w, m, a, outs) {
            return;
        }
        // SAFETY: chosen after AVX-512F was detected; shapes checked.
        unsafe { gemm(w, m, a, outs) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(f: GemmFn, w: &[f32], m: usize, a: &Panel) -> Vec<Vec<f32>> {
        let mut out = vec![vec![f32::NAN; m]; a.n];
        let mut refs: Vec<&mut [f32]> = out.iter_mut().map(|o| o.as_mut_slice()).collect();
        f(w, m, a, &mut refs);
        out
    }

    proptest! {
        /// Any row count (8-row passes and every remainder) and vector
        /// count (pairs of panels, a single panel, a partial one): the
        /// SIMD kernel equals its twin bit for bit, and both are the f32
        /// dot products to rounding.
        #[test]
        fn gemm_matches_its_twin_and_the_dot_products(
            m in 1usize..20,
            n in 1usize..50,
            cols in 1usize..40,
            seed in any::<u32>(),
        ) {
            let val = |i: usize| {
                let h = (i as u32).wrapping_mul(2_654_435_761) ^ seed;
                (h >> 8) as f32 / 8_388_608.0 - 1.0
            };
            let w: Vec<f32> = (0..m * cols).map(val).collect();
            let x: Vec<f32> = (0..n * cols).map(|i| val(i + 7_919)).collect();
            let mut a = Panel::default();
            a.fill(&x, n, cols);
            let twin = run(gemm_scalar, &w, m, &a);
            for v in 0..n {
                for r in 0..m {
                    let want: f64 = (0..cols)
                        .map(|k| f64::from(w[r * cols + k]) * f64::from(x[v * cols + k]))
                        .sum();
                    prop_assert!((f64::from(twin[v][r]) - want).abs() < 1e-4 * cols as f64);
                }
            }
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx512f") {
                let simd = run(x86::gemm_avx512_safe, &w, m, &a);
                for (s, t) in simd.iter().zip(&twin) {
                    for (p, q) in s.iter().zip(t) {
                        prop_assert_eq!(p.to_bits(), q.to_bits());
                    }
                }
            }
        }
    }

    #[test]
    fn a_reused_panel_has_zeros_past_its_vectors() {
        let mut a = Panel::default();
        a.fill(&[5.0; 40 * 3], 40, 3);
        a.fill(&[1.0; 18 * 3], 18, 3);
        assert_eq!(a.x.len(), 2 * 3 * LANES);
        for (i, &v) in a.x.iter().enumerate() {
            let (g, l) = (i / (3 * LANES), i % LANES);
            let want = if g * LANES + l < 18 { 1.0 } else { 0.0 };
            assert_eq!(v, want, "value {i}");
        }
    }

    #[test]
    fn bad_shapes_write_nothing() {
        let mut a = Panel::default();
        a.fill(&[1.0; 6], 2, 3);
        let w = [1.0f32; 6];
        // Too few rows in `w` for m = 3; a missing output; a short output.
        for (m, outs) in [(3usize, 2usize), (2, 1)] {
            let mut out = vec![vec![7f32; m]; outs];
            let mut refs: Vec<&mut [f32]> = out.iter_mut().map(|o| o.as_mut_slice()).collect();
            gemm_scalar(&w, m, &a, &mut refs);
            #[cfg(target_arch = "x86_64")]
            x86::gemm_avx512_safe(&w, m, &a, &mut refs);
            assert!(out.iter().flatten().all(|&v| v == 7.0));
        }
        let mut short = [vec![7f32; 1], vec![7f32; 2]];
        let mut refs: Vec<&mut [f32]> = short.iter_mut().map(|o| o.as_mut_slice()).collect();
        gemm_scalar(&w, 2, &a, &mut refs);
        assert!(short.iter().flatten().all(|&v| v == 7.0));
        // The right shapes: row · vector.
        let mut out = vec![vec![0f32; 2]; 2];
        let mut refs: Vec<&mut [f32]> = out.iter_mut().map(|o| o.as_mut_slice()).collect();
        gemm_scalar(&w, 2, &a, &mut refs);
        assert_eq!(out, vec![vec![3.0, 3.0], vec![3.0, 3.0]]);
    }
}
