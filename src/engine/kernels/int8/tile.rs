//! Integer matmul tiles for several activation vectors at once (prefill,
//! and batched decode): the vectors are quantized once ([`QAct`] holds all
//! of them) and each weight block is unpacked once into registers and
//! dotted against `C` activation vectors before the next block, so a row's
//! unpacking is shared by `C` columns (llama.cpp's GEMM tiles do the same).
//! The result goes straight to the caller's column slices: no transpose.

use super::row_dot_scalar;
use crate::engine::quant::{QAct, WeightType};

/// `outs[k][j] = row j · a.row(k)` for the rows in `rows` (each
/// `row_bytes`; `outs[k].len()` of them) and the first `outs.len()`
/// vectors of `a`.
pub type TileFn = fn(WeightType, &[u8], usize, &QAct, &mut [&mut [f32]]);

/// Whether the arguments describe whole rows and enough vectors; the
/// kernels fall back to the twin (which reads only what is there) if not.
fn shape_ok(rows: &[u8], row_bytes: usize, a: &QAct, outs: &[&mut [f32]]) -> bool {
    let m = outs.first().map_or(0, |o| o.len());
    outs.iter().all(|o| o.len() == m)
        && outs.len() <= a.rows()
        && m.checked_mul(row_bytes).is_some_and(|b| b <= rows.len())
}

/// The scalar twin: one scalar integer dot per (row, vector).
pub fn tile_scalar(
    t: WeightType,
    rows: &[u8],
    row_bytes: usize,
    a: &QAct,
    outs: &mut [&mut [f32]],
) {
    let n = outs.len().min(a.rows());
    for (k, out) in outs.iter_mut().take(n).enumerate() {
        let x = a.row(k);
        for (o, row) in out.iter_mut().zip(rows.chunks_exact(row_bytes.max(1))) {
            *o = row_dot_scalar(t, row, x);
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(in crate::engine::kernels) mod x86 {
    use super::super::x86::{dots, dots_vnni, fits};
    use super::{shape_ok, tile_scalar};
    use crate::engine::quant::{act_blocks, QAct, QRow, WeightType};

    /// Vectors per tile: each weight block is dotted against this many
    /// activation blocks. 4 keeps every kernel's accumulators (two per
    /// vector) and the unpacked weights within the 16 AVX2 registers.
    const C: usize = 4;

    /// Vectors `k..k + N` against every row (`VNNI`: through the VNNI
    /// kernels where the type has one).
    ///
    /// # Safety
    /// AVX2, FMA and F16C available (and AVX-512 VNNI and VL for `VNNI`);
    /// the rows and vectors passed [`shape_ok`] and [`fits`], and
    /// `k + N <= outs.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn columns<const N: usize, const VNNI: bool>(
        t: WeightType,
        rows: &[u8],
        rb: usize,
        a: &QAct,
        k: usize,
        outs: &mut [&mut [f32]],
    ) {
        let xs: [QRow; N] = std::array::from_fn(|i| a.row(k + i));
        let m = outs[k].len();
        for j in 0..m {
            let row = &rows[j * rb..(j + 1) * rb];
            // SAFETY: forwarded from the caller (features; `row` holds
            // whole blocks for every vector's length).
            let r = unsafe {
                if VNNI {
                    dots_vnni::<N>(t, row, &xs)
                } else {
                    dots::<N>(t, row, &xs)
                }
            }
            .unwrap_or_else(|| std::array::from_fn(|i| super::row_dot_scalar(t, row, xs[i])));
            for (i, v) in r.into_iter().enumerate() {
                outs[k + i][j] = v;
            }
        }
    }

    /// The AVX2 tile: `C` vectors at a time, the last 1-3 together.
    pub fn tile_avx2_safe(
        t: WeightType,
        rows: &[u8],
        rb: usize,
        a: &QAct,
        outs: &mut [&mut [f32]],
    ) {
        tile::<false>(t, rows, rb, a, outs)
    }

    /// The tile with AVX-512 VNNI (`vpdpbusd`) for the 32-value block types.
    pub fn tile_vnni_safe(
        t: WeightType,
        rows: &[u8],
        rb: usize,
        a: &QAct,
        outs: &mut [&mut [f32]],
    ) {
        tile::<true>(t, rows, rb, a, outs)
    }

    /// Only called through the two wrappers above, which the kernel table
    /// picks after detecting their features.
    fn tile<const VNNI: bool>(
        t: WeightType,
        rows: &[u8],
        rb: usize,
        a: &QAct,
        outs: &mut [&mut [f32]],
    ) {
        let n = outs.len();
        if n == 0
            || act_blocks(t) != Some(a.blocks)
            || !shape_ok(rows, rb, a, outs)
            || !fits(t, &rows[..rb.min(rows.len())], &a.row(0))
        {
            return tile_scalar(t, rows, rb, a, outs);
        }
        let mut k = 0;
        while k + C <= n {
            // SAFETY: chosen after AVX2, FMA and F16C (and, for `VNNI`,
            // AVX-512 VNNI and VL) were detected; shapes checked above
            // (every vector of `a` as long as row 0).
            unsafe { columns::<C, VNNI>(t, rows, rb, a, k, outs) };
            k += C;
        }
        // SAFETY: as above, for the last 1-3 vectors.
        unsafe {
            match n - k {
                3 => columns::<3, VNNI>(t, rows, rb, a, k, outs),
                2 => columns::<2, VNNI>(t, rows, rb, a, k, outs),
                1 => columns::<1, VNNI>(t, rows, rb, a, k, outs),
                _ => {}
            }
        }
    }
}
