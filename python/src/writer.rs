//! `NativeWriter`: a `.zt` file being written.

use crate::convert::{py_to_value, to_pyerr, IntoPy};
use numpy::PyReadonlyArray1;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::path::PathBuf;
use ztensor::{DigestAlg, ElementType, PartOptions, WriteOptions, Writer, ZstdOptions};

#[pyclass(module = "ztensor._native")]
pub struct NativeWriter {
    inner: Option<Writer>,
}

pub(crate) fn digest(name: Option<&str>) -> PyResult<Option<DigestAlg>> {
    match name {
        None | Some("none") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|()| {
            PyValueError::new_err(format!(
                "checksum must be xxh3, crc32c, blake3, sha256 or None, not {s:?}"
            ))
        }),
    }
}

pub(crate) fn zstd(level: Option<i32>) -> PyResult<Option<ZstdOptions>> {
    match level {
        None | Some(0) => Ok(None),
        Some(l) if (1..=22).contains(&l) => Ok(Some(ZstdOptions::level(l))),
        Some(l) => Err(PyValueError::new_err(format!(
            "compression level must be 1-22, got {l}"
        ))),
    }
}

fn etype(name: &str) -> PyResult<ElementType> {
    ElementType::from_name(name)
        .ok_or_else(|| PyValueError::new_err(format!("unknown element type {name:?}")))
}

fn slice<'a>(a: &'a PyReadonlyArray1<'_, u8>) -> PyResult<&'a [u8]> {
    a.as_slice()
        .map_err(|_| PyValueError::new_err("tensor data must be C-contiguous"))
}

fn index_vec(a: &PyReadonlyArray1<'_, u64>) -> PyResult<Vec<u64>> {
    Ok(a.as_slice()
        .map_err(|_| PyValueError::new_err("indices must be contiguous"))?
        .to_vec())
}

impl NativeWriter {
    fn writer(&mut self) -> PyResult<&mut Writer> {
        self.inner
            .as_mut()
            .ok_or_else(|| PyValueError::new_err("this writer is already finished"))
    }
}

#[pymethods]
impl NativeWriter {
    #[new]
    #[pyo3(signature = (path, align = 4096, append = false, canonical = false, durable = true))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        align: u64,
        append: bool,
        canonical: bool,
        durable: bool,
    ) -> PyResult<Self> {
        let options = if canonical {
            WriteOptions {
                durable,
                ..WriteOptions::canonical()
            }
        } else {
            WriteOptions {
                align,
                durable,
                ..WriteOptions::default()
            }
        };
        let w = py
            .detach(|| {
                if append {
                    Writer::append_with(&path, options)
                } else {
                    Writer::create_with(&path, options)
                }
            })
            .py_err()?;
        Ok(NativeWriter { inner: Some(w) })
    }

    fn __contains__(&self, name: &str) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|w| w.manifest().objects.contains_key(name))
    }

    #[pyo3(signature = (name, data, shape, dtype, compress = None, checksum = "xxh3", attributes = None))]
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        py: Python<'_>,
        name: &str,
        data: PyReadonlyArray1<'_, u8>,
        shape: Vec<u64>,
        dtype: &str,
        compress: Option<i32>,
        checksum: &str,
        attributes: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let opts = PartOptions {
            etype: etype(dtype)?,
            compression: zstd(compress)?,
            digest: digest(Some(checksum))?,
        };
        let attrs = attributes.map(|a| py_to_value(&a, 1)).transpose()?;
        let bytes = slice(&data)?;
        let w = self.writer()?;
        py.detach(|| w.add_bytes_with(name, &shape, bytes, &opts, attrs))
            .py_err()
    }

    #[pyo3(signature = (name, shape, values, dtype, indices, indptr, compress = None, checksum = "xxh3"))]
    #[allow(clippy::too_many_arguments)]
    fn add_csr(
        &mut self,
        py: Python<'_>,
        name: &str,
        shape: (u64, u64),
        values: PyReadonlyArray1<'_, u8>,
        dtype: &str,
        indices: PyReadonlyArray1<'_, u64>,
        indptr: PyReadonlyArray1<'_, u64>,
        compress: Option<i32>,
        checksum: &str,
    ) -> PyResult<()> {
        let (et, z, d) = (etype(dtype)?, zstd(compress)?, digest(Some(checksum))?);
        let (idx, ptr) = (index_vec(&indices)?, index_vec(&indptr)?);
        let vals = slice(&values)?;
        let w = self.writer()?;
        py.detach(|| {
            w.set_defaults(z, d)?;
            w.add_csr(name, [shape.0, shape.1], et, vals, &idx, &ptr)
        })
        .py_err()
    }

    #[pyo3(signature = (name, shape, values, dtype, coords, compress = None, checksum = "xxh3"))]
    #[allow(clippy::too_many_arguments)]
    fn add_coo(
        &mut self,
        py: Python<'_>,
        name: &str,
        shape: Vec<u64>,
        values: PyReadonlyArray1<'_, u8>,
        dtype: &str,
        coords: PyReadonlyArray1<'_, u64>,
        compress: Option<i32>,
        checksum: &str,
    ) -> PyResult<()> {
        let (et, z, d) = (etype(dtype)?, zstd(compress)?, digest(Some(checksum))?);
        let c = index_vec(&coords)?;
        let vals = slice(&values)?;
        let w = self.writer()?;
        py.detach(|| {
            w.set_defaults(z, d)?;
            w.add_coo(name, &shape, et, vals, &c)
        })
        .py_err()
    }

    fn add_alias(&mut self, name: &str, target: &str) -> PyResult<()> {
        self.writer()?.add_alias(name, target).py_err()
    }

    fn set_attributes(&mut self, attributes: Bound<'_, PyAny>) -> PyResult<()> {
        let v = py_to_value(&attributes, 1)?;
        self.writer()?.set_attributes(v).map_err(to_pyerr)
    }

    fn finish(&mut self, py: Python<'_>) -> PyResult<u64> {
        let w = self
            .inner
            .take()
            .ok_or_else(|| PyValueError::new_err("this writer is already finished"))?;
        py.detach(|| w.finish()).py_err()
    }

    fn abandon(&mut self) {
        if let Some(w) = self.inner.take() {
            w.abandon();
        }
    }
}
