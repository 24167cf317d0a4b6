//! `NativeReader`: an open `.zt` file, and `PartBuffer`, a read-only
//! buffer-protocol view of a raw part that keeps the mapping alive.

use crate::convert::{value_to_py, IntoPy};
use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::borrow::Cow;
use std::ffi::{c_int, c_void};
use std::path::PathBuf;
use std::sync::Arc;
use ztensor::{Backend, LoadOptions, OpenOptions, Reader};

#[pyclass(frozen, module = "ztensor._native")]
pub struct NativeReader {
    inner: Arc<Reader>,
}

/// Bytes borrowed from a reader's map or memory. Holding the `Arc` keeps
/// the mapping alive for as long as any numpy array uses the buffer.
#[pyclass(frozen, module = "ztensor._native")]
pub struct PartBuffer {
    _reader: Arc<Reader>,
    ptr: usize,
    len: usize,
}

fn owned_array<'py>(py: Python<'py>, bytes: Vec<u8>) -> Bound<'py, PyArray1<u8>> {
    PyArray1::from_vec(py, bytes)
}

/// A new uninitialised 1-D uint8 array of `len` bytes.
fn new_bytes_array(py: Python<'_>, len: usize) -> Bound<'_, PyArray1<u8>> {
    // SAFETY: every caller fills each byte (`load_dense_into`) before the
    // array reaches Python, and on failure drops it unseen.
    unsafe { PyArray1::<u8>::new(py, [len], false) }
}

fn u64_array<'py>(py: Python<'py>, v: Vec<u64>) -> Bound<'py, PyArray1<u64>> {
    PyArray1::from_vec(py, v)
}

impl NativeReader {
    fn buffer(&self, bytes: &[u8]) -> PartBuffer {
        PartBuffer {
            _reader: Arc::clone(&self.inner),
            ptr: bytes.as_ptr() as usize,
            len: bytes.len(),
        }
    }
}

#[pymethods]
impl NativeReader {
    #[new]
    #[pyo3(signature = (path, backend = "mmap"))]
    fn new(py: Python<'_>, path: PathBuf, backend: &str) -> PyResult<Self> {
        let backend = match backend {
            "mmap" => Backend::Mmap,
            "pread" => Backend::Pread,
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "backend must be 'mmap' or 'pread', not {other:?}"
                )))
            }
        };
        let reader = py
            .detach(|| OpenOptions::default().backend(backend).open(&path))
            .py_err()?;
        Ok(NativeReader {
            inner: Arc::new(reader),
        })
    }

    /// Opens an `http(s)://` or `s3://` URL with range requests;
    /// `options` override the AWS environment (see `ztensor::remote`).
    #[staticmethod]
    #[pyo3(signature = (url, options = None))]
    fn open_url(
        py: Python<'_>,
        url: String,
        options: Option<Vec<(String, String)>>,
    ) -> PyResult<Self> {
        let options = options.unwrap_or_default();
        let reader = py
            .detach(|| ztensor::remote::open_url(&url, &options, OpenOptions::default()))
            .py_err()?;
        Ok(NativeReader {
            inner: Arc::new(reader),
        })
    }

    /// Opens `path` of an `fsspec` file system with ranged reads.
    #[staticmethod]
    fn open_fsspec(py: Python<'_>, fs: Py<PyAny>, path: String) -> PyResult<Self> {
        let source = crate::remote::FsspecSource::open(py, fs, path).py_err()?;
        let reader = py
            .detach(|| Reader::open_source(Arc::new(source), OpenOptions::default()))
            .py_err()?;
        Ok(NativeReader {
            inner: Arc::new(reader),
        })
    }

    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: Vec<u8>) -> PyResult<Self> {
        let reader = py.detach(|| Reader::from_bytes(data)).py_err()?;
        Ok(NativeReader {
            inner: Arc::new(reader),
        })
    }

    fn names(&self) -> Vec<String> {
        self.inner.names().map(str::to_string).collect()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __contains__(&self, name: &str) -> bool {
        self.inner.contains(name)
    }

    fn file_len(&self) -> u64 {
        self.inner.file_len()
    }

    /// The format the file was read as (`zt`, `gguf`, `safetensors`, ...).
    fn format(&self) -> &'static str {
        self.inner.format().name()
    }

    /// Metadata of one object as a dict.
    fn object<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyDict>> {
        let o = self.inner.object(name).py_err()?;
        let d = PyDict::new(py);
        d.set_item("shape", PyTuple::new(py, &o.shape)?)?;
        d.set_item("layout", &o.layout)?;
        let parts = PyDict::new(py);
        for (role, p) in &o.parts {
            let pd = PyDict::new(py);
            pd.set_item("dtype", p.etype.dtype.as_str())?;
            pd.set_item("type", p.etype.logical.as_ref().map(|l| l.as_str()))?;
            pd.set_item("offset", p.blob.offset)?;
            pd.set_item("length", p.blob.length)?;
            pd.set_item("encoding", p.encoding.as_deref())?;
            pd.set_item("decoded_length", p.decoded_length)?;
            pd.set_item("digest", p.digest.as_ref().map(|x| x.text.as_str()))?;
            pd.set_item("shard", p.shard.as_deref())?;
            parts.set_item(role, pd)?;
        }
        d.set_item("parts", parts)?;
        let attrs = match &o.attributes {
            Some(a) => value_to_py(py, a)?,
            None => py.None().into_bound(py),
        };
        d.set_item("attributes", attrs)?;
        d.set_item("alias_of", self.inner.declared_alias(name))?;
        Ok(d)
    }

    fn attributes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.inner.attributes() {
            Some(a) => value_to_py(py, a),
            None => Ok(py.None().into_bound(py)),
        }
    }

    /// A dense tensor's bytes, data rules checked: a zero-copy buffer for
    /// raw mapped parts unless `copy`; otherwise a uint8 array that NumPy
    /// allocated, filled by `pread` or by parallel zstd decoding.
    #[pyo3(signature = (name, copy = false))]
    fn dense<'py>(&self, py: Python<'py>, name: &str, copy: bool) -> PyResult<Bound<'py, PyAny>> {
        let raw = self
            .inner
            .object(name)
            .py_err()?
            .parts
            .get("data")
            .is_some_and(|p| p.encoding.is_none());
        if raw && !copy {
            let reader = Arc::clone(&self.inner);
            let data = py
                .detach(|| reader.read_dense(name).map(|t| t.bytes))
                .py_err()?;
            return match data {
                Cow::Borrowed(b) => Ok(Bound::new(py, self.buffer(b))?.into_any()),
                Cow::Owned(v) => Ok(owned_array(py, v).into_any()),
            };
        }
        let len = usize::try_from(self.inner.dense_len(name).py_err()?)
            .map_err(|_| pyo3::exceptions::PyMemoryError::new_err("tensor too large"))?;
        let array = new_bytes_array(py, len);
        // SAFETY: a freshly allocated 1-D array is contiguous and nothing
        // else reads or writes it while this slice lives.
        let dst = unsafe { array.as_slice_mut() }
            .map_err(|_| pyo3::exceptions::PyMemoryError::new_err("array is not contiguous"))?;
        let reader = Arc::clone(&self.inner);
        let opts = LoadOptions::default();
        py.detach(|| reader.load_one_into(name, dst, &opts))
            .py_err()?;
        Ok(array.into_any())
    }

    /// Several dense tensors as new uint8 arrays, read by `threads` threads
    /// issuing large `pread`s (see `ztensor::LoadOptions`); each tensor's
    /// data rules and, with `verify`, its digest are checked.
    #[pyo3(signature = (names, threads = None, chunk_bytes = None, verify = true))]
    fn dense_many<'py>(
        &self,
        py: Python<'py>,
        names: Vec<String>,
        threads: Option<usize>,
        chunk_bytes: Option<usize>,
        verify: bool,
    ) -> PyResult<Vec<Bound<'py, PyArray1<u8>>>> {
        let mut opts = LoadOptions::default().verify_digests(verify);
        if let Some(t) = threads {
            opts = opts.threads(t);
        }
        if let Some(c) = chunk_bytes {
            opts = opts.chunk_bytes(c);
        }
        let mut arrays = Vec::with_capacity(names.len());
        for name in &names {
            let len = usize::try_from(self.inner.dense_len(name).py_err()?)
                .map_err(|_| pyo3::exceptions::PyMemoryError::new_err("tensor too large"))?;
            arrays.push(new_bytes_array(py, len));
        }
        let mut jobs = Vec::with_capacity(names.len());
        for (name, array) in names.iter().zip(&arrays) {
            // SAFETY: each array is new, contiguous and referenced only
            // here; the slices are disjoint and dropped before the arrays
            // are returned to Python.
            let dst = unsafe { array.as_slice_mut() }
                .map_err(|_| pyo3::exceptions::PyMemoryError::new_err("array is not contiguous"))?;
            jobs.push((name.as_str(), dst));
        }
        let reader = Arc::clone(&self.inner);
        py.detach(|| reader.load_dense_into(&mut jobs, &opts))
            .py_err()?;
        drop(jobs);
        Ok(arrays)
    }

    /// Decoded bytes of one part (owned).
    fn part(&self, py: Python<'_>, name: &str, role: &str) -> PyResult<Py<PyArray1<u8>>> {
        let reader = Arc::clone(&self.inner);
        let v = py
            .detach(|| reader.part_bytes(name, role).map(Cow::into_owned))
            .py_err()?;
        Ok(owned_array(py, v).unbind())
    }

    /// Stored (possibly encoded) bytes of one part, for structural access.
    fn stored(&self, py: Python<'_>, name: &str, role: &str) -> PyResult<Py<PyArray1<u8>>> {
        let reader = Arc::clone(&self.inner);
        let v = py
            .detach(|| reader.stored_bytes(name, role).map(Cow::into_owned))
            .py_err()?;
        Ok(owned_array(py, v).unbind())
    }

    /// Rows `[start, end)` of a dense tensor (owned; ranged decode when compressed).
    fn rows(&self, py: Python<'_>, name: &str, start: u64, end: u64) -> PyResult<Py<PyArray1<u8>>> {
        let reader = Arc::clone(&self.inner);
        let v = py
            .detach(|| {
                reader
                    .read_rows(name, start..end)
                    .map(|t| t.bytes.into_owned())
            })
            .py_err()?;
        Ok(owned_array(py, v).unbind())
    }

    /// CSR parts, invariants checked: (values bytes, indices, indptr).
    fn csr<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyTuple>> {
        let reader = Arc::clone(&self.inner);
        let (values, indices, indptr) = py
            .detach(|| {
                reader
                    .read_csr(name)
                    .map(|c| (c.values.bytes.into_owned(), c.indices, c.indptr))
            })
            .py_err()?;
        PyTuple::new(
            py,
            [
                owned_array(py, values).into_any(),
                u64_array(py, indices).into_any(),
                u64_array(py, indptr).into_any(),
            ],
        )
    }

    /// COO parts, invariants checked: (values bytes, coords as (ndim, nnz)).
    fn coo<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyTuple>> {
        let reader = Arc::clone(&self.inner);
        let (values, coords, ndim) = py
            .detach(|| {
                reader
                    .read_coo(name)
                    .map(|c| (c.values.bytes.into_owned(), c.coords, c.shape.len()))
            })
            .py_err()?;
        let nnz = coords.len() / ndim.max(1);
        let flat = u64_array(py, coords);
        let coords = flat.reshape([ndim, nnz])?;
        PyTuple::new(py, [owned_array(py, values).into_any(), coords.into_any()])
    }

    /// Checks every part, digest, frame and data rule; returns counts.
    fn verify<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let reader = Arc::clone(&self.inner);
        let rep = py.detach(|| reader.verify()).py_err()?;
        let d = PyDict::new(py);
        d.set_item("parts", rep.parts)?;
        d.set_item("digests_checked", rep.digests_checked)?;
        d.set_item("without_digest", rep.without_digest)?;
        d.set_item("unknown_algorithm", rep.unknown_algorithm)?;
        d.set_item("bytes", rep.bytes)?;
        d.set_item("shards_checked", rep.shards_checked)?;
        Ok(d)
    }
}

#[pymethods]
impl PartBuffer {
    fn __len__(&self) -> usize {
        self.len
    }

    /// # Safety
    /// Called by CPython with a valid `view`; fills it with a read-only,
    /// one-dimensional byte buffer.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("null buffer view"));
        }
        if flags & ffi::PyBUF_WRITABLE == ffi::PyBUF_WRITABLE {
            return Err(PyBufferError::new_err(
                "tensor data mapped from a file is read-only; pass copy=True for a writable array",
            ));
        }
        let (ptr, len) = {
            let this = slf.get();
            (this.ptr, this.len)
        };
        // SAFETY: `view` is non-null and points to a Py_buffer CPython owns
        // for this call. `ptr..ptr+len` lies inside the reader's map or
        // buffer, which `_reader` (an Arc held by this object, whose
        // reference is stored in `view.obj`) keeps alive and never mutates.
        // `format` points to a static C string, so `__releasebuffer__` has
        // nothing to free.
        unsafe {
            (*view).obj = slf.into_any().into_ptr();
            (*view).buf = ptr as *mut c_void;
            (*view).len = len as isize;
            (*view).readonly = 1;
            (*view).itemsize = 1;
            (*view).format = if flags & ffi::PyBUF_FORMAT == ffi::PyBUF_FORMAT {
                c"B".as_ptr() as *mut std::ffi::c_char
            } else {
                std::ptr::null_mut()
            };
            (*view).ndim = 1;
            (*view).shape = if flags & ffi::PyBUF_ND == ffi::PyBUF_ND {
                &mut (*view).len
            } else {
                std::ptr::null_mut()
            };
            (*view).strides = if flags & ffi::PyBUF_STRIDES == ffi::PyBUF_STRIDES {
                &mut (*view).itemsize
            } else {
                std::ptr::null_mut()
            };
            (*view).suboffsets = std::ptr::null_mut();
            (*view).internal = std::ptr::null_mut();
        }
        Ok(())
    }
}
