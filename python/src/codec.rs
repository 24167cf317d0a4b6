//! zstd for `ztensor.client`'s request and response bodies: the same zstd
//! library as the format, with decompression bounded before it allocates
//! (a small body cannot expand into gigabytes). The GIL is released while
//! (de)compressing.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::io::Read;

/// zstd-compresses `data` at `level` (1-22).
#[pyfunction]
#[pyo3(signature = (data, level = 3))]
pub fn zstd_compress<'py>(
    py: Python<'py>,
    data: &[u8],
    level: i32,
) -> PyResult<Bound<'py, PyBytes>> {
    if !(1..=22).contains(&level) {
        return Err(PyValueError::new_err(format!(
            "level = {level}: zstd levels are 1-22"
        )));
    }
    let out = py
        .detach(|| zstd::bulk::compress(data, level))
        .map_err(|e| PyValueError::new_err(format!("zstd compression failed: {e}")))?;
    Ok(PyBytes::new(py, &out))
}

/// Decompresses a zstd stream (one or more frames) of at most `max_size`
/// decompressed bytes; a larger result is refused as soon as it passes the
/// bound, before more memory is taken.
#[pyfunction]
pub fn zstd_decompress<'py>(
    py: Python<'py>,
    data: &[u8],
    max_size: u64,
) -> PyResult<Bound<'py, PyBytes>> {
    let out = py.detach(|| -> Result<Vec<u8>, String> {
        let decoder =
            zstd::stream::read::Decoder::new(data).map_err(|e| format!("zstd decoder: {e}"))?;
        let mut out = Vec::new();
        decoder
            .take(max_size.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| format!("not a valid zstd stream: {e}"))?;
        if out.len() as u64 > max_size {
            return Err(format!(
                "the decompressed body is larger than max_size = {max_size} bytes"
            ));
        }
        Ok(out)
    });
    let out = out.map_err(PyValueError::new_err)?;
    Ok(PyBytes::new(py, &out))
}
