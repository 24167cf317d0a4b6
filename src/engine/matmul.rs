//! Weight × activation products, dispatched by weight type to the chosen
//! kernels: where the type has integer kernels and the batch is small
//! (decoding, batched decoding, prompts of up to 4 tokens) the activations
//! are quantized once and every product is an int8 dot, as llama.cpp does;
//! larger batches of quantized weights take the integer GEMM where the CPU
//! has AVX-512 VNNI ([`gemm_ok`]); the rest (f32/f16/bf16 weights, q4_1,
//! q5_1, CPUs without VNNI) is dequantized into f32: the f32 GEMM for 5
//! vectors or more where the CPU has AVX-512, else 4-row tiles. Also the
//! checked whole-row dequantizer.

use super::kernels::{self, f32_gemm, int8::gemm};
use super::quant::{self, ActBlocks, ActPanel, QAct, WeightType};
use super::weights::Weight;
use crate::error::{Error, Result};
use rayon::prelude::*;

fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    v.resize(n, 0.0);
    &mut v[..n]
}

/// Dequantizes a whole row of `out.len()` elements.
pub fn dequant_row(t: WeightType, row: &[u8], out: &mut [f32]) -> Result<()> {
    let need = t.row_bytes(out.len()).ok_or_else(|| {
        Error::usage(format!(
            "{} elements are not whole {} blocks",
            out.len(),
            t.name()
        ))
    })?;
    if row.len() != need {
        return Err(Error::usage(format!(
            "{} row of {} bytes, need {need}",
            t.name(),
            row.len()
        )));
    }
    let step = t.chunk_elems();
    let bytes = t.row_bytes(step.min(out.len())).unwrap_or(0);
    let dequant = kernels::get().dequant;
    for (o, b) in out.chunks_mut(step).zip(row.chunks(bytes.max(1))) {
        dequant(t, b, o);
    }
    Ok(())
}

/// Dot products of one weight row with `out.len()` activation vectors
/// packed in `xs` (vector `k` is `xs[k * cols..(k + 1) * cols]`), written
/// to `out[k]`. The row is dequantized one chunk at a time and each chunk
/// is used for every vector, so a batch reads the weights once.
pub fn row_dots(t: WeightType, row: &[u8], xs: &[f32], cols: usize, out: &mut [f32]) {
    if out.len() == 1 {
        // Decoding: one vector, fused kernel.
        out[0] = (kernels::get().row_dot)(t, row, &xs[..cols]);
        return;
    }
    // A batch (prefill): dequantize the row once into this thread's
    // buffer, then one long dot product per vector.
    thread_local! {
        static ROW: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let dot = kernels::get().dot;
    let dequant = kernels::get().dequant;
    ROW.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.resize(cols, 0.0);
        let step = t.chunk_elems();
        let nb = t.row_bytes(step.min(cols)).unwrap_or(0);
        for (o, b) in buf.chunks_mut(step).zip(row.chunks(nb.max(1))) {
            dequant(t, b, o);
        }
        for (k, o) in out.iter_mut().enumerate() {
            *o = dot(&buf, &xs[k * cols..(k + 1) * cols]);
        }
    });
}

/// Dot products of 4 consecutive weight rows (`rows`, `4 × row_bytes`)
/// with the `n` vectors of `xs`: `out[r * n + k] = row_r · x_k`.
pub fn rows4_dots(t: WeightType, rows: &[u8], xs: &[f32], cols: usize, n: usize, out: &mut [f32]) {
    thread_local! {
        static ROWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let dequant = kernels::get().dequant;
    let tile = kernels::get().tile4x2;
    let dot = kernels::get().dot;
    let rb = rows.len() / 4;
    ROWS.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.resize(4 * cols, 0.0);
        let step = t.chunk_elems();
        let nb = t.row_bytes(step.min(cols)).unwrap_or(0);
        for r in 0..4 {
            let dst = &mut buf[r * cols..(r + 1) * cols];
            for (o, b) in dst
                .chunks_mut(step)
                .zip(rows[r * rb..(r + 1) * rb].chunks(nb.max(1)))
            {
                dequant(t, b, o);
            }
        }
        let w = [
            &buf[..cols],
            &buf[cols..2 * cols],
            &buf[2 * cols..3 * cols],
            &buf[3 * cols..],
        ];
        let mut k = 0;
        if let Some(tile4) = kernels::get().tile4x4 {
            while k + 4 <= n {
                let xs4: [&[f32]; 4] =
                    std::array::from_fn(|j| &xs[(k + j) * cols..(k + j + 1) * cols]);
                let o = tile4(w, xs4, cols);
                for r in 0..4 {
                    out[r * n + k..r * n + k + 4].copy_from_slice(&o[r]);
                }
                k += 4;
            }
        }
        while k + 2 <= n {
            let xs2 = [
                &xs[k * cols..(k + 1) * cols],
                &xs[(k + 1) * cols..(k + 2) * cols],
            ];
            let o = tile(w, xs2, cols);
            for r in 0..4 {
                out[r * n + k] = o[r][0];
                out[r * n + k + 1] = o[r][1];
            }
            k += 2;
        }
        if k < n {
            for r in 0..4 {
                out[r * n + k] = dot(w[r], &xs[k * cols..(k + 1) * cols]);
            }
        }
    });
}

/// Rows per parallel task in a matmul.
const ROWS_PER_TASK: usize = 16;

/// `out[i] = W · x[i]` for the `n` vectors of `x` (each `w.cols` long).
/// On a type the integer kernels cover and a small batch
/// ([`int_batch_max`]), `x` is quantized to 8 bits once and every output is an int8
/// dot product (one vector: row kernels; several: tiles that unpack each
/// weight block once for several vectors). Larger batches and other
/// types (f32, f16, bf16) take the f32 kernels.
pub(crate) fn matmul(
    w: &Weight,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    tmp: &mut Vec<f32>,
    qa: &mut QAct,
) -> Result<()> {
    let cols = w.cols;
    if gemm_ok(w, n) {
        qa.panel.quantize(&x[..n * cols], n, cols);
        gemm_matmuls(&mut [(w, out)], &qa.panel, n);
        return Ok(());
    }
    if let Some(blocks) =
        quant::act_blocks(w.wtype).filter(|&b| quant::supports(w.wtype, cols) && int_batch(b, n))
    {
        qa.quantize(blocks, &x[..n * cols], cols);
        int_matmuls(&mut [(w, out)], qa, n);
        return Ok(());
    }
    f32_matmul(w, x, n, out, tmp);
    Ok(())
}

/// The f32 path: the f32 GEMM where the CPU has it (from [`F32_GEMM_MIN`]
/// vectors), else rows dequantized (4 at a time for a batch) and dotted
/// with the f32 vectors in tiles, then transposed into `out`.
fn f32_matmul(w: &Weight, x: &[f32], n: usize, out: &mut [f32], tmp: &mut Vec<f32>) {
    if let Some(gemm) = kernels::get().f32_gemm.filter(|_| n >= F32_GEMM_MIN) {
        return f32_gemm_matmul(gemm, w, x, n, out, tmp);
    }
    let bytes = w.bytes();
    let (rows, cols, rb) = (w.rows, w.cols, w.row_bytes);
    let t = sized(tmp, rows * n);
    if n > 1 && rows % 4 == 0 {
        // Prefill: 4 rows at a time dequantized into this thread's buffer,
        // then 4 × 2 tiles of dot products.
        t.par_chunks_mut(ROWS_PER_TASK * n)
            .enumerate()
            .for_each(|(c, chunk)| {
                for (g, dst) in chunk.chunks_mut(4 * n).enumerate() {
                    let r0 = c * ROWS_PER_TASK + 4 * g;
                    rows4_dots(w.wtype, &bytes[r0 * rb..(r0 + 4) * rb], x, cols, n, dst);
                }
            });
    } else {
        t.par_chunks_mut(ROWS_PER_TASK * n)
            .enumerate()
            .for_each(|(c, chunk)| {
                for (j, dst) in chunk.chunks_mut(n).enumerate() {
                    let r = c * ROWS_PER_TASK + j;
                    row_dots(w.wtype, &bytes[r * rb..(r + 1) * rb], x, cols, dst);
                }
            });
    }
    transpose_into(t, rows, n, out);
}

/// Fewest vectors for the f32 GEMM: every batch past the integer kernels'
/// (as the integer GEMM's [`GEMM_MIN`]). Each vector's result is then the
/// same whatever the batch, which the server's prefix cache relies on (a
/// prompt prefilled whole equals its cached prefix plus the rest, at least
/// 5 tokens). `zt bench-gen` on the f16 benchmark model, 2 threads: 128
/// tokens 690-780 tok/s with the GEMM vs 630-700 with the 4 × 4 tiles,
/// 16 tokens 440 vs 420.
const F32_GEMM_MIN: usize = GEMM_MIN;

/// Rows per parallel task of the f32 GEMM (dequantized into f32 once).
const F32_GEMM_ROWS: usize = 32;

/// The f32 GEMM path: the vectors laid out once as panels (in `tmp`'s
/// storage), each task's rows dequantized once, the kernel writing every
/// vector's outputs in place.
fn f32_gemm_matmul(
    gemm: f32_gemm::GemmFn,
    w: &Weight,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    tmp: &mut Vec<f32>,
) {
    thread_local! {
        static ROWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let (cols, rb, t) = (w.cols, w.row_bytes, w.wtype);
    let mut panel = f32_gemm::Panel {
        x: std::mem::take(tmp),
        ..Default::default()
    };
    panel.fill(&x[..n * cols], n, cols);
    let dequant = kernels::get().dequant;
    let step = t.chunk_elems();
    let chunk_bytes = t.row_bytes(step.min(cols)).unwrap_or(0).max(1);
    let bytes = w.bytes();
    let tasks = column_pieces(out, w.rows, n, F32_GEMM_ROWS);
    tasks.into_par_iter().enumerate().for_each(|(c, mut outs)| {
        let (r0, m) = (c * F32_GEMM_ROWS, outs.first().map_or(0, |o| o.len()));
        ROWS.with(|buf| {
            let mut buf = buf.borrow_mut();
            let rows = sized(&mut buf, m * cols);
            for (r, dst) in rows.chunks_mut(cols.max(1)).enumerate() {
                let src = &bytes[(r0 + r) * rb..(r0 + r + 1) * rb];
                for (o, b) in dst.chunks_mut(step.max(1)).zip(src.chunks(chunk_bytes)) {
                    dequant(t, b, o);
                }
            }
            gemm(rows, m, &panel, &mut outs);
        });
    });
    *tmp = panel.x;
}

/// The most vectors a matmul sends to the integer kernels, by activation
/// layout; larger batches take the f32 tiles. The integer tile unpacks a
/// weight block once per 4 vectors, so its cost per vector stays flat as
/// the batch grows, while the f32 path dequantizes each row once for the
/// whole batch and runs AVX-512 4 × 4 tiles. Measured on this project's
/// 2-core AVX-512 machine (1536 × 576 and × 512 weights, loaded): the
/// 32-value block types' integer tile is 2-2.5× faster up to 4 vectors
/// and 0.8-1.2× at 8 (q4_1 slower there; whole-model 8-token prefill of
/// SmolLM2 Q4_1 too); both up to 2× slower from 64 vectors (long
/// prefills). The k-quants' tile was faster up to 16 vectors, but with
/// 8-bit activations Gemma 3 Q4_K_M's logits after an 11-token prompt
/// were further from the exact weights than llama.cpp's (rms 0.230 against
/// 0.222), so they too stop at 4: f32 activations are the closer choice.
fn int_batch_max(blocks: ActBlocks) -> usize {
    match blocks {
        ActBlocks::B32 | ActBlocks::K256 => 4,
    }
}

/// Fewest vectors that take the prefill GEMM (where the CPU has one):
/// above the integer tiles' limit, so a batch takes exactly one of them.
const GEMM_MIN: usize = 5;

/// Whether prompts of at least `n` tokens each can share one matmul, each
/// vector getting the bits it gets alone: on CPUs with both GEMMs, every
/// batch from [`GEMM_MIN`] vectors takes one of them (by weight type, not
/// size), and both compute each vector in its own lane (`batch::Mul`
/// concatenates prefills on this).
pub(crate) fn vectors_independent_from(n: usize) -> bool {
    n >= GEMM_MIN && kernels::get().gemm.is_some() && kernels::get().f32_gemm.is_some()
}

/// Rows per parallel task of the GEMM (unpacked together, then run
/// against every group of vectors).
const GEMM_ROWS: usize = 32;

/// Whether `n` vectors against `w` take the prefill GEMM. Not the offset
/// formats q4_1 and q5_1 (`w = d·q + m`): on SmolLM2 Q4_1 their 8-bit
/// activations left next-token logits no closer to the exact weights than
/// llama.cpp's on 2 of its 4 reference prompts (the k-quants' GEMM is
/// closer than llama.cpp on every Gemma 3 prompt), and their f32 tiles
/// already prefill faster than llama.cpp's q4_1 (1.9× on the benchmark
/// model), so they keep exact activations.
fn gemm_ok(w: &Weight, n: usize) -> bool {
    n >= GEMM_MIN
        && !matches!(w.wtype, WeightType::Q4_1 | WeightType::Q5_1)
        && kernels::get().gemm.is_some()
        && gemm::supports(w.wtype, w.cols)
}

/// `out = W · a` for each job (`a` quantized for the GEMM with the jobs'
/// common `cols`), all jobs' row tasks in one parallel pass.
fn gemm_matmuls(jobs: &mut [(&Weight, &mut [f32])], a: &ActPanel, n: usize) {
    let Some(gemm) = kernels::get().gemm else {
        return;
    };
    let mut tasks = Vec::new();
    for (w, out) in jobs.iter_mut() {
        let w: &Weight = w;
        for (c, outs) in column_pieces(out, w.rows, n, GEMM_ROWS)
            .into_iter()
            .enumerate()
        {
            tasks.push((w, c * GEMM_ROWS, outs));
        }
    }
    tasks.into_par_iter().for_each(|(w, r0, mut outs)| {
        let (rb, m) = (w.row_bytes, outs.first().map_or(0, |o| o.len()));
        gemm(
            w.wtype,
            &w.bytes()[r0 * rb..(r0 + m) * rb],
            rb,
            a,
            &mut outs,
        );
    });
}

/// Whether a batch of `n` vectors in `blocks` takes the integer kernels.
fn int_batch(blocks: ActBlocks, n: usize) -> bool {
    n <= int_batch_max(blocks)
}

/// The `n` output vectors of a matmul (`out[k * rows..][..rows]`) cut into
/// the parallel tasks' pieces: task `c` gets rows `c · per ..` of every
/// vector, so tasks write disjoint parts of `out` straight from the tiles.
fn column_pieces(out: &mut [f32], rows: usize, n: usize, per: usize) -> Vec<Vec<&mut [f32]>> {
    let tasks = rows.div_ceil(per.max(1));
    let mut pieces: Vec<Vec<&mut [f32]>> = (0..tasks).map(|_| Vec::with_capacity(n)).collect();
    for col in out[..n * rows].chunks_mut(rows.max(1)) {
        for (p, piece) in pieces.iter_mut().zip(col.chunks_mut(per.max(1))) {
            p.push(piece);
        }
    }
    pieces
}

/// `out = W · a` for each job, `a` the `n` quantized vectors (already in
/// the jobs' common activation layout, each job's type supported for its
/// `cols`), all jobs in one parallel pass: one wake-up of the pool.
fn int_matmuls(jobs: &mut [(&Weight, &mut [f32])], a: &QAct, n: usize) {
    let k = kernels::get();
    if n == 1 {
        let (dot, a) = (k.int_rows_dot, a.row(0));
        jobs.par_iter_mut()
            .flat_map(|(w, out)| {
                let w: &Weight = w;
                out[..w.rows]
                    .par_chunks_mut(ROWS_PER_TASK)
                    .enumerate()
                    .map(move |(c, chunk)| (w, c, chunk))
            })
            .for_each(|(w, c, chunk)| {
                let (rb, r) = (w.row_bytes, c * ROWS_PER_TASK);
                let b = &w.bytes()[r * rb..(r + chunk.len()) * rb];
                dot(w.wtype, b, rb, a, chunk);
            });
        return;
    }
    let tile = k.int_tile;
    let mut tasks = Vec::new();
    for (w, out) in jobs.iter_mut() {
        let w: &Weight = w;
        for (c, outs) in column_pieces(out, w.rows, n, ROWS_PER_TASK)
            .into_iter()
            .enumerate()
        {
            tasks.push((w, c * ROWS_PER_TASK, outs));
        }
    }
    tasks.into_par_iter().for_each(|(w, r0, mut outs)| {
        let (rb, m) = (w.row_bytes, outs.first().map_or(0, |o| o.len()));
        tile(
            w.wtype,
            &w.bytes()[r0 * rb..(r0 + m) * rb],
            rb,
            a,
            &mut outs,
        );
    });
}

/// `out[i][r] = t[r][i]` for `t` of `rows × n`.
fn transpose_into(t: &[f32], rows: usize, n: usize, out: &mut [f32]) {
    for i in 0..n {
        for r in 0..rows {
            out[i * rows + r] = t[r * n + i];
        }
    }
}

/// Up to three matrices applied to the same input (Q/K/V, gate/up). On
/// the integer path (a small batch: [`int_batch_max`]) with
/// one activation layout, the input is quantized
/// once and all rows go through one parallel pass (one wake-up of the
/// pool instead of one per matrix); otherwise one matmul each.
pub(crate) fn matmul_group(
    jobs: &mut [(&Weight, &mut [f32])],
    x: &[f32],
    n: usize,
    tmp: &mut Vec<f32>,
    qa: &mut QAct,
) -> Result<()> {
    let Some(first) = jobs.first().map(|(w, _)| *w) else {
        return Ok(());
    };
    if jobs
        .iter()
        .all(|(w, _)| w.cols == first.cols && gemm_ok(w, n))
    {
        qa.panel.quantize(&x[..n * first.cols], n, first.cols);
        gemm_matmuls(jobs, &qa.panel, n);
        return Ok(());
    }
    let blocks = quant::act_blocks(first.wtype);
    let shared = blocks.is_some()
        && jobs.iter().all(|(w, _)| {
            quant::act_blocks(w.wtype) == blocks
                && w.cols == first.cols
                && quant::supports(w.wtype, w.cols)
        });
    let Some(blocks) = blocks.filter(|&b| shared && int_batch(b, n)) else {
        for (w, out) in jobs.iter_mut() {
            matmul(w, x, n, out, tmp, qa)?;
        }
        return Ok(());
    };
    qa.quantize(blocks, &x[..n * first.cols], first.cols);
    int_matmuls(jobs, qa, n);
    Ok(())
}
