//! The header parser: every count bounded by the bytes that remain, every
//! length checked before allocation, offsets aligned, in bounds and
//! non-overlapping.

use super::{
    err, GgmlType, GgufFile, GgufTensor, GgufValue, ValueType, DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS,
    MAX_STRING, MAX_TENSOR_NAME,
};
use crate::error::Result;
use std::collections::HashSet;

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
}
