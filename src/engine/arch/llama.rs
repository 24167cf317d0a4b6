//! The Llama family: Llama, Mistral, TinyLlama (`llama`, adjacent-pair
//! RoPE on the converter-permuted Q/K rows) and Qwen2 (`qwen2`, Q/K/V
//! biases and NEOX RoPE). Pre-norm attention with grouped KV heads, SwiGLU
//! feed-forward, final norm and LM head (tied to the embeddings when
//! `output.weight` is absent). A batch of tokens (prefill) goes through
//! every matmul together, so each weight row is dequantized once per batch.

use super::{
    attend_seqs, embed, feed_forward, head, project_out, project_qkv, sized, Config, Scratch, Seq,
};
use crate::cbor::Value;
use crate::engine::attention::AttnSpec;
use crate::engine::batch::Mul;
use crate::engine::ops::{self, RopeStyle};
use crate::engine::weights::{Loader, Weight};
use crate::error::Result;

/// One transformer block.
#[derive(Debug)]
pub(crate) struct Layer {
    attn_norm: Vec<f32>,
    wq: Weight,
    wk: Weight,
    wv: Weight,
    wo: Weight,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    gate: Weight,
    up: Weight,
    down: Weight,
}

/// A loaded model of the family.
#[derive(Debug)]
pub(crate) struct Llama {
    rope_style: RopeStyle,
    /// θ_i / pos for each rotated pair (with `rope_freqs` factors).
    rope_inv_freq: Vec<f64>,
    tok_embd: Weight,
    /// `None` when tied to `tok_embd`.
    output: Option<Weight>,
    output_norm: Vec<f32>,
    layers: Vec<Layer>,
}

impl Llama {
    pub(crate) fn load(_attrs: &Value, c: &Config, w: &Loader) -> Result<Llama> {
        let qwen2 = c.arch == "qwen2";
        let (d, qd, kvd) = (c.n_embd, c.q_dim(), c.kv_dim());
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            // Biases: required for qwen2, optional elsewhere.
            let bias = |s: &str, dim: usize| w.optional_vector(&n(s), dim, qwen2);
            layers.push(Layer {
                attn_norm: w.vector(&n("attn_norm.weight"), d)?,
                wq: w.matrix(&n("attn_q.weight"), qd, d)?,
                wk: w.matrix(&n("attn_k.weight"), kvd, d)?,
                wv: w.matrix(&n("attn_v.weight"), kvd, d)?,
                wo: w.matrix(&n("attn_output.weight"), d, qd)?,
                bq: bias("attn_q.bias", qd)?,
                bk: bias("attn_k.bias", kvd)?,
                bv: bias("attn_v.bias", kvd)?,
                ffn_norm: w.vector(&n("ffn_norm.weight"), d)?,
                gate: w.matrix(&n("ffn_gate.weight"), c.n_ff, d)?,
                up: w.matrix(&n("ffn_up.weight"), c.n_ff, d)?,
                down: w.matrix(&n("ffn_down.weight"), d, c.n_ff)?,
            });
        }
        let output = if w.contains("output.weight") {
            Some(w.matrix("output.weight", c.n_vocab, d)?)
        } else {
            None
        };
        let rope_freqs = w.optional_vector("rope_freqs.weight", c.rope_dim / 2, false)?;
        Ok(Llama {
            rope_style: if qwen2 {
                RopeStyle::Neox
            } else {
                RopeStyle::Normal
            },
            rope_inv_freq: ops::rope_inv_freq(c.rope_base, c.rope_dim, rope_freqs.as_deref()),
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
        let (d, hd) = (c.n_embd, c.head_dim);
        timed!(
            s,
            Embed,
            embed(&self.tok_embd, tokens, sized(&mut s.x, n * d))
        )?;
        let spec = AttnSpec {
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
            window: None,
            softcap: None,
        };
        for (li, l) in self.layers.iter().enumerate() {
            timed!(
                s,
                Norm,
                ops::rms_norm(&s.x, &l.attn_norm, c.rms_eps, sized(&mut s.xn, n * d))
            );
            project_qkv(&mm, s, n, [&l.wq, &l.wk, &l.wv])?;
            timed!(s, Residual, {
                ops::add_bias(&mut s.q, l.bq.as_ref());
                ops::add_bias(&mut s.k, l.bk.as_ref());
                ops::add_bias(&mut s.v, l.bv.as_ref());
            });
            timed!(
                s,
                Attention,
                attend_seqs(seqs, li, &spec, &self.rope_inv_freq, self.rope_style, s)
            );
            project_out(&mm, s, n, &l.wo)?;
            timed!(s, Residual, ops::add(&mut s.x, &s.xn));
            timed!(
                s,
                Norm,
                ops::rms_norm(&s.x, &l.ffn_norm, c.rms_eps, sized(&mut s.xn, n * d))
            );
            feed_forward(&mm, s, n, [&l.gate, &l.up, &l.down], ops::silu_mul)?;
            timed!(s, Residual, ops::add(&mut s.x, &s.xn));
        }
        let lm_head = self.output.as_ref().unwrap_or(&self.tok_embd);
        timed!(
            s,
            Output,
            head(
                s,
                (&self.output_norm, c.rms_eps),
                lm_head,
                seqs,
                all,
                logits
            )
        )
    }
}
