//! `NativeEngine`: the CPU inference engine. Every call that computes
//! releases the GIL; generation is step-wise (`start`, then `next_token`)
//! so Python drives the loop and Ctrl-C lands between tokens.

use crate::convert::to_pyerr;
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::path::PathBuf;
use std::sync::Arc;
use ztensor::engine::{
    snapshot, Engine, EngineOptions, GenerateParams, Generation, KvType, SamplerConfig,
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

#[pyclass(module = "ztensor._native")]
pub struct NativeEngine {
    inner: Engine,
    generation: Option<(Generation, GenerateParams)>,
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
        Ok(NativeEngine {
            inner,
            generation: None,
        })
    }

    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = &self.inner.model().config;
        let d = PyDict::new(py);
        d.set_item("arch", &c.arch)?;
        d.set_item("n_vocab", c.n_vocab)?;
        d.set_item("n_embd", c.n_embd)?;
        d.set_item("n_layer", c.n_layer)?;
        d.set_item("n_head", c.n_head)?;
        d.set_item("n_head_kv", c.n_head_kv)?;
        d.set_item("n_ctx", self.inner.n_ctx())?;
        d.set_item("n_ctx_train", c.n_ctx_train)?;
        d.set_item("n_threads", self.inner.n_threads())?;
        d.set_item("kv_dtype", self.inner.kv_type().name())?;
        d.set_item("bos", self.inner.tokenizer().bos)?;
        d.set_item("eos", self.inner.tokenizer().eos)?;
        d.set_item("add_bos", self.inner.tokenizer().add_bos)?;
        d.set_item("kernel", ztensor::engine::kernel_name())?;
        Ok(d)
    }

    #[pyo3(signature = (text, add_bos = None, parse_special = true))]
    fn tokenize(&self, text: &str, add_bos: Option<bool>, parse_special: bool) -> Vec<u32> {
        self.inner.tokenize(text, add_bos, parse_special)
    }

    fn detokenize(&self, ids: Vec<u32>) -> String {
        self.inner.detokenize(&ids)
    }

    fn token_text(&self, id: u32) -> String {
        let mut b = Vec::new();
        self.inner.tokenizer().token_bytes(id, true, &mut b);
        String::from_utf8_lossy(&b).into_owned()
    }

    fn tokens(&self) -> Vec<u32> {
        self.inner.tokens().to_vec()
    }

    #[pyo3(signature = (tokens, all_logits = true))]
    fn eval<'py>(
        &mut self,
        py: Python<'py>,
        tokens: Vec<u32>,
        all_logits: bool,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let v = self.inner.config().n_vocab;
        let inner = &mut self.inner;
        if all_logits {
            let n = tokens.len();
            let logits = py.detach(|| inner.eval(&tokens)).map_err(to_pyerr)?;
            return PyArray1::from_vec(py, logits).reshape([n, v]);
        }
        py.detach(|| inner.prefill(&tokens)).map_err(to_pyerr)?;
        let rows = usize::from(!inner.last_logits().is_empty() && !tokens.is_empty());
        let last = if rows == 1 {
            inner.last_logits().to_vec()
        } else {
            Vec::new()
        };
        PyArray1::from_vec(py, last).reshape([rows, v])
    }

    fn reset(&mut self) {
        self.inner.reset();
        self.generation = None;
    }

    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (prompt, max_tokens, temperature, top_k, top_p, min_p, repeat_penalty, frequency_penalty, presence_penalty, penalty_last_n, stop, seed))]
    fn start(
        &mut self,
        py: Python<'_>,
        prompt: &str,
        max_tokens: usize,
        temperature: f32,
        top_k: usize,
        top_p: f32,
        min_p: f32,
        repeat_penalty: f32,
        frequency_penalty: f32,
        presence_penalty: f32,
        penalty_last_n: usize,
        stop: Vec<String>,
        seed: Option<u64>,
    ) -> PyResult<()> {
        let params = GenerateParams {
            max_tokens,
            sampler: SamplerConfig {
                temperature,
                top_k,
                top_p,
                min_p,
                repeat_penalty,
                frequency_penalty,
                presence_penalty,
                penalty_last_n,
            },
            stop,
            seed,
        };
        let inner = &mut self.inner;
        let g = py
            .detach(|| inner.start(prompt, &params))
            .map_err(to_pyerr)?;
        self.generation = Some((g, params));
        Ok(())
    }

    /// The next token as (id, text, position, logprob, is_special), or None.
    #[allow(clippy::type_complexity)]
    fn next_token(&mut self, py: Python<'_>) -> PyResult<Option<(u32, String, usize, f32, bool)>> {
        let Some((g, params)) = self.generation.as_mut() else {
            return Ok(None);
        };
        let inner = &mut self.inner;
        let t = py
            .detach(|| inner.next_token(g, params))
            .map_err(to_pyerr)?;
        Ok(t.map(|t| (t.id, t.text, t.position, t.logprob, t.is_special)))
    }

    /// Saves the context to `path` (atomic).
    #[pyo3(signature = (path, compress = false))]
    fn snapshot(&self, py: Python<'_>, path: PathBuf, compress: bool) -> PyResult<()> {
        let inner = &self.inner;
        py.detach(|| inner.snapshot(&path, compress))
            .map_err(to_pyerr)
    }

    #[pyo3(signature = (compress = false))]
    fn snapshot_bytes<'py>(
        &self,
        py: Python<'py>,
        compress: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let inner = &self.inner;
        let b = py
            .detach(|| inner.snapshot_bytes(compress))
            .map_err(to_pyerr)?;
        Ok(PyBytes::new(py, &b))
    }

    /// Replaces the context with a snapshot file's (checked first).
    fn restore_path(&mut self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let inner = &mut self.inner;
        py.detach(|| snapshot::open(&path).and_then(|r| inner.restore(&r)))
            .map_err(to_pyerr)?;
        self.generation = None;
        Ok(())
    }

    /// Replaces the context with a snapshot held in memory.
    fn restore_bytes(&mut self, py: Python<'_>, blob: &[u8]) -> PyResult<()> {
        let blob: Arc<[u8]> = Arc::from(blob);
        let inner = &mut self.inner;
        py.detach(|| snapshot::from_bytes(blob).and_then(|r| inner.restore(&r)))
            .map_err(to_pyerr)?;
        self.generation = None;
        Ok(())
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
        Ok(NativeEngine {
            inner,
            generation: None,
        })
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
        Ok(d)
    }

    /// The path of the model file, when it was opened from one.
    fn model_path(&self) -> String {
        self.inner
            .model()
            .reader
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn fingerprint(&self, py: Python<'_>) -> PyResult<String> {
        let inner = &self.inner;
        py.detach(|| inner.model().fingerprint().map(str::to_string))
            .map_err(to_pyerr)
    }

    fn save_state(&mut self, name: &str) -> PyResult<()> {
        self.inner.save_state(name).map_err(to_pyerr)?;
        Ok(())
    }

    fn use_state(&mut self, name: &str) -> PyResult<()> {
        self.inner.use_state(name).map_err(to_pyerr)?;
        self.generation = None;
        Ok(())
    }

    #[pyo3(signature = (name = None))]
    fn fork(&self, py: Python<'_>, name: Option<String>) -> PyResult<NativeEngine> {
        let inner = &self.inner;
        let forked = py
            .detach(|| inner.fork(name.as_deref()))
            .map_err(to_pyerr)?;
        Ok(NativeEngine {
            inner: forked,
            generation: None,
        })
    }

    /// (name, tokens_count, created, token ids of the last 64 positions).
    fn list_states(&self) -> Vec<(String, usize, u64, Vec<u32>)> {
        self.inner
            .states()
            .map(|(n, st)| {
                let tail = st.tokens[st.tokens.len().saturating_sub(64)..].to_vec();
                (n.to_string(), st.tokens.len(), st.created, tail)
            })
            .collect()
    }

    fn delete_state(&mut self, name: &str) -> PyResult<()> {
        self.inner.delete_state(name).map_err(to_pyerr)
    }

    #[pyo3(signature = (name, path, compress = false))]
    fn dump_state(
        &self,
        py: Python<'_>,
        name: &str,
        path: PathBuf,
        compress: bool,
    ) -> PyResult<()> {
        let inner = &self.inner;
        py.detach(|| inner.dump_state(name, &path, compress))
            .map_err(to_pyerr)
    }

    fn load_state(&mut self, py: Python<'_>, name: &str, source: SnapshotArg<'_>) -> PyResult<()> {
        let source = SnapshotSource::from(source);
        let inner = &mut self.inner;
        py.detach(|| source.open().and_then(|r| inner.load_state(name, &r)))
            .map_err(to_pyerr)
    }

    /// The text of the current generation (cut before a stop string).
    fn generated_text(&self) -> String {
        self.generation
            .as_ref()
            .map(|(g, _)| g.text.clone())
            .unwrap_or_default()
    }
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
