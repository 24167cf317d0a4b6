//! Remote reads for Python: `fsspec` file systems as a [`RangeSource`]
//! (the `http(s)://` and `s3://` URLs go to the core's `object_store`
//! source instead).

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::ops::Range;
use ztensor::remote::RangeSource;
use ztensor::{Error, Result};

/// One file of an `fsspec` file system: its size is asked once, and each
/// batch of ranges is one `cat_ranges` call (concurrent on async file
/// systems). The core checks every returned length.
pub struct FsspecSource {
    fs: Py<PyAny>,
    path: String,
    name: String,
    len: u64,
}

fn py_error(context: String, e: PyErr) -> Error {
    let kind = Python::attach(|py| {
        if e.is_instance_of::<pyo3::exceptions::PyFileNotFoundError>(py) {
            std::io::ErrorKind::NotFound
        } else if e.is_instance_of::<pyo3::exceptions::PyPermissionError>(py) {
            std::io::ErrorKind::PermissionDenied
        } else {
            std::io::ErrorKind::Other
        }
    });
    Error::io(context, std::io::Error::new(kind, e.to_string()))
}

impl FsspecSource {
    pub fn open(py: Python<'_>, fs: Py<PyAny>, path: String) -> Result<FsspecSource> {
        let protocol = fs
            .bind(py)
            .getattr("protocol")
            .ok()
            .and_then(|p| {
                if let Ok(s) = p.extract::<String>() {
                    return Some(s);
                }
                p.get_item(0).ok()?.extract::<String>().ok()
            })
            .unwrap_or_else(|| "fsspec".to_string());
        let name = format!("{protocol}://{}", path.trim_start_matches('/'));
        let size = fs
            .bind(py)
            .call_method1("size", (path.as_str(),))
            .map_err(|e| py_error(format!("asking for the size of {name}"), e))?;
        let len = size.extract::<u64>().map_err(|_| {
            Error::io(
                format!("asking for the size of {name}"),
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("the file system gave a size of {size}, not a byte count"),
                ),
            )
        })?;
        Ok(FsspecSource {
            fs,
            path,
            name,
            len,
        })
    }
}

impl RangeSource for FsspecSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn fetch(&self, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        Python::attach(|py| {
            let fail = |e: PyErr| py_error(format!("reading {}", self.name), e);
            let paths = vec![self.path.as_str(); ranges.len()];
            let starts: Vec<u64> = ranges.iter().map(|r| r.start).collect();
            let ends: Vec<u64> = ranges.iter().map(|r| r.end).collect();
            let kwargs = pyo3::types::PyDict::new(py);
            kwargs.set_item("on_error", "raise").map_err(fail)?;
            let got = self
                .fs
                .bind(py)
                .call_method("cat_ranges", (paths, starts, ends), Some(&kwargs))
                .map_err(fail)?;
            let mut out = Vec::with_capacity(ranges.len());
            for item in got.try_iter().map_err(fail)? {
                let item = item.map_err(fail)?;
                let bytes = item.cast::<PyBytes>().map_err(|_| {
                    Error::io(
                        format!("reading {}", self.name),
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "cat_ranges returned something other than bytes",
                        ),
                    )
                })?;
                out.push(bytes.as_bytes().to_vec());
            }
            Ok(out)
        })
    }
}
