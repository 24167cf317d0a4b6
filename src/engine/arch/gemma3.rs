//! Gemma 3 (`gemma3`). Per layer: RMS-normed input, Q/K/V with a per-head
//! RMS norm of Q and K before NEOX RoPE, queries scaled by
//! `1/sqrt(head_dim)` (`1/sqrt(n_embd/n_head)` for the 62-layer 27B),
//! attention over a sliding window of `attention.sliding_window` positions
//! on local layers (`il % 6 < 5`, RoPE base 10 000) and over the whole
//! context on every sixth, global layer (RoPE base `rope.freq_base`); the
//! attention output and the GELU(tanh)-gated feed-forward output are each
//! RMS-normed (`post_attention_norm`, `post_ffw_norm`) before their
//! residual add. Embeddings are scaled by `sqrt(n_embd)`; the LM head is
//! tied to them. Logit soft-capping only when the file has the keys.
//! (llama.cpp `src/models/gemma3.cpp`, `llama_model::load_hparams`.)
//!
//! Norm weights are used as stored: llama.cpp's converter already added
//! Gemma's `+1` to every `*norm.weight`.
//!
//! KV cache: local layers keep every position like global ones (the
//! window is a mask on the attention), so the cache, its snapshots and
//! states have the same layout as every other architecture ([`KV_LAYOUT`]).

use super::{
    attend_seqs, bad_key, embed, feed_forward, float, head, need_uint, project_out, project_qkv,
    sized, uint, Config, Scratch, Seq,
};
use crate::cbor::Value;
use crate::engine::attention::AttnSpec;
use crate::engine::batch::Mul;
use crate::engine::ops::{self, RopeStyle};
use crate::engine::weights::{Loader, Weight};
use crate::error::Result;

/// How the KV cache of a Gemma 3 model is laid out (recorded in
/// snapshots): every position of every layer.
pub(crate) const KV_LAYOUT: &str = "full";

/// Layers per group: `SWA_PATTERN - 1` local layers, then one global.
const SWA_PATTERN: usize = 6;
/// RoPE base of the local layers (llama.cpp `rope_freq_base_train_swa`).
const ROPE_BASE_LOCAL: f32 = 10_000.0;

#[derive(Debug)]
pub(crate) struct Layer {
    attn_norm: Vec<f32>,
    wq: Weight,
    wk: Weight,
    wv: Weight,
    wo: Weight,
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    post_attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    gate: Weight,
    up: Weight,
    down: Weight,
    post_ffw_norm: Vec<f32>,
    /// Sliding-window (local) layer.
    local: bool,
}

/// A loaded Gemma 3 model.
#[derive(Debug)]
pub(crate) struct Gemma3 {
    window: usize,
    attn_scale: f32,
    attn_softcap: Option<f32>,
    final_softcap: Option<f32>,
    inv_freq_local: Vec<f64>,
    inv_freq_global: Vec<f64>,
    tok_embd: Weight,
    /// `None` when tied to `tok_embd` (the released models).
    output: Option<Weight>,
    output_norm: Vec<f32>,
    layers: Vec<Layer>,
}

fn softcap_key(attrs: &Value, key: &str) -> Result<Option<f32>> {
    match float(attrs, key)? {
        Some(c) if !(c > 0.0 && c.is_finite()) => {
            Err(bad_key(key, format!("{c} is not a positive number")))
        }
        c => Ok(c),
    }
}

impl Gemma3 {
    pub(crate) fn load(attrs: &Value, c: &Config, w: &Loader) -> Result<Gemma3> {
        let key = "gemma3.attention.sliding_window";
        let window = need_uint(attrs, key)?;
        if window == 0 {
            return Err(bad_key(key, "0 is not a window"));
        }
        if let Some(p) = uint(attrs, "gemma3.attention.sliding_window_pattern")? {
            // llama.cpp fixes the pattern at 6 for gemma3; a file that
            // says otherwise means something we do not run.
            if p != SWA_PATTERN {
                return Err(bad_key(
                    "gemma3.attention.sliding_window_pattern",
                    format!("{p}: only the pattern of {SWA_PATTERN} is supported"),
                ));
            }
        }
        let attn_scale = if c.n_layer == 62 {
            1.0 / ((c.n_embd / c.n_head) as f32).sqrt()
        } else {
            1.0 / (c.head_dim as f32).sqrt()
        };
        let (d, qd, kvd, hd) = (c.n_embd, c.q_dim(), c.kv_dim(), c.head_dim);
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            layers.push(Layer {
                attn_norm: w.vector(&n("attn_norm.weight"), d)?,
                wq: w.matrix(&n("attn_q.weight"), qd, d)?,
                wk: w.matrix(&n("attn_k.weight"), kvd, d)?,
                wv: w.matrix(&n("attn_v.weight"), kvd, d)?,
                wo: w.matrix(&n("attn_output.weight"), d, qd)?,
                q_norm: w.vector(&n("attn_q_norm.weight"), hd)?,
                k_norm: w.vector(&n("attn_k_norm.weight"), hd)?,
                post_attn_norm: w.vector(&n("post_attention_norm.weight"), d)?,
                ffn_norm: w.vector(&n("ffn_norm.weight"), d)?,
                gate: w.matrix(&n("ffn_gate.weight"), c.n_ff, d)?,
                up: w.matrix(&n("ffn_up.weight"), c.n_ff, d)?,
                down: w.matrix(&n("ffn_down.weight"), d, c.n_ff)?,
                post_ffw_norm: w.vector(&n("post_ffw_norm.weight"), d)?,
                local: i % SWA_PATTERN < SWA_PATTERN - 1,
            });
        }
        let output = if w.contains("output.weight") {
            Some(w.matrix("output.weight", c.n_vocab, d)?)
        } else {
            None
        };
        Ok(Gemma3 {
            window,
            attn_scale,
            attn_softcap: softcap_key(attrs, "gemma3.attn_logit_softcapping")?,
            final_softcap: softcap_key(attrs, "gemma3.final_logit_softcapping")?,
            inv_freq_local: ops::rope_inv_freq(ROPE_BASE_LOCAL, c.rope_dim, None),
            inv_freq_global: ops::rope_inv_freq(c.rope_base, c.rope_dim, None),
            tok_embd: w.matrix("token_embd.weight", c.n_vocab, d)?,
            output,
            output_norm: w.vector("output_norm.weight", d)?,
            layers,
        })
    }

    /// See [`super::Model::forward_seqs`]: every row through every
    /// matmul together, RoPE / KV store / attention per sequence.
    pub(crate) fn forward(
        &self,
        c: &Config,
        seqs: &mut [Seq<'_>],
        s: &mut Scratch,
        tokens: &[u32],
        all: bool,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let n = tokens.len();
        let mm = Mul::of(seqs);
        let (d, hd, eps) = (c.n_embd, c.head_dim, c.rms_eps);
        timed!(s, Embed, {
            embed(&self.tok_embd, tokens, sized(&mut s.x, n * d))?;
            ops::scale(&mut s.x, (d as f32).sqrt());
        });
        for (li, l) in self.layers.iter().enumerate() {
            timed!(
                s,
                Norm,
                ops::rms_norm(&s.x, &l.attn_norm, eps, sized(&mut s.xn, n * d))
            );
            project_qkv(&mm, s, n, [&l.wq, &l.wk, &l.wv])?;
            timed!(s, Norm, {
                ops::rms_norm_inplace(&mut s.q, &l.q_norm, eps);
                ops::rms_norm_inplace(&mut s.k, &l.k_norm, eps);
            });
            let inv_freq = if l.local {
                &self.inv_freq_local
            } else {
                &self.inv_freq_global
            };
            let spec = AttnSpec {
                n_head: c.n_head,
                n_head_kv: c.n_head_kv,
                head_dim: hd,
                scale: self.attn_scale,
                window: l.local.then_some(self.window),
                softcap: self.attn_softcap,
            };
            timed!(
                s,
                Attention,
                attend_seqs(seqs, li, &spec, inv_freq, RopeStyle::Neox, s)
            );
            project_out(&mm, s, n, &l.wo)?;
            timed!(
                s,
                Norm,
                ops::rms_norm_inplace(&mut s.xn, &l.post_attn_norm, eps)
            );
            timed!(s, Residual, ops::add(&mut s.x, &s.xn));
            timed!(
                s,
                Norm,
                ops::rms_norm(&s.x, &l.ffn_norm, eps, sized(&mut s.xn, n * d))
            );
            feed_forward(&mm, s, n, [&l.gate, &l.up, &l.down], ops::gelu_tanh_mul)?;
            timed!(
                s,
                Norm,
                ops::rms_norm_inplace(&mut s.xn, &l.post_ffw_norm, eps)
            );
            timed!(s, Residual, ops::add(&mut s.x, &s.xn));
        }
        let lm_head = self.output.as_ref().unwrap_or(&self.tok_embd);
        timed!(s, Output, {
            head(s, (&self.output_norm, eps), lm_head, seqs, all, logits)?;
            if let Some(cap) = self.final_softcap {
                ops::softcap(logits, cap);
            }
        });
        Ok(())
    }
}
