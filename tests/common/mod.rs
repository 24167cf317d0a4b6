//! Helpers to build `.zt` images by hand (for hostile and vector tests).
#![allow(dead_code)]

pub mod models;
pub mod snapshot;
pub mod tmp;

use ztensor::cbor::{self, Value};
use ztensor::container::{Footer, MAGIC};

pub fn t(s: &str) -> Value {
    Value::text(s)
}

pub fn u(n: u64) -> Value {
    Value::Uint(n)
}

pub fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (t(k), v)).collect())
}

pub fn part(dtype: &str, offset: u64, len: u64, extra: Vec<(&str, Value)>) -> Value {
    let mut e = vec![
        ("dtype", t(dtype)),
        ("blob", Value::Array(vec![u(offset), u(len)])),
    ];
    e.extend(extra);
    map(e)
}

pub fn object(
    shape: &[u64],
    layout: &str,
    parts: Vec<(&str, Value)>,
    extra: Vec<(&str, Value)>,
) -> Value {
    let mut e = vec![
        ("shape", Value::Array(shape.iter().map(|&d| u(d)).collect())),
        ("layout", t(layout)),
        ("parts", map(parts)),
    ];
    e.extend(extra);
    map(e)
}

pub fn manifest(objects: Vec<(&str, Value)>) -> Value {
    map(vec![("objects", map(objects))])
}

/// Canonical CBOR of a value (maps sorted by the encoder).
pub fn enc(v: &Value) -> Vec<u8> {
    cbor::encode(v).expect("encodable")
}

/// Lays out blobs at their offsets, the manifest bytes at `manifest_at`
/// (or the next 4 KiB boundary), and a correct footer.
pub fn assemble_raw(
    blobs: &[(u64, &[u8])],
    manifest_bytes: &[u8],
    manifest_at: Option<u64>,
) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for (off, bytes) in blobs {
        if out.len() < *off as usize {
            out.resize(*off as usize, 0);
        }
        let end = *off as usize + bytes.len();
        if out.len() < end {
            out.resize(end, 0);
        }
        out[*off as usize..end].copy_from_slice(bytes);
    }
    let at = manifest_at.unwrap_or_else(|| (out.len() as u64).div_ceil(4096).max(1) * 4096);
    out.resize(at as usize, 0);
    out.extend_from_slice(manifest_bytes);
    let footer = Footer {
        manifest_offset: at,
        manifest_length: manifest_bytes.len() as u64,
        manifest_hash: xxhash_rust::xxh3::xxh3_64(manifest_bytes),
        version: 2,
        reserved: 0,
    };
    out.extend_from_slice(&footer.encode());
    out
}

pub fn assemble(blobs: &[(u64, &[u8])], manifest: &Value) -> Vec<u8> {
    assemble_raw(blobs, &enc(manifest), None)
}

/// A data shard image: magic, blobs, zero footer.
pub fn data_shard(blobs: &[(u64, &[u8])]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for (off, bytes) in blobs {
        out.resize(*off as usize, 0);
        out.extend_from_slice(bytes);
    }
    if out.len() < 4096 {
        out.resize(4096, 0);
    }
    let footer = Footer {
        version: 2,
        ..Footer::default()
    };
    out.extend_from_slice(&footer.encode());
    out
}

pub fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
