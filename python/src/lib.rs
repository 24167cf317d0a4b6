//! `ztensor._native`: the Rust core exposed to Python. The Python package
//! (`python/ztensor/`) builds the user-facing API on these few calls.

mod codec;
mod convert;
mod engine;
mod reader;
mod remote;
mod tools;
mod writer;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<reader::NativeReader>()?;
    m.add_class::<reader::PartBuffer>()?;
    m.add_class::<writer::NativeWriter>()?;
    m.add_class::<engine::NativeEngine>()?;
    m.add_function(wrap_pyfunction!(tools::convert, m)?)?;
    m.add_function(wrap_pyfunction!(engine::dequantize, m)?)?;
    m.add_function(wrap_pyfunction!(tools::export, m)?)?;
    m.add_function(wrap_pyfunction!(codec::zstd_compress, m)?)?;
    m.add_function(wrap_pyfunction!(codec::zstd_decompress, m)?)?;
    Ok(())
}
