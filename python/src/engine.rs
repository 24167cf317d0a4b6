//! `NativeEngine`: the CPU inference engine. Every call that computes
//! releases the GIL; generation is step-wise (`start`, then `next_token`)
//! so Python drives the loop and Ctrl-C lands between tokens.
//!
//! Concurrency: the engine sits behind a mutex, taken with the GIL
//! released, so calls from several threads serialise instead of failing
//! ("Already borrowed"). A generation ("run") holds the context from
//! `start` until it ends: calls from other threads that change the context
//! (another `start`, `eval`, `reset`, `restore_*`, `use_state`) wait for it
//! (GIL released); the thread that started the run may keep calling, and
//! a `start`, `reset`, `restore_*` or `use_state` of its own ends the run
//! first (as interrupted), so a forgotten stream cannot deadlock its
//! thread. Reading calls (tokens, snapshot, states...) never wait for a
//! run, only for the token being computed.

use crate::convert::to_pyerr;
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
use ztensor::engine::{
    snapshot, CancelHandle, Engine, EngineOptions, GenerateParams, Generation, GrammarSpec, KvType,
    SamplerConfig, StopReason,
};
use ztensor::Reader;

/// A snapshot given as a path or as bytes.
#[derive(FromPyObject)]
pub enum SnapshotArg<'py> {
    Bytes(Bound<'py, PyBytes>),
    Path(PathBuf),
}

/// The same, detached from Python (bytes copied once, with `memcpy`), so
/// it can be opened with the GIL released.
pub enum SnapshotSource {
    Bytes(Arc<[u8]>),
    Path(PathBuf),
}

impl From<SnapshotArg<'_>> for SnapshotSource {
    fn from(a: SnapshotArg<'_>) -> Self {
        match a {
            SnapshotArg::Bytes(b) => SnapshotSource::Bytes(Arc::from(b.as_bytes())),
            SnapshotArg::Path(p) => SnapshotSource::Path(p),
        }
    }
}

impl SnapshotSource {
    fn open(self) -> ztensor::Result<Reader> {
        match self {
            SnapshotSource::Bytes(b) => snapshot::from_bytes(b),
            SnapshotSource::Path(p) => snapshot::open(p),
        }
    }
}

/// A generation in progress: it holds the context until it ends.
struct Run {
    id: u64,
    owner: ThreadId,
    generation: Generation,
    params: GenerateParams,
    new_state: Option<String>,
}

/// How an ended run finished, kept until `end_run` collects it.
struct Outcome {
    text: String,
    stop_reason: Option<StopReason>,
    produced: usize,
    saved: bool,
}

struct Core {
    engine: Engine,
    run: Option<Run>,
    outcomes: HashMap<u64, Outcome>,
    next_id: u64,
}

impl Core {
    fn new(engine: Engine) -> Core {
        Core {
            engine,
            run: None,
            outcomes: HashMap::new(),
            next_id: 1,
        }
    }
}

/// (id, text, position, logprob, is_special, is_eos, stop_reason).
type TokenTuple = (u32, String, usize, f32, bool, bool, Option<&'static str>);
/// (text, stop_reason, tokens produced, new state stored).
type OutcomeTuple = (String, Option<&'static str>, usize, bool);
/// (name, tokens_count, created, token ids of the last 64 positions).
type StateRow = (String, usize, u64, Vec<u32>);

#[pyclass(module = "ztensor._native", frozen)]
pub struct NativeEngine {
    core: Mutex<Core>,
    /// Signalled whenever a run ends.
    idle: Condvar,
    /// Cancel handles of the running generation, reachable without
    /// waiting for the token being computed.
    cancels: Mutex<HashMap<u64, CancelHandle>>,
}

fn relock<T>(r: std::sync::LockResult<T>) -> T {
    // A panic inside a call cannot leave the engine half-updated in a way
    // later calls trust (every mutation checks its inputs first), so a
    // poisoned lock is taken over rather than turned into a second panic.
    r.unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl NativeEngine {
    fn wrap(engine: Engine) -> NativeEngine {
        NativeEngine {
            core: Mutex::new(Core::new(engine)),
            idle: Condvar::new(),
            cancels: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        relock(self.core.lock())
    }

    /// Runs `f` on the engine with the GIL released (reading calls: they
    /// wait only for the call in progress, not for a run).
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Core) -> ztensor::Result<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| f(&mut self.lock())).map_err(to_pyerr)
    }

    /// Runs `f` once no other thread's run holds the context; a run of
    /// this thread is ended first (as interrupted) when `end_own` is set.
    fn exclusive<T: Send>(
        &self,
        py: Python<'_>,
        end_own: bool,
        f: impl FnOnce(&mut Core) -> ztensor::Result<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| {
            let me = std::thread::current().id();
            let mut core = self.lock();
            while core.run.as_ref().is_some_and(|r| r.owner != me) {
                core = relock(self.idle.wait(core));
            }
            if end_own && core.run.is_some() {
                if let Some(r) = core.run.as_mut() {
                    r.generation.end(StopReason::Interrupted);
                }
                self.close_run(&mut core)?;
            }
            f(&mut core)
        })
        .map_err(to_pyerr)
    }

    /// Moves the active (ended) run to the outcomes, storing its new state
    /// if it ran to its natural end, and wakes waiting threads.
    fn close_run(&self, core: &mut Core) -> ztensor::Result<()> {
        let Some(run) = core.run.take() else {
            return Ok(());
        };
        relock(self.cancels.lock()).remove(&run.id);
        self.idle.notify_all();
        let saved = match &run.new_state {
            Some(name) => core.engine.commit_state(&run.generation, name),
            None => Ok(false),
        };
        let outcome = Outcome {
            text: run.generation.text.clone(),
            stop_reason: run.generation.stop_reason(),
            produced: run.generation.produced,
            saved: *saved.as_ref().unwrap_or(&false),
        };
        core.outcomes.insert(run.id, outcome);
        saved.map(|_| ())
    }
}

/// `explicit`, or else the engine's current setting.
fn pick<T: Copy>(explicit: Option<T>, current: T) -> T {
    explicit.unwrap_or(current)
}

#[pymethods]
impl NativeEngine {
    #[new]
    #[pyo3(signature = (path, n_ctx = 0, n_threads = 0, kv_dtype = "f16", seed = 0))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        n_ctx: usize,
        n_threads: usize,
        kv_dtype: &str,
        seed: u64,
    ) -> PyResult<Self> {
        let kv_type = match kv_dtype {
            "f16" | "float16" => KvType::F16,
            "f32" | "float32" => KvType::F32,
            other => {
                return Err(PyValueError::new_err(format!(
                    "kv_dtype must be 'f16' or 'f32', not {other:?}"
                )))
            }
        };
        let options = EngineOptions {
            n_ctx,
            n_threads,
            kv_type,
            seed,
        };
        let inner = py
            .detach(|| Engine::open(&path, options))
            .map_err(to_pyerr)?;
        Ok(NativeEngine::wrap(inner))
    }

    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (engine_model, n_ctx, n_threads, kv, tok) = self.with(py, |c| {
            let e = &c.engine;
            Ok((
                e.model().clone(),
                e.n_ctx(),
                e.n_threads(),
                e.kv_type().name(),
                e.tokenizer().clone(),
            ))
        })?;
        let c = &engine_model.config;
        let d = PyDict::new(py);
        d.set_item("arch", &c.arch)?;
        d.set_item("n_vocab", c.n_vocab)?;
        d.set_item("n_embd", c.n_embd)?;
        d.set_item("n_layer", c.n_layer)?;
        d.set_item("n_head", c.n_head)?;
        d.set_item("n_head_kv", c.n_head_kv)?;
        d.set_item("n_ctx", n_ctx)?;
        d.set_item("n_ctx_train", c.n_ctx_train)?;
        d.set_item("n_threads", n_threads)?;
        d.set_item("kv_dtype", kv)?;
        d.set_item("bos", tok.bos)?;
        d.set_item("eos", tok.eos)?;
        d.set_item("add_bos", tok.add_bos)?;
        d.set_item("kernel", ztensor::engine::kernel_name())?;
        Ok(d)
    }

    #[pyo3(signature = (text, add_bos = None, parse_special = true))]
    fn tokenize(
        &self,
        py: Python<'_>,
        text: &str,
        add_bos: Option<bool>,
        parse_special: bool,
    ) -> PyResult<Vec<u32>> {
        let text = text.to_string();
        self.with(py, |c| Ok(c.engine.tokenize(&text, add_bos, parse_special)))
    }

    fn detokenize(&self, py: Python<'_>, ids: Vec<u32>) -> PyResult<String> {
        self.with(py, |c| Ok(c.engine.detokenize(&ids)))
    }

    fn token_text(&self, py: Python<'_>, id: u32) -> PyResult<String> {
        self.with(py, |c| {
            let mut b = Vec::new();
            c.engine.tokenizer().token_bytes(id, true, &mut b);
            Ok(String::from_utf8_lossy(&b).into_owned())
        })
    }

    fn tokens(&self, py: Python<'_>) -> PyResult<Vec<u32>> {
        self.with(py, |c| Ok(c.engine.tokens().to_vec()))
    }

    /// The sampler settings a generation uses for arguments it omits.
    fn sampler<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.with(py, |c| Ok(c.engine.sampler().clone()))?;
        sampler_dict(py, &s)
    }

    #[pyo3(signature = (tokens, all_logits = true))]
    fn eval<'py>(
        &self,
        py: Python<'py>,
        tokens: Vec<u32>,
        all_logits: bool,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let (rows, v, logits) = self.exclusive(py, false, |c| {
            let e = &mut c.engine;
            let v = e.config().n_vocab;
            if all_logits {
                let n = tokens.len();
                return Ok((n, v, e.eval(&tokens)?));
            }
            e.prefill(&tokens)?;
            let rows = usize::from(!e.last_logits().is_empty() && !tokens.is_empty());
            let last = if rows == 1 {
                e.last_logits().to_vec()
            } else {
                Vec::new()
            };
            Ok((rows, v, last))
        })?;
        PyArray1::from_vec(py, logits).reshape([rows, v])
    }

    fn reset(&self, py: Python<'_>) -> PyResult<()> {
        self.exclusive(py, true, |c| {
            c.engine.reset();
            Ok(())
        })
    }

    /// Drops the live grammar (see `Engine::clear_grammar`).
    fn clear_grammar(&self, py: Python<'_>) -> PyResult<()> {
        self.exclusive(py, true, |c| {
            c.engine.clear_grammar();
            Ok(())
        })
    }

    /// The GBNF source of the live grammar, if any.
    fn grammar_source(&self, py: Python<'_>) -> PyResult<Option<String>> {
        self.with(py, |c| Ok(c.engine.grammar_source().map(str::to_string)))
    }

    /// Starts a run and returns its id. Sampler settings left `None` take
    /// the engine's current ones (the last run's or a restored
    /// snapshot's). `from_state` is switched to first; `new_state` is
    /// stored when the run reaches its natural end, never otherwise.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (prompt, max_tokens, temperature = None, top_k = None, top_p = None, min_p = None, repeat_penalty = None, frequency_penalty = None, presence_penalty = None, penalty_last_n = None, stop = Vec::new(), seed = None, from_state = None, new_state = None, grammar = None, json_schema = None))]
    fn start(
        &self,
        py: Python<'_>,
        prompt: &str,
        max_tokens: usize,
        temperature: Option<f32>,
        top_k: Option<usize>,
        top_p: Option<f32>,
        min_p: Option<f32>,
        repeat_penalty: Option<f32>,
        frequency_penalty: Option<f32>,
        presence_penalty: Option<f32>,
        penalty_last_n: Option<usize>,
        stop: Vec<String>,
        seed: Option<u64>,
        from_state: Option<String>,
        new_state: Option<String>,
        grammar: Option<String>,
        json_schema: Option<String>,
    ) -> PyResult<u64> {
        let prompt = prompt.to_string();
        let grammar = match (grammar, json_schema) {
            (Some(_), Some(_)) => {
                return Err(PyValueError::new_err(
                    "give grammar or json_schema, not both",
                ))
            }
            (Some(g), None) => Some(GrammarSpec::Gbnf(g)),
            (None, Some(j)) => Some(GrammarSpec::JsonSchema(
                serde_json::from_str(&j)
                    .map_err(|e| PyValueError::new_err(format!("json_schema is not JSON: {e}")))?,
            )),
            (None, None) => None,
        };
        self.exclusive(py, true, |c| {
            // Refused before anything runs: a taken or invalid name.
            if let Some(name) = &new_state {
                c.engine.check_new_state(name)?;
            }
            if let Some(name) = &from_state {
                c.engine.use_state(name)?;
            }
            let cur = &c.engine.sampler();
            let sampler = SamplerConfig {
                temperature: pick(temperature, cur.temperature),
                top_k: pick(top_k, cur.top_k),
                top_p: pick(top_p, cur.top_p),
                min_p: pick(min_p, cur.min_p),
                repeat_penalty: pick(repeat_penalty, cur.repeat_penalty),
                frequency_penalty: pick(frequency_penalty, cur.frequency_penalty),
                presence_penalty: pick(presence_penalty, cur.presence_penalty),
                penalty_last_n: pick(penalty_last_n, cur.penalty_last_n),
            };
            let params = GenerateParams {
                max_tokens,
                sampler,
                stop,
                seed,
                grammar,
            };
            let generation = c.engine.start(&prompt, &params)?;
            let id = c.next_id;
            c.next_id += 1;
            relock(self.cancels.lock()).insert(id, generation.cancel_handle());
            c.run = Some(Run {
                id,
                owner: std::thread::current().id(),
                generation,
                params,
                new_state,
            });
            Ok(id)
        })
    }

    /// The next token of run `run_id`, or None once it has ended (or was
    /// ended by another call).
    fn next_token(&self, py: Python<'_>, run_id: u64) -> PyResult<Option<TokenTuple>> {
        self.with(py, |c| {
            let Core { engine, run, .. } = &mut *c;
            let Some(r) = run.as_mut().filter(|r| r.id == run_id) else {
                return Ok(None);
            };
            let step = engine.next_token(&mut r.generation, &r.params);
            let done = r.generation.is_done();
            let t = match step {
                Ok(t) => t,
                Err(e) => {
                    // A failed step ends the run, with no stop reason and
                    // no new state.
                    let _ = self.close_run(c);
                    return Err(e);
                }
            };
            if done {
                self.close_run(c)?;
            }
            Ok(t.map(|t| {
                (
                    t.id,
                    t.text,
                    t.position,
                    t.logprob,
                    t.is_special,
                    t.is_eos,
                    t.stop_reason.map(StopReason::name),
                )
            }))
        })
    }

    /// Ends run `run_id` (as interrupted if it is still going: nothing is
    /// stored) and returns (text, stop_reason, tokens produced, new state
    /// stored), or None for an unknown or already collected run.
    fn end_run(&self, py: Python<'_>, run_id: u64) -> PyResult<Option<OutcomeTuple>> {
        self.with(py, |c| {
            if let Some(r) = c.run.as_mut().filter(|r| r.id == run_id) {
                r.generation.end(StopReason::Interrupted);
                self.close_run(c)?;
            }
            Ok(c.outcomes.remove(&run_id).map(|o| {
                (
                    o.text,
                    o.stop_reason.map(StopReason::name),
                    o.produced,
                    o.saved,
                )
            }))
        })
    }

    /// Asks run `run_id` to stop before its next token (from any thread,
    /// without waiting for the token being computed). True if it was
    /// running.
    fn interrupt(&self, run_id: u64) -> bool {
        match relock(self.cancels.lock()).get(&run_id) {
            Some(h) => {
                h.cancel();
                true
            }
            None => false,
        }
    }

    /// Saves the context to `path` (atomic).
    #[pyo3(signature = (path, compress = false))]
    fn snapshot(&self, py: Python<'_>, path: PathBuf, compress: bool) -> PyResult<()> {
        self.with(py, |c| c.engine.snapshot(&path, compress))
    }

    #[pyo3(signature = (compress = false))]
    fn snapshot_bytes<'py>(
        &self,
        py: Python<'py>,
        compress: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let b = self.with(py, |c| c.engine.snapshot_bytes(compress))?;
        Ok(PyBytes::new(py, &b))
    }

    /// Replaces the context with a snapshot file's (checked first).
    fn restore_path(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let reader = py.detach(|| snapshot::open(&path)).map_err(to_pyerr)?;
        self.exclusive(py, true, |c| c.engine.restore(&reader))
    }

    /// Replaces the context with a snapshot held in memory.
    fn restore_bytes(&self, py: Python<'_>, blob: &[u8]) -> PyResult<()> {
        let blob: Arc<[u8]> = Arc::from(blob);
        let reader = py.detach(|| snapshot::from_bytes(blob)).map_err(to_pyerr)?;
        self.exclusive(py, true, |c| c.engine.restore(&reader))
    }

    /// A new engine from a snapshot file or bytes.
    #[staticmethod]
    #[pyo3(signature = (source, model_path = None, n_threads = 0))]
    fn from_snapshot(
        py: Python<'_>,
        source: SnapshotArg<'_>,
        model_path: Option<PathBuf>,
        n_threads: usize,
    ) -> PyResult<NativeEngine> {
        let source = SnapshotSource::from(source);
        let inner = py
            .detach(|| {
                let r = source.open()?;
                Engine::from_snapshot(&r, model_path.as_deref(), n_threads)
            })
            .map_err(to_pyerr)?;
        Ok(NativeEngine::wrap(inner))
    }

    /// A snapshot's description, without loading the model.
    #[staticmethod]
    fn snapshot_info<'py>(
        py: Python<'py>,
        source: SnapshotArg<'py>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let source = SnapshotSource::from(source);
        let info = py
            .detach(|| source.open().and_then(|r| snapshot::read_info(&r)))
            .map_err(to_pyerr)?;
        let d = PyDict::new(py);
        d.set_item("magic", info.magic)?;
        d.set_item("version", info.version)?;
        d.set_item("arch_id", info.arch)?;
        d.set_item("model_path", info.model_path)?;
        d.set_item("model_fingerprint", info.model_fingerprint)?;
        d.set_item("tokenizer_digest", info.tokenizer_digest)?;
        d.set_item("max_context_length", info.n_ctx)?;
        d.set_item("num_threads", info.n_threads)?;
        d.set_item("n_layer", info.n_layer)?;
        d.set_item("kv_dim", info.kv_dim)?;
        d.set_item("kv_dtype", info.kv_type.name())?;
        d.set_item("n_vocab", info.n_vocab)?;
        d.set_item("tokens_count", info.tokens_count)?;
        d.set_item("created", info.created)?;
        d.set_item("sampler", sampler_dict(py, &info.sampler)?)?;
        Ok(d)
    }

    /// The path of the model file, when it was opened from one.
    fn model_path(&self, py: Python<'_>) -> PyResult<String> {
        self.with(py, |c| {
            Ok(c.engine
                .model()
                .reader
                .path()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default())
        })
    }

    fn fingerprint(&self, py: Python<'_>) -> PyResult<String> {
        let model = self.with(py, |c| Ok(c.engine.model().clone()))?;
        py.detach(|| model.fingerprint().map(str::to_string))
            .map_err(to_pyerr)
    }

    fn save_state(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let name = name.to_string();
        self.with(py, |c| c.engine.save_state(&name).map(|_| ()))
    }

    fn use_state(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let name = name.to_string();
        self.exclusive(py, true, |c| c.engine.use_state(&name))
    }

    #[pyo3(signature = (name = None))]
    fn fork(&self, py: Python<'_>, name: Option<String>) -> PyResult<NativeEngine> {
        let forked = self.with(py, |c| c.engine.fork(name.as_deref()))?;
        Ok(NativeEngine::wrap(forked))
    }

    /// (name, tokens_count, created, token ids of the last 64 positions).
    fn list_states(&self, py: Python<'_>) -> PyResult<Vec<StateRow>> {
        self.with(py, |c| {
            Ok(c.engine
                .states()
                .map(|(n, st)| {
                    let tail = st.tokens[st.tokens.len().saturating_sub(64)..].to_vec();
                    (n.to_string(), st.tokens.len(), st.created, tail)
                })
                .collect())
        })
    }

    fn delete_state(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let name = name.to_string();
        self.with(py, |c| c.engine.delete_state(&name))
    }

    #[pyo3(signature = (name, path, compress = false))]
    fn dump_state(
        &self,
        py: Python<'_>,
        name: &str,
        path: PathBuf,
        compress: bool,
    ) -> PyResult<()> {
        let name = name.to_string();
        self.with(py, |c| c.engine.dump_state(&name, &path, compress))
    }

    fn load_state(&self, py: Python<'_>, name: &str, source: SnapshotArg<'_>) -> PyResult<()> {
        let source = SnapshotSource::from(source);
        let name = name.to_string();
        let reader = py.detach(|| source.open()).map_err(to_pyerr)?;
        self.with(py, |c| c.engine.load_state(&name, &reader))
    }
}

/// Sampler settings as a dict keyed like `generate`'s arguments.
fn sampler_dict<'py>(py: Python<'py>, s: &SamplerConfig) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("temperature", s.temperature)?;
    d.set_item("top_k", s.top_k)?;
    d.set_item("top_p", s.top_p)?;
    d.set_item("min_p", s.min_p)?;
    d.set_item("repeat_penalty", s.repeat_penalty)?;
    d.set_item("frequency_penalty", s.frequency_penalty)?;
    d.set_item("presence_penalty", s.presence_penalty)?;
    d.set_item("penalty_last_n", s.penalty_last_n)?;
    Ok(d)
}

/// Dequantizes `data` (a `dense` f32/f16/bf16 or `gguf.<type>/1` payload)
/// into `n` floats.
#[pyfunction]
pub fn dequantize<'py>(
    py: Python<'py>,
    layout: &str,
    dtype: &str,
    data: numpy::PyReadonlyArray1<'py, u8>,
    n: usize,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let t = ztensor::engine::quant::WeightType::from_layout(layout, dtype).ok_or_else(|| {
        PyValueError::new_err(format!(
            "no dequantization for layout {layout:?} / dtype {dtype:?}"
        ))
    })?;
    let bytes = data.as_slice()?;
    let mut out = vec![0f32; n];
    py.detach(|| ztensor::engine::dequant_row(t, bytes, &mut out))
        .map_err(to_pyerr)?;
    Ok(PyArray1::from_vec(py, out))
}
