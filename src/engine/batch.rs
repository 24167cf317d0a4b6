//! Batched decoding: the next token of several sequences — each with its
//! own KV cache and position — in one forward pass, so every weight is
//! read once per step for all of them instead of once per sequence (on a
//! memory-bound CPU the step costs about what one sequence's step does).
//!
//! The layer code is the architectures' own (`arch::*::forward` over
//! [`Seq`]s): every matmul runs once over all rows, and RoPE, the KV store
//! and attention run per sequence at its own position in its own cache.
//!
//! Each row's result is the one that sequence would get decoding alone:
//! where a single-row matmul takes the integer kernels (the row quantized
//! to 8 bits), a batched decode quantizes each row the same way and
//! computes each product with the single-row kernel's arithmetic, bit for
//! bit, while unpacking each weight block once for up to 4 rows
//! (`rows`), so greedy outputs do not depend on what else the server is
//! decoding.
//! Other weight types go through `matmul` with all rows (f32 arithmetic
//! either way; sums may differ in the last bits).

use super::arch::{Model, Scratch, Seq};
use super::kv::KvCache;
use super::matmul::{matmul, matmul_group, vectors_independent_from};
use super::quant::{self, QAct};
use super::weights::Weight;
use super::Engine;
use crate::error::{Error, Result};
use rayon::prelude::*;
use std::sync::Arc;

mod rows;

/// Weight rows per parallel task on the integer path: the chunking of the
/// single-row path.
const ROWS_PER_TASK: usize = 16;

/// How a forward multiplies its rows by a weight: the rows split into
/// segments, each computed as its own sequence would compute it alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mul {
    segs: Vec<Seg>,
}

/// Consecutive rows multiplied one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seg {
    rows: usize,
    /// One row for each of several sequences (each row computed as that
    /// sequence's own one-token step would compute it); else consecutive
    /// tokens of one sequence (a prefill, a one-token step), `matmul` over
    /// the segment's rows.
    decode: bool,
}

impl Mul {
    /// The plan of a forward over `seqs`, so that every row gets the bits
    /// it gets when its sequence runs alone: one sequence is one segment of
    /// its tokens. Of several (a batched step), each run of one-row
    /// sequences is a decode segment; a run of prompts that each take the
    /// GEMM alone is one segment where the GEMM computes every vector in
    /// its own lane ([`vectors_independent_from`]), so their
    /// weights are read once; any other prompt is a segment of its own.
    pub(crate) fn of(seqs: &[Seq<'_>]) -> Mul {
        if let [one] = seqs {
            return Mul::tokens(one.n);
        }
        let mut segs: Vec<Seg> = Vec::new();
        let mut shared_prompts = false;
        for q in seqs {
            let decode = q.n == 1;
            let shares = !decode && vectors_independent_from(q.n);
            match segs.last_mut() {
                Some(last) if decode && last.decode => last.rows += 1,
                Some(last) if shares && shared_prompts => last.rows += q.n,
                _ => segs.push(Seg { rows: q.n, decode }),
            }
            shared_prompts = shares;
        }
        Mul { segs }
    }

    /// `n` consecutive tokens of one sequence.
    pub(crate) fn tokens(n: usize) -> Mul {
        Mul {
            segs: vec![Seg {
                rows: n,
                decode: false,
            }],
        }
    }

    /// `n` rows, one for each of `n` sequences.
    pub(crate) fn decode(n: usize) -> Mul {
        Mul {
            segs: vec![Seg {
                rows: n,
                decode: n > 1,
            }],
        }
    }

    /// `out[i] = W · x[i]` for the `n` rows of `x`.
    pub(crate) fn one(
        &self,
        w: &Weight,
        x: &[f32],
        n: usize,
        out: &mut [f32],
        tmp: &mut Vec<f32>,
        qa: &mut QAct,
    ) -> Result<()> {
        self.group(&mut [(w, out)], x, n, tmp, qa)
    }

    /// Up to three matrices over the same input (Q/K/V, gate/up), segment
    /// by segment. Batched decoding on the integer path quantizes the rows
    /// once and runs every matrix in one parallel pass (one wake-up of the
    /// pool).
    pub(crate) fn group(
        &self,
        jobs: &mut [(&Weight, &mut [f32])],
        x: &[f32],
        n: usize,
        tmp: &mut Vec<f32>,
        qa: &mut QAct,
    ) -> Result<()> {
        let total: usize = self.segs.iter().map(|g| g.rows).sum();
        if total != n {
            return Err(Error::usage(format!(
                "a matmul of {n} rows under a plan of {total}"
            )));
        }
        let [seg] = self.segs.as_slice() else {
            let Some(cols) = jobs.first().map(|(w, _)| w.cols) else {
                return Ok(());
            };
            let mut r0 = 0;
            for seg in &self.segs {
                let r = r0..r0 + seg.rows;
                r0 += seg.rows;
                let mut sub: Vec<(&Weight, &mut [f32])> = jobs
                    .iter_mut()
                    .map(|(w, out)| {
                        let w: &Weight = w;
                        (w, &mut out[r.start * w.rows..r.end * w.rows])
                    })
                    .collect();
                let xs = &x[r.start * cols..r.end * cols];
                group_rows(seg.decode, &mut sub, xs, seg.rows, tmp, qa)?;
            }
            return Ok(());
        };
        group_rows(seg.decode, jobs, x, n, tmp, qa)
    }
}

/// One segment's product: [`Mul::group`] for rows all multiplied one way.
fn group_rows(
    decode: bool,
    jobs: &mut [(&Weight, &mut [f32])],
    x: &[f32],
    n: usize,
    tmp: &mut Vec<f32>,
    qa: &mut QAct,
) -> Result<()> {
    if !decode || n == 1 {
        return matmul_group(jobs, x, n, tmp, qa);
    }
    let Some(first) = jobs.first().map(|(w, _)| *w) else {
        return Ok(());
    };
    let blocks = quant::act_blocks(first.wtype);
    let shared = jobs.iter().all(|(w, _)| {
        quant::act_blocks(w.wtype) == blocks
            && w.cols == first.cols
            && quant::supports(w.wtype, w.cols)
    });
    match blocks {
        Some(b) if shared => {
            qa.quantize(b, &x[..n * first.cols], first.cols);
            int_rows(jobs, qa, n);
        }
        _ if jobs.len() > 1 => {
            for (w, out) in jobs.iter_mut() {
                group_rows(decode, &mut [(w, out)], x, n, tmp, qa)?;
            }
        }
        _ => {
            for (w, out) in jobs.iter_mut() {
                matmul(w, x, n, out, tmp, qa)?;
            }
        }
    }
    Ok(())
}

/// `out[k][r] = W_r · a_k` for every job's weight and the `n` quantized
/// rows of `qa`, all jobs in one parallel pass: each task takes a 16-row
/// chunk of a weight (read from memory once) and computes it for every
/// activation row with [`rows::rows_many`], writing straight into the
/// outputs.
fn int_rows(jobs: &mut [(&Weight, &mut [f32])], qa: &QAct, n: usize) {
    let mut tasks: Vec<(&Weight, usize, Vec<&mut [f32]>)> = Vec::new();
    for (w, out) in jobs.iter_mut() {
        let w: &Weight = w;
        let rows = w.rows;
        let first = tasks.len();
        let chunks = rows.div_ceil(ROWS_PER_TASK);
        for c in 0..chunks {
            tasks.push((w, c * ROWS_PER_TASK, Vec::with_capacity(n)));
        }
        for col in out[..n * rows].chunks_mut(rows.max(1)) {
            for (t, piece) in tasks[first..].iter_mut().zip(col.chunks_mut(ROWS_PER_TASK)) {
                t.2.push(piece);
            }
        }
    }
    tasks.into_par_iter().for_each(|(w, r0, mut outs)| {
        let (rb, m) = (w.row_bytes, outs.first().map_or(0, |o| o.len()));
        rows::rows_many(
            w.wtype,
            &w.bytes()[r0 * rb..(r0 + m) * rb],
            rb,
            qa,
            &mut outs,
        );
    });
}

/// One sequence's new tokens in a batched step: its next token (a decode
/// row) or a prompt (a prefill).
#[derive(Debug)]
pub(crate) struct BatchRow<'a> {
    pub cache: &'a mut KvCache,
    pub tokens: &'a [u32],
    /// Where the tokens go: the number of tokens already in the context.
    pub pos: usize,
}

impl Model {
    /// An error unless `tokens` at `pos..` can run on `cache` with this
    /// model.
    pub(crate) fn check_row(&self, cache: &KvCache, tokens: &[u32], pos: usize) -> Result<()> {
        let c = &self.config;
        if cache.n_layer != c.n_layer || cache.kv_dim != c.kv_dim() {
            return Err(Error::usage(format!(
                "a KV cache of {} layers × {} is not one of this model ({} × {})",
                cache.n_layer,
                cache.kv_dim,
                c.n_layer,
                c.kv_dim()
            )));
        }
        if tokens.is_empty() {
            return Err(Error::usage("a batched sequence has no tokens to run"));
        }
        if pos
            .checked_add(tokens.len())
            .is_none_or(|end| end > cache.n_ctx)
        {
            return Err(Error::usage(format!(
                "context full: {pos} + {} tokens exceed n_ctx {}",
                tokens.len(),
                cache.n_ctx
            )));
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
            return Err(Error::usage(format!(
                "token id {t} is outside the vocabulary of {}",
                c.n_vocab
            )));
        }
        Ok(())
    }

    /// Runs each row's tokens at its position in its cache, all in one
    /// pass; `logits` gets `rows.len() × n_vocab` values, row `i` the
    /// logits after row `i`'s last token. Each row gets the bits it gets
    /// running alone where `Mul` says so (prefills always; decode rows on
    /// the integer path).
    pub(crate) fn forward_batch(
        &self,
        rows: &mut [BatchRow<'_>],
        s: &mut Scratch,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        if rows.is_empty() {
            logits.clear();
            return Ok(());
        }
        for r in rows.iter() {
            self.check_row(r.cache, r.tokens, r.pos)?;
        }
        let tokens: Vec<u32> = rows.iter().flat_map(|r| r.tokens.iter().copied()).collect();
        let mut seqs: Vec<Seq<'_>> = rows
            .iter_mut()
            .map(|r| Seq {
                cache: &mut *r.cache,
                pos0: r.pos,
                n: r.tokens.len(),
            })
            .collect();
        self.forward_seqs(&mut seqs, s, &tokens, false, logits)
    }
}

impl Engine {
    /// Appends `tokens[i]` to the context of `engines[i]`, all in one
    /// batched forward pass, and returns the logits after each
    /// (`engines.len() × n_vocab`, row `i` also left as that engine's
    /// [`Engine::last_logits`]). Row `i` is what
    /// `engines[i].eval(&[tokens[i]])` gives (see [`Engine::extend_batch`]).
    pub fn eval_batch(engines: &mut [&mut Engine], tokens: &[u32]) -> Result<Vec<f32>> {
        if engines.len() != tokens.len() {
            return Err(Error::usage(format!(
                "{} engines but {} tokens",
                engines.len(),
                tokens.len()
            )));
        }
        let inputs: Vec<&[u32]> = tokens.iter().map(std::slice::from_ref).collect();
        Engine::extend_batch(engines, &inputs)
    }

    /// Appends `inputs[i]` (one token or a whole prompt, not empty) to the
    /// context of `engines[i]`, all in one batched forward pass, and
    /// returns the logits after each one's last token (`engines.len() ×
    /// n_vocab`, row `i` also left as that engine's
    /// [`Engine::last_logits`]). The engines must share one loaded model
    /// (forks of one engine); each keeps its own context. A prompt gets
    /// the bits `engines[i].prefill(inputs[i])` gives; one-token rows are
    /// computed with the weights read once for all of them (the bits of
    /// `eval` on the integer path; f32 arithmetic in another order for
    /// f32/f16 weights). On an error no engine changes.
    pub fn extend_batch(engines: &mut [&mut Engine], inputs: &[&[u32]]) -> Result<Vec<f32>> {
        if engines.len() != inputs.len() {
            return Err(Error::usage(format!(
                "{} engines but {} inputs",
                engines.len(),
                inputs.len()
            )));
        }
        let Some(first) = engines.first() else {
            return Ok(Vec::new());
        };
        let (model, pool) = (first.model.clone(), first.pool.clone());
        if let Some(i) = engines.iter().position(|e| !Arc::ptr_eq(&e.model, &model)) {
            return Err(Error::usage(format!(
                "engine {i} has another model: a batch runs forks of one engine"
            )));
        }
        let mut scratch = std::mem::take(&mut engines[0].scratch);
        let mut logits = Vec::new();
        let result = {
            let mut rows: Vec<BatchRow<'_>> = engines
                .iter_mut()
                .zip(inputs)
                .map(|(e, &tokens)| BatchRow {
                    pos: e.tokens.len(),
                    cache: &mut e.cache,
                    tokens,
                })
                .collect();
            pool.install(|| model.forward_batch(&mut rows, &mut scratch, &mut logits))
        };
        engines[0].scratch = scratch;
        result?;
        let v = model.config.n_vocab;
        for (i, (e, t)) in engines.iter_mut().zip(inputs).enumerate() {
            e.tokens.extend_from_slice(t);
            e.last_logits.clear();
            e.last_logits.extend_from_slice(&logits[i * v..(i + 1) * v]);
        }
        Ok(logits)
    }
}
