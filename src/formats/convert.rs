//! Conversion of other formats into `.zt`. GGUF: every tensor keeps its
//! name; f32/f16/bf16/f64/i8..i64 tensors become `dense`, quantized ones
//! `gguf.<type>/1` with their block bytes verbatim; the logical shape is the
//! GGUF dims reversed. Metadata becomes file attributes (plain values, as
//! upstream ztensor writes them) plus `gguf: {version, alignment, types,
//! keys, tensors}`, where `types` records every key's exact GGUF type and
//! `keys` / `tensors` the file order, so an export rebuilds the file bit
//! for bit. Parts are written straight from the
//! input in fixed-size chunks with `pread` (the header is read alone), so
//! memory stays flat whatever the model size.

use crate::cbor::Value;
use crate::dtype::{DType, ElementType};
use crate::error::{Error, Result};
use crate::fingerprint;
use crate::formats::gguf::{GgufFile, GgufValue};
use crate::formats::safetensors::SafetensorsFile;
use crate::formats::Format;
use crate::manifest::{Blob, Manifest, Object, Part};
use crate::reader::OpenOptions;
use crate::store::Backend;
use crate::writer::{PartOptions, WriteOptions, Writer};
use std::path::Path;

/// What a conversion wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvertReport {
    pub format: Option<Format>,
    pub tensors: usize,
    pub quantized: usize,
    pub metadata_keys: usize,
    pub input_bytes: u64,
    pub output_bytes: u64,
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
    let keys = g.metadata.iter().map(|(k, _)| Value::text(k.as_str()));
    let tensors = g.tensors.iter().map(|t| Value::text(t.name.as_str()));
    let gguf = Value::text_map([
        ("version", Value::Uint(g.version as u64)),
        ("alignment", Value::Uint(g.alignment)),
        ("types", Value::map(types)?),
        ("keys", Value::Array(keys.collect())),
        ("tensors", Value::Array(tensors.collect())),
    ])?;
    if g.metadata.iter().any(|(k, _)| k == "gguf") {
        return Err(Error::Unsupported(
            "a GGUF key named \"gguf\" collides with our conversion record".into(),
        ));
    }
    entries.push((Value::text("gguf"), gguf));
    Value::map(entries)
}

fn part(etype: ElementType, offset: u64, length: u64) -> Part {
    Part {
        etype,
        blob: Blob { offset, length },
        shard: None,
        encoding: None,
        decoded_length: None,
        digest: None,
    }
}

fn object(shape: Vec<u64>, layout: String, part: Part, attributes: Option<Value>) -> Object {
    Object {
        shape,
        layout,
        parts: [("data".to_string(), part)].into_iter().collect(),
        attributes,
    }
}

/// A GGUF file as a manifest: parts point at the tensor data in the file.
pub fn gguf_manifest(g: &GgufFile) -> Result<Manifest> {
    let mut m = Manifest {
        attributes: Some(gguf_attributes(g)?),
        ..Manifest::default()
    };
    for t in &g.tensors {
        let obj = match dense_dtype(t.ggml_type.name) {
            Some(d) => object(
                t.shape(),
                "dense".into(),
                part(ElementType::plain(d), t.offset, t.n_bytes),
                None,
            ),
            None => {
                let attrs = Value::text_map([
                    ("block_bytes", Value::Uint(t.ggml_type.block_bytes)),
                    ("elems_per_block", Value::Uint(t.ggml_type.block_elems)),
                ])?;
                object(
                    t.shape(),
                    format!("gguf.{}/1", t.ggml_type.name),
                    part(ElementType::plain(DType::U8), t.offset, t.n_bytes),
                    Some(attrs),
                )
            }
        };
        m.objects.insert(t.name.clone(), obj);
    }
    Ok(m)
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

/// Copy buffer for streaming tensor data from the input file.
const CHUNK: u64 = 8 << 20;

/// Converts any readable file (GGUF, safetensors, npy, npz, legacy ztensor
/// or `.zt`) into `.zt`. Every object keeps its name, shape, layout,
/// element types and attributes; part bytes are copied unchanged.
pub fn convert(input: &Path, output: &Path, options: WriteOptions) -> Result<ConvertReport> {
    convert_with_progress(input, output, options, &mut |_, _| {})
}

/// [`convert`], calling `progress(bytes_done, bytes_total)` after every
/// chunk. The input is read with `pread` in 8 MiB chunks (its header
/// alone is parsed), so memory stays flat whatever the model size.
pub fn convert_with_progress(
    input: &Path,
    output: &Path,
    options: WriteOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ConvertReport> {
    let reader = OpenOptions::default().backend(Backend::Pread).open(input)?;
    let format = reader.format();
    let mut w = Writer::create_with(output, options.clone())?;
    let mut report = ConvertReport {
        format: Some(format),
        input_bytes: reader.file_len(),
        ..ConvertReport::default()
    };
    if let Some(Value::Map(entries)) = reader.attributes() {
        report.metadata_keys = entries
            .iter()
            .filter(|(k, _)| !(format == Format::Gguf && k.as_str() == Some("gguf")))
            .filter(|(k, _)| k.as_str() != Some(fingerprint::FINGERPRINT_KEY))
            .count();
    }
    // Every part's BLAKE3, taken as the bytes stream through.
    let mut digests = Vec::new();
    // Copy in file order so the input is read front to back.
    let mut names: Vec<(&str, u64)> = reader
        .manifest()
        .objects
        .iter()
        .map(|(n, o)| {
            (
                n.as_str(),
                o.parts.values().map(|p| p.blob.offset).min().unwrap_or(0),
            )
        })
        .collect();
    names.sort_by_key(|&(n, off)| (off, n));
    let total: u64 = reader
        .manifest()
        .objects
        .values()
        .flat_map(|o| o.parts.values())
        .map(|p| p.decoded_size())
        .sum();
    let mut done = 0u64;
    let mut buf = vec![0u8; CHUNK.min(total.max(1)) as usize];
    for (name, _) in names {
        let src = reader.object(name)?;
        let mut parts = std::collections::BTreeMap::new();
        for (role, p) in &src.parts {
            let mut sink = w.stream_part(PartOptions {
                etype: p.etype.clone(),
                compression: options.compression,
                digest: options.digest,
            })?;
            let size = p.decoded_size();
            let mut at = 0u64;
            let mut hasher = blake3::Hasher::new();
            while at < size {
                let n = (size - at).min(buf.len() as u64) as usize;
                reader.part_range_into(name, role, at, &mut buf[..n])?;
                sink.write(&buf[..n])?;
                hasher.update_rayon(&buf[..n]);
                at += n as u64;
                done += n as u64;
                progress(done, total);
            }
            parts.insert(role.clone(), sink.finish()?);
            digests.push((
                name.to_string(),
                role.clone(),
                size,
                *hasher.finalize().as_bytes(),
            ));
        }
        if src.layout.starts_with("gguf.") {
            report.quantized += 1;
        }
        w.add_object(
            name,
            Object {
                shape: src.shape.clone(),
                layout: src.layout.clone(),
                parts,
                attributes: src.attributes.clone(),
            },
        )?;
        report.tensors += 1;
    }
    // The attributes, with the model's fingerprint cached (replacing a
    // stale one a `.zt` input may carry).
    // Free-form attributes that are not a map are copied as they are.
    match reader.attributes() {
        Some(other) if !matches!(other, Value::Map(_)) => w.set_attributes(other.clone())?,
        attrs => {
            let mut entries = match attrs {
                Some(Value::Map(e)) => e.clone(),
                _ => Vec::new(),
            };
            entries.retain(|(k, _)| k.as_str() != Some(fingerprint::FINGERPRINT_KEY));
            entries.push((
                Value::text(fingerprint::FINGERPRINT_KEY),
                Value::text(fingerprint::combine(digests)),
            ));
            w.set_attributes(Value::map(entries)?)?;
        }
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
