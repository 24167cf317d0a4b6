//! A Llama / Mistral / Qwen2 model read from a `.zt` (converted from GGUF)
//! or a GGUF file opened through the same reader: hyper-parameters from the
//! metadata, every weight checked for presence, shape and type at load,
//! weights used in place from the map.

use super::quant::{self, WeightType};
use crate::cbor::Value;
use crate::error::{Error, Result};
use crate::reader::Reader;
use std::borrow::Cow;

/// RoPE pairing: adjacent values (llama, whose Q/K rows llama.cpp's
/// converter permuted) or halves of the head (qwen2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    Normal,
    Neox,
}

/// Hyper-parameters from the model's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub arch: String,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    pub rope_dim: usize,
    pub rope_style: RopeStyle,
}

fn bad_key(key: &str, detail: impl Into<String>) -> Error {
    Error::Unsupported(format!("model metadata {key}: {}", detail.into()))
}

fn uint(attrs: &Value, key: &str) -> Result<Option<usize>> {
    match attrs.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .map(Some)
            .ok_or_else(|| {
                bad_key(
                    key,
                    format!("expected an unsigned integer, found {}", v.kind()),
                )
            }),
    }
}

fn need_uint(attrs: &Value, key: &str) -> Result<usize> {
    uint(attrs, key)?.ok_or_else(|| bad_key(key, "missing"))
}

fn float(attrs: &Value, key: &str) -> Result<Option<f32>> {
    match attrs.get(key) {
        None => Ok(None),
        Some(Value::Float(x)) => Ok(Some(*x as f32)),
        Some(v) => Err(bad_key(
            key,
            format!("expected a float, found {}", v.kind()),
        )),
    }
}

/// A sane bound for every size read from metadata.
const MAX_DIM: usize = 1 << 20;

impl Config {
    pub fn from_attributes(attrs: &Value) -> Result<Config> {
        let arch = attrs
            .get("general.architecture")
            .and_then(Value::as_str)
            .ok_or_else(|| bad_key("general.architecture", "missing or not text"))?
            .to_string();
        let rope_style = match arch.as_str() {
            "llama" => RopeStyle::Normal,
            "qwen2" => RopeStyle::Neox,
            other => {
                return Err(Error::Unsupported(format!(
                    "architecture {other:?}; the engine runs llama (Llama, Mistral, TinyLlama) and qwen2"
                )))
            }
        };
        let k = |s: &str| format!("{arch}.{s}");
        let n_embd = need_uint(attrs, &k("embedding_length"))?;
        let n_head = need_uint(attrs, &k("attention.head_count"))?;
        let n_head_kv = uint(attrs, &k("attention.head_count_kv"))?.unwrap_or(n_head);
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(bad_key(
                &k("attention.head_count_kv"),
                format!("{n_head} heads cannot share {n_head_kv} kv heads"),
            ));
        }
        let head_dim = match uint(attrs, &k("attention.key_length"))? {
            Some(d) => d,
            None if n_embd % n_head == 0 => n_embd / n_head,
            None => {
                return Err(bad_key(
                    &k("embedding_length"),
                    "not a multiple of the head count",
                ))
            }
        };
        if uint(attrs, &k("attention.value_length"))?.is_some_and(|v| v != head_dim) {
            return Err(bad_key(
                &k("attention.value_length"),
                "differs from key_length",
            ));
        }
        let rope_dim = uint(attrs, &k("rope.dimension_count"))?.unwrap_or(head_dim);
        let n_vocab = match uint(attrs, &k("vocab_size"))? {
            Some(v) => v,
            None => match attrs.get("tokenizer.ggml.tokens") {
                Some(Value::Array(t)) => t.len(),
                _ => return Err(bad_key("tokenizer.ggml.tokens", "missing")),
            },
        };
        let cfg = Config {
            n_vocab,
            n_embd,
            n_layer: need_uint(attrs, &k("block_count"))?,
            n_ff: need_uint(attrs, &k("feed_forward_length"))?,
            n_head,
            n_head_kv,
            head_dim,
            n_ctx_train: uint(attrs, &k("context_length"))?.unwrap_or(2048),
            rms_eps: float(attrs, &k("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5),
            rope_base: float(attrs, &k("rope.freq_base"))?.unwrap_or(10000.0),
            rope_dim,
            rope_style,
            arch: arch.clone(),
        };
        for (name, v) in [
            ("embedding_length", cfg.n_embd),
            ("block_count", cfg.n_layer),
            ("feed_forward_length", cfg.n_ff),
            ("head_dim", cfg.head_dim),
            ("vocab_size", cfg.n_vocab),
        ] {
            if v == 0 || v > MAX_DIM {
                return Err(bad_key(&k(name), format!("{v} is outside 1..={MAX_DIM}")));
            }
        }
        if cfg.rope_dim > cfg.head_dim || !cfg.rope_dim.is_multiple_of(2) {
            return Err(bad_key(
                &k("rope.dimension_count"),
                format!("{} does not fit head dim {}", cfg.rope_dim, cfg.head_dim),
            ));
        }
        if !(cfg.rms_eps > 0.0 && cfg.rope_base > 0.0) {
            return Err(bad_key(
                &k("rope.freq_base"),
                "rms epsilon and rope base must be positive",
            ));
        }
        Ok(cfg)
    }

    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}

/// A 2-D weight: `rows` outputs of `cols` inputs, each row `row_bytes`.
#[derive(Debug)]
pub struct Weight {
    pub name: String,
    pub wtype: WeightType,
    pub rows: usize,
    pub cols: usize,
    pub row_bytes: usize,
    /// Decoded bytes when the part is compressed; otherwise the bytes are
    /// borrowed from the map on each use.
    owned: Option<Vec<u8>>,
}

/// One transformer block.
#[derive(Debug)]
pub struct Layer {
    pub attn_norm: Vec<f32>,
    pub wq: Weight,
    pub wk: Weight,
    pub wv: Weight,
    pub wo: Weight,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub gate: Weight,
    pub up: Weight,
    pub down: Weight,
}

/// The loaded model: weights stay in the reader's map.
#[derive(Debug)]
pub struct Model {
    pub reader: Reader,
    pub config: Config,
    pub tok_embd: Weight,
    /// `None` when tied to `tok_embd`.
    pub output: Option<Weight>,
    pub output_norm: Vec<f32>,
    pub rope_freqs: Option<Vec<f32>>,
    /// θ_i / pos for each rotated pair: base^(−2i/d) / freq_factor_i.
    pub rope_inv_freq: Vec<f64>,
    pub layers: Vec<Layer>,
    /// The weights' fingerprint, computed (or read from the cache in the
    /// attributes) on first use.
    fingerprint: std::sync::OnceLock<String>,
}

fn load_weight(r: &Reader, name: &str, rows: usize, cols: usize) -> Result<Weight> {
    let o = r
        .object(name)
        .map_err(|_| Error::Unsupported(format!("model tensor {name:?} is missing")))?;
    let part = o
        .parts
        .get("data")
        .ok_or_else(|| Error::Unsupported(format!("model tensor {name:?} has no data part")))?;
    let wtype = WeightType::from_layout(&o.layout, part.etype.name()).ok_or_else(|| {
        Error::Unsupported(format!(
            "model tensor {name:?} has type {} ({}); supported: f32 f16 bf16 q4_0 q4_1 q5_0 q5_1 q8_0 q2_k q3_k q4_k q5_k q6_k",
            part.etype, o.layout
        ))
    })?;
    if o.shape != [rows as u64, cols as u64] {
        return Err(Error::Unsupported(format!(
            "model tensor {name:?} has shape {:?}, the metadata implies [{rows}, {cols}]",
            o.shape
        )));
    }
    let row_bytes = wtype.row_bytes(cols).ok_or_else(|| {
        Error::Unsupported(format!(
            "model tensor {name:?}: rows of {cols} are not whole {} blocks",
            wtype.name()
        ))
    })?;
    let bytes = r.part_bytes(name, "data")?;
    if bytes.len() as u64 != (row_bytes as u64) * rows as u64 {
        return Err(Error::Unsupported(format!(
            "model tensor {name:?} holds {} bytes, expected {}",
            bytes.len(),
            row_bytes * rows
        )));
    }
    let owned = match bytes {
        Cow::Borrowed(_) => None,
        Cow::Owned(v) => Some(v),
    };
    Ok(Weight {
        name: name.to_string(),
        wtype,
        rows,
        cols,
        row_bytes,
        owned,
    })
}

fn load_vector(r: &Reader, name: &str, n: usize) -> Result<Vec<f32>> {
    let o = r
        .object(name)
        .map_err(|_| Error::Unsupported(format!("model tensor {name:?} is missing")))?;
    if o.shape != [n as u64] {
        return Err(Error::Unsupported(format!(
            "model tensor {name:?} has shape {:?}, expected [{n}]",
            o.shape
        )));
    }
    let part = o
        .parts
        .get("data")
        .ok_or_else(|| Error::Unsupported(format!("{name:?} has no data part")))?;
    let t = WeightType::from_layout(&o.layout, part.etype.name())
        .filter(|t| t.block_elems() == 1)
        .ok_or_else(|| {
            Error::Unsupported(format!(
                "model vector {name:?} must be f32, f16 or bf16, not {}",
                part.etype
            ))
        })?;
    let mut out = vec![0f32; n];
    quant::dequant_row(t, &r.part_bytes(name, "data")?, &mut out)?;
    Ok(out)
}

impl Model {
    /// Loads and validates a model from an open reader.
    pub fn load(reader: Reader) -> Result<Model> {
        let attrs = reader
            .attributes()
            .ok_or_else(|| Error::Unsupported("the file has no model metadata".into()))?;
        let c = Config::from_attributes(attrs)?;
        let r = &reader;
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            let bias = |s: &str, dim: usize| -> Result<Option<Vec<f32>>> {
                // Required for qwen2, optional elsewhere.
                if c.arch == "qwen2" || r.contains(&n(s)) {
                    load_vector(r, &n(s), dim).map(Some)
                } else {
                    Ok(None)
                }
            };
            layers.push(Layer {
                attn_norm: load_vector(r, &n("attn_norm.weight"), c.n_embd)?,
                wq: load_weight(r, &n("attn_q.weight"), c.q_dim(), c.n_embd)?,
                wk: load_weight(r, &n("attn_k.weight"), c.kv_dim(), c.n_embd)?,
                wv: load_weight(r, &n("attn_v.weight"), c.kv_dim(), c.n_embd)?,
                wo: load_weight(r, &n("attn_output.weight"), c.n_embd, c.q_dim())?,
                bq: bias("attn_q.bias", c.q_dim())?,
                bk: bias("attn_k.bias", c.kv_dim())?,
                bv: bias("attn_v.bias", c.kv_dim())?,
                ffn_norm: load_vector(r, &n("ffn_norm.weight"), c.n_embd)?,
                gate: load_weight(r, &n("ffn_gate.weight"), c.n_ff, c.n_embd)?,
                up: load_weight(r, &n("ffn_up.weight"), c.n_ff, c.n_embd)?,
                down: load_weight(r, &n("ffn_down.weight"), c.n_embd, c.n_ff)?,
            });
        }
        let tok_embd = load_weight(r, "token_embd.weight", c.n_vocab, c.n_embd)?;
        let output = if r.contains("output.weight") {
            Some(load_weight(r, "output.weight", c.n_vocab, c.n_embd)?)
        } else {
            None
        };
        let rope_freqs = if r.contains("rope_freqs.weight") {
            Some(load_vector(r, "rope_freqs.weight", c.rope_dim / 2)?)
        } else {
            None
        };
        let rope_inv_freq = (0..c.rope_dim / 2)
            .map(|p| {
                let inv = (c.rope_base as f64).powf(-2.0 * p as f64 / c.rope_dim as f64);
                inv / rope_freqs.as_ref().map_or(1.0, |f| f[p] as f64)
            })
            .collect();
        Ok(Model {
            rope_inv_freq,
            output_norm: load_vector(r, "output_norm.weight", c.n_embd)?,
            config: c,
            tok_embd,
            output,
            rope_freqs,
            layers,
            reader,
            fingerprint: std::sync::OnceLock::new(),
        })
    }

    /// The full-content fingerprint of the model's tensors (see
    /// [`crate::fingerprint`]): cached by convert, else computed once.
    pub fn fingerprint(&self) -> Result<&str> {
        if let Some(f) = self.fingerprint.get() {
            return Ok(f);
        }
        let f = crate::fingerprint::of(&self.reader)?;
        Ok(self.fingerprint.get_or_init(|| f))
    }

    /// The bytes of a weight (borrowed from the map, or its decoded copy).
    pub fn bytes<'a>(&'a self, w: &'a Weight) -> Result<&'a [u8]> {
        if let Some(v) = &w.owned {
            return Ok(v);
        }
        match self.reader.part_bytes(&w.name, "data")? {
            Cow::Borrowed(b) => Ok(b),
            Cow::Owned(_) => Err(Error::usage(format!("{} is not mapped", w.name))),
        }
    }

    /// The LM head (`output.weight`, or the tied embeddings).
    pub fn lm_head(&self) -> &Weight {
        self.output.as_ref().unwrap_or(&self.tok_embd)
    }
}
