//! safetensors reader with the reference implementation's rules (header
//! ≤ 100,000,000 bytes, checked arithmetic, tensors tiling the data region
//! exactly: no gaps, overlaps or trailing bytes) plus what it misses:
//! duplicate JSON keys are rejected at every level. Leading whitespace before
//! the header's `{` is accepted, as the reference does.

use crate::cbor::Value;
use crate::dtype::{DType, ElementType, LogicalType};
use crate::error::{Error, Result};
use crate::formats::{object, part};
use crate::manifest::Manifest;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// Largest header the reference implementation accepts.
pub const MAX_HEADER: u64 = 100_000_000;

fn err(rule: &'static str, detail: impl Into<String>) -> Error {
    Error::Foreign {
        format: "safetensors",
        rule,
        offset: None,
        detail: detail.into(),
    }
}

/// JSON value whose maps were checked for duplicate keys.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> std::result::Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<Json, E> {
        Ok(Json::Int(v as i128))
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<Json, E> {
        Ok(Json::Int(v as i128))
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<Json, E> {
        Ok(Json::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Json, E> {
        Ok(Json::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> std::result::Result<Json, E> {
        Ok(Json::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(x) = seq.next_element::<Json>()? {
            items.push(x);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Json, A::Error> {
        let mut seen = HashSet::new();
        let mut entries = Vec::new();
        while let Some(k) = map.next_key::<String>()? {
            if !seen.insert(k.clone()) {
                return Err(de::Error::custom(format!("duplicate key {k:?}")));
            }
            entries.push((k, map.next_value::<Json>()?));
        }
        Ok(Json::Object(entries))
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Json, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

/// One tensor; `begin`/`end` are absolute file offsets.
#[derive(Debug, Clone, PartialEq)]
pub struct StTensor {
    pub name: String,
    /// The safetensors dtype string (`F32`, `BF16`, ...).
    pub dtype: String,
    pub shape: Vec<u64>,
    pub begin: u64,
    pub end: u64,
}

impl StTensor {
    /// Our element type for this tensor, or `Unsupported` (F6 types).
    pub fn element_type(&self) -> Result<ElementType> {
        element_type(&self.dtype).ok_or_else(|| {
            Error::Unsupported(format!(
                "{}: safetensors dtype {} has no .zt type",
                self.name, self.dtype
            ))
        })
    }
}

fn element_type(dtype: &str) -> Option<ElementType> {
    let plain = |d| Some(ElementType::plain(d));
    let logical = |t| Some(ElementType::logical(t));
    match dtype {
        "F64" => plain(DType::F64),
        "F32" => plain(DType::F32),
        "F16" => plain(DType::F16),
        "BF16" => plain(DType::BF16),
        "I64" => plain(DType::I64),
        "I32" => plain(DType::I32),
        "I16" => plain(DType::I16),
        "I8" => plain(DType::I8),
        "U64" => plain(DType::U64),
        "U32" => plain(DType::U32),
        "U16" => plain(DType::U16),
        "U8" => plain(DType::U8),
        "BOOL" => logical(LogicalType::Bool),
        "F8_E4M3" => logical(LogicalType::F8E4M3Fn),
        "F8_E5M2" => logical(LogicalType::F8E5M2),
        "F8_E4M3FNUZ" => logical(LogicalType::F8E4M3Fnuz),
        "F8_E5M2FNUZ" => logical(LogicalType::F8E5M2Fnuz),
        "F8_E8M0" => logical(LogicalType::F8E8M0),
        "F4" => logical(LogicalType::F4E2M1),
        "C64" => logical(LogicalType::Complex64),
        _ => None,
    }
}

/// Every dtype name safetensors defines that we map.
const DTYPES: [&str; 20] = [
    "F64",
    "F32",
    "F16",
    "BF16",
    "I64",
    "I32",
    "I16",
    "I8",
    "U64",
    "U32",
    "U16",
    "U8",
    "BOOL",
    "F8_E4M3",
    "F8_E5M2",
    "F8_E4M3FNUZ",
    "F8_E5M2FNUZ",
    "F8_E8M0",
    "F4",
    "C64",
];

/// The safetensors dtype name for one of our element types, if it has one.
pub fn dtype_name(etype: &ElementType) -> Option<&'static str> {
    DTYPES
        .into_iter()
        .find(|d| element_type(d).as_ref() == Some(etype))
}

/// Bits per element of a safetensors dtype.
pub(crate) fn bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" | "F8_E4M3FNUZ"
        | "F8_E5M2FNUZ" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "C64" | "F64" | "I64" | "U64" => 64,
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        _ => return None,
    })
}

/// A parsed safetensors file.
#[derive(Debug, Clone, PartialEq)]
pub struct SafetensorsFile {
    /// `__metadata__` (string → string), if present.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Tensors in data order.
    pub tensors: Vec<StTensor>,
    pub data_start: u64,
}

/// Parses the header of a safetensors file in a store, reading only the
/// header bytes.
pub(crate) fn parse_store(store: &crate::store::Store) -> Result<SafetensorsFile> {
    let len = store.len();
    let first = store.read(0, len.min(8))?;
    let span = SafetensorsFile::header_span(&first)
        .unwrap_or(8)
        .min(len)
        .min(MAX_HEADER + 8);
    SafetensorsFile::parse_prefix(&store.read(0, span)?, len)
}

impl SafetensorsFile {
    pub fn parse(bytes: &[u8]) -> Result<SafetensorsFile> {
        SafetensorsFile::parse_prefix(bytes, bytes.len() as u64)
    }

    /// Bytes needed to parse the header (the 8-byte length plus the header),
    /// from the first 8 bytes of a file.
    pub fn header_span(first8: &[u8]) -> Option<u64> {
        let mut n = [0u8; 8];
        n.copy_from_slice(first8.get(..8)?);
        u64::from_le_bytes(n).checked_add(8)
    }

    /// Parses the header from the first bytes of a file of `file_len` bytes.
    pub fn parse_prefix(bytes: &[u8], file_len: u64) -> Result<SafetensorsFile> {
        if bytes.len() < 8 {
            return Err(err(
                "safetensors-too-small",
                format!("{} bytes, need at least 8", bytes.len()),
            ));
        }
        let mut n = [0u8; 8];
        n.copy_from_slice(&bytes[..8]);
        let n = u64::from_le_bytes(n);
        if n > MAX_HEADER {
            return Err(err(
                "safetensors-header-length",
                format!("header of {n} bytes exceeds {MAX_HEADER}"),
            ));
        }
        let data_start = 8 + n;
        if data_start > file_len || data_start > bytes.len() as u64 {
            return Err(err(
                "safetensors-header-length",
                format!("header of {n} bytes runs past the {file_len}-byte file"),
            ));
        }
        let header = std::str::from_utf8(&bytes[8..data_start as usize])
            .map_err(|_| err("safetensors-header", "header is not UTF-8"))?;
        if !header.trim_start().starts_with('{') {
            return Err(err("safetensors-header", "header does not start with '{'"));
        }
        let json: Json = serde_json::from_str(header.trim_end())
            .map_err(|e| err("safetensors-header", format!("header JSON: {e}")))?;
        let Json::Object(entries) = json else {
            return Err(err("safetensors-header", "header is not a JSON object"));
        };
        let mut metadata = None;
        let mut tensors = Vec::with_capacity(entries.len());
        for (name, v) in entries {
            if name == "__metadata__" {
                let Json::Object(m) = v else {
                    return Err(err("safetensors-metadata", "__metadata__ is not an object"));
                };
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    match v {
                        Json::Str(s) => {
                            out.insert(k, s);
                        }
                        other => {
                            return Err(err(
                                "safetensors-metadata",
                                format!("__metadata__[{k:?}] is {other:?}, not a string"),
                            ))
                        }
                    }
                }
                metadata = Some(out);
                continue;
            }
            tensors.push(parse_tensor(&name, v, data_start)?);
        }
        tensors.sort_by_key(|t| (t.begin, t.end));
        let mut at = data_start;
        for t in &tensors {
            if t.begin != at {
                return Err(err(
                    "safetensors-offsets",
                    format!(
                        "{}: starts at {} but the previous tensor ends at {at} (gap or overlap)",
                        t.name,
                        t.begin - data_start
                    ),
                ));
            }
            at = t.end;
        }
        if at != file_len {
            return Err(err(
                "safetensors-offsets",
                format!("the tensors end at {at}, the file at {file_len} (trailing bytes or truncation)"),
            ));
        }
        Ok(SafetensorsFile {
            metadata,
            tensors,
            data_start,
        })
    }

    /// The bytes of a tensor (bounds were checked at parse).
    pub fn tensor_bytes<'a>(&self, file: &'a [u8], t: &StTensor) -> Result<&'a [u8]> {
        file.get(t.begin as usize..t.end as usize)
            .ok_or_else(|| Error::usage(format!("{}: bytes outside the given buffer", t.name)))
    }
}

fn parse_tensor(name: &str, v: Json, data_start: u64) -> Result<StTensor> {
    let bad = |d: String| err("safetensors-tensor", format!("{name}: {d}"));
    let Json::Object(fields) = v else {
        return Err(bad("entry is not an object".into()));
    };
    let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v);
    let dtype = match get("dtype") {
        Some(Json::Str(s)) => s.clone(),
        _ => return Err(bad("missing string \"dtype\"".into())),
    };
    let uint = |j: &Json| match j {
        Json::Int(i) if *i >= 0 && *i <= u64::MAX as i128 => Some(*i as u64),
        _ => None,
    };
    let shape = match get("shape") {
        Some(Json::Array(a)) => a
            .iter()
            .map(uint)
            .collect::<Option<Vec<u64>>>()
            .ok_or_else(|| bad("shape entries must be unsigned integers".into()))?,
        _ => return Err(bad("missing array \"shape\"".into())),
    };
    let (b, e) = match get("data_offsets") {
        Some(Json::Array(a)) if a.len() == 2 => match (uint(&a[0]), uint(&a[1])) {
            (Some(b), Some(e)) if b <= e => (b, e),
            _ => {
                return Err(bad(
                    "data_offsets must be [begin, end] with begin ≤ end".into()
                ))
            }
        },
        _ => return Err(bad("missing \"data_offsets\" [begin, end]".into())),
    };
    let elem_bits = bits(&dtype).ok_or_else(|| bad(format!("unknown dtype {dtype:?}")))?;
    let total_bits = shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .and_then(|n| n.checked_mul(elem_bits))
        .ok_or_else(|| bad(format!("size of shape {shape:?} overflows")))?;
    if total_bits % 8 != 0 {
        return Err(bad(format!(
            "{total_bits} bits is not a whole number of bytes"
        )));
    }
    if e - b != total_bits / 8 {
        return Err(bad(format!(
            "shape {shape:?} of {dtype} needs {} bytes, data_offsets span {}",
            total_bits / 8,
            e - b
        )));
    }
    let begin = data_start
        .checked_add(b)
        .ok_or_else(|| bad("offset overflows".into()))?;
    let end = data_start
        .checked_add(e)
        .ok_or_else(|| bad("offset overflows".into()))?;
    Ok(StTensor {
        name: name.to_string(),
        dtype,
        shape,
        begin,
        end,
    })
}

/// A safetensors file as a manifest; `__metadata__` becomes attributes.
pub fn safetensors_manifest(st: &SafetensorsFile) -> Result<Manifest> {
    let attributes = match &st.metadata {
        None => None,
        Some(meta) => Some(Value::map(
            meta.iter()
                .map(|(k, v)| (Value::text(k.as_str()), Value::text(v.as_str())))
                .collect(),
        )?),
    };
    let mut m = Manifest {
        attributes,
        ..Manifest::default()
    };
    for t in &st.tensors {
        let p = part(t.element_type()?, t.begin, t.end - t.begin);
        m.objects.insert(
            t.name.clone(),
            object(t.shape.clone(), "dense".into(), p, None),
        );
    }
    Ok(m)
}
