//! Files written by ztensor 1.x (`ZTEN1000`) and 0.1 (`ZTEN0001`).
//!
//! 1.x: magic, 64-byte-aligned component data, a CBOR manifest
//! `{version, attributes?, objects: {name: {shape, format, attributes?,
//! components: {role: {dtype, type?, offset, length, uncompressed_length?,
//! encoding?, digest?}}}}}`, its u64 LE size, magic again.
//! 0.1: magic, data, a CBOR array of `{name, offset, size, dtype, layout,
//! shape, encoding, data_endianness?, checksum?, ...}`, its u64 LE size.
//!
//! Neither manifest is deterministic CBOR (0.1 even uses indefinite-length
//! maps), so they are read with a tolerant decoder that still bounds every
//! count and refuses duplicate keys. Checksums (`crc32c:0x…`, `sha256:…`)
//! cover the stored bytes: for raw parts they become part digests checked
//! by `verify`; zstd parts are decoded at open into an image (bounded by
//! `max_decoded_bytes`) and their checksum is checked then.

use super::Foreign;
use crate::cbor::{Value, MAX_DEPTH};
use crate::container::{align_up, MAX_MANIFEST_LEN};
use crate::digest::DigestString;
use crate::dtype::{DType, ElementType, Logical, LogicalType};
use crate::error::{Error, Result};
use crate::formats::Format;
use crate::manifest::{Blob, Manifest, Object, Part};
use crate::store::Store;
use std::collections::BTreeMap;

pub const MAGIC_V1: &[u8; 8] = b"ZTEN1000";
pub const MAGIC_V01: &[u8; 8] = b"ZTEN0001";

fn err(rule: &'static str, offset: Option<u64>, detail: impl Into<String>) -> Error {
    Error::Foreign {
        format: "ztensor-legacy",
        rule,
        offset,
        detail: detail.into(),
    }
}

/// A tolerant CBOR decoder: definite and indefinite lengths, any key
/// order, non-shortest heads; no tags, no duplicate keys, depth ≤ 32,
/// counts bounded by the bytes left.
struct Tolerant<'a> {
    b: &'a [u8],
    pos: usize,
    base: u64,
}

impl<'a> Tolerant<'a> {
    fn fail(&self, detail: impl Into<String>) -> Error {
        err("legacy-cbor", Some(self.base + self.pos as u64), detail)
    }

    fn byte(&mut self) -> Result<u8> {
        let b = *self
            .b
            .get(self.pos)
            .ok_or_else(|| self.fail("manifest ends early"))?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let left = (self.b.len() - self.pos) as u64;
        if n > left {
            return Err(self.fail(format!("item of {n} bytes, {left} left")));
        }
        let s = &self.b[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    /// The argument of a head; `None` for indefinite length.
    fn argument(&mut self, info: u8) -> Result<Option<u64>> {
        let n = match info {
            0..=23 => return Ok(Some(info as u64)),
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            31 => return Ok(None),
            _ => return Err(self.fail(format!("reserved additional info {info}"))),
        };
        let bytes = self.take(n)?;
        Ok(Some(bytes.iter().fold(0u64, |a, &b| (a << 8) | b as u64)))
    }

    fn count(&mut self, n: u64) -> Result<usize> {
        if n > (self.b.len() - self.pos) as u64 {
            return Err(self.fail(format!("{n} items cannot fit in the bytes left")));
        }
        Ok(n as usize)
    }

    fn at_break(&mut self) -> Result<bool> {
        if self.b.get(self.pos) == Some(&0xff) {
            self.pos += 1;
            return Ok(true);
        }
        Ok(false)
    }

    fn string(&mut self, major: u8, arg: Option<u64>) -> Result<Vec<u8>> {
        match arg {
            Some(n) => Ok(self.take(n)?.to_vec()),
            None => {
                let mut out = Vec::new();
                while !self.at_break()? {
                    let h = self.byte()?;
                    if h >> 5 != major {
                        return Err(self.fail("indefinite string chunk of another type"));
                    }
                    let n = self
                        .argument(h & 31)?
                        .ok_or_else(|| self.fail("nested indefinite string"))?;
                    out.extend_from_slice(self.take(n)?);
                }
                Ok(out)
            }
        }
    }

    fn value(&mut self, depth: u32) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(self.fail(format!("nesting deeper than {MAX_DEPTH}")));
        }
        let h = self.byte()?;
        let (major, info) = (h >> 5, h & 31);
        if major == 7 {
            return self.simple(info);
        }
        let arg = self.argument(info)?;
        match major {
            0 => arg
                .map(Value::Uint)
                .ok_or_else(|| self.fail("indefinite integer")),
            1 => arg
                .map(Value::Nint)
                .ok_or_else(|| self.fail("indefinite integer")),
            2 => Ok(Value::Bytes(self.string(2, arg)?)),
            3 => String::from_utf8(self.string(3, arg)?)
                .map(Value::Text)
                .map_err(|_| self.fail("text is not UTF-8")),
            4 => {
                let mut items = Vec::new();
                match arg {
                    Some(n) => {
                        for _ in 0..self.count(n)? {
                            items.push(self.value(depth + 1)?);
                        }
                    }
                    None => {
                        while !self.at_break()? {
                            items.push(self.value(depth + 1)?);
                        }
                    }
                }
                Ok(Value::Array(items))
            }
            5 => {
                let mut entries = Vec::new();
                let mut entry = |s: &mut Self| -> Result<()> {
                    let k = s.value(depth + 1)?;
                    let v = s.value(depth + 1)?;
                    entries.push((k, v));
                    Ok(())
                };
                match arg {
                    Some(n) => {
                        for _ in 0..self.count(n)? {
                            entry(self)?;
                        }
                    }
                    None => {
                        while !self.at_break()? {
                            entry(self)?;
                        }
                    }
                }
                Value::map(entries).map_err(|e| self.fail(e.to_string()))
            }
            _ => Err(self.fail("CBOR tags are not allowed")),
        }
    }

    fn simple(&mut self, info: u8) -> Result<Value> {
        let float = |bits: u64, n: u64| -> f64 {
            match n {
                2 => half::f16::from_bits(bits as u16).to_f64(),
                4 => f32::from_bits(bits as u32) as f64,
                _ => f64::from_bits(bits),
            }
        };
        match info {
            20 => Ok(Value::Bool(false)),
            21 => Ok(Value::Bool(true)),
            22 | 23 => Ok(Value::Null),
            25..=27 => {
                let n = 1u64 << (info - 24);
                let bits = self.take(n)?.iter().fold(0u64, |a, &b| (a << 8) | b as u64);
                Ok(Value::Float(float(bits, n)))
            }
            31 => Err(self.fail("break outside an indefinite item")),
            _ => Err(self.fail(format!("simple value {info} is not allowed"))),
        }
    }
}

fn decode(bytes: &[u8], base: u64) -> Result<Value> {
    let mut d = Tolerant {
        b: bytes,
        pos: 0,
        base,
    };
    let v = d.value(0)?;
    if d.pos != bytes.len() {
        return Err(d.fail("bytes after the manifest"));
    }
    Ok(v)
}

fn schema(detail: impl Into<String>) -> Error {
    err("legacy-schema", None, detail)
}

fn field<'v>(m: &'v Value, key: &str, ctx: &str) -> Result<&'v Value> {
    m.get(key)
        .ok_or_else(|| schema(format!("{ctx}: missing field {key:?}")))
}

fn text<'v>(m: &'v Value, key: &str, ctx: &str) -> Result<&'v str> {
    field(m, key, ctx)?
        .as_str()
        .ok_or_else(|| schema(format!("{ctx}: {key:?} must be text")))
}

fn uint(m: &Value, key: &str, ctx: &str) -> Result<u64> {
    field(m, key, ctx)?
        .as_u64()
        .ok_or_else(|| schema(format!("{ctx}: {key:?} must be an unsigned integer")))
}

fn shape(m: &Value, ctx: &str) -> Result<Vec<u64>> {
    match field(m, "shape", ctx)? {
        Value::Array(dims) => dims
            .iter()
            .map(|d| {
                d.as_u64().ok_or_else(|| {
                    schema(format!("{ctx}: shape entries must be unsigned integers"))
                })
            })
            .collect(),
        _ => Err(schema(format!("{ctx}: shape must be an array"))),
    }
}

/// A legacy dtype name (`f32` in 1.x, `float32` in 0.1).
fn element_type(name: &str, logical: Option<&str>, ctx: &str) -> Result<ElementType> {
    let d = match name {
        "f64" | "float64" => DType::F64,
        "f32" | "float32" => DType::F32,
        "f16" | "float16" => DType::F16,
        "bf16" | "bfloat16" => DType::BF16,
        "i64" | "int64" => DType::I64,
        "i32" | "int32" => DType::I32,
        "i16" | "int16" => DType::I16,
        "i8" | "int8" => DType::I8,
        "u64" | "uint64" => DType::U64,
        "u32" | "uint32" => DType::U32,
        "u16" | "uint16" => DType::U16,
        "u8" | "uint8" => DType::U8,
        "bool" => return Ok(ElementType::logical(LogicalType::Bool)),
        other => return Err(schema(format!("{ctx}: unknown dtype {other:?}"))),
    };
    match logical {
        None => Ok(ElementType::plain(d)),
        Some(t) => match t.parse::<LogicalType>() {
            Ok(lt) if lt.storage() == d => Ok(ElementType::logical(lt)),
            Ok(_) => Err(schema(format!(
                "{ctx}: logical type {t:?} does not fit dtype {name}"
            ))),
            Err(_) => Ok(ElementType {
                dtype: d,
                logical: Some(Logical::Unknown(t.to_string())),
            }),
        },
    }
}

/// A legacy checksum (`crc32c:0x1234ABCD`, `sha256:<hex>`) in our form.
fn checksum(s: &str, ctx: &str) -> Result<DigestString> {
    let ours = match s.split_once(':') {
        Some(("crc32c", hex)) => format!(
            "crc32c:{}",
            hex.trim_start_matches("0x").to_ascii_lowercase()
        ),
        Some(("sha256", hex)) => format!("sha256:{}", hex.to_ascii_lowercase()),
        _ => return Err(schema(format!("{ctx}: unknown checksum {s:?}"))),
    };
    DigestString::parse(&ours).map_err(|e| schema(format!("{ctx}: {e}")))
}

/// One stored component before it is placed.
struct Stored {
    object: String,
    role: String,
    etype: ElementType,
    offset: u64,
    length: u64,
    /// Decoded length for zstd components.
    zstd: Option<u64>,
    checksum: Option<DigestString>,
}

struct Parsed {
    attributes: Option<Value>,
    objects: BTreeMap<String, (Vec<u64>, String, Option<Value>)>,
    stored: Vec<Stored>,
}

fn encoding_is_zstd(v: Option<&Value>, ctx: &str) -> Result<bool> {
    match v.map(|e| e.as_str()) {
        None | Some(Some("raw")) => Ok(false),
        Some(Some("zstd")) => Ok(true),
        _ => Err(schema(format!(
            "{ctx}: encoding must be \"raw\" or \"zstd\""
        ))),
    }
}

fn parse_v1(manifest: &Value) -> Result<Parsed> {
    let objects = match field(manifest, "objects", "manifest")? {
        Value::Map(o) => o,
        _ => return Err(schema("manifest: objects must be a map")),
    };
    let mut p = Parsed {
        attributes: manifest
            .get("attributes")
            .filter(|a| **a != Value::Null)
            .cloned(),
        objects: BTreeMap::new(),
        stored: Vec::new(),
    };
    for (name, obj) in objects {
        let name = name
            .as_str()
            .ok_or_else(|| schema("object names must be text"))?;
        let ctx = format!("object {name:?}");
        let layout = match text(obj, "format", &ctx)? {
            "dense" => "dense".to_string(),
            "sparse_csr" => "zt.sparse_csr/1".to_string(),
            "sparse_coo" => "zt.sparse_coo/1".to_string(),
            other => other.to_string(),
        };
        let comps = match field(obj, "components", &ctx)? {
            Value::Map(c) => c,
            _ => return Err(schema(format!("{ctx}: components must be a map"))),
        };
        for (role, c) in comps {
            let role = role
                .as_str()
                .ok_or_else(|| schema(format!("{ctx}: component names must be text")))?;
            let cctx = format!("{name}/{role}");
            let logical = c.get("type").and_then(Value::as_str);
            let zstd = encoding_is_zstd(c.get("encoding"), &cctx)?;
            p.stored.push(Stored {
                object: name.to_string(),
                role: role.to_string(),
                etype: element_type(text(c, "dtype", &cctx)?, logical, &cctx)?,
                offset: uint(c, "offset", &cctx)?,
                length: uint(c, "length", &cctx)?,
                zstd: if zstd {
                    Some(uint(c, "uncompressed_length", &cctx)?)
                } else {
                    None
                },
                checksum: c
                    .get("digest")
                    .and_then(Value::as_str)
                    .map(|s| checksum(s, &cctx))
                    .transpose()?,
            });
        }
        let attrs = obj
            .get("attributes")
            .filter(|a| **a != Value::Null)
            .cloned();
        p.objects
            .insert(name.to_string(), (shape(obj, &ctx)?, layout, attrs));
    }
    Ok(p)
}

const V01_FIELDS: [&str; 9] = [
    "name",
    "offset",
    "size",
    "dtype",
    "layout",
    "shape",
    "encoding",
    "data_endianness",
    "checksum",
];

fn parse_v01(manifest: &Value) -> Result<Parsed> {
    let entries = match manifest {
        Value::Array(e) => e,
        _ => return Err(schema("0.1 manifest must be an array of tensor entries")),
    };
    let mut p = Parsed {
        attributes: None,
        objects: BTreeMap::new(),
        stored: Vec::new(),
    };
    for (i, e) in entries.iter().enumerate() {
        let name = text(e, "name", &format!("entry {i}"))?;
        let ctx = format!("tensor {name:?}");
        if text(e, "layout", &ctx)? != "dense" {
            return Err(Error::Unsupported(format!(
                "{ctx}: 0.1 sparse layouts are not read"
            )));
        }
        if e.get("data_endianness")
            .and_then(Value::as_str)
            .is_some_and(|s| s != "little")
        {
            return Err(err(
                "legacy-endianness",
                None,
                format!("{ctx}: big-endian data is not supported; rewrite it little-endian"),
            ));
        }
        let etype = element_type(text(e, "dtype", &ctx)?, None, &ctx)?;
        let shape = shape(e, &ctx)?;
        let zstd = if encoding_is_zstd(e.get("encoding"), &ctx)? {
            let n = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            Some(
                n.and_then(|n| etype.size_of(n))
                    .ok_or_else(|| schema(format!("{ctx}: shape overflows")))?,
            )
        } else {
            None
        };
        p.stored.push(Stored {
            object: name.to_string(),
            role: "data".into(),
            etype,
            offset: uint(e, "offset", &ctx)?,
            length: uint(e, "size", &ctx)?,
            zstd,
            checksum: e
                .get("checksum")
                .and_then(Value::as_str)
                .map(|s| checksum(s, &ctx))
                .transpose()?,
        });
        // Custom fields written next to the entry become its attributes.
        let custom: Vec<(Value, Value)> = match e {
            Value::Map(m) => m
                .iter()
                .filter(|(k, _)| k.as_str().is_none_or(|k| !V01_FIELDS.contains(&k)))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        let attrs = if custom.is_empty() {
            None
        } else {
            Some(Value::map(custom)?)
        };
        if p.objects
            .insert(name.to_string(), (shape, "dense".into(), attrs))
            .is_some()
        {
            return Err(schema(format!("{ctx}: name appears twice")));
        }
    }
    Ok(p)
}

/// Reads the manifest of a legacy file and places its components.
pub(crate) fn open(format: Format, store: &Store, max_decoded: u64) -> Result<Foreign> {
    let len = store.len();
    let (magic, trailer) = match format {
        Format::ZtV1 => (MAGIC_V1, 16u64),
        _ => (MAGIC_V01, 8u64),
    };
    if len < 8 + trailer {
        return Err(err(
            "legacy-size",
            Some(0),
            format!("{len} bytes is too small"),
        ));
    }
    let tail = store.read(len - trailer, trailer)?;
    if format == Format::ZtV1 && &tail[8..16] != magic {
        return Err(err(
            "legacy-magic",
            Some(len - 8),
            "footer magic ZTEN1000 missing",
        ));
    }
    let size = u64::from_le_bytes(tail[..8].try_into().map_err(|_| schema("trailer"))?);
    if size > MAX_MANIFEST_LEN || size > len - 8 - trailer {
        return Err(err(
            "legacy-manifest-size",
            Some(len - trailer),
            format!("manifest of {size} bytes does not fit in the {len}-byte file"),
        ));
    }
    let manifest_at = len - trailer - size;
    let value = decode(&store.read(manifest_at, size)?, manifest_at)?;
    let parsed = match format {
        Format::ZtV1 => parse_v1(&value)?,
        _ => parse_v01(&value)?,
    };
    place(parsed, store, manifest_at, max_decoded)
}

fn place(parsed: Parsed, store: &Store, data_end: u64, max_decoded: u64) -> Result<Foreign> {
    // Every component inside the data section, and none overlapping.
    let mut spans: Vec<(u64, u64, String)> = Vec::with_capacity(parsed.stored.len());
    for s in &parsed.stored {
        let end = s
            .offset
            .checked_add(s.length)
            .filter(|&e| s.offset >= 8 && e <= data_end);
        let end = end.ok_or_else(|| {
            err(
                "legacy-bounds",
                Some(s.offset),
                format!(
                    "{}/{}: [{}, +{}) lies outside the data section [8, {data_end})",
                    s.object, s.role, s.offset, s.length
                ),
            )
        })?;
        spans.push((s.offset, end, format!("{}/{}", s.object, s.role)));
    }
    spans.sort();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(err(
                "legacy-overlap",
                Some(w[1].0),
                format!("{} and {} overlap", w[0].2, w[1].2),
            ));
        }
    }
    let compressed = parsed.stored.iter().any(|s| s.zstd.is_some());
    let mut image = if compressed {
        super::image_buffer(
            parsed.stored.iter().map(|s| s.zstd.unwrap_or(s.length)),
            max_decoded,
            "legacy components",
        )?
    } else {
        Vec::new()
    };
    let mut objects: BTreeMap<String, Object> = BTreeMap::new();
    for s in &parsed.stored {
        let (offset, length, digest) = if compressed {
            let stored = store.read(s.offset, s.length)?;
            if let Some(c) = &s.checksum {
                check_stored(c, &stored, s)?;
            }
            let start = image.len();
            match s.zstd {
                None => image.extend_from_slice(&stored),
                Some(n) => unzstd(&stored, n, s, &mut image)?,
            }
            let length = (image.len() - start) as u64;
            let padded = align_up(image.len() as u64, 64).unwrap_or(image.len() as u64);
            image.resize(padded as usize, 0);
            (start as u64, length, None)
        } else {
            (s.offset, s.length, s.checksum.clone())
        };
        let (shape, layout, attributes) = &parsed.objects[&s.object];
        let obj = objects.entry(s.object.clone()).or_insert_with(|| Object {
            shape: shape.clone(),
            layout: layout.clone(),
            parts: BTreeMap::new(),
            attributes: attributes.clone(),
        });
        obj.parts.insert(
            s.role.clone(),
            Part {
                etype: s.etype.clone(),
                blob: Blob { offset, length },
                shard: None,
                encoding: None,
                decoded_length: None,
                digest,
            },
        );
    }
    if let Some((name, _)) = parsed
        .objects
        .iter()
        .find(|(n, _)| !objects.contains_key(*n))
    {
        return Err(schema(format!("object {name:?} has no components")));
    }
    Ok(Foreign {
        manifest: Manifest {
            objects,
            attributes: parsed.attributes,
            ..Manifest::default()
        },
        image: if compressed { Some(image) } else { None },
    })
}

fn check_stored(c: &DigestString, stored: &[u8], s: &Stored) -> Result<()> {
    let Some(alg) = c.alg else { return Ok(()) };
    let mut h = alg.hasher();
    h.update(stored);
    let got = h.finish();
    if got != c.text {
        return Err(err(
            "legacy-checksum",
            Some(s.offset),
            format!(
                "{}/{}: stored bytes hash to {}, the manifest says {}",
                s.object, s.role, got, c.text
            ),
        ));
    }
    Ok(())
}

/// Decodes a zstd component of exactly `n` bytes onto the end of `image`.
fn unzstd(stored: &[u8], n: u64, s: &Stored, image: &mut Vec<u8>) -> Result<()> {
    use std::io::Read;
    let bad = |d: String| {
        err(
            "legacy-zstd",
            Some(s.offset),
            format!("{}/{}: {d}", s.object, s.role),
        )
    };
    let start = image.len();
    image.resize(start + n as usize, 0);
    let mut dec =
        zstd::stream::read::Decoder::with_buffer(stored).map_err(|e| bad(e.to_string()))?;
    dec.window_log_max(27).map_err(|e| bad(e.to_string()))?;
    dec.read_exact(&mut image[start..])
        .map_err(|e| bad(format!("stream ends before the declared {n} bytes: {e}")))?;
    let mut probe = [0u8; 1];
    match dec.read(&mut probe) {
        Ok(0) => Ok(()),
        Ok(_) => Err(bad(format!("stream is longer than the declared {n} bytes"))),
        Err(e) => Err(bad(format!("corrupt stream: {e}"))),
    }
}
