//! The prefill GEMM: many activation vectors against many quantized rows
//! in 8-bit integers. A task's weight rows are unpacked once into int8
//! ([`Unpacked`]); the activations were quantized once per matmul into
//! groups of 16 vectors side by side ([`ActPanel`]). The AVX-512 VNNI
//! kernel then computes `R` rows × 16 vectors per pass: each `vpdpbusd`
//! multiplies 4 values of 16 vectors (one 64-byte load) by the same 4
//! weights of one row (broadcast), so an int32 lane is one (row, vector)
//! sum and no horizontal reduction is ever needed. Per sub-block the sums
//! are scaled into f32 accumulators:
//! `acc += (d_a · scale) · Σ u·q + offset · d_a · Σq`.
//!
//! Each weight is unpacked once per matmul, not once per vector (as the
//! 1 × 4 tiles of [`super::tile`] do), so the cost per vector falls as the
//! prompt grows.

use super::unpack::{sub_block, Unpacked, SUB};
use crate::engine::quant::{ActPanel, WeightType, LANES};
use std::cell::RefCell;

/// `outs[k][j] = row j · vector k` for the rows in `rows` (each
/// `row_bytes`; `outs[k].len()` of them) and every vector of the panel
/// (`outs.len() == a.n`).
pub type GemmFn = fn(WeightType, &[u8], usize, &ActPanel, &mut [&mut [f32]]);

/// Whether the GEMM covers rows of `t` with `cols` values.
pub fn supports(t: WeightType, cols: usize) -> bool {
    sub_block(t).is_some()
        && cols > 0
        && cols.is_multiple_of(t.block_elems())
        && cols.is_multiple_of(32)
}

/// Whether the arguments are whole rows of a covered type and one output
/// slice per vector, all of one length.
fn shape_ok(t: WeightType, rows: &[u8], rb: usize, a: &ActPanel, outs: &[&mut [f32]]) -> bool {
    let m = outs.first().map_or(0, |o| o.len());
    supports(t, a.cols)
        && t.row_bytes(a.cols) == Some(rb)
        && outs.len() == a.n
        && outs.iter().all(|o| o.len() == m)
        && m.checked_mul(rb).is_some_and(|b| b <= rows.len())
        && a.q.len() == a.groups() * a.cols * LANES
}

thread_local! {
    static UNPACKED: RefCell<Unpacked> = RefCell::new(Unpacked::default());
}

/// The row sums of one (rows, group) pass: `R` rows × 16 lanes.
type Sums<const R: usize> = [[f32; LANES]; R];

/// A pass over `R` unpacked rows starting at `r0` and group `g`.
trait Pass {
    fn run<const R: usize, const OFF: bool>(
        u: &Unpacked,
        r0: usize,
        a: &ActPanel,
        g: usize,
    ) -> Sums<R>;
}

/// Shared driver: unpack the task's rows, then every group of vectors
/// against every `R` rows.
fn drive<P: Pass>(t: WeightType, rows: &[u8], rb: usize, a: &ActPanel, outs: &mut [&mut [f32]]) {
    let Some((_, off)) = sub_block(t) else {
        return;
    };
    let m = outs.first().map_or(0, |o| o.len());
    UNPACKED.with(|u| {
        let mut u = u.borrow_mut();
        u.fill(t, rows, rb, m, a.cols);
        if off {
            groups::<P, true>(&u, m, a, outs)
        } else {
            groups::<P, false>(&u, m, a, outs)
        }
    });
}

/// Rows per pass of the SIMD kernel: 8 int32 and 8 f32 accumulators.
const R: usize = 8;

fn groups<P: Pass, const OFF: bool>(u: &Unpacked, m: usize, a: &ActPanel, outs: &mut [&mut [f32]]) {
    for g in 0..a.groups() {
        let lanes = (a.n - g * LANES).min(LANES);
        let mut r = 0;
        while r < m {
            if r + R <= m {
                let s = P::run::<R, OFF>(u, r, a, g);
                store(&s, r, g, lanes, outs);
                r += R;
            } else {
                let s = P::run::<1, OFF>(u, r, a, g);
                store(&s, r, g, lanes, outs);
                r += 1;
            }
        }
    }
}

fn store<const N: usize>(s: &Sums<N>, r0: usize, g: usize, lanes: usize, outs: &mut [&mut [f32]]) {
    for (lane, out) in outs[g * LANES..g * LANES + lanes].iter_mut().enumerate() {
        for (i, row) in s.iter().enumerate() {
            out[r0 + i] = row[lane];
        }
    }
}

/// The scalar twin: the same integer sums and the same f32 operations in
/// the same order as the SIMD kernel, one lane at a time.
struct Scalar;

impl Pass for Scalar {
    fn run<const N: usize, const OFF: bool>(
        u: &Unpacked,
        r0: usize,
        a: &ActPanel,
        g: usize,
    ) -> Sums<N> {
        let (cols, nsb) = (a.cols, u.per_row());
        let mut out = [[0f32; LANES]; N];
        for (i, acc) in out.iter_mut().enumerate() {
            let r = r0 + i;
            let q = &u.q[r * cols..(r + 1) * cols];
            for sb in 0..nsb {
                let s = r * nsb + sb;
                let at = (g * nsb + sb) * LANES;
                for (lane, acc) in acc.iter_mut().enumerate() {
                    let mut isum = u.corr[s];
                    for (e, &w) in q.iter().enumerate().skip(sb * SUB).take(SUB) {
                        let i = g * cols * LANES + (e / 4) * 4 * LANES + lane * 4 + e % 4;
                        isum += a.q[i] as i32 * w as i32;
                    }
                    *acc = (isum as f32).mul_add(a.d[at + lane] * u.scale[s], *acc);
                    if OFF {
                        *acc = a.ds[at + lane].mul_add(u.offset[s], *acc);
                    }
                }
            }
        }
        out
    }
}

/// The scalar twin.
pub fn gemm_scalar(t: WeightType, rows: &[u8], rb: usize, a: &ActPanel, outs: &mut [&mut [f32]]) {
    if shape_ok(t, rows, rb, a, outs) {
        drive::<Scalar>(t, rows, rb, a, outs);
    }
}

#[cfg(target_arch = "x86_64")]
pub(in crate::engine::kernels) mod x86 {
    use super::{drive, shape_ok, Pass, Sums, Unpacked, SUB};
    use crate::engine::quant::{ActPanel, WeightType, LANES};
    use std::arch::x86_64::*;

    struct Vnni;

    impl Pass for Vnni {
        fn run<const N: usize, const OFF: bool>(
            u: &Unpacked,
            r0: usize,
            a: &ActPanel,
            g: usize,
        ) -> Sums<N> {
            // SAFETY: only reached through `gemm_vnni_safe`, chosen after
            // AVX-512F and VNNI were detected, with `shape_ok` checked, so
            // `u` holds the rows `r0..r0 + N` and `a` the group `g`.
            unsafe { run_vnni::<N, OFF>(u, r0, a, g) }
        }
    }

    /// # Safety
    /// AVX-512F and AVX-512 VNNI available; rows `r0..r0 + N` unpacked in
    /// `u` for `a.cols` values; `g < a.groups()`.
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn run_vnni<const N: usize, const OFF: bool>(
        u: &Unpacked,
        r0: usize,
        a: &ActPanel,
        g: usize,
    ) -> Sums<N> {
        let (cols, nsb) = (a.cols, u.per_row());
        debug_assert!((r0 + N) * cols <= u.q.len() && (r0 + N) * nsb <= u.scale.len());
        debug_assert!((g + 1) * cols * LANES <= a.q.len());
        let q = u.q[r0 * cols..(r0 + N) * cols].as_ptr();
        let (scale, offset, corr) = (
            u.scale[r0 * nsb..].as_ptr(),
            u.offset[r0 * nsb..].as_ptr(),
            u.corr[r0 * nsb..].as_ptr(),
        );
        let aq = a.q[g * cols * LANES..(g + 1) * cols * LANES].as_ptr();
        let ad = a.d[g * nsb * LANES..(g + 1) * nsb * LANES].as_ptr();
        let ads = a.ds[g * nsb * LANES..(g + 1) * nsb * LANES].as_ptr();
        let mut facc = [_mm512_setzero_ps(); N];
        // SAFETY: every pointer below stays inside the slices taken above:
        // row i < N, sub-block sb < nsb, value e = sb·S + 4·k4 + 3 < cols,
        // activation group bytes (e / 4)·64 + 63 < cols · 16, block sb·S/32
        // < nb and sum sb < nsb of 16 lanes each.
        unsafe {
            let rows: [*const i8; N] = std::array::from_fn(|i| q.add(i * cols));
            let (mut qa, mut aq) = (0usize, aq);
            for sb in 0..nsb {
                let mut iacc: [__m512i; N] =
                    std::array::from_fn(|i| _mm512_set1_epi32(*corr.add(i * nsb + sb)));
                for k4 in 0..SUB / 4 {
                    let av = _mm512_loadu_si512(aq.add(k4 * 64) as *const _);
                    for (acc, row) in iacc.iter_mut().zip(rows) {
                        let w = (row.wrapping_add(qa + 4 * k4) as *const i32).read_unaligned();
                        *acc = _mm512_dpbusd_epi32(*acc, av, _mm512_set1_epi32(w));
                    }
                }
                qa = qa.wrapping_add(SUB);
                aq = aq.wrapping_add(SUB * LANES);
                let da = _mm512_loadu_ps(ad.add(sb * LANES));
                let dsum = _mm512_loadu_ps(ads.add(sb * LANES));
                for (i, acc) in facc.iter_mut().enumerate() {
                    let s = _mm512_mul_ps(da, _mm512_set1_ps(*scale.add(i * nsb + sb)));
                    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[i]), s, *acc);
                    if OFF {
                        let o = _mm512_set1_ps(*offset.add(i * nsb + sb));
                        *acc = _mm512_fmadd_ps(dsum, o, *acc);
                    }
                }
            }
        }
        let mut out = [[0f32; LANES]; N];
        for (o, acc) in out.iter_mut().zip(facc) {
            // SAFETY: `o` is 16 f32s; AVX-512F is enabled here.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), acc) };
        }
        out
    }

    /// The AVX-512 VNNI GEMM; the kernel table picks it after detecting
    /// AVX-512F and VNNI.
    pub fn gemm_vnni_safe(
        t: WeightType,
        rows: &[u8],
        rb: usize,
        a: &ActPanel,
        outs: &mut [&mut [f32]],
    ) {
        if shape_ok(t, rows, rb, a, outs) {
            drive::<Vnni>(t, rows, rb, a, outs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::quant::dequant_row_scalar;
    use crate::engine::quant::test_rows::{random_rows, INT_TYPES as TYPES};
    use proptest::prelude::*;

    fn run(f: GemmFn, t: WeightType, rows: &[u8], m: usize, a: &ActPanel) -> Vec<Vec<f32>> {
        let mut out = vec![vec![f32::NAN; m]; a.n];
        let mut outs: Vec<&mut [f32]> = out.iter_mut().map(|o| o.as_mut_slice()).collect();
        f(t, rows, t.row_bytes(a.cols).unwrap_or(0), a, &mut outs);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Any type, 1-40 vectors (partial groups), 1-19 rows (partial
        /// passes): the twin is close to the exact f32 product, and the
        /// SIMD kernel equals the twin bit for bit.
        #[test]
        fn gemm_matches_f32_and_its_twin(
            ti in 0usize..10,
            n in 1usize..40,
            m in 1usize..19,
            seed in any::<u64>(),
        ) {
            let t = TYPES[ti];
            let cols = 512;
            let rows = random_rows(t, cols, m, seed as u32);
            let x: Vec<f32> = (0..n * cols)
                .map(|i| (((i as u64 * 2654435761 + seed) % 2001) as f32 - 1000.0) / 300.0)
                .collect();
            let mut a = ActPanel::default();
            a.quantize(&x, n, cols);
            let twin = run(gemm_scalar, t, &rows, m, &a);
            let rb = t.row_bytes(cols).unwrap();
            let mut w = vec![0f32; cols];
            for j in 0..m {
                dequant_row_scalar(t, &rows[j * rb..(j + 1) * rb], &mut w);
                for k in 0..n {
                    let xk = &x[k * cols..(k + 1) * cols];
                    let exact: f32 = w.iter().zip(xk).map(|(p, q)| p * q).sum();
                    let mag: f32 = w.iter().zip(xk).map(|(p, q)| (p * q).abs()).sum();
                    prop_assert!(
                        (twin[k][j] - exact).abs() <= 0.02 * mag + 1e-4,
                        "{} row {j} vec {k}: {} vs {exact}", t.name(), twin[k][j]
                    );
                }
            }
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512vnni")
            {
                let simd = run(x86::gemm_vnni_safe, t, &rows, m, &a);
                for k in 0..n {
                    for j in 0..m {
                        prop_assert_eq!(simd[k][j].to_bits(), twin[k][j].to_bits(),
                            "{} row {} vec {}", t.name(), j, k);
                    }
                }
            }
        }
    }

    #[test]
    fn bad_shapes_write_nothing() {
        let t = WeightType::Q4_0;
        let rows = random_rows(t, 64, 4, 7);
        let mut a = ActPanel::default();
        a.quantize(&[0.5; 3 * 64], 3, 64);
        // Two output slices for three vectors.
        let mut out = vec![vec![f32::NAN; 4]; 2];
        let mut outs: Vec<&mut [f32]> = out.iter_mut().map(|o| o.as_mut_slice()).collect();
        gemm_scalar(t, &rows, 72, &a, &mut outs);
        assert!(out.iter().flatten().all(|v| v.is_nan()));
        // Rows shorter than the outputs claim.
        let mut out = vec![vec![f32::NAN; 5]; 3];
        let mut outs: Vec<&mut [f32]> = out.iter_mut().map(|o| o.as_mut_slice()).collect();
        gemm_scalar(t, &rows, 72, &a, &mut outs);
        assert!(out.iter().flatten().all(|v| v.is_nan()));
    }
}
