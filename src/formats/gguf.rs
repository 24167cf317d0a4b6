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

use crate::error::{Error, Result};
use std::collections::HashSet;

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

/// A ggml tensor type: block geometry from ggml's type table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GgmlType {
    pub id: u32,
    /// Lowercase ggml name (`q4_k`, `f32`, ...).
    pub name: &'static str,
    /// Elements one block encodes.
    pub block_elems: u64,
    /// Bytes of one block.
    pub block_bytes: u64,
}

const GGML_TYPES: &[GgmlType] = &[
    GgmlType {
        id: 0,
        name: "f32",
        block_elems: 1,
        block_bytes: 4,
    },
    GgmlType {
        id: 1,
        name: "f16",
        block_elems: 1,
        block_bytes: 2,
    },
    GgmlType {
        id: 2,
        name: "q4_0",
        block_elems: 32,
        block_bytes: 18,
    },
    GgmlType {
        id: 3,
        name: "q4_1",
        block_elems: 32,
        block_bytes: 20,
    },
    GgmlType {
        id: 6,
        name: "q5_0",
        block_elems: 32,
        block_bytes: 22,
    },
    GgmlType {
        id: 7,
        name: "q5_1",
        block_elems: 32,
        block_bytes: 24,
    },
    GgmlType {
        id: 8,
        name: "q8_0",
        block_elems: 32,
        block_bytes: 34,
    },
    GgmlType {
        id: 9,
        name: "q8_1",
        block_elems: 32,
        block_bytes: 36,
    },
    GgmlType {
        id: 10,
        name: "q2_k",
        block_elems: 256,
        block_bytes: 84,
    },
    GgmlType {
        id: 11,
        name: "q3_k",
        block_elems: 256,
        block_bytes: 110,
    },
    GgmlType {
        id: 12,
        name: "q4_k",
        block_elems: 256,
        block_bytes: 144,
    },
    GgmlType {
        id: 13,
        name: "q5_k",
        block_elems: 256,
        block_bytes: 176,
    },
    GgmlType {
        id: 14,
        name: "q6_k",
        block_elems: 256,
        block_bytes: 210,
    },
    GgmlType {
        id: 15,
        name: "q8_k",
        block_elems: 256,
        block_bytes: 292,
    },
    GgmlType {
        id: 16,
        name: "iq2_xxs",
        block_elems: 256,
        block_bytes: 66,
    },
    GgmlType {
        id: 17,
        name: "iq2_xs",
        block_elems: 256,
        block_bytes: 74,
    },
    GgmlType {
        id: 18,
        name: "iq3_xxs",
        block_elems: 256,
        block_bytes: 98,
    },
    GgmlType {
        id: 19,
        name: "iq1_s",
        block_elems: 256,
        block_bytes: 50,
    },
    GgmlType {
        id: 20,
        name: "iq4_nl",
        block_elems: 32,
        block_bytes: 18,
    },
    GgmlType {
        id: 21,
        name: "iq3_s",
        block_elems: 256,
        block_bytes: 110,
    },
    GgmlType {
        id: 22,
        name: "iq2_s",
        block_elems: 256,
        block_bytes: 82,
    },
    GgmlType {
        id: 23,
        name: "iq4_xs",
        block_elems: 256,
        block_bytes: 136,
    },
    GgmlType {
        id: 24,
        name: "i8",
        block_elems: 1,
        block_bytes: 1,
    },
    GgmlType {
        id: 25,
        name: "i16",
        block_elems: 1,
        block_bytes: 2,
    },
    GgmlType {
        id: 26,
        name: "i32",
        block_elems: 1,
        block_bytes: 4,
    },
    GgmlType {
        id: 27,
        name: "i64",
        block_elems: 1,
        block_bytes: 8,
    },
    GgmlType {
        id: 28,
        name: "f64",
        block_elems: 1,
        block_bytes: 8,
    },
    GgmlType {
        id: 29,
        name: "iq1_m",
        block_elems: 256,
        block_bytes: 56,
    },
    GgmlType {
        id: 30,
        name: "bf16",
        block_elems: 1,
        block_bytes: 2,
    },
    GgmlType {
        id: 34,
        name: "tq1_0",
        block_elems: 256,
        block_bytes: 54,
    },
    GgmlType {
        id: 35,
        name: "tq2_0",
        block_elems: 256,
        block_bytes: 66,
    },
    GgmlType {
        id: 39,
        name: "mxfp4",
        block_elems: 32,
        block_bytes: 17,
    },
];

impl GgmlType {
    /// Looks a type up by its ggml id; removed and unknown ids are `None`.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GGML_TYPES.iter().copied().find(|t| t.id == id)
    }

    pub fn from_name(name: &str) -> Option<GgmlType> {
        GGML_TYPES.iter().copied().find(|t| t.name == name)
    }

    /// True for block-quantized types (stored as opaque `gguf.<type>/1`).
    pub fn is_quantized(self) -> bool {
        self.block_elems > 1
    }
}

/// The type of a metadata value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl ValueType {
    fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        self as u32
    }

    /// Lowercase name (`u8`, ..., `string`, `array`).
    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }

    /// Smallest encoding of one value of this type, for count bounds.
    fn min_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// A metadata value, with its exact GGUF type.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// Element type and elements (never nested: nested arrays are refused).
    Array(ValueType, Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    pub fn value_type(&self) -> ValueType {
        match self {
            GgufValue::U8(_) => ValueType::U8,
            GgufValue::I8(_) => ValueType::I8,
            GgufValue::U16(_) => ValueType::U16,
            GgufValue::I16(_) => ValueType::I16,
            GgufValue::U32(_) => ValueType::U32,
            GgufValue::I32(_) => ValueType::I32,
            GgufValue::F32(_) => ValueType::F32,
            GgufValue::Bool(_) => ValueType::Bool,
            GgufValue::String(_) => ValueType::String,
            GgufValue::Array(..) => ValueType::Array,
            GgufValue::U64(_) => ValueType::U64,
            GgufValue::I64(_) => ValueType::I64,
            GgufValue::F64(_) => ValueType::F64,
        }
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

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(err(
                "gguf-truncated",
                self.pos as u64,
                format!("{what} needs {n} bytes, {} remain", self.remaining()),
            ));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items of at least `min_item` bytes each, bounded by what
    /// remains (so a lying count cannot drive an allocation).
    fn count(&mut self, what: &str, min_item: u64) -> Result<u64> {
        let at = self.pos as u64;
        let n = self.u64(what)?;
        let bound = self.remaining() / min_item.max(1);
        if n > bound {
            return Err(err(
                "gguf-count",
                at,
                format!(
                    "{what} is {n}, but only {} bytes remain (at most {bound})",
                    self.remaining()
                ),
            ));
        }
        Ok(n)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.pos as u64;
        let n = self.u64(what)?;
        if n > MAX_STRING || n > self.remaining() {
            return Err(err(
                "gguf-string-length",
                at,
                format!("{what} claims {n} bytes, {} remain", self.remaining()),
            ));
        }
        let raw = self.take(n, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| {
            err(
                "gguf-string-utf8",
                at + 8,
                format!("{what} is not valid UTF-8"),
            )
        })
    }

    fn value(&mut self, t: ValueType, what: &str, depth: u32) -> Result<GgufValue> {
        let at = self.pos as u64;
        Ok(match t {
            ValueType::U8 => GgufValue::U8(self.array::<1>(what)?[0]),
            ValueType::I8 => GgufValue::I8(self.array::<1>(what)?[0] as i8),
            ValueType::U16 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => GgufValue::U32(self.u32(what)?),
            ValueType::I32 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::U64 => GgufValue::U64(self.u64(what)?),
            ValueType::I64 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::Bool => match self.array::<1>(what)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => {
                    return Err(err(
                        "gguf-value",
                        at,
                        format!("{what}: bool byte is {b}, not 0 or 1"),
                    ))
                }
            },
            ValueType::String => GgufValue::String(self.string(what)?),
            ValueType::Array => {
                if depth > 0 {
                    return Err(err(
                        "gguf-value",
                        at,
                        format!("{what}: arrays of arrays are not supported"),
                    ));
                }
                let elem_id = self.u32(what)?;
                let elem = ValueType::from_id(elem_id).ok_or_else(|| {
                    err(
                        "gguf-value",
                        at,
                        format!("{what}: unknown array element type {elem_id}"),
                    )
                })?;
                if elem == ValueType::Array {
                    return Err(err(
                        "gguf-value",
                        at,
                        format!("{what}: arrays of arrays are not supported"),
                    ));
                }
                let n = self.count(&format!("{what} array length"), elem.min_size())?;
                let mut items = Vec::new();
                items.try_reserve_exact(n as usize).map_err(|_| {
                    err(
                        "gguf-count",
                        at,
                        format!("{what}: {n} elements do not fit in memory"),
                    )
                })?;
                for _ in 0..n {
                    items.push(self.value(elem, what, depth + 1)?);
                }
                GgufValue::Array(elem, items)
            }
        })
    }
}

impl GgufFile {
    /// Parses and validates a whole GGUF file held in (or mapped into) memory.
    pub fn parse(bytes: &[u8]) -> Result<GgufFile> {
        GgufFile::parse_prefix(bytes, bytes.len() as u64)
    }

    /// Parses from the first bytes of a file of `file_len` bytes; tensor
    /// data is checked against `file_len`. A prefix too short for the
    /// header fails like a truncated file (retry with more bytes).
    pub fn parse_prefix(bytes: &[u8], file_len: u64) -> Result<GgufFile> {
        let mut c = Cursor { buf: bytes, pos: 0 };
        if c.take(4, "magic")? != MAGIC {
            return Err(err(
                "gguf-magic",
                0,
                "the file does not start with \"GGUF\"",
            ));
        }
        let version = c.u32("version")?;
        if version & 0xffff == 0 && version != 0 {
            return Err(err(
                "gguf-version",
                4,
                format!("version {version:#x} looks byte-swapped (big-endian file)"),
            ));
        }
        if !(2..=3).contains(&version) {
            return Err(err(
                "gguf-version",
                4,
                format!("version {version} is not supported (2 or 3)"),
            ));
        }
        let n_tensors = c.count("tensor count", 24)?;
        let n_kv = c.count("metadata count", 13)?;

        let mut metadata = Vec::new();
        let mut keys = HashSet::new();
        let mut alignment = DEFAULT_ALIGNMENT;
        for _ in 0..n_kv {
            let at = c.pos as u64;
            let key = c.string("metadata key")?;
            if key.is_empty() {
                return Err(err("gguf-key", at, "empty metadata key"));
            }
            if !keys.insert(key.clone()) {
                return Err(err(
                    "gguf-duplicate",
                    at,
                    format!("metadata key {key:?} appears twice"),
                ));
            }
            let tid = c.u32("value type")?;
            let t = ValueType::from_id(tid)
                .ok_or_else(|| err("gguf-value", at, format!("{key}: unknown value type {tid}")))?;
            let v = c.value(t, &key, 0)?;
            if key == "general.alignment" {
                alignment = match v {
                    GgufValue::U32(a) if a > 0 && a.is_power_of_two() => a as u64,
                    ref other => {
                        return Err(err(
                            "gguf-alignment",
                            at,
                            format!("general.alignment must be a non-zero power of two u32, found {other:?}"),
                        ))
                    }
                };
            }
            metadata.push((key, v));
        }

        let mut infos = Vec::new();
        let mut names = HashSet::new();
        for _ in 0..n_tensors {
            let at = c.pos as u64;
            let name = c.string("tensor name")?;
            if name.len() > MAX_TENSOR_NAME {
                return Err(err(
                    "gguf-tensor",
                    at,
                    format!("tensor name {name:?} is longer than {MAX_TENSOR_NAME} bytes"),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(err(
                    "gguf-duplicate",
                    at,
                    format!("tensor {name:?} appears twice"),
                ));
            }
            let n_dims = c.u32("n_dims")?;
            if n_dims > MAX_DIMS {
                return Err(err(
                    "gguf-tensor",
                    at,
                    format!("{name}: {n_dims} dimensions, at most {MAX_DIMS}"),
                ));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64("dimension")?);
            }
            let type_id = c.u32("tensor type")?;
            let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
                err(
                    "gguf-type",
                    at,
                    format!("{name}: unknown or removed ggml type {type_id}"),
                )
            })?;
            let rel = c.u64("tensor offset")?;
            let n_elements = dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| {
                    err(
                        "gguf-shape",
                        at,
                        format!("{name}: element count of {dims:?} overflows"),
                    )
                })?;
            let row = dims.first().copied().unwrap_or(1);
            if row % ggml_type.block_elems != 0 {
                return Err(err(
                    "gguf-shape",
                    at,
                    format!(
                        "{name}: row length {row} is not a multiple of the {}-element {} block",
                        ggml_type.block_elems, ggml_type.name
                    ),
                ));
            }
            let n_bytes = (n_elements / ggml_type.block_elems)
                .checked_mul(ggml_type.block_bytes)
                .ok_or_else(|| err("gguf-shape", at, format!("{name}: byte size overflows")))?;
            if rel % alignment != 0 {
                return Err(err(
                    "gguf-offset",
                    at,
                    format!("{name}: offset {rel} is not a multiple of the alignment {alignment}"),
                ));
            }
            infos.push((name, dims, ggml_type, rel, n_bytes, at));
        }

        let end_of_infos = c.pos as u64;
        let data_offset = end_of_infos
            .checked_add((alignment - end_of_infos % alignment) % alignment)
            .ok_or_else(|| err("gguf-offset", end_of_infos, "data section offset overflows"))?;
        if !infos.is_empty() && data_offset > file_len {
            return Err(err(
                "gguf-truncated",
                end_of_infos,
                "the data section starts past the end of the file",
            ));
        }

        let mut tensors = Vec::with_capacity(infos.len());
        for (name, dims, ggml_type, rel, n_bytes, at) in infos {
            let offset = data_offset.checked_add(rel);
            match offset.and_then(|o| o.checked_add(n_bytes)) {
                Some(end) if end <= file_len => {}
                _ => {
                    return Err(err(
                        "gguf-offset",
                        at,
                        format!("{name}: data [{rel}, +{n_bytes}) runs past the end of the file"),
                    ))
                }
            }
            tensors.push(GgufTensor {
                name,
                dims,
                ggml_type,
                offset: offset.unwrap_or(0),
                n_bytes,
            });
        }
        let mut ranges: Vec<(u64, u64, &str)> = tensors
            .iter()
            .filter(|t| t.n_bytes > 0)
            .map(|t| (t.offset, t.offset + t.n_bytes, t.name.as_str()))
            .collect();
        ranges.sort_unstable();
        for w in ranges.windows(2) {
            if w[0].1 > w[1].0 {
                return Err(err(
                    "gguf-offset",
                    w[1].0,
                    format!("tensors {:?} and {:?} overlap", w[0].2, w[1].2),
                ));
            }
        }
        Ok(GgufFile {
            version,
            alignment,
            metadata,
            tensors,
            data_offset,
        })
    }

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
