//! Weights resolved once at load: each matrix checked for presence, shape,
//! type and byte count and bound to its bytes (a view into the mapped file,
//! or the decoded copy when the part is compressed or the reader has no
//! map), so the forward pass never looks a tensor up by name and a model
//! either loads completely or not at all.

use super::matmul::dequant_row;
use super::quant::WeightType;
use crate::error::{Error, Result};
use crate::reader::Reader;
use std::borrow::Cow;
use std::sync::Arc;

/// Where a weight's bytes are.
enum Data {
    /// Inside the reader's map (or in-memory buffer), which the `Arc`
    /// keeps alive for as long as this weight exists.
    Mapped {
        _owner: Arc<Reader>,
        ptr: *const u8,
        len: usize,
    },
    /// Decoded at load.
    Owned(Vec<u8>),
}

// SAFETY: the bytes behind `Mapped` are immutable for the reader's life
// (a read-only map or an `Arc<[u8]>` the reader never writes) and the
// `Arc<Reader>` held alongside keeps them alive; sharing a read-only view
// between threads is sound.
unsafe impl Send for Data {}
// SAFETY: as above: nothing writes through `ptr`.
unsafe impl Sync for Data {}

/// A 2-D weight: `rows` outputs of `cols` inputs, each row `row_bytes`.
pub struct Weight {
    pub name: String,
    pub wtype: WeightType,
    pub rows: usize,
    pub cols: usize,
    pub row_bytes: usize,
    data: Data,
}

impl std::fmt::Debug for Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weight")
            .field("name", &self.name)
            .field("wtype", &self.wtype)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish()
    }
}

impl Weight {
    /// The weight's `rows × row_bytes` bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.data {
            // SAFETY: `ptr..ptr + len` was a live borrowed slice of the
            // reader's storage at load; that storage is immutable and kept
            // alive by `_owner` (see `Data`).
            Data::Mapped { ptr, len, .. } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
            Data::Owned(v) => v,
        }
    }

    /// Row `r` dequantized into `out` (`cols` values).
    pub fn dequant_row(&self, r: usize, out: &mut [f32]) -> Result<()> {
        let rb = self.row_bytes;
        let b = self
            .bytes()
            .get(r * rb..(r + 1) * rb)
            .ok_or_else(|| Error::usage(format!("row {r} of {} is out of range", self.name)))?;
        dequant_row(self.wtype, b, out)
    }
}

fn missing(name: &str) -> Error {
    Error::Unsupported(format!("model tensor {name:?} is missing"))
}

/// The model's tensors, looked up by name only while loading.
pub struct Loader {
    reader: Arc<Reader>,
}

impl Loader {
    pub fn new(reader: Arc<Reader>) -> Loader {
        Loader { reader }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.reader.contains(name)
    }

    fn wtype(&self, name: &str) -> Result<WeightType> {
        let o = self.reader.object(name).map_err(|_| missing(name))?;
        let part = o
            .parts
            .get("data")
            .ok_or_else(|| Error::Unsupported(format!("model tensor {name:?} has no data part")))?;
        WeightType::from_layout(&o.layout, part.etype.name()).ok_or_else(|| {
            Error::Unsupported(format!(
                "model tensor {name:?} has type {} ({}); supported: f32 f16 bf16 q4_0 q4_1 q5_0 q5_1 q8_0 q2_k q3_k q4_k q5_k q6_k",
                part.etype, o.layout
            ))
        })
    }

    /// A `[rows, cols]` matrix.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Weight> {
        let wtype = self.wtype(name)?;
        let o = self.reader.object(name).map_err(|_| missing(name))?;
        if o.shape != [rows as u64, cols as u64] {
            return Err(Error::Unsupported(format!(
                "model tensor {name:?} has shape {:?}, the metadata implies [{rows}, {cols}]",
                o.shape
            )));
        }
        let row_bytes = wtype.row_bytes(cols).ok_or_else(|| {
            Error::Unsupported(format!(
                "model tensor {name:?}: rows of {cols} are not whole {} blocks",
                wtype.name()
            ))
        })?;
        let bytes = self.reader.part_bytes(name, "data")?;
        if bytes.len() as u64 != (row_bytes as u64) * rows as u64 {
            return Err(Error::Unsupported(format!(
                "model tensor {name:?} holds {} bytes, expected {}",
                bytes.len(),
                row_bytes * rows
            )));
        }
        let data = match bytes {
            Cow::Borrowed(b) => Data::Mapped {
                _owner: self.reader.clone(),
                ptr: b.as_ptr(),
                len: b.len(),
            },
            Cow::Owned(v) => Data::Owned(v),
        };
        Ok(Weight {
            name: name.to_string(),
            wtype,
            rows,
            cols,
            row_bytes,
            data,
        })
    }

    /// A dense vector of `n` values (f32, f16 or bf16), decoded to f32.
    pub fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        let o = self.reader.object(name).map_err(|_| missing(name))?;
        if o.shape != [n as u64] {
            return Err(Error::Unsupported(format!(
                "model tensor {name:?} has shape {:?}, expected [{n}]",
                o.shape
            )));
        }
        let t = self.wtype(name)?;
        if t.block_elems() != 1 {
            return Err(Error::Unsupported(format!(
                "model vector {name:?} must be f32, f16 or bf16, not {}",
                t.name()
            )));
        }
        let mut out = vec![0f32; n];
        dequant_row(t, &self.reader.part_bytes(name, "data")?, &mut out)?;
        Ok(out)
    }

    /// A vector when the tensor exists (or when `required`).
    pub fn optional_vector(
        &self,
        name: &str,
        n: usize,
        required: bool,
    ) -> Result<Option<Vec<f32>>> {
        if required || self.contains(name) {
            self.vector(name, n).map(Some)
        } else {
            Ok(None)
        }
    }
}
