//! Whole-file operations: `convert` (any readable format to `.zt`) and
//! `export` (to GGUF or safetensors). The GIL is released while they run.

use crate::convert::to_pyerr;
use crate::writer::{digest, zstd};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;
use ztensor::WriteOptions;

#[pyfunction]
#[pyo3(signature = (src, dst, compress = None, checksum = "xxh3", align = 4096))]
pub fn convert<'py>(
    py: Python<'py>,
    src: PathBuf,
    dst: PathBuf,
    compress: Option<i32>,
    checksum: &str,
    align: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let options = WriteOptions {
        align,
        digest: digest(Some(checksum))?,
        compression: zstd(compress)?,
        ..WriteOptions::default()
    };
    let rep = py
        .detach(|| ztensor::convert::convert(&src, &dst, options))
        .map_err(to_pyerr)?;
    let d = PyDict::new(py);
    d.set_item("format", rep.format.map(|f| f.name()))?;
    d.set_item("tensors", rep.tensors)?;
    d.set_item("quantized", rep.quantized)?;
    d.set_item("metadata_keys", rep.metadata_keys)?;
    d.set_item("input_bytes", rep.input_bytes)?;
    d.set_item("output_bytes", rep.output_bytes)?;
    Ok(d)
}

#[pyfunction]
#[pyo3(signature = (src, dst, max_shard_size = None))]
pub fn export<'py>(
    py: Python<'py>,
    src: PathBuf,
    dst: PathBuf,
    max_shard_size: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let options = ztensor::convert::export::ExportOptions { max_shard_size };
    let rep = py
        .detach(|| ztensor::convert::export::export_with(&src, &dst, &options))
        .map_err(to_pyerr)?;
    let d = PyDict::new(py);
    d.set_item("tensors", rep.tensors)?;
    d.set_item("metadata_keys", rep.metadata_keys)?;
    d.set_item("skipped_attributes", rep.skipped_attributes)?;
    d.set_item("bytes", rep.bytes)?;
    d.set_item("files", rep.files.len())?;
    Ok(d)
}
