//! The forward pass: embeddings, pre-norm attention with RoPE and GQA over
//! a preallocated KV cache, SwiGLU MLP, final norm and LM head. A batch of
//! tokens (prefill) goes through every matmul together, so each weight row
//! is dequantized once per batch; scratch buffers are reused between calls.

use super::int8::{self, QAct};
use super::model::{Model, RopeStyle, Weight};
use super::quant;
use crate::error::{Error, Result};
use half::f16;
use rayon::prelude::*;

/// Element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvType {
    F32,
    F16,
}

impl KvType {
    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
        }
    }
}

#[derive(Debug, Clone)]
enum KvData {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

/// K and V for every layer and position, laid out `[layer][pos][kv_dim]`,
/// allocated once for `n_ctx` positions.
#[derive(Debug, Clone)]
pub struct KvCache {
    pub n_ctx: usize,
    pub n_layer: usize,
    pub kv_dim: usize,
    k: KvData,
    v: KvData,
}

impl KvCache {
    pub fn new(n_layer: usize, n_ctx: usize, kv_dim: usize, kind: KvType) -> Result<KvCache> {
        let n = n_layer
            .checked_mul(n_ctx)
            .and_then(|x| x.checked_mul(kv_dim))
            .filter(|&n| n <= (16usize << 30) / 4)
            .ok_or_else(|| {
                Error::usage(format!(
                    "a KV cache of {n_layer} layers × {n_ctx} positions × {kv_dim} is too large"
                ))
            })?;
        let make = || match kind {
            KvType::F32 => KvData::F32(vec![0.0; n]),
            KvType::F16 => KvData::F16(vec![f16::ZERO; n]),
        };
        Ok(KvCache {
            n_ctx,
            n_layer,
            kv_dim,
            k: make(),
            v: make(),
        })
    }

    pub fn kind(&self) -> KvType {
        match self.k {
            KvData::F32(_) => KvType::F32,
            KvData::F16(_) => KvType::F16,
        }
    }

    fn at(&self, layer: usize, pos: usize) -> usize {
        (layer * self.n_ctx + pos) * self.kv_dim
    }

    fn put(data: &mut KvData, at: usize, row: &[f32]) {
        match data {
            KvData::F32(d) => d[at..at + row.len()].copy_from_slice(row),
            KvData::F16(d) => {
                for (o, &x) in d[at..at + row.len()].iter_mut().zip(row) {
                    *o = f16::from_f32(x);
                }
            }
        }
    }
}

/// K and V rows of the first positions of every layer, copied out of a
/// cache (`[layer][pos][kv_dim]`, positions packed).
#[derive(Debug, Clone, PartialEq)]
pub enum KvRows {
    F32 { k: Vec<f32>, v: Vec<f32> },
    F16 { k: Vec<f16>, v: Vec<f16> },
}

impl KvRows {
    pub fn kind(&self) -> KvType {
        match self {
            KvRows::F32 { .. } => KvType::F32,
            KvRows::F16 { .. } => KvType::F16,
        }
    }

    /// Values in K (and in V).
    pub fn len(&self) -> usize {
        match self {
            KvRows::F32 { k, .. } => k.len(),
            KvRows::F16 { k, .. } => k.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Positions `0..n` of every layer of one side of a cache, packed.
fn take_rows<T: Copy>(d: &[T], n_layer: usize, layer_len: usize, n: usize) -> Vec<T> {
    (0..n_layer)
        .flat_map(|l| &d[l * layer_len..l * layer_len + n])
        .copied()
        .collect()
}

/// The inverse of [`take_rows`]: `src` (`n` values per layer) over the
/// first `n` values of every layer.
fn put_rows<T: Copy>(d: &mut [T], src: &[T], n_layer: usize, layer_len: usize, n: usize) {
    for l in 0..n_layer {
        d[l * layer_len..l * layer_len + n].copy_from_slice(&src[l * n..(l + 1) * n]);
    }
}

impl KvCache {
    /// Copies positions `0..n` of every layer.
    pub fn export(&self, n: usize) -> Result<KvRows> {
        let (layers, layer_len) = (self.n_layer, self.n_ctx * self.kv_dim);
        let len = n.min(self.n_ctx) * self.kv_dim;
        match (&self.k, &self.v) {
            (KvData::F32(k), KvData::F32(v)) => Ok(KvRows::F32 {
                k: take_rows(k, layers, layer_len, len),
                v: take_rows(v, layers, layer_len, len),
            }),
            (KvData::F16(k), KvData::F16(v)) => Ok(KvRows::F16 {
                k: take_rows(k, layers, layer_len, len),
                v: take_rows(v, layers, layer_len, len),
            }),
            _ => Err(Error::usage("K and V of the cache differ in type")),
        }
    }

    /// Writes `rows` (of `n` positions per layer) over positions `0..n`.
    pub fn import(&mut self, rows: &KvRows, n: usize) -> Result<()> {
        let per_layer = n * self.kv_dim;
        if n > self.n_ctx || rows.len() != self.n_layer * per_layer || rows.kind() != self.kind() {
            return Err(Error::usage("KV rows do not fit this cache"));
        }
        let (layers, layer_len) = (self.n_layer, self.n_ctx * self.kv_dim);
        match (rows, &mut self.k, &mut self.v) {
            (KvRows::F32 { k, v }, KvData::F32(dk), KvData::F32(dv)) => {
                put_rows(dk, k, layers, layer_len, per_layer);
                put_rows(dv, v, layers, layer_len, per_layer);
            }
            (KvRows::F16 { k, v }, KvData::F16(dk), KvData::F16(dv)) => {
                put_rows(dk, k, layers, layer_len, per_layer);
                put_rows(dv, v, layers, layer_len, per_layer);
            }
            _ => return Err(Error::usage("KV rows do not fit this cache")),
        }
        Ok(())
    }
}

/// Dot of `q` with K row `pos` of head slice `[off, off + q.len())` of an
/// f32 cache (the f16 cache goes through the per-head kernels).
fn k_dot(k: &[f32], at: usize, q: &[f32]) -> f32 {
    super::simd::dot_fn()(&k[at..at + q.len()], q)
}

/// `out += w · V row` of an f32 cache.
fn v_axpy(v: &[f32], at: usize, w: f32, out: &mut [f32]) {
    let n = out.len();
    for (o, x) in out.iter_mut().zip(&v[at..at + n]) {
        *o += w * x;
    }
}

/// Buffers reused across forward calls (grown, never shrunk).
#[derive(Debug, Default)]
pub struct Scratch {
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    scores: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    tmp: Vec<f32>,
    qa: QAct,
}

fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    v.resize(n, 0.0);
    &mut v[..n]
}

/// Rows per parallel task in a matmul.
const ROWS_PER_TASK: usize = 16;

/// `out[i] = W · x[i]` for the `n` vectors of `x` (each `w.cols` long).
/// One vector (decoding) on a type the integer kernels cover: `x` is
/// quantized to 8 bits once and every row is an int8 dot product.
fn matmul(
    m: &Model,
    w: &Weight,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    tmp: &mut Vec<f32>,
    qa: &mut QAct,
) -> Result<()> {
    let bytes = m.bytes(w)?;
    let (rows, cols, rb) = (w.rows, w.cols, w.row_bytes);
    if let Some(blocks) =
        int8::act_blocks(w.wtype).filter(|_| int8::supports(w.wtype, cols) && n == 1)
    {
        qa.quantize(blocks, &x[..n * cols], cols);
        let qa = &*qa;
        let dot = int8::rows_dot_fn();
        let a = qa.row(0);
        out[..rows]
            .par_chunks_mut(ROWS_PER_TASK)
            .enumerate()
            .for_each(|(c, chunk)| {
                let r = c * ROWS_PER_TASK;
                dot(
                    w.wtype,
                    &bytes[r * rb..(r + chunk.len()) * rb],
                    rb,
                    a,
                    chunk,
                );
            });
        return Ok(());
    }
    let t = sized(tmp, rows * n);
    if n > 1 && rows % 4 == 0 {
        // Prefill: 4 rows at a time dequantized into this thread's buffer,
        // then 4 × 2 tiles of dot products.
        t.par_chunks_mut(ROWS_PER_TASK * n)
            .enumerate()
            .for_each(|(c, chunk)| {
                for (g, dst) in chunk.chunks_mut(4 * n).enumerate() {
                    let r0 = c * ROWS_PER_TASK + 4 * g;
                    quant::rows4_dots(w.wtype, &bytes[r0 * rb..(r0 + 4) * rb], x, cols, n, dst);
                }
            });
    } else {
        t.par_chunks_mut(ROWS_PER_TASK * n)
            .enumerate()
            .for_each(|(c, chunk)| {
                for (j, dst) in chunk.chunks_mut(n).enumerate() {
                    let r = c * ROWS_PER_TASK + j;
                    quant::row_dots(w.wtype, &bytes[r * rb..(r + 1) * rb], x, cols, dst);
                }
            });
    }
    transpose_into(t, rows, n, out);
    Ok(())
}

/// `out[i][r] = t[r][i]` for `t` of `rows × n`.
fn transpose_into(t: &[f32], rows: usize, n: usize, out: &mut [f32]) {
    for i in 0..n {
        for r in 0..rows {
            out[i * rows + r] = t[r * n + i];
        }
    }
}

/// Up to three matrices applied to the same input (Q/K/V, gate/up). When
/// decoding on the integer path with one activation layout, the input is
/// quantized once and all rows go through one parallel pass (one wake-up
/// of the pool instead of one per matrix); otherwise one matmul each.
fn matmul_group(
    m: &Model,
    jobs: &mut [(&Weight, &mut [f32])],
    x: &[f32],
    n: usize,
    tmp: &mut Vec<f32>,
    qa: &mut QAct,
) -> Result<()> {
    let Some(first) = jobs.first().map(|(w, _)| *w) else {
        return Ok(());
    };
    let blocks = int8::act_blocks(first.wtype);
    let fused = n == 1
        && jobs.len() <= 3
        && blocks.is_some()
        && jobs.iter().all(|(w, _)| {
            int8::act_blocks(w.wtype) == blocks
                && w.cols == first.cols
                && int8::supports(w.wtype, w.cols)
        });
    let Some(blocks) = blocks.filter(|_| fused) else {
        for (w, out) in jobs.iter_mut() {
            matmul(m, w, x, n, out, tmp, qa)?;
        }
        return Ok(());
    };
    let mut bytes: [&[u8]; 3] = [&[]; 3];
    for (b, (w, _)) in bytes.iter_mut().zip(jobs.iter()) {
        *b = m.bytes(w)?;
    }
    qa.quantize(blocks, &x[..first.cols], first.cols);
    let a = qa.row(0);
    let dot = int8::rows_dot_fn();
    jobs.par_iter_mut()
        .zip(bytes.par_iter())
        .flat_map(|((w, out), &b)| {
            let w: &Weight = w;
            out[..w.rows]
                .par_chunks_mut(ROWS_PER_TASK)
                .enumerate()
                .map(move |(c, chunk)| (w, b, c, chunk))
        })
        .for_each(|(w, b, c, chunk)| {
            let (rb, r) = (w.row_bytes, c * ROWS_PER_TASK);
            dot(w.wtype, &b[r * rb..(r + chunk.len()) * rb], rb, a, chunk);
        });
    Ok(())
}

/// In-place softmax.
fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (xi, oi) in x.chunks(d).zip(out.chunks_mut(d)) {
        let ms = xi.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / d as f64;
        let s = 1.0 / ((ms as f32) + eps).sqrt();
        for ((o, v), g) in oi.iter_mut().zip(xi).zip(w) {
            *o = v * s * g;
        }
    }
}

fn add_bias(x: &mut [f32], b: Option<&Vec<f32>>) {
    if let Some(b) = b {
        for row in x.chunks_mut(b.len()) {
            for (o, v) in row.iter_mut().zip(b) {
                *o += v;
            }
        }
    }
}

fn rope(m: &Model, x: &mut [f32], n_heads: usize, pos0: usize) {
    let c = &m.config;
    let (hd, rd) = (c.head_dim, c.rope_dim);
    let per_token = n_heads * hd;
    for (i, tok) in x.chunks_mut(per_token).enumerate() {
        let pos = (pos0 + i) as f64;
        for p in 0..rd / 2 {
            let (s, co) = (pos * m.rope_inv_freq[p]).sin_cos();
            let (s, co) = (s as f32, co as f32);
            for head in tok.chunks_mut(hd) {
                let (a, b) = match c.rope_style {
                    RopeStyle::Normal => (2 * p, 2 * p + 1),
                    RopeStyle::Neox => (p, p + rd / 2),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * co - x1 * s;
                head[b] = x0 * s + x1 * co;
            }
        }
    }
}

/// Runs `tokens` at positions `pos0..`, storing their K/V in `cache`.
/// Writes the logits of the last token (or of every token when `all`) to
/// `logits` (`n_vocab` per row).
pub fn forward(
    m: &Model,
    cache: &mut KvCache,
    s: &mut Scratch,
    tokens: &[u32],
    pos0: usize,
    all: bool,
    logits: &mut Vec<f32>,
) -> Result<()> {
    let c = &m.config;
    let n = tokens.len();
    if n == 0 {
        logits.clear();
        return Ok(());
    }
    if pos0 + n > cache.n_ctx {
        return Err(Error::usage(format!(
            "context full: {} + {n} tokens exceed n_ctx {}",
            pos0, cache.n_ctx
        )));
    }
    if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
        return Err(Error::usage(format!(
            "token id {t} is outside the vocabulary of {}",
            c.n_vocab
        )));
    }
    let (d, qd, kvd, hd) = (c.n_embd, c.q_dim(), c.kv_dim(), c.head_dim);
    let emb = m.bytes(&m.tok_embd)?;
    let rb = m.tok_embd.row_bytes;
    let x = sized(&mut s.x, n * d);
    for (i, &t) in tokens.iter().enumerate() {
        let t = t as usize;
        quant::dequant_row(
            m.tok_embd.wtype,
            &emb[t * rb..(t + 1) * rb],
            &mut x[i * d..(i + 1) * d],
        )?;
    }
    let scale = 1.0 / (hd as f32).sqrt();
    let group = c.n_head / c.n_head_kv;
    let span = pos0 + n;
    for (li, l) in m.layers.iter().enumerate() {
        rms_norm(&s.x, &l.attn_norm, c.rms_eps, sized(&mut s.xn, n * d));
        matmul_group(
            m,
            &mut [
                (&l.wq, sized(&mut s.q, n * qd)),
                (&l.wk, sized(&mut s.k, n * kvd)),
                (&l.wv, sized(&mut s.v, n * kvd)),
            ],
            &s.xn,
            n,
            &mut s.tmp,
            &mut s.qa,
        )?;
        add_bias(&mut s.q, l.bq.as_ref());
        add_bias(&mut s.k, l.bk.as_ref());
        add_bias(&mut s.v, l.bv.as_ref());
        rope(m, &mut s.q, c.n_head, pos0);
        rope(m, &mut s.k, c.n_head_kv, pos0);
        for i in 0..n {
            let at = cache.at(li, pos0 + i);
            KvCache::put(&mut cache.k, at, &s.k[i * kvd..(i + 1) * kvd]);
            KvCache::put(&mut cache.v, at, &s.v[i * kvd..(i + 1) * kvd]);
        }
        let att = sized(&mut s.att, n * qd);
        let scores = sized(&mut s.scores, n * c.n_head * span);
        let q = &s.q;
        let cache_ref = &*cache;
        let (attn_scores, attn_mix) = super::simd::attn_f16_fns();
        att.par_chunks_mut(hd)
            .zip(scores.par_chunks_mut(span))
            .enumerate()
            .for_each(|(idx, (out, sc))| {
                let (i, h) = (idx / c.n_head, idx % c.n_head);
                let qh = &q[i * qd + h * hd..i * qd + (h + 1) * hd];
                let kv_off = (h / group) * hd;
                let len = pos0 + i + 1;
                let sc = &mut sc[..len];
                let base = cache_ref.at(li, 0) + kv_off;
                match (&cache_ref.k, &cache_ref.v) {
                    (KvData::F16(k), KvData::F16(v)) => {
                        attn_scores(&k[base..], cache_ref.kv_dim, qh, scale, sc);
                        softmax(sc);
                        attn_mix(&v[base..], cache_ref.kv_dim, sc, out);
                    }
                    (KvData::F32(k), KvData::F32(v)) => {
                        for (p, s) in sc.iter_mut().enumerate() {
                            *s = k_dot(k, cache_ref.at(li, p) + kv_off, qh) * scale;
                        }
                        softmax(sc);
                        out.fill(0.0);
                        for (p, &w) in sc.iter().enumerate() {
                            v_axpy(v, cache_ref.at(li, p) + kv_off, w, out);
                        }
                    }
                    // K and V always share a type (`KvCache::new`).
                    _ => out.fill(0.0),
                }
            });
        matmul(
            m,
            &l.wo,
            &s.att,
            n,
            sized(&mut s.xn, n * d),
            &mut s.tmp,
            &mut s.qa,
        )?;
        for (x, o) in s.x.iter_mut().zip(&s.xn) {
            *x += o;
        }
        rms_norm(&s.x, &l.ffn_norm, c.rms_eps, sized(&mut s.xn, n * d));
        matmul_group(
            m,
            &mut [
                (&l.gate, sized(&mut s.gate, n * c.n_ff)),
                (&l.up, sized(&mut s.up, n * c.n_ff)),
            ],
            &s.xn,
            n,
            &mut s.tmp,
            &mut s.qa,
        )?;
        for (g, u) in s.gate.iter_mut().zip(&s.up) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
        matmul(
            m,
            &l.down,
            &s.gate,
            n,
            sized(&mut s.xn, n * d),
            &mut s.tmp,
            &mut s.qa,
        )?;
        for (x, o) in s.x.iter_mut().zip(&s.xn) {
            *x += o;
        }
    }
    let first = if all { 0 } else { n - 1 };
    let rows = n - first;
    rms_norm(
        &s.x[first * d..],
        &m.output_norm,
        c.rms_eps,
        sized(&mut s.xn, rows * d),
    );
    logits.resize(rows * c.n_vocab, 0.0);
    matmul(m, m.lm_head(), &s.xn, rows, logits, &mut s.tmp, &mut s.qa)
}
