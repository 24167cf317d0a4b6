//! The manifest schema (L1): typed view of the CBOR map, parsing with
//! schema validation, and encoding back to deterministic CBOR.

use crate::cbor::{self, Value};
use crate::digest::DigestString;
use crate::dtype::{DType, ElementType, Logical};
use crate::error::{Error, Result, Rule};
use std::collections::BTreeMap;

/// Longest object, part or attribute-key name, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// Highest tensor rank.
pub const MAX_RANK: usize = 64;
/// Longest shard name, in bytes.
pub const MAX_SHARD_NAME_BYTES: usize = 64;

/// The encoding id of the zstd seekable profile.
pub const ZSTD_SEEKABLE: &str = "zt.zstd-seekable/1";
/// Layout ids.
pub const DENSE: &str = "dense";
pub const SPARSE_CSR: &str = "zt.sparse_csr/1";
pub const SPARSE_COO: &str = "zt.sparse_coo/1";

/// A byte range in a file: `[offset, length]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Blob {
    pub offset: u64,
    pub length: u64,
}

impl Blob {
    /// One past the last byte, `None` on overflow.
    pub fn end(&self) -> Option<u64> {
        self.offset.checked_add(self.length)
    }
}

/// One stored byte range of an object and how to read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub etype: ElementType,
    pub blob: Blob,
    pub shard: Option<String>,
    pub encoding: Option<String>,
    pub decoded_length: Option<u64>,
    pub digest: Option<DigestString>,
}

impl Part {
    /// Bytes this part denotes once decoded.
    pub fn decoded_size(&self) -> u64 {
        self.decoded_length.unwrap_or(self.blob.length)
    }
}

/// A named tensor-like object: shape, layout and parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub shape: Vec<u64>,
    pub layout: String,
    pub parts: BTreeMap<String, Part>,
    pub attributes: Option<Value>,
}

impl Object {
    /// Product of the shape (1 for a scalar). Validated not to overflow.
    pub fn num_elements(&self) -> u64 {
        num_elements(&self.shape).unwrap_or(u64::MAX)
    }

    /// An attribute of this object by key.
    pub fn attribute(&self, key: &str) -> Option<&Value> {
        self.attributes.as_ref().and_then(|a| a.get(key))
    }
}

/// An entry of the shard table.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardEntry {
    pub size: u64,
    pub digest: DigestString,
}

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Manifest {
    pub objects: BTreeMap<String, Object>,
    pub shards: BTreeMap<String, ShardEntry>,
    pub attributes: Option<Value>,
}

/// Element count of a shape with checked multiplication.
pub fn num_elements(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}

/// Checks the name rules: non-empty, at most 1024 bytes, no NUL.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::corrupt(Rule::NameEmpty, format!("{what} name is empty")));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::corrupt(
            Rule::NameTooLong,
            format!(
                "{what} name is {} bytes, the limit is {MAX_NAME_BYTES}",
                name.len()
            ),
        ));
    }
    if name.contains('\0') {
        return Err(Error::corrupt(
            Rule::NameNul,
            format!("{what} name {name:?} contains U+0000"),
        ));
    }
    Ok(())
}

/// Checks a shard name: `[A-Za-z0-9._-]{1,64}`, not starting with `.`.
pub fn check_shard_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SHARD_NAME_BYTES
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::corrupt(
            Rule::ShardName,
            format!("shard name {name:?} must be 1-64 bytes of [A-Za-z0-9._-] not starting with '.'"),
        ))
    }
}

/// Checks an attributes value: a map with text keys obeying the name rules.
pub fn check_attributes(what: &str, value: &Value) -> Result<()> {
    let Value::Map(entries) = value else {
        return Err(Error::corrupt(
            Rule::SchemaType,
            format!("{what} attributes must be a map, found {}", value.kind()),
        ));
    };
    for (k, _) in entries {
        match k {
            Value::Text(s) => check_name(&format!("{what} attribute"), s)?,
            other => {
                return Err(Error::corrupt(
                    Rule::AttributeKey,
                    format!("{what} attribute key is a {}, not text", other.kind()),
                ))
            }
        }
    }
    Ok(())
}

// ----------------------------------------------------------------------------
// Parsing
// ----------------------------------------------------------------------------

fn entries<'a>(v: &'a Value, what: &str) -> Result<&'a [(Value, Value)]> {
    match v {
        Value::Map(e) => Ok(e),
        other => Err(Error::corrupt(
            Rule::SchemaType,
            format!("{what} must be a map, found {}", other.kind()),
        )),
    }
}

fn field<'a>(map: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

fn required<'a>(map: &'a [(Value, Value)], key: &str, what: &str) -> Result<&'a Value> {
    field(map, key).ok_or_else(|| {
        Error::corrupt(
            Rule::SchemaMissingField,
            format!("{what} has no {key:?} field"),
        )
    })
}

fn text<'a>(v: &'a Value, what: &str) -> Result<&'a str> {
    v.as_str().ok_or_else(|| {
        Error::corrupt(
            Rule::SchemaType,
            format!("{what} must be text, found {}", v.kind()),
        )
    })
}

fn uint(v: &Value, what: &str) -> Result<u64> {
    v.as_u64().ok_or_else(|| {
        Error::corrupt(
            Rule::SchemaType,
            format!("{what} must be an unsigned integer, found {}", v.kind()),
        )
    })
}

fn key_text<'a>(k: &'a Value, what: &str) -> Result<&'a str> {
    k.as_str().ok_or_else(|| {
        Error::corrupt(
            Rule::SchemaType,
            format!("{what} key must be text, found {}", k.kind()),
        )
    })
}

impl Manifest {
    /// Decodes and schema-checks manifest bytes. `base` is the manifest's
    /// offset in its file (for error offsets).
    pub fn decode(bytes: &[u8], base: u64) -> Result<Manifest> {
        let value = cbor::decode_at(bytes, base)?;
        Manifest::from_value(&value)
    }

    /// Schema-checks a decoded manifest value.
    pub fn from_value(root: &Value) -> Result<Manifest> {
        let root = entries(root, "the manifest root")?;
        let mut manifest = Manifest::default();

        if let Some(attrs) = field(root, "attributes") {
            check_attributes("file", attrs)?;
            manifest.attributes = Some(attrs.clone());
        }

        if let Some(shards) = field(root, "shards") {
            for (k, v) in entries(shards, "the shard table")? {
                let name = k.as_str().ok_or_else(|| {
                    Error::corrupt(
                        Rule::ShardName,
                        format!("shard table key is a {}, not text", k.kind()),
                    )
                })?;
                check_shard_name(name)?;
                let what = format!("shard {name:?}");
                let e = entries(v, &what)?;
                let size = field(e, "size").and_then(Value::as_u64).ok_or_else(|| {
                    Error::corrupt(Rule::ShardEntry, format!("{what} needs an unsigned \"size\""))
                })?;
                let digest = field(e, "digest").and_then(Value::as_str).ok_or_else(|| {
                    Error::corrupt(Rule::ShardEntry, format!("{what} needs a \"digest\" string"))
                })?;
                let digest = DigestString::parse(digest)
                    .map_err(|m| Error::corrupt(Rule::SchemaDigestFormat, format!("{what}: {m}")))?;
                manifest
                    .shards
                    .insert(name.to_string(), ShardEntry { size, digest });
            }
        }

        let objects = field(root, "objects").ok_or_else(|| {
            Error::corrupt(Rule::SchemaMissingField, "the manifest has no \"objects\" map")
        })?;
        for (k, v) in entries(objects, "\"objects\"")? {
            let name = key_text(k, "object")?;
            check_name("object", name)?;
            let object = parse_object(name, v, &manifest.shards)?;
            manifest.objects.insert(name.to_string(), object);
        }
        Ok(manifest)
    }

    /// Encodes to the manifest's CBOR value.
    pub fn to_value(&self) -> Result<Value> {
        let mut root = Vec::new();
        let mut objects = Vec::with_capacity(self.objects.len());
        for (name, o) in &self.objects {
            objects.push((Value::text(name.as_str()), o.to_value()?));
        }
        root.push((Value::text("objects"), Value::Map(objects)));
        if !self.shards.is_empty() {
            let mut t = Vec::new();
            for (name, s) in &self.shards {
                t.push((
                    Value::text(name.as_str()),
                    Value::text_map([
                        ("size", Value::Uint(s.size)),
                        ("digest", Value::text(s.digest.text.as_str())),
                    ])?,
                ));
            }
            root.push((Value::text("shards"), Value::Map(t)));
        }
        if let Some(a) = &self.attributes {
            root.push((Value::text("attributes"), a.clone()));
        }
        Ok(Value::Map(root))
    }

    /// Encodes to deterministic CBOR bytes.
    pub fn encode(&self) -> Result<Vec<u8>> {
        cbor::encode(&self.to_value()?)
    }
}

impl Object {
    pub fn to_value(&self) -> Result<Value> {
        let mut parts = Vec::with_capacity(self.parts.len());
        for (role, p) in &self.parts {
            parts.push((Value::text(role.as_str()), p.to_value()));
        }
        let mut e = vec![
            (
                Value::text("shape"),
                Value::Array(self.shape.iter().map(|&d| Value::Uint(d)).collect()),
            ),
            (Value::text("layout"), Value::text(self.layout.as_str())),
            (Value::text("parts"), Value::Map(parts)),
        ];
        if let Some(a) = &self.attributes {
            e.push((Value::text("attributes"), a.clone()));
        }
        Ok(Value::Map(e))
    }
}

impl Part {
    pub fn to_value(&self) -> Value {
        let mut e = vec![
            (Value::text("dtype"), Value::text(self.etype.dtype.as_str())),
            (
                Value::text("blob"),
                Value::Array(vec![Value::Uint(self.blob.offset), Value::Uint(self.blob.length)]),
            ),
        ];
        if let Some(l) = &self.etype.logical {
            e.push((Value::text("type"), Value::text(l.as_str())));
        }
        if let Some(s) = &self.shard {
            e.push((Value::text("shard"), Value::text(s.as_str())));
        }
        if let Some(enc) = &self.encoding {
            e.push((Value::text("encoding"), Value::text(enc.as_str())));
        }
        if let Some(n) = self.decoded_length {
            e.push((Value::text("decoded_length"), Value::Uint(n)));
        }
        if let Some(d) = &self.digest {
            e.push((Value::text("digest"), Value::text(d.text.as_str())));
        }
        Value::Map(e)
    }
}

fn parse_object(name: &str, v: &Value, shards: &BTreeMap<String, ShardEntry>) -> Result<Object> {
    let what = format!("object {name:?}");
    let e = entries(v, &what)?;

    let shape_v = required(e, "shape", &what)?;
    let Value::Array(dims) = shape_v else {
        return Err(Error::corrupt(
            Rule::SchemaType,
            format!("{what}: \"shape\" must be an array, found {}", shape_v.kind()),
        ));
    };
    if dims.len() > MAX_RANK {
        return Err(Error::corrupt(
            Rule::ShapeRank,
            format!("{what} has rank {}, the limit is {MAX_RANK}", dims.len()),
        ));
    }
    let shape = dims
        .iter()
        .map(|d| uint(d, &format!("{what}: a shape dimension")))
        .collect::<Result<Vec<u64>>>()?;
    if num_elements(&shape).is_none() {
        return Err(Error::corrupt(
            Rule::ShapeOverflow,
            format!("{what}: the element count of shape {shape:?} overflows u64"),
        ));
    }

    let layout = text(required(e, "layout", &what)?, &format!("{what}: \"layout\""))?.to_string();

    let attributes = match field(e, "attributes") {
        Some(a) => {
            check_attributes(&what, a)?;
            Some(a.clone())
        }
        None => None,
    };

    let parts_v = required(e, "parts", &what)?;
    let mut parts = BTreeMap::new();
    for (k, pv) in entries(parts_v, &format!("{what}: \"parts\""))? {
        let role = key_text(k, &format!("{what}: part"))?;
        check_name("part", role)?;
        parts.insert(role.to_string(), parse_part(&format!("{what} part {role:?}"), pv, shards)?);
    }
    if parts.is_empty() {
        return Err(Error::corrupt(
            Rule::SchemaEmptyParts,
            format!("{what} has no parts"),
        ));
    }
    Ok(Object {
        shape,
        layout,
        parts,
        attributes,
    })
}

fn parse_part(what: &str, v: &Value, shards: &BTreeMap<String, ShardEntry>) -> Result<Part> {
    let e = entries(v, what)?;
    let dtype_s = text(required(e, "dtype", what)?, &format!("{what}: \"dtype\""))?;
    let dtype: DType = dtype_s.parse().map_err(|()| {
        Error::corrupt(
            Rule::SchemaUnknownDtype,
            format!("{what}: unknown storage dtype {dtype_s:?}"),
        )
    })?;
    let logical = match field(e, "type") {
        Some(t) => {
            let l = Logical::parse(text(t, &format!("{what}: \"type\""))?);
            if let Logical::Known(k) = &l {
                if k.storage() != dtype {
                    return Err(Error::corrupt(
                        Rule::SchemaLtypeDtypeMismatch,
                        format!(
                            "{what}: logical type {k} needs dtype {}, found {dtype}",
                            k.storage()
                        ),
                    ));
                }
            }
            Some(l)
        }
        None => None,
    };

    let blob_v = required(e, "blob", what)?;
    let Value::Array(items) = blob_v else {
        return Err(Error::corrupt(
            Rule::SchemaType,
            format!("{what}: \"blob\" must be an array, found {}", blob_v.kind()),
        ));
    };
    if items.len() != 2 {
        return Err(Error::corrupt(
            Rule::SchemaBlobArity,
            format!("{what}: \"blob\" has {} elements, it must have 2", items.len()),
        ));
    }
    let blob = Blob {
        offset: uint(&items[0], &format!("{what}: blob offset"))?,
        length: uint(&items[1], &format!("{what}: blob length"))?,
    };

    let shard = match field(e, "shard") {
        Some(s) => {
            let s = text(s, &format!("{what}: \"shard\""))?;
            if !shards.contains_key(s) {
                return Err(Error::corrupt(
                    Rule::ShardUnknown,
                    format!("{what} names shard {s:?}, which the shard table does not declare"),
                ));
            }
            Some(s.to_string())
        }
        None => None,
    };

    let encoding = field(e, "encoding")
        .map(|x| text(x, &format!("{what}: \"encoding\"")).map(str::to_string))
        .transpose()?;
    let decoded_length = field(e, "decoded_length")
        .map(|x| uint(x, &format!("{what}: \"decoded_length\"")))
        .transpose()?;
    if encoding.is_some() != decoded_length.is_some() {
        return Err(Error::corrupt(
            Rule::SchemaEncodingLength,
            format!("{what}: \"decoded_length\" must be present exactly when \"encoding\" is"),
        ));
    }
    let digest = match field(e, "digest") {
        Some(d) => Some(
            DigestString::parse(text(d, &format!("{what}: \"digest\""))?)
                .map_err(|m| Error::corrupt(Rule::SchemaDigestFormat, format!("{what}: {m}")))?,
        ),
        None => None,
    };
    Ok(Part {
        etype: ElementType { dtype, logical },
        blob,
        shard,
        encoding,
        decoded_length,
        digest,
    })
}
