//! Model architectures. Each family lives in its own file with its
//! hyper-parameters, tensor list and layer forward; [`Arch`] picks one
//! from `general.architecture` at load. Adding an architecture is one file
//! and one arm of [`Arch`].
//!
//! Data flows one way: an architecture calls `ops`, `attention` and
//! `matmul`, which call the kernels and read the KV cache.

/// Runs `$e` as op `$op` of the scratch's profiler (see `engine::profile`):
/// `timed!(s, Qkv, mm.group(..))?`.
macro_rules! timed {
    ($s:expr, $op:ident, $e:expr) => {{
        let t = $s.prof.start();
        let r = $e;
        $s.prof.stop($crate::engine::profile::Op::$op, t);
        r
    }};
}

pub(crate) mod gemma3;
pub(crate) mod llama;

use super::attention::{attend, attend_one_each, AttnSpec};
use super::batch::Mul;
use super::kv::KvCache;
use super::ops::{self, RopeStyle};
use super::quant::QAct;
use super::weights::{Loader, Weight};
use crate::cbor::Value;
use crate::error::{Error, Result};
use crate::reader::Reader;
use std::sync::{Arc, OnceLock};

/// Hyper-parameters every architecture has, from the model's metadata
/// (`<arch>.*` keys); family-specific ones live with the family.
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
}

pub(crate) fn bad_key(key: &str, detail: impl Into<String>) -> Error {
    Error::Unsupported(format!("model metadata {key}: {}", detail.into()))
}

pub(crate) fn uint(attrs: &Value, key: &str) -> Result<Option<usize>> {
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

pub(crate) fn need_uint(attrs: &Value, key: &str) -> Result<usize> {
    uint(attrs, key)?.ok_or_else(|| bad_key(key, "missing"))
}

pub(crate) fn float(attrs: &Value, key: &str) -> Result<Option<f32>> {
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
        Arch::check_name(&arch)?;
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

/// The architectures the engine runs.
#[derive(Debug)]
pub(crate) enum Arch {
    Llama(llama::Llama),
    Gemma3(gemma3::Gemma3),
}

impl Arch {
    /// An error unless the engine runs `general.architecture` = `name`.
    fn check_name(name: &str) -> Result<()> {
        match name {
            "llama" | "qwen2" | "gemma3" => Ok(()),
            other => Err(Error::Unsupported(format!(
                "architecture {other:?}; the engine runs llama (Llama, Mistral, TinyLlama), qwen2 and gemma3"
            ))),
        }
    }

    fn load(attrs: &Value, c: &Config, w: &Loader) -> Result<Arch> {
        Arch::check_name(&c.arch)?;
        if c.arch == "gemma3" {
            Ok(Arch::Gemma3(gemma3::Gemma3::load(attrs, c, w)?))
        } else {
            Ok(Arch::Llama(llama::Llama::load(attrs, c, w)?))
        }
    }

    /// How the KV cache holds each layer's rows (recorded in snapshots,
    /// checked on restore): `"full"`, every position of every layer.
    pub(crate) fn kv_layout(&self) -> &'static str {
        match self {
            Arch::Llama(_) => "full",
            Arch::Gemma3(_) => gemma3::KV_LAYOUT,
        }
    }
}

/// Buffers reused across forward calls (grown, never shrunk).
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub x: Vec<f32>,
    pub xn: Vec<f32>,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub att: Vec<f32>,
    pub scores: Vec<f32>,
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    pub tmp: Vec<f32>,
    pub qa: QAct,
    /// Time per op, when switched on (`Engine::set_profiling`).
    pub prof: super::profile::Profiler,
}

/// One sequence's rows in a forward pass: `n` consecutive rows of the
/// activations, at positions `pos0..pos0 + n` of its own KV cache. A
/// prefill is one sequence of many rows; a batched decode step is several
/// sequences of one row each (see `engine::batch`).
#[derive(Debug)]
pub(crate) struct Seq<'a> {
    pub cache: &'a mut KvCache,
    pub pos0: usize,
    pub n: usize,
}

/// The per-sequence part of a layer: RoPE of each sequence's rows of
/// `s.q` / `s.k` at its own positions, their K/V stored in its cache, and
/// its queries attending over its cache into its rows of `s.att`. Every
/// other step of a layer is row-wise and runs over all rows at once.
pub(crate) fn attend_seqs(
    seqs: &mut [Seq<'_>],
    layer: usize,
    spec: &AttnSpec,
    inv_freq: &[f64],
    style: RopeStyle,
    s: &mut Scratch,
) {
    let (hd, qd) = (spec.head_dim, spec.n_head * spec.head_dim);
    let kvd = spec.n_head_kv * hd;
    let rows: usize = seqs.iter().map(|q| q.n).sum();
    sized(&mut s.att, rows * qd);
    let mut r0 = 0;
    for sq in seqs.iter_mut() {
        let r = r0..r0 + sq.n;
        r0 += sq.n;
        let q = &mut s.q[r.start * qd..r.end * qd];
        let k = &mut s.k[r.start * kvd..r.end * kvd];
        ops::rope(q, spec.n_head, hd, inv_freq, style, sq.pos0);
        ops::rope(k, spec.n_head_kv, hd, inv_freq, style, sq.pos0);
        sq.cache
            .store(layer, sq.pos0, k, &s.v[r.start * kvd..r.end * kvd]);
    }
    // Each run of one-row sequences of a batched step attends in one
    // parallel pass over every (sequence, head); a sequence of several rows
    // (a prefill), or one alone, attends by itself.
    let mut r0 = 0;
    let mut i = 0;
    while i < seqs.len() {
        let run = if seqs.len() > 1 {
            seqs[i..].iter().take_while(|q| q.n == 1).count()
        } else {
            0
        };
        if run >= 2 {
            let caches: Vec<&KvCache> = seqs[i..i + run].iter().map(|q| &*q.cache).collect();
            let pos: Vec<usize> = seqs[i..i + run].iter().map(|q| q.pos0).collect();
            attend_one_each(
                &caches,
                layer,
                spec,
                &s.q[r0 * qd..(r0 + run) * qd],
                &pos,
                &mut s.scores,
                &mut s.att[r0 * qd..(r0 + run) * qd],
            );
            r0 += run;
            i += run;
            continue;
        }
        let sq = &seqs[i];
        let r = r0..r0 + sq.n;
        r0 += sq.n;
        i += 1;
        let out = &mut s.att[r.start * qd..r.end * qd];
        attend(
            sq.cache,
            layer,
            spec,
            &s.q[r.start * qd..r.end * qd],
            sq.pos0,
            &mut s.scores,
            out,
        );
    }
}

/// The first `n` values of `v`, grown to fit.
pub(crate) fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    v.resize(n, 0.0);
    &mut v[..n]
}

/// The embedding rows of `tokens` into `x` (`n_embd` each).
pub(crate) fn embed(w: &Weight, tokens: &[u32], x: &mut [f32]) -> Result<()> {
    let d = w.cols;
    for (i, &t) in tokens.iter().enumerate() {
        w.dequant_row(t as usize, &mut x[i * d..(i + 1) * d])?;
    }
    Ok(())
}

/// The Q, K and V projections of the `n` rows of `s.xn` into `s.q`, `s.k`
/// and `s.v` (one grouped matmul), timed as [`Op::Qkv`](super::profile::Op).
pub(crate) fn project_qkv(
    mm: &Mul,
    s: &mut Scratch,
    n: usize,
    [wq, wk, wv]: [&Weight; 3],
) -> Result<()> {
    timed!(
        s,
        Qkv,
        mm.group(
            &mut [
                (wq, sized(&mut s.q, n * wq.rows)),
                (wk, sized(&mut s.k, n * wk.rows)),
                (wv, sized(&mut s.v, n * wv.rows)),
            ],
            &s.xn,
            n,
            &mut s.tmp,
            &mut s.qa,
        )
    )
}

/// The attention output projection of `s.att` into `s.xn`.
pub(crate) fn project_out(mm: &Mul, s: &mut Scratch, n: usize, wo: &Weight) -> Result<()> {
    timed!(
        s,
        AttnOutput,
        mm.one(
            wo,
            &s.att,
            n,
            sized(&mut s.xn, n * wo.rows),
            &mut s.tmp,
            &mut s.qa,
        )
    )
}

/// The gated feed-forward of the rows of `s.xn` back into `s.xn`: gate and
/// up projections (one grouped matmul), `act(gate, up)` (SwiGLU, GeGLU),
/// down projection.
pub(crate) fn feed_forward(
    mm: &Mul,
    s: &mut Scratch,
    n: usize,
    [gate, up, down]: [&Weight; 3],
    act: fn(&mut [f32], &[f32]),
) -> Result<()> {
    timed!(
        s,
        FfnGateUp,
        mm.group(
            &mut [
                (gate, sized(&mut s.gate, n * gate.rows)),
                (up, sized(&mut s.up, n * up.rows)),
            ],
            &s.xn,
            n,
            &mut s.tmp,
            &mut s.qa,
        )
    )?;
    timed!(s, FfnAct, act(&mut s.gate, &s.up));
    timed!(
        s,
        FfnDown,
        mm.one(
            down,
            &s.gate,
            n,
            sized(&mut s.xn, n * down.rows),
            &mut s.tmp,
            &mut s.qa,
        )
    )
}

/// Final norm and LM head over every row of `s.x` (`all`), or over the
/// last row of each sequence: one row of logits per sequence, each
/// computed as its sequence alone computes it.
pub(crate) fn head(
    s: &mut Scratch,
    (norm, eps): (&[f32], f32),
    lm_head: &Weight,
    seqs: &[Seq<'_>],
    all: bool,
    logits: &mut Vec<f32>,
) -> Result<()> {
    let d = norm.len();
    let n: usize = seqs.iter().map(|q| q.n).sum();
    let (rows, mm) = if all {
        ops::rms_norm(&s.x[..n * d], norm, eps, sized(&mut s.xn, n * d));
        (n, Mul::of(seqs))
    } else {
        let xn = sized(&mut s.xn, seqs.len() * d);
        let mut end = 0;
        for (i, q) in seqs.iter().enumerate() {
            end += q.n;
            let last = &s.x[(end - 1) * d..end * d];
            ops::rms_norm(last, norm, eps, &mut xn[i * d..(i + 1) * d]);
        }
        (seqs.len(), Mul::decode(seqs.len()))
    };
    logits.resize(rows * lm_head.rows, 0.0);
    mm.one(lm_head, &s.xn, rows, logits, &mut s.tmp, &mut s.qa)
}

/// The loaded model: weights bound to their bytes in the reader's map.
#[derive(Debug)]
pub struct Model {
    pub reader: Arc<Reader>,
    pub config: Config,
    pub(crate) arch: Arch,
    /// The weights' fingerprint, computed (or read from the cache in the
    /// attributes) on first use.
    fingerprint: OnceLock<String>,
}

impl Model {
    /// Loads and validates a model from an open reader: every tensor the
    /// architecture uses is resolved here, or the load fails.
    pub fn load(reader: Reader) -> Result<Model> {
        let reader = Arc::new(reader);
        let attrs = reader
            .attributes()
            .ok_or_else(|| Error::Unsupported("the file has no model metadata".into()))?;
        let config = Config::from_attributes(attrs)?;
        let arch = Arch::load(attrs, &config, &Loader::new(reader.clone()))?;
        Ok(Model {
            reader,
            config,
            arch,
            fingerprint: OnceLock::new(),
        })
    }

    /// The full-content fingerprint of the model's tensors (see
    /// [`crate::fingerprint`]): cached by convert, else computed once.
    /// How the KV cache holds each layer (see `snapshot`).
    pub fn kv_layout(&self) -> &'static str {
        self.arch.kv_layout()
    }

    pub fn fingerprint(&self) -> Result<&str> {
        if let Some(f) = self.fingerprint.get() {
            return Ok(f);
        }
        let f = crate::fingerprint::of(&self.reader)?;
        Ok(self.fingerprint.get_or_init(|| f))
    }

    /// Runs `tokens` at positions `pos0..`, storing their K/V in `cache`;
    /// writes the logits of the last token (or of every token when `all`)
    /// to `logits` (`n_vocab` per row).
    pub(crate) fn forward(
        &self,
        cache: &mut KvCache,
        s: &mut Scratch,
        tokens: &[u32],
        pos0: usize,
        all: bool,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let c = &self.config;
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
        let mut seqs = [Seq { cache, pos0, n }];
        self.forward_seqs(&mut seqs, s, tokens, all, logits)
    }

    /// Runs the rows of `seqs` (their tokens concatenated in `tokens`;
    /// sizes, positions and ids already checked) through the model.
    pub(crate) fn forward_seqs(
        &self,
        seqs: &mut [Seq<'_>],
        s: &mut Scratch,
        tokens: &[u32],
        all: bool,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let c = &self.config;
        match &self.arch {
            Arch::Llama(a) => a.forward(c, seqs, s, tokens, all, logits),
            Arch::Gemma3(a) => a.forward(c, seqs, s, tokens, all, logits),
        }
    }
}
