//! Conversion of other formats into `.zt`. GGUF: every tensor keeps its
//! name; f32/f16/bf16/f64/i8..i64 tensors become `dense`, quantized ones
//! `gguf.<type>/1` with their block bytes verbatim; the logical shape is the
//! GGUF dims reversed. Metadata becomes file attributes (plain values, as
//! upstream ztensor writes them) plus `gguf: {version, alignment, types}`,
//! where `types` records every key's exact GGUF type so an export can
//! rebuild the header bit for bit. Parts are written straight from the
//! input in fixed-size chunks with `pread` (the header is read alone), so
//! memory stays flat whatever the model size.

use crate::cbor::Value;
use crate::dtype::{DType, ElementType};
use crate::error::{Error, Result};
use crate::formats::gguf::{GgufFile, GgufValue};
use crate::formats::safetensors::SafetensorsFile;
use crate::manifest::{Object, Part};
use crate::store::read_exact_at;
use crate::writer::{PartOptions, WriteOptions, Writer};
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

/// Copy buffer for streaming tensor data from the input file.
const CHUNK: usize = 8 << 20;

/// Streams `[offset, offset + len)` of `file` into a new part with `pread`
/// in fixed chunks, so memory stays flat whatever the tensor size.
fn stream_copy(
    w: &mut Writer,
    file: &File,
    offset: u64,
    len: u64,
    opts: PartOptions,
    buf: &mut [u8],
) -> Result<Part> {
    let mut sink = w.stream_part(opts)?;
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        read_exact_at(file, &mut buf[..n], offset + done)?;
        sink.write(&buf[..n])?;
        done += n as u64;
    }
    sink.finish()
}

fn object(shape: Vec<u64>, layout: String, part: Part, attributes: Option<Value>) -> Object {
    Object {
        shape,
        layout,
        parts: [("data".to_string(), part)].into_iter().collect(),
        attributes,
    }
}

fn open_input(input: &Path) -> Result<File> {
    File::open(input).map_err(|e| Error::Io {
        context: format!("opening {}", input.display()),
        source: e,
    })
}

fn file_len(file: &File, input: &Path) -> Result<u64> {
    file.metadata().map(|m| m.len()).map_err(|e| Error::Io {
        context: format!("reading metadata of {}", input.display()),
        source: e,
    })
}

/// The first `n` bytes of the file (at most its length).
fn read_prefix(file: &File, n: u64, len: u64) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; n.min(len) as usize];
    read_exact_at(file, &mut buf, 0)?;
    Ok(buf)
}

/// Parses a GGUF header from a growing prefix of the file: 1 MiB first,
/// doubled while the header is cut short, so tensor data is never read.
fn parse_gguf_header(file: &File, len: u64) -> Result<GgufFile> {
    let mut n = 1u64 << 20;
    loop {
        let prefix = read_prefix(file, n, len)?;
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

/// Converts a safetensors file into `.zt`: names and dtypes kept,
/// `__metadata__` as file attributes.
pub fn safetensors_to_zt(
    input: &Path,
    output: &Path,
    options: WriteOptions,
) -> Result<ConvertReport> {
    let file = open_input(input)?;
    let len = file_len(&file, input)?;
    let first = read_prefix(&file, 8, len)?;
    let span = SafetensorsFile::header_span(&first).unwrap_or(8).min(len);
    let st = SafetensorsFile::parse_prefix(&read_prefix(&file, span, len)?, len)?;
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
        input_bytes: len,
        ..ConvertReport::default()
    };
    let mut buf = vec![0u8; CHUNK];
    for t in &st.tensors {
        let opts = PartOptions {
            etype: t.element_type()?,
            compression: options.compression,
            digest: options.digest,
        };
        let part = stream_copy(&mut w, &file, t.begin, t.end - t.begin, opts, &mut buf)?;
        w.add_object(&t.name, object(t.shape.clone(), "dense".into(), part, None))?;
        report.tensors += 1;
    }
    report.output_bytes = w.finish()?;
    Ok(report)
}

/// Converts a GGUF file into `.zt`.
pub fn gguf_to_zt(input: &Path, output: &Path, options: WriteOptions) -> Result<ConvertReport> {
    let file = open_input(input)?;
    let len = file_len(&file, input)?;
    let g = parse_gguf_header(&file, len)?;
    let mut w = Writer::create_with(output, options.clone())?;
    w.set_attributes(gguf_attributes(&g)?)?;
    let mut report = ConvertReport {
        metadata_keys: g.metadata.len(),
        input_bytes: len,
        ..ConvertReport::default()
    };
    let mut buf = vec![0u8; CHUNK];
    for t in &g.tensors {
        let dense = dense_dtype(t.ggml_type.name);
        let opts = PartOptions {
            etype: ElementType::plain(dense.unwrap_or(DType::U8)),
            compression: options.compression,
            digest: options.digest,
        };
        let part = stream_copy(&mut w, &file, t.offset, t.n_bytes, opts, &mut buf)?;
        let obj = match dense {
            Some(_) => object(t.shape(), "dense".into(), part, None),
            None => {
                report.quantized += 1;
                let attrs = Value::text_map([
                    ("block_bytes", Value::Uint(t.ggml_type.block_bytes)),
                    ("elems_per_block", Value::Uint(t.ggml_type.block_elems)),
                ])?;
                object(
                    t.shape(),
                    format!("gguf.{}/1", t.ggml_type.name),
                    part,
                    Some(attrs),
                )
            }
        };
        w.add_object(&t.name, obj)?;
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
