//! Conversions between Python objects, CBOR values and errors.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use ztensor::{Error, Value};

/// Raises the matching exception class of `ztensor._errors`.
pub fn to_pyerr(e: Error) -> PyErr {
    Python::attach(|py| match make_err(py, &e) {
        Ok(err) => err,
        Err(import_failure) => import_failure,
    })
}

fn make_err(py: Python<'_>, e: &Error) -> PyResult<PyErr> {
    let errors = py.import("ztensor._errors")?;
    let class = match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            "ZTensorFileNotFoundError"
        }
        Error::Io { .. } => "ZTensorIOError",
        Error::Corrupt { .. } | Error::Foreign { .. } => "FormatError",
        Error::Checksum { .. } => "ChecksumError",
        Error::Limit { .. } => "LimitError",
        Error::NotFound { .. } => "ZTensorKeyError",
        Error::Unsupported(_) => "UnsupportedError",
        Error::Snapshot {
            fault: ztensor::SnapshotFault::Fingerprint,
            ..
        } => "FingerprintMismatchError",
        Error::Snapshot { .. } => "SnapshotError",
        _ => "ZTensorValueError",
    };
    let rule = match e {
        Error::Foreign { rule, .. } => Some(*rule),
        other => other.rule().map(|r| r.id()),
    };
    let instance = errors.getattr(class)?.call1((e.to_string(),))?;
    instance.setattr("rule", rule)?;
    if let Error::Snapshot { fault, .. } = e {
        instance.setattr("fault", fault.name())?;
    }
    Ok(PyErr::from_value(instance))
}

pub trait IntoPy<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for ztensor::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_pyerr)
    }
}

/// CBOR value → Python (dict, list, int, float, str, bytes, bool, None).
pub fn value_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Uint(n) => n.into_pyobject(py)?.into_any(),
        Value::Nint(n) => (-1 - *n as i128).into_pyobject(py)?.into_any(),
        Value::Bytes(b) => PyBytes::new(py, b).into_any(),
        Value::Text(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(value_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Map(entries) => {
            let dict = PyDict::new(py);
            for (k, v) in entries {
                dict.set_item(value_to_py(py, k)?, value_to_py(py, v)?)?;
            }
            dict.into_any()
        }
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Null => py.None().into_bound(py),
        Value::Float(x) => PyFloat::new(py, *x).into_any(),
    })
}

/// Python → CBOR value. Tuples become arrays; dict keys must be str for
/// attributes (checked by the core).
pub fn py_to_value(obj: &Bound<'_, PyAny>, depth: u32) -> PyResult<Value> {
    if depth > ztensor::cbor::MAX_DEPTH {
        return Err(PyTypeError::new_err("metadata nests too deeply"));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.cast::<PyInt>().is_ok() {
        let n: i128 = obj.extract()?;
        return match n {
            n if n >= 0 => u64::try_from(n)
                .map(Value::Uint)
                .map_err(|_| PyTypeError::new_err("integer too large")),
            n => u64::try_from(-1 - n)
                .map(Value::Nint)
                .map_err(|_| PyTypeError::new_err("integer too small")),
        };
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Value::Float(f.value()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::Text(s.to_str()?.to_string()));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Value::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut entries = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            entries.push((py_to_value(&k, depth + 1)?, py_to_value(&v, depth + 1)?));
        }
        return Value::map(entries).map_err(to_pyerr);
    }
    if let Ok(l) = obj.cast::<PyList>() {
        return Ok(Value::Array(
            l.iter()
                .map(|x| py_to_value(&x, depth + 1))
                .collect::<PyResult<_>>()?,
        ));
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return Ok(Value::Array(
            t.iter()
                .map(|x| py_to_value(&x, depth + 1))
                .collect::<PyResult<_>>()?,
        ));
    }
    Err(PyTypeError::new_err(format!(
        "cannot store a {} in metadata (use dict, list, str, int, float, bool, bytes or None)",
        obj.get_type().name()?
    )))
}
