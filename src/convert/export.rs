//! Export to GGUF and safetensors.
//!
//! GGUF: a file converted from GGUF carries `gguf: {version, alignment,
//! types, keys, tensors}` in its attributes; with it the export writes the
//! keys and tensors in their original order with their exact value types,
//! so a converted-then-exported file equals the original byte for byte
//! (when the original was written with each tensor padded to the
//! alignment, as llama.cpp and the `gguf` package do). Without it, value
//! types are inferred (unsigned → u32 or u64, negative → i32 or i64, float
//! → f32 when exact else f64) and keys and tensors go in name order.
//!
//! safetensors: dense tensors in name order; text-valued file attributes
//! become `__metadata__` (other attribute values have no safetensors
//! form and are left out, and counted in the report).
//!
//! Every limit the matching reader (ours, and llama.cpp's or safetensors')
//! enforces is checked before the output file is created, so an export
//! either writes a file its readers open or fails and leaves nothing:
//! GGUF tensor names of at most 63 bytes, at most 4 dimensions, element
//! counts within `i64`, rows whole blocks of a quantized type, strings
//! within 1 GiB, `general.alignment` a power-of-two `u32` (the data is
//! placed by it, or by 32 when it is absent); safetensors names other than
//! `__metadata__`, whole-byte tensors, a header within 100,000,000 bytes.
//!
//! Both write to a temp file and rename it into place.

use crate::cbor::Value;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::formats::gguf::{self, GgmlType};
use crate::formats::safetensors;
use crate::reader::Reader;
use crate::writer::AtomicFile;
use std::path::Path;

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    pub tensors: usize,
    pub metadata_keys: usize,
    /// Attributes that have no form in the target format.
    pub skipped_attributes: usize,
    /// Bytes written, over all files.
    pub bytes: u64,
    /// The files written (one, or every shard of a split GGUF set).
    pub files: Vec<std::path::PathBuf>,
}

const CHUNK: u64 = 8 << 20;

/// Counts bytes while writing them to the temp file.
struct Out {
    file: AtomicFile,
    pos: u64,
}

impl Out {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.file.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self, align: u64) -> Result<()> {
        let n = (align - self.pos % align) % align;
        self.put(&vec![0u8; n as usize])
    }

    /// Streams every byte of part `name/role`.
    fn copy_part(&mut self, r: &Reader, name: &str, role: &str, size: u64) -> Result<()> {
        let mut buf = vec![0u8; size.min(CHUNK) as usize];
        let mut at = 0u64;
        while at < size {
            let n = (size - at).min(CHUNK) as usize;
            r.part_range_into(name, role, at, &mut buf[..n])?;
            self.put(&buf[..n])?;
            at += n as u64;
        }
        Ok(())
    }
}

/// How to export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Write a split GGUF set (see [`crate::convert::export_split`]) whose
    /// files stay within this many bytes; GGUF only.
    pub max_shard_size: Option<u64>,
}

/// Writes the target chosen by the output's extension (`.gguf` or
/// `.safetensors`).
pub fn export(input: &Path, output: &Path) -> Result<ExportReport> {
    export_with(input, output, &ExportOptions::default())
}

/// [`export`] with options.
pub fn export_with(input: &Path, output: &Path, options: &ExportOptions) -> Result<ExportReport> {
    export_reader(&Reader::open(input)?, output, options)
}

/// [`export_with`] from an open reader (e.g. a remote object).
pub fn export_reader(r: &Reader, output: &Path, options: &ExportOptions) -> Result<ExportReport> {
    match (
        output.extension().and_then(|e| e.to_str()),
        options.max_shard_size,
    ) {
        (Some("gguf"), None) => to_gguf(r, output),
        (Some("gguf"), Some(max)) => super::export_split::to_split_gguf(r, output, max),
        (Some("safetensors"), Some(_)) => Err(Error::usage(format!(
            "{}: a maximum shard size is for split GGUF exports; safetensors sets are not written",
            output.display()
        ))),
        (Some("safetensors"), None) => to_safetensors(r, output),
        _ => Err(Error::usage(format!(
            "{}: export writes .gguf or .safetensors (chosen by the extension)",
            output.display()
        ))),
    }
}

fn attr_entries(r: &Reader) -> &[(Value, Value)] {
    match r.attributes() {
        Some(Value::Map(entries)) => entries,
        _ => &[],
    }
}

// ---------------------------------------------------------------- GGUF

/// Appends a GGUF string; `what` names it in the error for one longer than
/// the reader's 1 GiB limit.
fn gguf_string(out: &mut Vec<u8>, s: &str, what: &str) -> Result<()> {
    check_string_len(s.len() as u64, what)?;
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn check_string_len(len: u64, what: &str) -> Result<()> {
    if len > gguf::MAX_STRING {
        return Err(Error::Unsupported(format!(
            "{what}: a {len}-byte string exceeds GGUF's {}-byte limit",
            gguf::MAX_STRING
        )));
    }
    Ok(())
}

/// The GGUF tensor rules the readers check, for object `name`: returns the
/// GGUF dimensions (innermost first).
fn gguf_dims(name: &str, shape: &[u64], t: GgmlType) -> Result<Vec<u64>> {
    if name.len() > gguf::MAX_TENSOR_NAME {
        return Err(Error::Unsupported(format!(
            "{name:?}: a GGUF tensor name holds at most {} bytes, this one has {}",
            gguf::MAX_TENSOR_NAME,
            name.len()
        )));
    }
    if shape.len() > gguf::MAX_DIMS as usize {
        return Err(Error::Unsupported(format!(
            "{name}: GGUF holds at most {} dimensions, not {}",
            gguf::MAX_DIMS,
            shape.len()
        )));
    }
    let dims: Vec<u64> = if shape.is_empty() {
        vec![1]
    } else {
        shape.iter().rev().copied().collect()
    };
    let elements = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    if elements.is_none_or(|n| n > i64::MAX as u64) {
        return Err(Error::Unsupported(format!(
            "{name}: GGUF element counts fit in i64; shape {shape:?} does not"
        )));
    }
    if !dims[0].is_multiple_of(t.block_elems) {
        return Err(Error::Unsupported(format!(
            "{name}: GGUF rows must be whole {}-element {} blocks; the innermost dimension is {}",
            t.block_elems, t.name, dims[0]
        )));
    }
    Ok(dims)
}

/// The GGUF type name to use for a value with no recorded type.
fn infer_type(v: &Value) -> Result<String> {
    Ok(match v {
        Value::Uint(x) if *x <= u32::MAX as u64 => "u32".into(),
        Value::Uint(_) => "u64".into(),
        Value::Nint(x) if *x <= i32::MAX as u64 => "i32".into(),
        Value::Nint(_) => "i64".into(),
        Value::Float(x) if (*x as f32) as f64 == *x || x.is_nan() => "f32".into(),
        Value::Float(_) => "f64".into(),
        Value::Bool(_) => "bool".into(),
        Value::Text(_) => "string".into(),
        Value::Array(items) => {
            let elem = match items.first() {
                None => "u32".to_string(),
                Some(first) => {
                    let mut t = infer_type(first)?;
                    for it in items {
                        let u = infer_type(it)?;
                        if u != t {
                            // Widen mixed integer arrays; anything else is an error.
                            t = match (t.as_str(), u.as_str()) {
                                ("u32" | "u64" | "i32", "u32" | "u64" | "i32" | "i64") => {
                                    "i64".into()
                                }
                                ("i64", "u32" | "u64" | "i32") => "i64".into(),
                                ("f32" | "f64", "f32" | "f64") => "f64".into(),
                                _ => {
                                    return Err(Error::Unsupported(format!(
                                        "array mixes {t} and {u} values"
                                    )))
                                }
                            };
                        }
                    }
                    t
                }
            };
            if elem.starts_with("array") {
                return Err(Error::Unsupported("nested arrays have no GGUF form".into()));
            }
            format!("array[{elem}]")
        }
        other => {
            return Err(Error::Unsupported(format!(
                "a {} value has no GGUF form",
                other.kind()
            )))
        }
    })
}

fn type_id(name: &str) -> Option<u32> {
    Some(match name {
        "u8" => 0,
        "i8" => 1,
        "u16" => 2,
        "i16" => 3,
        "u32" => 4,
        "i32" => 5,
        "f32" => 6,
        "bool" => 7,
        "string" => 8,
        "u64" => 10,
        "i64" => 11,
        "f64" => 12,
        _ => return None,
    })
}

/// Encodes one scalar of GGUF type `t`.
fn gguf_scalar(out: &mut Vec<u8>, t: &str, v: &Value, key: &str) -> Result<()> {
    let bad = || Error::Unsupported(format!("{key}: value {v} does not fit GGUF type {t}"));
    let int = v.as_int();
    macro_rules! put_int {
        ($ty:ty) => {{
            let x = int.and_then(|i| <$ty>::try_from(i).ok()).ok_or_else(bad)?;
            out.extend_from_slice(&x.to_le_bytes());
        }};
    }
    match t {
        "u8" => put_int!(u8),
        "i8" => put_int!(i8),
        "u16" => put_int!(u16),
        "i16" => put_int!(i16),
        "u32" => put_int!(u32),
        "i32" => put_int!(i32),
        "u64" => put_int!(u64),
        "i64" => put_int!(i64),
        "f32" | "f64" => {
            let x = match v {
                Value::Float(x) => *x,
                _ => int.map(|i| i as f64).ok_or_else(bad)?,
            };
            if t == "f32" {
                out.extend_from_slice(&(x as f32).to_le_bytes());
            } else {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        "bool" => match v {
            Value::Bool(b) => out.push(*b as u8),
            _ => return Err(bad()),
        },
        "string" => gguf_string(out, v.as_str().ok_or_else(bad)?, key)?,
        _ => return Err(bad()),
    }
    Ok(())
}

/// Encodes a key's type id and value.
fn gguf_value(out: &mut Vec<u8>, t: &str, v: &Value, key: &str) -> Result<()> {
    if let Some(elem) = t.strip_prefix("array[").and_then(|s| s.strip_suffix(']')) {
        let items = match v {
            Value::Array(items) => items,
            _ => {
                return Err(Error::Unsupported(format!(
                    "{key}: recorded as {t}, value is not an array"
                )))
            }
        };
        let eid = type_id(elem)
            .ok_or_else(|| Error::Unsupported(format!("{key}: array element type {elem}")))?;
        out.extend_from_slice(&9u32.to_le_bytes());
        out.extend_from_slice(&eid.to_le_bytes());
        out.extend_from_slice(&(items.len() as u64).to_le_bytes());
        for it in items {
            if let Some(text) = it.as_str() {
                check_string_len(text.len() as u64, key)?;
            }
            gguf_scalar(out, elem, it, key)?;
        }
        return Ok(());
    }
    let id = type_id(t).ok_or_else(|| Error::Unsupported(format!("{key}: GGUF type {t:?}")))?;
    out.extend_from_slice(&id.to_le_bytes());
    gguf_scalar(out, t, v, key)
}

fn names_in<'a>(record: Option<&'a Value>, key: &str) -> Vec<&'a str> {
    match record.and_then(|g| g.get(key)) {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Recorded order first, then the rest in name order.
fn ordered<'a>(recorded: Vec<&'a str>, all: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut rest: Vec<&str> = all.filter(|n| !recorded.contains(n)).collect();
    rest.sort_unstable();
    let mut seen = std::collections::HashSet::new();
    recorded
        .into_iter()
        .filter(|n| seen.insert(*n))
        .chain(rest)
        .collect()
}

/// The GGUF type of an object.
fn ggml_type(r: &Reader, name: &str) -> Result<GgmlType> {
    let o = r.object(name)?;
    let t = if o.layout == "dense" {
        let p = o
            .parts
            .get("data")
            .ok_or_else(|| Error::usage(format!("{name}: no data part")))?;
        match (&p.etype.logical, p.etype.dtype) {
            (
                None,
                DType::F32
                | DType::F16
                | DType::BF16
                | DType::F64
                | DType::I8
                | DType::I16
                | DType::I32
                | DType::I64,
            ) => GgmlType::from_name(p.etype.dtype.as_str()),
            _ => None,
        }
        .ok_or_else(|| {
            Error::Unsupported(format!("{name}: element type {} has no GGUF type", p.etype))
        })?
    } else {
        let t = o
            .layout
            .strip_prefix("gguf.")
            .and_then(|s| s.strip_suffix("/1"))
            .and_then(GgmlType::from_name);
        t.ok_or_else(|| {
            Error::Unsupported(format!("{name}: layout {} has no GGUF form", o.layout))
        })?
    };
    Ok(t)
}

/// One tensor of a GGUF export: its info record without the offset, and
/// its data size.
pub(crate) struct TensorInfo {
    pub name: String,
    pub info: Vec<u8>,
    pub size: u64,
}

/// Everything a GGUF export writes, checked against the readers' limits
/// before any file is created.
pub(crate) struct GgufPlan {
    pub version: u32,
    pub alignment: u64,
    /// The encoded metadata key/value pairs, in order.
    pub kv: Vec<u8>,
    pub n_keys: usize,
    pub tensors: Vec<TensorInfo>,
}

impl TensorInfo {
    /// Bytes this tensor adds to a file: its info record with the offset,
    /// and its data padded to the alignment.
    pub fn cost(&self, alignment: u64) -> u64 {
        (self.info.len() as u64 + 8)
            .saturating_add(crate::container::align_up(self.size, alignment).unwrap_or(u64::MAX))
    }
}

/// Plans a GGUF export of `r`.
pub(crate) fn plan_gguf(r: &Reader) -> Result<GgufPlan> {
    let record = r.attributes().and_then(|a| a.get("gguf"));
    let types = record.and_then(|g| g.get("types"));
    let version = record
        .and_then(|g| g.get("version"))
        .and_then(Value::as_u64)
        .unwrap_or(3);
    if version != 2 && version != 3 {
        return Err(Error::Unsupported(format!("GGUF version {version}")));
    }
    let entries = attr_entries(r);
    let value_of = |k: &str| {
        entries
            .iter()
            .find(|(key, _)| key.as_str() == Some(k))
            .map(|(_, v)| v)
    };
    let keys = ordered(
        names_in(record, "keys"),
        entries
            .iter()
            .filter_map(|(k, _)| k.as_str())
            .filter(|k| *k != "gguf" && *k != crate::fingerprint::FINGERPRINT_KEY),
    );
    let type_of = |k: &str, v: &Value| match types.and_then(|t| t.get(k)).and_then(Value::as_str) {
        Some(t) => Ok(t.to_string()),
        None => infer_type(v).map_err(|e| match e {
            Error::Unsupported(m) => Error::Unsupported(format!("{k}: {m}")),
            other => other,
        }),
    };
    // Readers place the data by `general.alignment` (a power-of-two u32),
    // or by 32 when the key is absent: the export pads by the same value.
    let alignment = match value_of("general.alignment") {
        None => gguf::DEFAULT_ALIGNMENT,
        Some(v) => match (v.as_u64(), type_of("general.alignment", v)?.as_str()) {
            (Some(a), "u32") if a.is_power_of_two() && a <= u32::MAX as u64 => a,
            (_, t) => {
                return Err(Error::Unsupported(format!(
                    "general.alignment must be a non-zero power-of-two u32, not {v} as {t}"
                )))
            }
        },
    };
    let tensors = ordered(names_in(record, "tensors"), r.names());

    let mut kv = Vec::new();
    for k in &keys {
        let v = value_of(k).ok_or_else(|| Error::usage(format!("attribute {k:?} is missing")))?;
        let t = type_of(k, v)?;
        gguf_string(&mut kv, k, "metadata key")?;
        gguf_value(&mut kv, &t, v, k)?;
    }
    let mut infos = Vec::with_capacity(tensors.len());
    let mut total = 0u64;
    for name in &tensors {
        let o = r.object(name)?;
        let t = ggml_type(r, name)?;
        let dims = gguf_dims(name, &o.shape, t)?;
        let size = r.dense_len(name).or_else(|_| {
            o.parts
                .get("data")
                .map(|p| p.decoded_size())
                .ok_or_else(|| Error::usage(format!("{name}: no data part")))
        })?;
        let mut info = Vec::new();
        gguf_string(&mut info, name, "tensor name")?;
        info.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in &dims {
            info.extend_from_slice(&d.to_le_bytes());
        }
        info.extend_from_slice(&t.id.to_le_bytes());
        total = total
            .checked_add(size)
            .and_then(|o| crate::container::align_up(o, alignment))
            .ok_or_else(|| Error::usage("tensor data too large"))?;
        infos.push(TensorInfo {
            name: name.to_string(),
            info,
            size,
        });
    }
    Ok(GgufPlan {
        version: version as u32,
        alignment,
        kv,
        n_keys: keys.len(),
        tensors: infos,
    })
}

/// Writes one GGUF file of `tensors` after the metadata `kv` (`n_keys`
/// pairs) to a temp file and renames it into place. Returns its size.
pub(crate) fn write_gguf_file(
    r: &Reader,
    output: &Path,
    plan: &GgufPlan,
    kv: &[u8],
    n_keys: usize,
    tensors: &[TensorInfo],
) -> Result<u64> {
    let mut head = Vec::new();
    head.extend_from_slice(b"GGUF");
    head.extend_from_slice(&plan.version.to_le_bytes());
    head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    head.extend_from_slice(&(n_keys as u64).to_le_bytes());
    head.extend_from_slice(kv);
    let mut offset = 0u64;
    for t in tensors {
        head.extend_from_slice(&t.info);
        head.extend_from_slice(&offset.to_le_bytes());
        offset = offset
            .checked_add(t.size)
            .and_then(|o| crate::container::align_up(o, plan.alignment))
            .ok_or_else(|| Error::usage("tensor data too large"))?;
    }
    let mut out = Out {
        file: AtomicFile::create(output)?,
        pos: 0,
    };
    out.put(&head)?;
    out.pad(plan.alignment)?;
    for t in tensors {
        out.copy_part(r, &t.name, "data", t.size)?;
        out.pad(plan.alignment)?;
    }
    let bytes = out.pos;
    out.file.commit()?;
    Ok(bytes)
}

/// Writes a GGUF file from a reader.
pub fn to_gguf(r: &Reader, output: &Path) -> Result<ExportReport> {
    let plan = plan_gguf(r)?;
    let bytes = write_gguf_file(r, output, &plan, &plan.kv, plan.n_keys, &plan.tensors)?;
    Ok(ExportReport {
        tensors: plan.tensors.len(),
        metadata_keys: plan.n_keys,
        skipped_attributes: 0,
        bytes,
        files: vec![output.to_path_buf()],
    })
}

// --------------------------------------------------------- safetensors

/// Writes a safetensors file of every dense tensor (others are an error).
pub fn to_safetensors(r: &Reader, output: &Path) -> Result<ExportReport> {
    let mut header = serde_json::Map::new();
    let mut metadata = serde_json::Map::new();
    let mut skipped = 0usize;
    for (k, v) in attr_entries(r) {
        match (k.as_str(), v.as_str()) {
            (Some(k), Some(v)) => {
                metadata.insert(k.to_string(), v.into());
            }
            _ => skipped += 1,
        }
    }
    let keys = metadata.len();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), metadata.into());
    }
    let mut names: Vec<&str> = r.names().collect();
    names.sort_unstable();
    let mut offset = 0u64;
    for name in &names {
        let o = r.object(name)?;
        let p = o
            .parts
            .get("data")
            .filter(|_| o.layout == "dense")
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "{name}: layout {} has no safetensors form",
                    o.layout
                ))
            })?;
        let dtype = safetensors::dtype_name(&p.etype).ok_or_else(|| {
            Error::Unsupported(format!(
                "{name}: element type {} has no safetensors dtype",
                p.etype
            ))
        })?;
        if *name == "__metadata__" {
            return Err(Error::Unsupported(
                "a tensor named \"__metadata__\" has no safetensors form (the name holds the file's metadata)"
                    .into(),
            ));
        }
        let size = p.decoded_size();
        let bits = o
            .num_elements()
            .checked_mul(safetensors::bits(dtype).unwrap_or(8));
        if bits != size.checked_mul(8) {
            return Err(Error::Unsupported(format!(
                "{name}: safetensors stores whole bytes; {} {dtype} elements are not",
                o.num_elements()
            )));
        }
        let end = offset
            .checked_add(size)
            .ok_or_else(|| Error::usage("tensor data too large"))?;
        let entry = serde_json::json!({
            "dtype": dtype,
            "shape": o.shape,
            "data_offsets": [offset, end],
        });
        header.insert(name.to_string(), entry);
        offset = end;
    }
    let mut json = serde_json::to_vec(&serde_json::Value::Object(header))
        .map_err(|e| Error::usage(format!("encoding the header: {e}")))?;
    // Pad with spaces so the data starts 8-byte aligned.
    json.resize(json.len().div_ceil(8) * 8, b' ');
    if json.len() as u64 > safetensors::MAX_HEADER {
        return Err(Error::Unsupported(format!(
            "the safetensors header would be {} bytes; readers accept at most {}",
            json.len(),
            safetensors::MAX_HEADER
        )));
    }
    let mut out = Out {
        file: AtomicFile::create(output)?,
        pos: 0,
    };
    out.put(&(json.len() as u64).to_le_bytes())?;
    out.put(&json)?;
    for name in &names {
        let size = r.object(name)?.parts["data"].decoded_size();
        out.copy_part(r, name, "data", size)?;
    }
    let bytes = out.pos;
    out.file.commit()?;
    Ok(ExportReport {
        tensors: names.len(),
        metadata_keys: keys,
        skipped_attributes: skipped,
        bytes,
        files: vec![output.to_path_buf()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_longer_than_the_gguf_reader_takes_are_refused() {
        assert!(check_string_len(gguf::MAX_STRING, "k").is_ok());
        assert!(matches!(
            check_string_len(gguf::MAX_STRING + 1, "k"),
            Err(Error::Unsupported(_))
        ));
    }
}
