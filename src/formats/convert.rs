//! Conversion of other formats into `.zt`. GGUF: every tensor keeps its
//! name; f32/f16/bf16/f64/i8..i64 tensors become `dense`, quantized ones
//! `gguf.<type>/1` with their block bytes verbatim; the logical shape is the
//! GGUF dims reversed. Metadata becomes file attributes (plain values, as
//! upstream ztensor writes them) plus `gguf: {version, alignment, types}`,
//! where `types` records every key's exact GGUF type so an export can
//! rebuild the header bit for bit. Parts are written straight from the
//! mapped input, so memory stays flat whatever the model size.

use crate::cbor::Value;
use crate::dtype::{DType, ElementType};
use crate::error::{Error, Result};
use crate::formats::gguf::{GgufFile, GgufValue};
use crate::formats::safetensors::SafetensorsFile;
use crate::writer::{PartOptions, WriteOptions, Writer};
use memmap2::Mmap;
use std::fs::File;
use std::path::Path;

/// What a conversion wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvertReport {
    pub tensors: usize,
    pub quantized: usize,
    pub metadata_keys: usize,
    pub input_bytes: u64,
    pub output_bytes: u64,
}

/// Input formats we recognise by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Zt,
    Gguf,
    Safetensors,
    Unknown,
}

/// Detects a format from the leading bytes (not the extension).
pub fn detect(head: &[u8]) -> Format {
    if head.starts_with(&crate::container::MAGIC) {
        Format::Zt
    } else if head.starts_with(b"GGUF") {
        Format::Gguf
    } else if head.len() > 8 && head[8..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        // safetensors: a u64 header length, then a JSON object.
        Format::Safetensors
    } else {
        Format::Unknown
    }
}

fn dense_dtype(ggml: &str) -> Option<DType> {
    Some(match ggml {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        "f64" => DType::F64,
        "i8" => DType::I8,
        "i16" => DType::I16,
        "i32" => DType::I32,
        "i64" => DType::I64,
        _ => return None,
    })
}

fn to_value(v: &GgufValue) -> Value {
    let int = |x: i64| {
        if x >= 0 {
            Value::Uint(x as u64)
        } else {
            Value::Nint((-1 - x) as u64)
        }
    };
    match v {
        GgufValue::U8(x) => Value::Uint(*x as u64),
        GgufValue::U16(x) => Value::Uint(*x as u64),
        GgufValue::U32(x) => Value::Uint(*x as u64),
        GgufValue::U64(x) => Value::Uint(*x),
        GgufValue::I8(x) => int(*x as i64),
        GgufValue::I16(x) => int(*x as i64),
        GgufValue::I32(x) => int(*x as i64),
        GgufValue::I64(x) => int(*x),
        GgufValue::F32(x) => Value::Float(*x as f64),
        GgufValue::F64(x) => Value::Float(*x),
        GgufValue::Bool(b) => Value::Bool(*b),
        GgufValue::String(s) => Value::Text(s.clone()),
        GgufValue::Array(_, items) => Value::Array(items.iter().map(to_value).collect()),
    }
}

/// `u32`, `string`, `array[f32]`, ...
pub fn type_name(v: &GgufValue) -> String {
    match v {
        GgufValue::Array(elem, _) => format!("array[{}]", elem.name()),
        other => other.value_type().name().to_string(),
    }
}

/// The attributes a converted GGUF file carries.
pub fn gguf_attributes(g: &GgufFile) -> Result<Value> {
    let mut entries = Vec::with_capacity(g.metadata.len() + 1);
    let mut types = Vec::with_capacity(g.metadata.len());
    for (k, v) in &g.metadata {
        entries.push((Value::text(k.as_str()), to_value(v)));
        types.push((Value::text(k.as_str()), Value::text(type_name(v))));
    }
    let gguf = Value::text_map([
        ("version", Value::Uint(g.version as u64)),
        ("alignment", Value::Uint(g.alignment)),
        ("types", Value::map(types)?),
    ])?;
    if g.metadata.iter().any(|(k, _)| k == "gguf") {
        return Err(Error::Unsupported(
            "a GGUF key named \"gguf\" collides with our conversion record".into(),
        ));
    }
    entries.push((Value::text("gguf"), gguf));
    Value::map(entries)
}

fn map_input(input: &Path) -> Result<Mmap> {
    let file = File::open(input).map_err(|e| Error::Io {
        context: format!("opening {}", input.display()),
        source: e,
    })?;
    // SAFETY: read-only map of a file we only read; a concurrent truncation
    // would fault, the same documented hazard as the .zt reader's map.
    unsafe { Mmap::map(&file) }.map_err(|e| Error::Io {
        context: format!("mapping {}", input.display()),
        source: e,
    })
}

/// Converts a safetensors file into `.zt`: names and dtypes kept,
/// `__metadata__` as file attributes.
pub fn safetensors_to_zt(
    input: &Path,
    output: &Path,
    options: WriteOptions,
) -> Result<ConvertReport> {
    let map = map_input(input)?;
    let st = SafetensorsFile::parse(&map)?;
    let mut w = Writer::create_with(output, options.clone())?;
    if let Some(m) = &st.metadata {
        let attrs = m
            .iter()
            .map(|(k, v)| (Value::text(k.as_str()), Value::text(v.as_str())))
            .collect();
        w.set_attributes(Value::map(attrs)?)?;
    }
    let mut report = ConvertReport {
        metadata_keys: st.metadata.as_ref().map_or(0, |m| m.len()),
        input_bytes: map.len() as u64,
        ..ConvertReport::default()
    };
    for t in &st.tensors {
        let opts = PartOptions {
            etype: t.element_type()?,
            compression: options.compression,
            digest: options.digest,
        };
        w.add_bytes_with(&t.name, &t.shape, st.tensor_bytes(&map, t)?, &opts, None)?;
        report.tensors += 1;
    }
    report.output_bytes = w.finish()?;
    Ok(report)
}

/// Converts a GGUF file into `.zt`.
pub fn gguf_to_zt(input: &Path, output: &Path, options: WriteOptions) -> Result<ConvertReport> {
    let map = map_input(input)?;
    let g = GgufFile::parse(&map)?;
    let mut w = Writer::create_with(output, options.clone())?;
    w.set_attributes(gguf_attributes(&g)?)?;
    let mut report = ConvertReport {
        metadata_keys: g.metadata.len(),
        input_bytes: map.len() as u64,
        ..ConvertReport::default()
    };
    for t in &g.tensors {
        let bytes = g.tensor_bytes(&map, t)?;
        let shape = t.shape();
        match dense_dtype(t.ggml_type.name) {
            Some(d) => {
                let opts = PartOptions {
                    etype: ElementType::plain(d),
                    compression: options.compression,
                    digest: options.digest,
                };
                w.add_bytes_with(&t.name, &shape, bytes, &opts, None)?;
            }
            None => {
                w.add_gguf(
                    &t.name,
                    &shape,
                    t.ggml_type.name,
                    t.ggml_type.block_elems,
                    t.ggml_type.block_bytes,
                    bytes,
                )?;
                report.quantized += 1;
            }
        }
        report.tensors += 1;
    }
    report.output_bytes = w.finish()?;
    Ok(report)
}

/// The GGUF value type recorded for `key` in a converted file's attributes.
pub fn recorded_type(attributes: &Value, key: &str) -> Option<String> {
    attributes
        .get("gguf")?
        .get("types")?
        .get(key)?
        .as_str()
        .map(str::to_string)
}
