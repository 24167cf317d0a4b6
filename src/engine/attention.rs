//! Attention of a batch of queries over one layer of the KV cache:
//! grouped-query heads, causal, optionally limited to a sliding window of
//! the most recent positions and with soft-capped scores.

use super::kernels;
use super::kv::{KvCache, KvData};
use super::ops::softmax;
use rayon::prelude::*;

/// The shape and rules of one layer's attention.
#[derive(Debug, Clone, Copy)]
pub struct AttnSpec {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// Multiplies `q · k`.
    pub scale: f32,
    /// A query at position `p` sees keys `p + 1 - window ..= p`.
    pub window: Option<usize>,
    /// Scores become `cap · tanh(score / cap)` before the softmax.
    pub softcap: Option<f32>,
}

/// `out` (`n × n_head × head_dim`) = attention of the `n` queries in `q`
/// (`n × n_head × head_dim`; token `i` at position `pos0 + i`, its K/V
/// already in `cache`) over layer `layer`. `scores` is scratch.
pub fn attend(
    cache: &KvCache,
    layer: usize,
    spec: &AttnSpec,
    q: &[f32],
    pos0: usize,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let (nh, hd) = (spec.n_head, spec.head_dim);
    let qd = nh * hd;
    let n = q.len() / qd;
    let group = nh / spec.n_head_kv;
    let span = pos0 + n;
    scores.resize(n * nh * span, 0.0);
    out[..n * qd]
        .par_chunks_mut(hd)
        .zip(scores.par_chunks_mut(span))
        .enumerate()
        .for_each(|(idx, (out, sc))| {
            let (i, h) = (idx / nh, idx % nh);
            let qh = &q[i * qd + h * hd..i * qd + (h + 1) * hd];
            attend_head(cache, layer, spec, h / group, qh, pos0 + i, sc, out);
        });
}

/// One query token for each of several sequences (a batched decoding
/// step): `outs[j]` (`n_head × head_dim`) = attention of `qs[j]` at
/// position `pos[j]` over layer `layer` of `caches[j]`, every (sequence,
/// head) in one parallel pass. Each head is computed exactly as [`attend`]
/// computes it.
pub fn attend_one_each(
    caches: &[&KvCache],
    layer: usize,
    spec: &AttnSpec,
    qs: &[f32],
    pos: &[usize],
    scores: &mut Vec<f32>,
    outs: &mut [f32],
) {
    let (nh, hd) = (spec.n_head, spec.head_dim);
    let qd = nh * hd;
    let group = nh / spec.n_head_kv;
    // Scratch of each (sequence, head): its span of positions.
    let mut at = Vec::with_capacity(caches.len() * nh + 1);
    at.push(0usize);
    for &p in pos.iter().take(caches.len()) {
        for _ in 0..nh {
            let last = at[at.len() - 1];
            at.push(last + p + 1);
        }
    }
    scores.resize(at[at.len() - 1], 0.0);
    let mut pieces: Vec<&mut [f32]> = Vec::with_capacity(caches.len() * nh);
    let mut rest = &mut scores[..];
    for w in at.windows(2) {
        let (piece, tail) = rest.split_at_mut(w[1] - w[0]);
        pieces.push(piece);
        rest = tail;
    }
    outs[..caches.len() * qd]
        .par_chunks_mut(hd)
        .zip(pieces.into_par_iter())
        .enumerate()
        .for_each(|(idx, (out, sc))| {
            let (j, h) = (idx / nh, idx % nh);
            let qh = &qs[j * qd + h * hd..j * qd + (h + 1) * hd];
            attend_head(caches[j], layer, spec, h / group, qh, pos[j], sc, out);
        });
}

/// Head `qh` of a query at position `pos` against KV head `kv_head`.
#[allow(clippy::too_many_arguments)]
fn attend_head(
    cache: &KvCache,
    layer: usize,
    spec: &AttnSpec,
    kv_head: usize,
    qh: &[f32],
    pos: usize,
    sc: &mut [f32],
    out: &mut [f32],
) {
    let k = kernels::get();
    let hd = spec.head_dim;
    let kv_off = kv_head * hd;
    let first = spec.window.map_or(0, |w| (pos + 1).saturating_sub(w));
    let sc = &mut sc[..pos + 1 - first];
    let base = cache.at(layer, first) + kv_off;
    match (&cache.k, &cache.v) {
        (KvData::F16(kc), KvData::F16(vc)) => {
            (k.attn_scores)(&kc[base..], cache.kv_dim, qh, spec.scale, sc);
            finish_scores(sc, spec.softcap);
            (k.attn_mix)(&vc[base..], cache.kv_dim, sc, out);
        }
        (KvData::F32(kc), KvData::F32(vc)) => {
            for (p, s) in sc.iter_mut().enumerate() {
                let at = base + p * cache.kv_dim;
                *s = (k.dot)(&kc[at..at + hd], qh) * spec.scale;
            }
            finish_scores(sc, spec.softcap);
            out.fill(0.0);
            for (p, &w) in sc.iter().enumerate() {
                let at = base + p * cache.kv_dim;
                for (o, x) in out.iter_mut().zip(&vc[at..at + hd]) {
                    *o += w * x;
                }
            }
        }
        // K and V always share a type (`KvCache::new`).
        _ => out.fill(0.0),
    }
}

fn finish_scores(sc: &mut [f32], cap: Option<f32>) {
    if let Some(c) = cap {
        super::ops::softcap(sc, c);
    }
    softmax(sc);
}
