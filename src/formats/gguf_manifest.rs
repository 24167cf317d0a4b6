//! A parsed GGUF file as a manifest (its parts point at the tensor data in
//! the file) and the attributes a converted GGUF file carries: f32/f16/
//! bf16/f64/i8..i64 tensors become `dense`, quantized ones `gguf.<type>/1`
//! with their block bytes verbatim; the logical shape is the GGUF dims
//! reversed. Metadata becomes file attributes (plain values, as upstream
//! ztensor writes them) plus `gguf: {version, alignment, types, keys,
//! tensors}`, where `types` records every key's exact GGUF type and `keys`
//! / `tensors` the file order, so an export rebuilds the file bit for bit.

use crate::cbor::Value;
use crate::dtype::{DType, ElementType};
use crate::error::{Error, Result};
use crate::formats::gguf::{GgufFile, GgufValue};
use crate::formats::{object, part};
use crate::manifest::Manifest;

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
