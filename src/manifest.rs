//! The manifest schema (L1): typed view of the CBOR map, parsing with
//! schema validation, and encoding back to deterministic CBOR.

use crate::cbor::{self, Decoder, Key, Value};
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
/// The object attribute by which a file declares an object to be another
/// name of an earlier object's data (tied weights). Identical blob
/// references alone do not tie: canonical dedup also shares the blobs of
/// tensors that merely hold the same bytes.
pub const ALIAS_OF: &str = "zt.alias_of";

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
        return Err(Error::corrupt(
            Rule::NameEmpty,
            format!("{what} name is empty"),
        ));
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
            format!(
                "shard name {name:?} must be 1-64 bytes of [A-Za-z0-9._-] not starting with '.'"
            ),
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

/// Where in the manifest a field sits; formatted only when an error needs it.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    object: Option<&'a str>,
    part: Option<&'a str>,
    field: &'a str,
}

impl<'a> Ctx<'a> {
    fn root(field: &'a str) -> Ctx<'a> {
        Ctx {
            object: None,
            part: None,
            field,
        }
    }
    fn at(self, field: &'a str) -> Ctx<'a> {
        Ctx { field, ..self }
    }
}

impl std::fmt::Display for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.object, self.part) {
            (Some(o), Some(p)) => write!(f, "object {o:?} part {p:?}")?,
            (Some(o), None) => write!(f, "object {o:?}")?,
            _ => f.write_str("the manifest")?,
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        Ok(())
    }
}

fn entries<'a>(v: &'a Value, ctx: Ctx<'_>) -> Result<&'a [(Value, Value)]> {
    match v {
        Value::Map(e) => Ok(e),
        other => Err(Error::corrupt(
            Rule::SchemaType,
            format!("{ctx} must be a map, found {}", other.kind()),
        )),
    }
}

fn field<'a>(map: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

impl Manifest {
    /// The object `name` is a declared alias of, when a loader may hand out
    /// one shared (writable) buffer for both: `name` carries
    /// [`ALIAS_OF`] naming another object that exists and has the same
    /// shape, layout and parts (dtype, logical type, blob, shard, encoding,
    /// digest). Anything else, including identical blobs without the
    /// declaration, gets its own memory.
    pub fn declared_alias(&self, name: &str) -> Option<&str> {
        let object = self.objects.get(name)?;
        let (target_name, target) = self
            .objects
            .get_key_value(object.attribute(ALIAS_OF)?.as_str()?)?;
        let same = target_name != name
            && target.shape == object.shape
            && target.layout == object.layout
            && target.parts == object.parts;
        same.then_some(target_name.as_str())
    }

    /// Decodes and schema-checks manifest bytes in one pass (no value
    /// tree for the objects). `base` is the manifest's offset in its file,
    /// for error offsets.
    pub fn decode(bytes: &[u8], base: u64) -> Result<Manifest> {
        let mut d = Decoder::new(bytes, base);
        let manifest = parse_root(&mut d)?;
        d.finish()?;
        Ok(manifest)
    }

    /// Schema-checks a decoded manifest value.
    pub fn from_value(root: &Value) -> Result<Manifest> {
        let bytes = cbor::encode(root)?;
        Manifest::decode(&bytes, 0)
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
                Value::Array(vec![
                    Value::Uint(self.blob.offset),
                    Value::Uint(self.blob.length),
                ]),
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

fn parse_root(d: &mut Decoder<'_>) -> Result<Manifest> {
    let n = d.map_head(0, &"the manifest root")?;
    let mut prev = None;
    let mut manifest = Manifest::default();
    let mut saw_objects = false;
    for _ in 0..n {
        match d.map_key(&mut prev, 1)? {
            Key::Text("objects") => {
                parse_objects(d, &mut manifest)?;
                saw_objects = true;
            }
            Key::Text("shards") => {
                // Sorts before "objects", so parts can check their shard.
                manifest.shards = parse_shards(&d.value(1)?)?;
            }
            Key::Text("attributes") => {
                let v = d.value(1)?;
                check_attributes("file", &v)?;
                manifest.attributes = Some(v);
            }
            _ => {
                d.value(1)?;
            }
        }
    }
    if !saw_objects {
        return Err(Error::corrupt(
            Rule::SchemaMissingField,
            "the manifest has no \"objects\" map",
        ));
    }
    Ok(manifest)
}

fn parse_shards(v: &Value) -> Result<BTreeMap<String, ShardEntry>> {
    let mut shards = BTreeMap::new();
    for (k, v) in entries(v, Ctx::root("\"shards\""))? {
        let name = k.as_str().ok_or_else(|| {
            Error::corrupt(
                Rule::ShardName,
                format!("shard table key is a {}, not text", k.kind()),
            )
        })?;
        check_shard_name(name)?;
        let bad = |m: &str| Error::corrupt(Rule::ShardEntry, format!("shard {name:?} {m}"));
        let Value::Map(e) = v else {
            return Err(bad("must be a map"));
        };
        let size = field(e, "size")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("needs an unsigned \"size\""))?;
        let digest = field(e, "digest")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("needs a \"digest\" string"))?;
        let digest = DigestString::parse(digest).map_err(|m| {
            Error::corrupt(Rule::SchemaDigestFormat, format!("shard {name:?}: {m}"))
        })?;
        shards.insert(name.to_string(), ShardEntry { size, digest });
    }
    Ok(shards)
}

fn parse_objects(d: &mut Decoder<'_>, manifest: &mut Manifest) -> Result<()> {
    let n = d.map_head(1, &"\"objects\"")?;
    let mut prev = None;
    for _ in 0..n {
        let name = match d.map_key(&mut prev, 2)? {
            Key::Text(s) => s,
            Key::Other(v) => {
                return Err(Error::corrupt(
                    Rule::SchemaType,
                    format!("object key is a {}, not text", v.kind()),
                ))
            }
        };
        check_name("object", name)?;
        let object = parse_object(d, name, &manifest.shards)?;
        manifest.objects.insert(name.to_string(), object);
    }
    Ok(())
}

fn parse_object(
    d: &mut Decoder<'_>,
    name: &str,
    shards: &BTreeMap<String, ShardEntry>,
) -> Result<Object> {
    let ctx = Ctx {
        object: Some(name),
        part: None,
        field: "",
    };
    let n = d.map_head(2, &ctx)?;
    let mut prev = None;
    let (mut shape, mut layout, mut parts, mut attributes) = (None, None, None, None);
    for _ in 0..n {
        match d.map_key(&mut prev, 3)? {
            Key::Text("shape") => {
                let rank = d.array_head(3, &ctx.at("\"shape\""))?;
                if rank > MAX_RANK {
                    return Err(Error::corrupt(
                        Rule::ShapeRank,
                        format!("{ctx} has rank {rank}, the limit is {MAX_RANK}"),
                    ));
                }
                let mut dims = Vec::with_capacity(rank);
                for _ in 0..rank {
                    dims.push(d.uint_item(&ctx.at("a shape dimension"))?);
                }
                shape = Some(dims);
            }
            Key::Text("layout") => layout = Some(d.text_item(&ctx.at("\"layout\""))?.to_string()),
            Key::Text("parts") => {
                let count = d.map_head(3, &ctx.at("\"parts\""))?;
                let mut map = BTreeMap::new();
                let mut prev_role = None;
                for _ in 0..count {
                    let role = match d.map_key(&mut prev_role, 4)? {
                        Key::Text(s) => s,
                        Key::Other(v) => {
                            return Err(Error::corrupt(
                                Rule::SchemaType,
                                format!("{ctx}: part key is a {}, not text", v.kind()),
                            ))
                        }
                    };
                    check_name("part", role)?;
                    let pctx = Ctx {
                        part: Some(role),
                        ..ctx
                    };
                    map.insert(role.to_string(), parse_part(d, pctx, shards)?);
                }
                parts = Some(map);
            }
            Key::Text("attributes") => {
                let v = d.value(3)?;
                check_attributes(&ctx.to_string(), &v)?;
                attributes = Some(v);
            }
            _ => {
                d.value(3)?;
            }
        }
    }
    let missing = |key: &str| {
        Error::corrupt(
            Rule::SchemaMissingField,
            format!("{ctx} has no {key:?} field"),
        )
    };
    let shape = shape.ok_or_else(|| missing("shape"))?;
    let layout = layout.ok_or_else(|| missing("layout"))?;
    let parts = parts.ok_or_else(|| missing("parts"))?;
    if num_elements(&shape).is_none() {
        return Err(Error::corrupt(
            Rule::ShapeOverflow,
            format!("{ctx}: the element count of shape {shape:?} overflows u64"),
        ));
    }
    if parts.is_empty() {
        return Err(Error::corrupt(
            Rule::SchemaEmptyParts,
            format!("{ctx} has no parts"),
        ));
    }
    Ok(Object {
        shape,
        layout,
        parts,
        attributes,
    })
}

fn parse_part(
    d: &mut Decoder<'_>,
    ctx: Ctx<'_>,
    shards: &BTreeMap<String, ShardEntry>,
) -> Result<Part> {
    let n = d.map_head(4, &ctx)?;
    let mut prev = None;
    let (
        mut dtype_s,
        mut type_s,
        mut blob,
        mut shard,
        mut encoding,
        mut decoded_length,
        mut digest_s,
    ) = (None, None, None, None, None, None, None);
    for _ in 0..n {
        match d.map_key(&mut prev, 5)? {
            Key::Text("blob") => {
                let arity = d.array_head(5, &ctx.at("\"blob\""))?;
                if arity != 2 {
                    return Err(Error::corrupt(
                        Rule::SchemaBlobArity,
                        format!("{ctx}: \"blob\" has {arity} elements, it must have 2"),
                    ));
                }
                let offset = d.uint_item(&ctx.at("blob offset"))?;
                let length = d.uint_item(&ctx.at("blob length"))?;
                blob = Some(Blob { offset, length });
            }
            Key::Text("dtype") => dtype_s = Some(d.text_item(&ctx.at("\"dtype\""))?),
            Key::Text("type") => type_s = Some(d.text_item(&ctx.at("\"type\""))?),
            Key::Text("shard") => shard = Some(d.text_item(&ctx.at("\"shard\""))?),
            Key::Text("digest") => digest_s = Some(d.text_item(&ctx.at("\"digest\""))?),
            Key::Text("encoding") => encoding = Some(d.text_item(&ctx.at("\"encoding\""))?),
            Key::Text("decoded_length") => {
                decoded_length = Some(d.uint_item(&ctx.at("\"decoded_length\""))?)
            }
            _ => {
                d.value(5)?;
            }
        }
    }
    let missing = |key: &str| {
        Error::corrupt(
            Rule::SchemaMissingField,
            format!("{ctx} has no {key:?} field"),
        )
    };
    let dtype_s = dtype_s.ok_or_else(|| missing("dtype"))?;
    let blob = blob.ok_or_else(|| missing("blob"))?;
    let dtype: DType = dtype_s.parse().map_err(|()| {
        Error::corrupt(
            Rule::SchemaUnknownDtype,
            format!("{ctx}: unknown storage dtype {dtype_s:?}"),
        )
    })?;
    let logical = match type_s {
        Some(t) => {
            let l = Logical::parse(t);
            if let Logical::Known(k) = &l {
                if k.storage() != dtype {
                    return Err(Error::corrupt(
                        Rule::SchemaLtypeDtypeMismatch,
                        format!(
                            "{ctx}: logical type {k} needs dtype {}, found {dtype}",
                            k.storage()
                        ),
                    ));
                }
            }
            Some(l)
        }
        None => None,
    };
    if let Some(s) = shard {
        if !shards.contains_key(s) {
            return Err(Error::corrupt(
                Rule::ShardUnknown,
                format!("{ctx} names shard {s:?}, which the shard table does not declare"),
            ));
        }
    }
    if encoding.is_some() != decoded_length.is_some() {
        return Err(Error::corrupt(
            Rule::SchemaEncodingLength,
            format!("{ctx}: \"decoded_length\" must be present exactly when \"encoding\" is"),
        ));
    }
    let digest = match digest_s {
        Some(t) => Some(
            DigestString::parse(t)
                .map_err(|m| Error::corrupt(Rule::SchemaDigestFormat, format!("{ctx}: {m}")))?,
        ),
        None => None,
    };
    Ok(Part {
        etype: ElementType { dtype, logical },
        blob,
        shard: shard.map(str::to_string),
        encoding: encoding.map(str::to_string),
        decoded_length,
        digest,
    })
}
