//! Engine snapshots as `.zt` files: the state of a context (KV rows of the
//! used positions, tokens, last logits, sampler settings, the RNG's live
//! words) as named tensors, and what it must match (model fingerprint,
//! tokenizer digest, shapes) as attributes. One format for weights and
//! state. Restoring checks everything before the engine is touched.
//!
//! Layout (spec §20):
//! - `tokens` u32 `[n]`, `logits` f32 `[n_vocab]` (or `[0]` before the
//!   first evaluation), `rng` u64 `[4]`;
//! - `kv.k.<layer>` and `kv.v.<layer>`, f16 or f32 `[n, kv_dim]`;
//! - attributes `{"ztensor.snapshot": {magic, version, arch, model_path,
//!   model_fingerprint, tokenizer_digest, n_ctx, n_threads, n_layer,
//!   kv_dim, kv_dtype, n_vocab, n_tokens, created, sampler: {...}}}`;
//! - under a grammar, `grammar.*` objects and a `grammar` description
//!   (version 2, see [`super::snapshot_grammar`]).
//!
//! Every part carries an xxh3 digest, checked on restore.

use super::constrained::SavedGrammar;
use super::snapshot_grammar::{self, VERSION_WITH_GRAMMAR};
use super::{Engine, EngineOptions, KvRows, KvType, SamplerConfig};
use crate::cbor::Value;
use crate::digest::DigestAlg;
use crate::error::{Error, Result, SnapshotFault};
use crate::reader::Reader;
use crate::writer::{WriteOptions, Writer};
use crate::zstd_seekable::ZstdOptions;
use half::f16;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const MAGIC: &str = "ztensor-engine-snapshot";
/// Version of a snapshot without grammar state (one with grammar state is
/// [`VERSION_WITH_GRAMMAR`]; a reader accepts both).
pub const VERSION: u64 = 1;
/// The attribute holding a snapshot's description.
pub const ATTRIBUTE: &str = "ztensor.snapshot";

/// An engine's context, immutable once captured.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub tokens: Vec<u32>,
    /// Positions `0..tokens.len()` of every layer.
    pub kv: KvRows,
    pub last_logits: Vec<f32>,
    pub rng: [u64; 4],
    pub sampler: SamplerConfig,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// The grammar of the generation in progress, if any, with its live
    /// parser state (restoring continues it).
    pub grammar: Option<SavedGrammar>,
}

/// What a snapshot file says about itself, read without the model.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotInfo {
    pub magic: String,
    pub version: u64,
    pub arch: String,
    /// The model file the engine ran, when it had a path.
    pub model_path: Option<String>,
    pub model_fingerprint: String,
    pub tokenizer_digest: String,
    /// The context length of the engine that wrote it.
    pub n_ctx: usize,
    pub n_threads: usize,
    pub n_layer: usize,
    pub kv_dim: usize,
    pub kv_type: KvType,
    /// How the cache held each layer's rows (`"full"`; snapshots written
    /// before the field existed are full).
    pub kv_layout: String,
    pub n_vocab: usize,
    pub tokens_count: usize,
    pub created: u64,
    /// The sampler settings of the run that was saved; restoring applies
    /// them as the engine's defaults.
    pub sampler: SamplerConfig,
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn fault(fault: SnapshotFault, detail: impl Into<String>) -> Error {
    Error::Snapshot {
        fault,
        detail: detail.into(),
    }
}

pub(crate) fn malformed(detail: impl Into<String>) -> Error {
    fault(SnapshotFault::Malformed, detail)
}

fn incompatible(detail: impl Into<String>) -> Error {
    fault(SnapshotFault::Incompatible, detail)
}

/// A format error of the container reader, as a malformed snapshot (i/o
/// errors, such as a missing file, stay what they are).
pub(crate) fn wrap(e: Error) -> Error {
    match e {
        Error::Snapshot { .. } | Error::Io { .. } => e,
        other => malformed(format!("not a readable snapshot: {other}")),
    }
}

/// Opens a snapshot file (a file the container reader refuses is a
/// malformed snapshot).
pub fn open(path: impl AsRef<Path>) -> Result<Reader> {
    Reader::open(path).map_err(wrap)
}

/// A snapshot held in memory (no temporary file).
pub fn from_bytes(bytes: impl Into<Arc<[u8]>>) -> Result<Reader> {
    Reader::from_bytes(bytes).map_err(wrap)
}

fn sampler_value(s: &SamplerConfig) -> Result<Value> {
    Value::text_map([
        ("temperature", Value::Float(s.temperature as f64)),
        ("top_k", Value::Uint(s.top_k as u64)),
        ("top_p", Value::Float(s.top_p as f64)),
        ("min_p", Value::Float(s.min_p as f64)),
        ("repeat_penalty", Value::Float(s.repeat_penalty as f64)),
        (
            "frequency_penalty",
            Value::Float(s.frequency_penalty as f64),
        ),
        ("presence_penalty", Value::Float(s.presence_penalty as f64)),
        ("penalty_last_n", Value::Uint(s.penalty_last_n as u64)),
    ])
}

impl Engine {
    fn describe(&self, state: &State) -> Result<Value> {
        let c = &self.model.config;
        // Absolute, so the snapshot restores from any working directory
        // (`Engine::open` resolved it already; a reader opened by the caller
        // may hold a relative path).
        let path = match self.model.reader.path() {
            Some(p) => Value::text(super::resolve_path(p).to_string_lossy().as_ref()),
            None => Value::Null,
        };
        let version = match state.grammar {
            Some(_) => VERSION_WITH_GRAMMAR,
            None => VERSION,
        };
        let mut entries = vec![
            ("magic", Value::text(MAGIC)),
            ("version", Value::Uint(version)),
            ("arch", Value::text(c.arch.as_str())),
            ("model_path", path),
            ("model_fingerprint", Value::text(self.model.fingerprint()?)),
            (
                "tokenizer_digest",
                Value::text(self.tokenizer.digest().as_str()),
            ),
            ("n_ctx", Value::Uint(self.cache.n_ctx as u64)),
            ("n_threads", Value::Uint(self.n_threads as u64)),
            ("n_layer", Value::Uint(c.n_layer as u64)),
            ("kv_dim", Value::Uint(c.kv_dim() as u64)),
            ("kv_dtype", Value::text(state.kv.kind().name())),
            ("kv_layout", Value::text(self.model.kv_layout())),
            ("n_vocab", Value::Uint(c.n_vocab as u64)),
            ("n_tokens", Value::Uint(state.tokens.len() as u64)),
            ("created", Value::Uint(state.created)),
            ("sampler", sampler_value(&state.sampler)?),
        ];
        if let Some(g) = &state.grammar {
            entries.push(("grammar", snapshot_grammar::describe(g)?));
        }
        let desc = Value::text_map(entries)?;
        Value::text_map([(ATTRIBUTE, desc)])
    }

    /// Writes `state` (taken from this engine) to `path`, atomically.
    pub fn write_state(&self, state: &State, path: &Path, compress: bool) -> Result<()> {
        let w = Writer::create_with(path, snapshot_options(compress))?;
        self.fill(w, state)?.finish()?;
        Ok(())
    }

    /// Adds `state`'s objects and attributes to `w`.
    fn fill(&self, mut w: Writer, state: &State) -> Result<Writer> {
        let n = state.tokens.len() as u64;
        let kv_dim = self.model.config.kv_dim();
        let per_layer = state.tokens.len() * kv_dim;
        w.set_attributes(self.describe(state)?)?;
        w.add::<u32>("tokens", &[n], &state.tokens)?;
        w.add::<f32>(
            "logits",
            &[state.last_logits.len() as u64],
            &state.last_logits,
        )?;
        w.add::<u64>("rng", &[4], &state.rng)?;
        if let Some(g) = &state.grammar {
            snapshot_grammar::write(&mut w, g)?;
        }
        let shape = [n, kv_dim as u64];
        let layers = self.model.config.n_layer;
        match &state.kv {
            KvRows::F32 { k, v } => write_kv(&mut w, layers, &shape, per_layer, k, v)?,
            KvRows::F16 { k, v } => write_kv(&mut w, layers, &shape, per_layer, k, v)?,
        }
        Ok(w)
    }

    /// Saves the context to `path` (atomic: a failed write leaves any old
    /// file in place). `compress` stores the parts zstd-compressed.
    pub fn snapshot(&self, path: impl AsRef<Path>, compress: bool) -> Result<()> {
        let state = self.capture()?;
        self.write_state(&state, path.as_ref(), compress)
    }

    /// The snapshot as bytes (written in memory).
    pub fn snapshot_bytes(&self, compress: bool) -> Result<Vec<u8>> {
        let state = self.capture()?;
        self.state_bytes(&state, compress)
    }

    /// `state` as snapshot bytes.
    pub fn state_bytes(&self, state: &State, compress: bool) -> Result<Vec<u8>> {
        let w = Writer::in_memory(snapshot_options(compress))?;
        self.fill(w, state)?.finish_bytes()
    }

    /// Replaces the context with the snapshot in `reader`, after checking
    /// it belongs to this model and tokenizer and fits this engine. On any
    /// error the engine is unchanged.
    pub fn restore(&mut self, reader: &Reader) -> Result<()> {
        let state = self.read_state(reader)?;
        self.restore_state(&state)
    }

    /// Reads and checks a snapshot against this engine, without applying it.
    pub fn read_state(&self, reader: &Reader) -> Result<State> {
        let info = read_info(reader)?;
        check_info(self, &info)?;
        let state = read_state(reader, &info)?;
        check_state(self, &state)?;
        Ok(state)
    }

    /// A new engine from a snapshot: the model at `model_path` (default:
    /// the path the snapshot records), with the snapshot's context length
    /// and KV type, `n_threads` workers (0: all cores).
    pub fn from_snapshot(
        reader: &Reader,
        model_path: Option<&Path>,
        n_threads: usize,
    ) -> Result<Engine> {
        let info = read_info(reader)?;
        let path = match (model_path, &info.model_path) {
            (Some(p), _) => p.to_path_buf(),
            (None, Some(p)) => PathBuf::from(p),
            (None, None) => {
                return Err(Error::usage(
                    "the snapshot records no model path; pass model_path",
                ))
            }
        };
        let options = EngineOptions {
            n_ctx: info.n_ctx,
            n_threads,
            kv_type: info.kv_type,
            seed: 0,
        };
        let mut engine = Engine::open(&path, options)?;
        engine.restore(reader)?;
        Ok(engine)
    }

    /// Writes stored state `name` to `path` as a snapshot.
    pub fn dump_state(&self, name: &str, path: impl AsRef<Path>, compress: bool) -> Result<()> {
        let st = self.state(name)?;
        self.write_state(&st, path.as_ref(), compress)
    }

    /// Reads a snapshot into stored state `name` (the context is not changed).
    pub fn load_state(&mut self, name: &str, reader: &Reader) -> Result<()> {
        let st = self.read_state(reader)?;
        self.put_state(name, Arc::new(st))
    }
}

/// Each layer's K and V rows (`per_layer` values each) as `kv.k.<l>` /
/// `kv.v.<l>` of `shape`.
fn write_kv<T: crate::element::Element>(
    w: &mut Writer,
    layers: usize,
    shape: &[u64],
    per_layer: usize,
    k: &[T],
    v: &[T],
) -> Result<()> {
    for l in 0..layers {
        let span = l * per_layer..(l + 1) * per_layer;
        w.add::<T>(&format!("kv.k.{l}"), shape, &k[span.clone()])?;
        w.add::<T>(&format!("kv.v.{l}"), shape, &v[span])?;
    }
    Ok(())
}

/// How snapshots are written: xxh3 digests, zstd parts when `compress`.
fn snapshot_options(compress: bool) -> WriteOptions {
    WriteOptions {
        compression: compress.then(ZstdOptions::default),
        digest: Some(DigestAlg::Xxh3),
        ..WriteOptions::default()
    }
}

fn field<'a>(desc: &'a Value, key: &str) -> Result<&'a Value> {
    desc.get(key)
        .ok_or_else(|| malformed(format!("{ATTRIBUTE}.{key} is missing")))
}

fn uint(desc: &Value, key: &str) -> Result<u64> {
    field(desc, key)?
        .as_u64()
        .ok_or_else(|| malformed(format!("{ATTRIBUTE}.{key} is not an unsigned integer")))
}

fn size(desc: &Value, key: &str) -> Result<usize> {
    let v = uint(desc, key)?;
    usize::try_from(v)
        .ok()
        .filter(|&n| n <= 1 << 40)
        .ok_or_else(|| malformed(format!("{ATTRIBUTE}.{key} = {v} is out of range")))
}

fn text(desc: &Value, key: &str) -> Result<String> {
    field(desc, key)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| malformed(format!("{ATTRIBUTE}.{key} is not text")))
}

fn float(desc: &Value, key: &str) -> Result<f32> {
    match field(desc, key)? {
        Value::Float(f) if f.is_finite() => Ok(*f as f32),
        _ => Err(malformed(format!("sampler.{key} is not a finite float"))),
    }
}

fn read_sampler(desc: &Value) -> Result<SamplerConfig> {
    let s = field(desc, "sampler")?;
    Ok(SamplerConfig {
        temperature: float(s, "temperature")?,
        top_k: size(s, "top_k")?,
        top_p: float(s, "top_p")?,
        min_p: float(s, "min_p")?,
        repeat_penalty: float(s, "repeat_penalty")?,
        frequency_penalty: float(s, "frequency_penalty")?,
        presence_penalty: float(s, "presence_penalty")?,
        penalty_last_n: size(s, "penalty_last_n")?,
    })
}

/// The description of a snapshot, from its attributes and the shape of
/// its `tokens` tensor (nothing else is read).
pub fn read_info(reader: &Reader) -> Result<SnapshotInfo> {
    let desc = reader
        .attributes()
        .and_then(|a| a.get(ATTRIBUTE))
        .ok_or_else(|| malformed(format!("no {ATTRIBUTE} attribute: not an engine snapshot")))?;
    let magic = text(desc, "magic")?;
    if magic != MAGIC {
        return Err(malformed(format!("magic is {magic:?}, not {MAGIC:?}")));
    }
    let version = uint(desc, "version")?;
    if version != VERSION && version != VERSION_WITH_GRAMMAR {
        return Err(malformed(format!(
            "version {version} is not supported (this reader knows {VERSION} and {VERSION_WITH_GRAMMAR})"
        )));
    }
    let kv_type = match text(desc, "kv_dtype")?.as_str() {
        "f16" => KvType::F16,
        "f32" => KvType::F32,
        other => return Err(malformed(format!("kv_dtype {other:?} is not f16 or f32"))),
    };
    let model_path = match field(desc, "model_path")? {
        Value::Null => None,
        v => Some(
            v.as_str()
                .ok_or_else(|| malformed(format!("{ATTRIBUTE}.model_path is not text")))?
                .to_string(),
        ),
    };
    let info = SnapshotInfo {
        magic,
        version,
        arch: text(desc, "arch")?,
        model_path,
        model_fingerprint: text(desc, "model_fingerprint")?,
        tokenizer_digest: text(desc, "tokenizer_digest")?,
        n_ctx: size(desc, "n_ctx")?,
        n_threads: size(desc, "n_threads")?,
        n_layer: size(desc, "n_layer")?,
        kv_dim: size(desc, "kv_dim")?,
        kv_type,
        kv_layout: match desc.get("kv_layout") {
            None => "full".to_string(),
            Some(_) => text(desc, "kv_layout")?,
        },
        n_vocab: size(desc, "n_vocab")?,
        tokens_count: size(desc, "n_tokens")?,
        created: uint(desc, "created")?,
        sampler: read_sampler(desc)?,
    };
    let shape = &reader.object("tokens").map_err(wrap)?.shape;
    if shape.as_slice() != [info.tokens_count as u64] {
        return Err(malformed(format!(
            "tokens has shape {shape:?}, the description says {} tokens",
            info.tokens_count
        )));
    }
    if info.tokens_count > info.n_ctx {
        return Err(malformed(format!(
            "{} tokens exceed the recorded context of {}",
            info.tokens_count, info.n_ctx
        )));
    }
    Ok(info)
}

/// The model, tokenizer and cache geometry of `info` against `engine`.
pub fn check_info(engine: &Engine, info: &SnapshotInfo) -> Result<()> {
    let c = &engine.model.config;
    let ours = engine.model.fingerprint()?;
    if info.model_fingerprint != ours {
        return Err(fault(
            SnapshotFault::Fingerprint,
            format!(
                "taken with model {}, this engine runs {ours}",
                info.model_fingerprint
            ),
        ));
    }
    let digest = engine.tokenizer.digest();
    if info.tokenizer_digest != digest {
        return Err(fault(
            SnapshotFault::Tokenizer,
            format!(
                "taken with tokenizer {}, this engine has {digest}",
                info.tokenizer_digest
            ),
        ));
    }
    let geometry = [
        ("n_layer", info.n_layer, c.n_layer),
        ("kv_dim", info.kv_dim, c.kv_dim()),
        ("n_vocab", info.n_vocab, c.n_vocab),
    ];
    for (what, theirs, ours) in geometry {
        if theirs != ours {
            return Err(incompatible(format!(
                "{what} is {theirs} in the snapshot, {ours} in this engine"
            )));
        }
    }
    let layout = engine.model.kv_layout();
    if info.kv_layout != layout {
        return Err(incompatible(format!(
            "the KV layout is {:?} in the snapshot, {layout:?} in this engine",
            info.kv_layout
        )));
    }
    Ok(())
}

/// `state` against `engine`: KV type and size, tokens within the
/// context and vocabulary, logits length.
pub fn check_state(engine: &Engine, state: &State) -> Result<()> {
    let c = &engine.model.config;
    let n = state.tokens.len();
    if n > engine.cache.n_ctx {
        return Err(incompatible(format!(
            "{n} tokens do not fit the context of {}",
            engine.cache.n_ctx
        )));
    }
    if state.kv.kind() != engine.cache.kind() {
        return Err(incompatible(format!(
            "the KV cache is {}, the snapshot's {}",
            engine.cache.kind().name(),
            state.kv.kind().name()
        )));
    }
    let want = c.n_layer * n * c.kv_dim();
    if state.kv.len() != want {
        return Err(incompatible(format!(
            "KV holds {} values per side, {want} expected",
            state.kv.len()
        )));
    }
    if let Some((i, t)) = state
        .tokens
        .iter()
        .enumerate()
        .find(|(_, &t)| t as usize >= c.n_vocab)
    {
        return Err(malformed(format!(
            "token {i} has id {t}, outside the vocabulary of {}",
            c.n_vocab
        )));
    }
    if !state.last_logits.is_empty() && state.last_logits.len() != c.n_vocab {
        return Err(incompatible(format!(
            "{} logits, the vocabulary has {}",
            state.last_logits.len(),
            c.n_vocab
        )));
    }
    if state.last_logits.is_empty() != state.tokens.is_empty() {
        return Err(malformed("logits are present exactly when tokens are"));
    }
    // The sampler a later run inherits must be one a run would accept.
    state
        .sampler
        .validate()
        .map_err(|e| malformed(format!("sampler: {e}")))?;
    Ok(())
}

fn read_vec<T: crate::element::Element>(
    reader: &Reader,
    name: &str,
    shape: &[u64],
) -> Result<Vec<T>> {
    let t = reader.read_dense(name).map_err(wrap)?;
    if t.shape != shape {
        return Err(malformed(format!(
            "{name} has shape {:?}, {shape:?} expected",
            t.shape
        )));
    }
    t.to_vec::<T>()
        .map_err(|e| malformed(format!("{name}: {e}")))
}

/// Every layer's K and V, each `shape`, packed layer after layer.
fn read_kv<T: crate::element::Element>(
    reader: &Reader,
    n_layer: usize,
    shape: &[u64],
    total: usize,
) -> Result<(Vec<T>, Vec<T>)> {
    let (mut k, mut v) = (Vec::with_capacity(total), Vec::with_capacity(total));
    for l in 0..n_layer {
        k.extend(read_vec::<T>(reader, &format!("kv.k.{l}"), shape)?);
        v.extend(read_vec::<T>(reader, &format!("kv.v.{l}"), shape)?);
    }
    Ok((k, v))
}

/// The state in a snapshot whose description is `info`, after checking
/// every part's digest and shape.
pub fn read_state(reader: &Reader, info: &SnapshotInfo) -> Result<State> {
    for (name, o) in &reader.manifest().objects {
        if let Some((role, _)) = o.parts.iter().find(|(_, p)| p.digest.is_none()) {
            return Err(malformed(format!("{name}/{role} has no digest")));
        }
    }
    reader.verify().map_err(wrap)?;
    let n = info.tokens_count;
    let tokens: Vec<u32> = read_vec(reader, "tokens", &[n as u64])?;
    let n_logits = reader
        .object("logits")
        .map_err(wrap)?
        .shape
        .first()
        .copied()
        .unwrap_or(0);
    if n_logits != 0 && n_logits != info.n_vocab as u64 {
        return Err(malformed(format!(
            "logits has {n_logits} values, the vocabulary {}",
            info.n_vocab
        )));
    }
    let last_logits: Vec<f32> = read_vec(reader, "logits", &[n_logits])?;
    let rng: Vec<u64> = read_vec(reader, "rng", &[4])?;
    let rng = [rng[0], rng[1], rng[2], rng[3]];
    if rng == [0; 4] {
        return Err(malformed("the RNG state is all zero"));
    }
    let shape = [n as u64, info.kv_dim as u64];
    let total = info
        .n_layer
        .checked_mul(n)
        .and_then(|x| x.checked_mul(info.kv_dim))
        .filter(|&t| t <= 1 << 34)
        .ok_or_else(|| malformed("the KV size overflows"))?;
    let kv = match info.kv_type {
        KvType::F32 => {
            let (k, v) = read_kv::<f32>(reader, info.n_layer, &shape, total)?;
            KvRows::F32 { k, v }
        }
        KvType::F16 => {
            let (k, v) = read_kv::<f16>(reader, info.n_layer, &shape, total)?;
            KvRows::F16 { k, v }
        }
    };
    let desc = reader
        .attributes()
        .and_then(|a| a.get(ATTRIBUTE))
        .ok_or_else(|| malformed(format!("no {ATTRIBUTE} attribute: not an engine snapshot")))?;
    let grammar = snapshot_grammar::read(reader, desc, info.version)?;
    Ok(State {
        tokens,
        kv,
        last_logits,
        rng,
        sampler: info.sampler.clone(),
        created: info.created,
        grammar,
    })
}
