//! GGUF (v2 and v3) reader: header, metadata, tensor infos and data
//! offsets, validated like the hardened readers do before anything is
//! allocated or sliced.
//!
//! Every count is bounded by the bytes that remain, every string and array
//! length is checked before allocation, shapes use checked arithmetic,
//! offsets must be aligned, in bounds and non-overlapping, keys and tensor
//! names must be unique, and unknown value or tensor types are errors.
//! Dimensions are kept in GGUF (ggml) order, innermost first;
//! [`GgufTensor::shape`] gives the logical, outermost-first shape.
//!
//! The ggml tensor type table is in `ggml_type.rs`, metadata value types
//! in `value.rs` and the validating parser in `parse.rs`.

mod ggml_type;
mod parse;
mod value;

pub use ggml_type::GgmlType;
pub use value::{GgufValue, ValueType};

use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"GGUF";
/// Longest string we accept (as ggml: 1 GiB), on top of the bytes-left bound.
pub(crate) const MAX_STRING: u64 = 1 << 30;
/// Longest tensor name (ggml's `GGML_MAX_NAME` is 64 including the NUL).
pub(crate) const MAX_TENSOR_NAME: usize = 63;
/// Highest tensor rank GGUF allows.
pub(crate) const MAX_DIMS: u32 = 4;
/// The alignment when `general.alignment` is absent.
pub(crate) const DEFAULT_ALIGNMENT: u64 = 32;

fn err(rule: &'static str, offset: u64, detail: impl Into<String>) -> Error {
    Error::Foreign {
        format: "gguf",
        rule,
        offset: Some(offset),
        detail: detail.into(),
    }
}

/// One tensor's info. `offset` is absolute in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensor {
    pub name: String,
    /// GGUF order: `dims[0]` is the innermost (row) dimension.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    pub offset: u64,
    pub n_bytes: u64,
}

impl GgufTensor {
    /// Logical shape, outermost first (GGUF dims reversed).
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }

    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed GGUF header.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufFile {
    pub version: u32,
    pub alignment: u64,
    /// Metadata in file order.
    pub metadata: Vec<(String, GgufValue)>,
    /// Tensors in file order.
    pub tensors: Vec<GgufTensor>,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

/// Parses the header of a GGUF file in a store from a growing prefix
/// (1 MiB, doubled while the header is cut short), so tensor data is
/// never read.
pub(crate) fn parse_store(store: &crate::store::Store) -> Result<GgufFile> {
    let len = store.len();
    let mut n = 1u64 << 20;
    loop {
        let prefix = store.read(0, n.min(len))?;
        match GgufFile::parse_prefix(&prefix, len) {
            Err(Error::Foreign {
                rule: "gguf-truncated" | "gguf-count" | "gguf-string-length",
                ..
            }) if (prefix.len() as u64) < len => {
                n = n.saturating_mul(2);
            }
            other => return other,
        }
    }
}

impl GgufFile {
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        want: ValueType,
        f: impl Fn(&'a GgufValue) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => f(v).map(Some).ok_or_else(|| Error::Foreign {
                format: "gguf",
                rule: "gguf-key-type",
                offset: None,
                detail: format!(
                    "{key} is {}, expected {}",
                    v.value_type().name(),
                    want.name()
                ),
            }),
        }
    }

    /// A u32 value; any other stored type is an error (no silent casts).
    pub fn get_u32(&self, key: &str) -> Result<Option<u32>> {
        self.typed(key, ValueType::U32, |v| match v {
            GgufValue::U32(x) => Some(*x),
            _ => None,
        })
    }

    pub fn get_f32(&self, key: &str) -> Result<Option<f32>> {
        self.typed(key, ValueType::F32, |v| match v {
            GgufValue::F32(x) => Some(*x),
            _ => None,
        })
    }

    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        self.typed(key, ValueType::String, |v| match v {
            GgufValue::String(s) => Some(s.as_str()),
            _ => None,
        })
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, ValueType::Bool, |v| match v {
            GgufValue::Bool(b) => Some(*b),
            _ => None,
        })
    }

    /// An array whose elements all have type `elem`.
    pub fn get_array(&self, key: &str, elem: ValueType) -> Result<Option<&[GgufValue]>> {
        self.typed(key, ValueType::Array, |v| match v {
            GgufValue::Array(t, items) if *t == elem => Some(items.as_slice()),
            _ => None,
        })
    }

    /// The bytes of a tensor within the file (offsets were bounds-checked).
    pub fn tensor_bytes<'a>(&self, file: &'a [u8], t: &GgufTensor) -> Result<&'a [u8]> {
        let end = t
            .offset
            .checked_add(t.n_bytes)
            .filter(|&e| e <= file.len() as u64);
        match end {
            Some(e) => Ok(&file[t.offset as usize..e as usize]),
            None => Err(Error::usage(format!(
                "{}: bytes outside the given buffer",
                t.name
            ))),
        }
    }
}
