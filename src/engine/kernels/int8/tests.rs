//! Every SIMD integer kernel against its scalar twin, and both against the
//! f32 dequantization path, on random blocks (ordinary and extreme scales).

use super::*;
use crate::engine::quant::test_rows::{scale_fields, INT_TYPES as TYPES};
use crate::engine::quant::{self, act_blocks, QAct};
use proptest::prelude::*;

fn row(t: WeightType, seed: &[u8], n: usize) -> Vec<u8> {
    let len = t.row_bytes(n).unwrap();
    let mut r: Vec<u8> = (0..len)
        .map(|i| seed[i % seed.len()].wrapping_add((i * 13) as u8))
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

proptest! {
    /// Rows of 1 to 21 blocks of 32: whole groups of 8 and tails (SmolLM2's
    /// 576 values are 18 blocks, Gemma 3's 640 are 20).
    #[test]
    fn simd_twin_matches_scalar_on_any_block_count(seed in proptest::collection::vec(any::<u8>(), 8..48), x in proptest::collection::vec(-3f32..3.0, 672), nb in 1usize..=21) {
        let n = 32 * nb;
        let x = &x[..n];
        let mut a = QAct::default();
        for t in [WeightType::Q8_0, WeightType::Q4_0, WeightType::Q4_1, WeightType::Q5_0, WeightType::Q5_1] {
            a.quantize(act_blocks(t).unwrap(), x, n);
            let r = row(t, &seed, n);
            let scalar = row_dot_scalar(t, &r, a.row(0));
            let simd = (super::super::get().int_row_dot)(t, &r, a.row(0));
            let mut many = [0f32; 1];
            (super::super::get().int_rows_dot)(t, &r, r.len(), a.row(0), &mut many);
            let mut w = vec![0f32; n];
            quant::dequant_row_scalar(t, &r, &mut w);
            let mag: f32 = w.iter().zip(x).map(|(p, q)| (p * q).abs()).sum::<f32>() + 1e-3;
            let exact: f32 = w.iter().zip(x).map(|(p, q)| p * q).sum();
            prop_assert!((scalar - simd).abs() <= 1e-4 * mag, "{}: {scalar} vs {simd}", t.name());
            prop_assert!((scalar - many[0]).abs() <= 1e-4 * mag, "{}: {scalar} vs rows {}", t.name(), many[0]);
            prop_assert!((scalar - exact).abs() <= 0.02 * mag, "{}: {scalar} vs exact {exact}", t.name());
        }
    }

    #[test]
    fn simd_twin_matches_scalar_and_approximates_f32(seed in proptest::collection::vec(any::<u8>(), 8..48), x in proptest::collection::vec(-3f32..3.0, 512)) {
        let mut a = QAct::default();
        for t in TYPES {
            a.quantize(act_blocks(t).unwrap(), &x, 512);
            let r = row(t, &seed, 512);
            let scalar = row_dot_scalar(t, &r, a.row(0));
            let simd = (super::super::get().int_row_dot)(t, &r, a.row(0));
            let mut w = vec![0f32; 512];
            quant::dequant_row_scalar(t, &r, &mut w);
            let mag: f32 = w.iter().zip(&x).map(|(p, q)| (p * q).abs()).sum::<f32>() + 1e-3;
            let exact: f32 = w.iter().zip(&x).map(|(p, q)| p * q).sum();
            prop_assert!((scalar - simd).abs() <= 1e-4 * mag, "{}: {scalar} vs {simd}", t.name());
            // The many-row kernel: three rows (the second shifted) at once.
            let mut rows = r.clone();
            rows.extend(r.iter().map(|b| b.wrapping_add(1)));
            rows.extend_from_slice(&r);
            for (b, f) in (0..rows.len()).step_by(t.block_bytes()).zip(0..) {
                let h = half::f16::from_f32(f as f32 / 97.0 - 0.5);
                let at = b + scale_fields(t)[0];
                rows[at..at + 2].copy_from_slice(&h.to_le_bytes());
            }
            let (mut many, mut twin) = ([0f32; 3], [0f32; 3]);
            (super::super::get().int_rows_dot)(t, &rows, r.len(), a.row(0), &mut many);
            rows_dot_scalar(t, &rows, r.len(), a.row(0), &mut twin);
            for (x, y) in many.iter().zip(&twin) {
                prop_assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()) * mag, "{}: {x} vs {y}", t.name());
            }
            prop_assert_eq!(twin[2], row_dot_scalar(t, &rows[2 * r.len()..], a.row(0)));
            // 8-bit activations: within 2% of the magnitude of the terms.
            prop_assert!((scalar - exact).abs() <= 0.02 * mag, "{}: {scalar} vs exact {exact}", t.name());
        }
    }
}

/// The row with the f16 at byte `field` of every block set to 0.
fn zeroed(t: WeightType, r: &[u8], field: usize) -> Vec<f32> {
    let mut z = r.to_vec();
    for b in (0..z.len()).step_by(t.block_bytes()) {
        z[b + field..b + field + 2].copy_from_slice(&[0, 0]);
    }
    let mut w = vec![0f32; r.len() / t.block_bytes() * t.block_elems()];
    quant::dequant_row_scalar(t, &z, &mut w);
    w
}

/// For one row: the SIMD and scalar integer dots, the f64 dot of the
/// dequantized weights with `x`, the bound on what the activations'
/// rounding can change it by (Σ |w| |x − x̂|), and the f32 rounding
/// allowance (relative to the scale and min parts' magnitudes
/// separately, which may cancel).
fn dots(t: WeightType, r: &[u8], x: &[f32]) -> (f32, f32, f64, f64, f64) {
    let n = x.len();
    let mut a = QAct::default();
    a.quantize(act_blocks(t).unwrap(), x, n);
    let scalar = row_dot_scalar(t, r, a.row(0));
    let simd = (super::super::get().int_row_dot)(t, r, a.row(0));
    let mut w = vec![0f32; n];
    quant::dequant_row_scalar(t, r, &mut w);
    let bl = act_blocks(t).unwrap().len();
    let xq: Vec<f64> = (0..n).map(|i| a.d[i / bl] as f64 * a.q[i] as f64).collect();
    let exact: f64 = w.iter().zip(x).map(|(p, q)| *p as f64 * *q as f64).sum();
    let act: f64 = (0..n)
        .map(|i| (w[i] as f64).abs() * (x[i] as f64 - xq[i]).abs())
        .sum();
    let fields = scale_fields(t);
    let mut parts = vec![w.clone()];
    if fields.len() == 2 {
        parts = vec![zeroed(t, r, fields[1]), zeroed(t, r, fields[0])];
    }
    let terms: f64 = parts
        .iter()
        .flat_map(|p| p.iter().zip(&xq).map(|(u, v)| (*u as f64 * v).abs()))
        .sum();
    (simd, scalar, exact, act, 1e-5 * terms + 1e-30)
}

/// An f16 scale from the ends of the range: the largest finite, tiny
/// normals, subnormals, zero, negatives.
fn extreme_scale(pick: u8) -> half::f16 {
    let v = match pick % 8 {
        0 => 65504.0,
        1 => -65504.0,
        2 => 6.1e-5,
        3 => 6.0e-8,
        4 => 0.0,
        5 => -1.0e-3,
        6 => 1000.0,
        _ => 1.0,
    };
    half::f16::from_f32(v)
}

proptest! {
    /// Random bytes for every quant, every scale field from the extremes,
    /// activations from a tiny to a huge range (and single spikes, which
    /// leave the other values of a block at 0 after quantization).
    #[test]
    fn simd_twin_matches_scalar_with_extreme_scales(
        bytes in proptest::collection::vec(any::<u8>(), 544),
        picks in proptest::collection::vec(any::<u8>(), 8),
        x in proptest::collection::vec(-1f32..1.0, 512),
        range in prop_oneof![Just(1e-6f32), Just(1.0f32), Just(1e4f32)],
        spike in 0usize..512,
    ) {
        let mut x: Vec<f32> = x.iter().map(|v| v * range).collect();
        x[spike] = 100.0 * range;
        for t in TYPES {
            let mut r = bytes[..t.row_bytes(512).unwrap()].to_vec();
            let bb = t.block_bytes();
            for (k, b) in (0..r.len()).step_by(bb).enumerate() {
                for (i, &f) in scale_fields(t).iter().enumerate() {
                    let h = extreme_scale(picks[(2 * k + i) % picks.len()]);
                    r[b + f..b + f + 2].copy_from_slice(&h.to_le_bytes());
                }
            }
            let (simd, scalar, exact, act, float) = dots(t, &r, &x);
            let (simd, scalar) = (simd as f64, scalar as f64);
            prop_assert!((simd - scalar).abs() <= float, "{}: {simd} vs {scalar} (allowed {float})", t.name());
            prop_assert!(
                (scalar - exact).abs() <= act * 1.001 + float,
                "{}: {scalar} vs exact {exact} (activation rounding {act}, float {float})",
                t.name()
            );
        }
    }
}

/// Whether this CPU runs the AVX2 kernels, and the VNNI ones.
fn features() -> (bool, bool) {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c");
        let vnni = std::is_x86_feature_detected!("avx512vnni")
            && std::is_x86_feature_detected!("avx512vl");
        (avx2, avx2 && vnni)
    }
    #[cfg(not(target_arch = "x86_64"))]
    (false, false)
}

/// Every tile kernel this CPU can run (the table holds only the best).
fn tiles() -> Vec<(&'static str, super::tile::TileFn)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, super::tile::TileFn)> =
        vec![("table", super::super::get().int_tile)];
    #[cfg(target_arch = "x86_64")]
    {
        let (avx2, vnni) = features();
        if avx2 {
            v.push(("avx2", super::tile::x86::tile_avx2_safe));
        }
        if vnni {
            v.push(("vnni", super::tile::x86::tile_vnni_safe));
        }
    }
    v
}

/// Every many-row kernel this CPU can run.
fn rows_kernels() -> Vec<(&'static str, RowsDotFn)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, RowsDotFn)> = vec![("table", super::super::get().int_rows_dot)];
    #[cfg(target_arch = "x86_64")]
    {
        let (avx2, vnni) = features();
        if avx2 {
            v.push(("avx2", x86::rows_dot_avx2_safe));
        }
        if vnni {
            v.push(("vnni", x86::rows_dot_vnni_safe));
        }
    }
    v
}

proptest! {
    /// The many-row kernels (AVX2 and VNNI where the CPU has them) against
    /// the twin, on whole groups of 8 blocks (512 values) and not (224):
    /// VNNI's `vpdpbusd` gives the same integer sums as AVX2's `maddubs`
    /// and `madd`, so the two agree exactly.
    #[test]
    fn rows_kernels_match_the_twin_and_each_other(
        seed in proptest::collection::vec(any::<u8>(), 8..48),
        x in proptest::collection::vec(-3f32..3.0, 512),
        cols in prop_oneof![Just(224usize), Just(512usize)],
    ) {
        let mut a = QAct::default();
        for t in TYPES {
            if !quant::supports(t, cols) {
                continue;
            }
            a.quantize(act_blocks(t).unwrap(), &x[..cols], cols);
            let r = row(t, &seed, cols);
            let mut rows = r.clone();
            let other: Vec<u8> = seed.iter().map(|b| b.wrapping_mul(3) ^ 0x5a).collect();
            rows.extend(row(t, &other, cols));
            let mut twin = [0f32; 2];
            rows_dot_scalar(t, &rows, r.len(), a.row(0), &mut twin);
            let mag: f32 = twin.iter().map(|v| v.abs()).sum::<f32>() + 1.0;
            let mut seen: Vec<(&str, [f32; 2])> = Vec::new();
            for (name, k) in rows_kernels() {
                let mut got = [0f32; 2];
                k(t, &rows, r.len(), a.row(0), &mut got);
                for (g, w) in got.iter().zip(&twin) {
                    prop_assert!((g - w).abs() <= 1e-3 * mag, "{} {name}: {g} vs {w}", t.name());
                }
                seen.push((name, got));
            }
            let pick = |n: &str| seen.iter().find(|(m, _)| *m == n).map(|(_, g)| *g);
            if let (Some(x), Some(y)) = (pick("avx2"), pick("vnni")) {
                prop_assert_eq!(x, y, "{}", t.name());
            }
        }
    }
}

proptest! {
    /// The tile kernels (several vectors against several rows) against their
    /// twin, on every type, with vector counts that are not whole tiles
    /// (1..=11) and 1-5 rows whose scales differ row to row; the twin is
    /// exactly the one-row scalar kernel.
    #[test]
    fn tile_matches_its_twin_on_any_vector_and_row_count(
        seed in proptest::collection::vec(any::<u8>(), 8..48),
        x in proptest::collection::vec(-3f32..3.0, 512 * 11),
        n in 1usize..=11,
        m in 1usize..=5,
    ) {
        use super::tile::tile_scalar;
        let mut a = QAct::default();
        for t in TYPES {
            a.quantize(act_blocks(t).unwrap(), &x[..512 * n], 512);
            let r = row(t, &seed, 512);
            let rb = r.len();
            let mut rows = Vec::new();
            for j in 0..m {
                rows.extend(r.iter().map(|b| b.wrapping_add(j as u8)));
            }
            for (b, f) in (0..rows.len()).step_by(t.block_bytes()).zip(0..) {
                let h = half::f16::from_f32((f % 23) as f32 / 37.0 - 0.3);
                let at = b + scale_fields(t)[0];
                rows[at..at + 2].copy_from_slice(&h.to_le_bytes());
            }
            let mut twin = vec![0f32; n * m];
            let mut outs: Vec<&mut [f32]> = twin.chunks_mut(m).collect();
            tile_scalar(t, &rows, rb, &a, &mut outs);
            let mut seen: Vec<(&str, Vec<f32>)> = Vec::new();
            for (name, tile) in tiles() {
            let mut got = vec![0f32; n * m];
            let mut outs: Vec<&mut [f32]> = got.chunks_mut(m).collect();
            tile(t, &rows, rb, &a, &mut outs);
            seen.push((name, got.clone()));
            for k in 0..n {
                for j in 0..m {
                    let row = &rows[j * rb..(j + 1) * rb];
                    let want = row_dot_scalar(t, row, a.row(k));
                    prop_assert_eq!(twin[k * m + j], want);
                    let mut w = vec![0f32; 512];
                    quant::dequant_row_scalar(t, row, &mut w);
                    let xs = &x[512 * k..512 * (k + 1)];
                    let mag: f32 = w.iter().zip(xs).map(|(p, q)| (p * q).abs()).sum::<f32>() + 1e-3;
                    let g = got[k * m + j];
                    prop_assert!((g - want).abs() <= 1e-4 * mag, "{} {name} vector {k} row {j}: {g} vs {want}", t.name());
                }
            }
            }
            // VNNI's integer sums equal AVX2's, so the floats do too.
            let pick = |n: &str| seen.iter().find(|(m, _)| *m == n).map(|(_, g)| g.clone());
            if let (Some(x), Some(y)) = (pick("avx2"), pick("vnni")) {
                prop_assert_eq!(x, y, "{}", t.name());
            }
        }
    }
}

/// Arguments that do not fit (fewer quantized vectors than outputs, rows
/// shorter than claimed) are computed by the twin, which reads only what
/// is there, instead of reading past the buffers.
#[test]
fn tile_with_mismatched_shapes_falls_back_to_the_twin() {
    let t = WeightType::Q8_0;
    let x: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut a = QAct::default();
    a.quantize(act_blocks(t).unwrap(), &x, 64);
    let r = row(t, &[7, 11, 13], 64);
    let rb = r.len();
    // Three outputs of two rows, one vector, one row of bytes.
    for (name, tile) in tiles() {
        let mut out = [f32::NAN; 6];
        let mut outs: Vec<&mut [f32]> = out.chunks_mut(2).collect();
        tile(t, &r, rb, &a, &mut outs);
        assert_eq!(out[0], row_dot_scalar(t, &r, a.row(0)), "{name}");
        assert!(
            out[1].is_nan() && out[2..].iter().all(|v| v.is_nan()),
            "{name}"
        );
    }
}

/// Activation rows whose sums do not match their blocks are refused by the
/// SIMD kernels' check (the 8-block kernels read 8 sums at a time).
#[cfg(target_arch = "x86_64")]
#[test]
fn rows_with_missing_sums_do_not_fit() {
    let (d, q) = ([1.0f32; 8], [0i8; 256]);
    let row = [0u8; 8 * 34];
    for t in [
        WeightType::Q8_0,
        WeightType::Q4_0,
        WeightType::Q4_1,
        WeightType::Q5_0,
        WeightType::Q5_1,
    ] {
        let full = [0i16; 8];
        let ok = QRow {
            d: &d,
            q: &q,
            s: &full,
        };
        assert!(super::x86::fits(t, &row, &ok), "{t:?}");
        for s in [&full[..0], &full[..7]] {
            let short = QRow { d: &d, q: &q, s };
            assert!(
                !super::x86::fits(t, &row, &short),
                "{t:?} with {} sums",
                s.len()
            );
        }
    }
}
