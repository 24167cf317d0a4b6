//! The typed `add*` helpers of [`Writer`] and the checks every object
//! passes before it enters the manifest (each limit the reader enforces).

use super::{DenseSink, PartOptions, Writer};
use crate::cbor::Value;
use crate::container::ALIGN_FLOOR;
use crate::digest::{DigestAlg, DigestString};
use crate::dtype::{DType, ElementType};
use crate::element::{self, Element};
use crate::error::{Error, Result};
use crate::layout;
use crate::manifest::{self, Blob, Object, Part, ShardEntry, DENSE, SPARSE_COO, SPARSE_CSR};
use std::path::Path;
use unicode_normalization::is_nfc;

impl Writer {
    pub(super) fn check_new_name(&mut self, name: &str) -> Result<()> {
        manifest::check_name("object", name).map_err(Error::refused)?;
        if self.manifest.objects.contains_key(name) {
            return Err(Error::usage(format!(
                "an object named {name:?} already exists"
            )));
        }
        if self.options.canonical {
            if !is_nfc(name) {
                return Err(Error::usage(format!(
                    "canonical form needs NFC names; {name:?} is not"
                )));
            }
            if let Some(last) = &self.last_name {
                if last.as_str() >= name {
                    return Err(Error::usage(format!(
                        "canonical form needs objects in sorted order: {name:?} after {last:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Validates an object against the layout rules before its parts are
    /// written, using the parts' decoded sizes.
    fn precheck(
        name: &str,
        shape: &[u64],
        layout_id: &str,
        parts: &[(&str, &ElementType, u64)],
        attributes: Option<&Value>,
    ) -> Result<()> {
        let object = Object {
            shape: shape.to_vec(),
            layout: layout_id.to_string(),
            parts: parts
                .iter()
                .map(|(role, etype, len)| {
                    (
                        role.to_string(),
                        Part {
                            etype: (*etype).clone(),
                            blob: Blob {
                                offset: ALIGN_FLOOR,
                                length: *len,
                            },
                            shard: None,
                            encoding: None,
                            decoded_length: None,
                            digest: None,
                        },
                    )
                })
                .collect(),
            attributes: attributes.cloned(),
        };
        Writer::check_object(name, &object)
    }

    fn check_object(name: &str, object: &Object) -> Result<()> {
        if object.shape.len() > manifest::MAX_RANK {
            return Err(Error::usage(format!(
                "rank {} exceeds {}",
                object.shape.len(),
                manifest::MAX_RANK
            )));
        }
        if manifest::num_elements(&object.shape).is_none() {
            return Err(Error::usage(format!(
                "shape {:?} overflows u64",
                object.shape
            )));
        }
        if object.parts.is_empty() {
            return Err(Error::usage("an object needs at least one part"));
        }
        for role in object.parts.keys() {
            manifest::check_name("part", role).map_err(Error::refused)?;
        }
        if let Some(a) = &object.attributes {
            manifest::check_attributes("object", a).map_err(Error::refused)?;
            // An object's attributes map sits at depth 3 of the manifest.
            if a.depth() > crate::cbor::MAX_DEPTH - 3 {
                return Err(Error::usage(format!(
                    "{name}: attributes nest {} levels, at most {}",
                    a.depth(),
                    crate::cbor::MAX_DEPTH - 3
                )));
            }
        }
        layout::validate_object(name, object).map_err(Error::refused)
    }

    /// Commits an object whose parts were written with [`Writer::write_part`]
    /// or [`Writer::stream_part`] (or live in a declared shard).
    pub fn add_object(&mut self, name: &str, object: Object) -> Result<()> {
        self.check_new_name(name)?;
        Writer::check_object(name, &object)?;
        for (role, part) in &object.parts {
            if let Some(s) = &part.shard {
                if !self.manifest.shards.contains_key(s) {
                    return Err(Error::usage(format!(
                        "{name}/{role}: shard {s:?} is not declared"
                    )));
                }
            } else if part.blob.end().is_none_or(|e| e > self.pos) {
                return Err(Error::usage(format!(
                    "{name}/{role}: blob is not in this file"
                )));
            }
        }
        self.last_name = Some(name.to_string());
        self.manifest.objects.insert(name.to_string(), object);
        Ok(())
    }

    /// Adds a dense tensor from raw little-endian bytes.
    pub fn add_bytes(
        &mut self,
        name: &str,
        shape: &[u64],
        etype: ElementType,
        bytes: &[u8],
    ) -> Result<()> {
        let opts = self.part_options(etype);
        self.add_bytes_with(name, shape, bytes, &opts, None)
    }

    /// Adds a dense tensor with explicit part options and attributes.
    pub fn add_bytes_with(
        &mut self,
        name: &str,
        shape: &[u64],
        bytes: &[u8],
        opts: &PartOptions,
        attributes: Option<Value>,
    ) -> Result<()> {
        self.check_new_name(name)?;
        Writer::precheck(
            name,
            shape,
            DENSE,
            &[("data", &opts.etype, bytes.len() as u64)],
            attributes.as_ref(),
        )?;
        let n = manifest::num_elements(shape).unwrap_or(0);
        layout::check_values(name, &opts.etype, n, bytes).map_err(Error::refused)?;
        let part = self.write_part(bytes, opts)?;
        self.add_object(name, dense_object(shape, part, attributes))
    }

    /// Adds a dense tensor of a plain element type.
    pub fn add<T: Element>(&mut self, name: &str, shape: &[u64], data: &[T]) -> Result<()> {
        self.add_bytes(
            name,
            shape,
            ElementType::plain(T::DTYPE),
            element::as_bytes(data),
        )
    }

    /// Adds a CSR matrix. Indices are stored as u32 when they fit, else u64.
    pub fn add_csr(
        &mut self,
        name: &str,
        shape: [u64; 2],
        values_type: ElementType,
        values: &[u8],
        indices: &[u64],
        indptr: &[u64],
    ) -> Result<()> {
        self.check_new_name(name)?;
        layout::check_csr(name, shape, indptr, indices).map_err(Error::refused)?;
        let idx = index_dtype(indices.iter().chain(indptr));
        let (ib, pb) = (index_bytes(indices, idx), index_bytes(indptr, idx));
        let it = ElementType::plain(idx);
        Writer::precheck(
            name,
            &shape,
            SPARSE_CSR,
            &[
                ("indices", &it, ib.len() as u64),
                ("indptr", &it, pb.len() as u64),
                ("values", &values_type, values.len() as u64),
            ],
            None,
        )?;
        layout::check_values(name, &values_type, indices.len() as u64, values)
            .map_err(Error::refused)?;
        let pi = self.write_part(&ib, &self.part_options(it.clone()))?;
        let pp = self.write_part(&pb, &self.part_options(it))?;
        let pv = self.write_part(values, &self.part_options(values_type))?;
        self.add_object(
            name,
            sparse_object(
                &shape,
                SPARSE_CSR,
                vec![("indices", pi), ("indptr", pp), ("values", pv)],
            ),
        )
    }

    /// Adds a COO tensor; `coords` is structure-of-arrays (`ndim × nnz`).
    pub fn add_coo(
        &mut self,
        name: &str,
        shape: &[u64],
        values_type: ElementType,
        values: &[u8],
        coords: &[u64],
    ) -> Result<()> {
        self.check_new_name(name)?;
        if shape.is_empty() || !coords.len().is_multiple_of(shape.len()) {
            return Err(Error::usage("coords must hold ndim × nnz indices"));
        }
        layout::check_coo(name, shape, coords).map_err(Error::refused)?;
        let nnz = (coords.len() / shape.len()) as u64;
        let idx = index_dtype(coords.iter());
        let cb = index_bytes(coords, idx);
        let it = ElementType::plain(idx);
        Writer::precheck(
            name,
            shape,
            SPARSE_COO,
            &[
                ("coords", &it, cb.len() as u64),
                ("values", &values_type, values.len() as u64),
            ],
            None,
        )?;
        layout::check_values(name, &values_type, nnz, values).map_err(Error::refused)?;
        let pc = self.write_part(&cb, &self.part_options(it))?;
        let pv = self.write_part(values, &self.part_options(values_type))?;
        self.add_object(
            name,
            sparse_object(shape, SPARSE_COO, vec![("coords", pc), ("values", pv)]),
        )
    }

    /// Adds opaque ggml blocks as `gguf.<ggml_type>/1`.
    pub fn add_gguf(
        &mut self,
        name: &str,
        shape: &[u64],
        ggml_type: &str,
        elems_per_block: u64,
        block_bytes: u64,
        data: &[u8],
    ) -> Result<()> {
        self.check_new_name(name)?;
        let layout_id = format!("gguf.{ggml_type}/1");
        let attrs = Value::text_map([
            ("block_bytes", Value::Uint(block_bytes)),
            ("elems_per_block", Value::Uint(elems_per_block)),
        ])?;
        let u8t = ElementType::plain(DType::U8);
        Writer::precheck(
            name,
            shape,
            &layout_id,
            &[("data", &u8t, data.len() as u64)],
            Some(&attrs),
        )?;
        let part = self.write_part(data, &self.part_options(u8t))?;
        let mut object = dense_object(shape, part, Some(attrs));
        object.layout = layout_id;
        self.add_object(name, object)
    }

    /// Adds `name` as another name for `target`'s blobs (tied weights),
    /// declared with the [`manifest::ALIAS_OF`] attribute (naming the
    /// first name of the data when `target` is itself an alias) so loaders
    /// can tell a tie from canonical dedup of equal bytes.
    pub fn add_alias(&mut self, name: &str, target: &str) -> Result<()> {
        let mut object =
            self.manifest
                .objects
                .get(target)
                .cloned()
                .ok_or_else(|| Error::NotFound {
                    kind: "object",
                    name: target.to_string(),
                })?;
        let root = match self.manifest.declared_alias(target) {
            Some(root) => root.to_string(),
            None => target.to_string(),
        };
        let mut entries = match object.attributes.take() {
            Some(Value::Map(entries)) => entries,
            Some(other) => {
                return Err(Error::usage(format!(
                    "{target}: attributes are a {}, not a map",
                    other.kind()
                )))
            }
            None => Vec::new(),
        };
        entries.retain(|(k, _)| k.as_str() != Some(manifest::ALIAS_OF));
        entries.push((Value::text(manifest::ALIAS_OF), Value::Text(root)));
        object.attributes = Some(Value::map(entries)?);
        self.add_object(name, object)
    }

    /// Starts a streamed dense tensor of `shape`; the byte count fed must
    /// match the shape exactly.
    pub fn stream_dense(
        &mut self,
        name: &str,
        shape: &[u64],
        etype: ElementType,
    ) -> Result<DenseSink<'_>> {
        self.check_new_name(name)?;
        let n = manifest::num_elements(shape).ok_or_else(|| Error::usage("shape overflows u64"))?;
        let expected = etype
            .size_of(n)
            .ok_or_else(|| Error::usage("size overflows u64"))?;
        Writer::precheck(name, shape, DENSE, &[("data", &etype, expected)], None)?;
        let opts = self.part_options(etype);
        Ok(DenseSink {
            name: name.to_string(),
            shape: shape.to_vec(),
            expected,
            sink: self.stream_part(opts)?,
        })
    }

    /// Sets the file-level attributes (a map with text keys).
    pub fn set_attributes(&mut self, attributes: Value) -> Result<()> {
        manifest::check_attributes("file", &attributes).map_err(Error::refused)?;
        // The file's attributes map sits at depth 1 of the manifest.
        if attributes.depth() > crate::cbor::MAX_DEPTH - 1 {
            return Err(Error::usage(format!(
                "file attributes nest {} levels, at most {}",
                attributes.depth(),
                crate::cbor::MAX_DEPTH - 1
            )));
        }
        self.manifest.attributes = Some(attributes);
        Ok(())
    }

    /// Declares a shard file under `name`, recording its size and digest.
    pub fn add_shard(&mut self, name: &str, path: impl AsRef<Path>, alg: DigestAlg) -> Result<()> {
        if self.options.canonical {
            return Err(Error::usage("canonical form is single-file"));
        }
        manifest::check_shard_name(name).map_err(Error::refused)?;
        let (size, digest) = crate::reader::file_digest(path, alg)?;
        let digest = DigestString::parse(&digest).map_err(Error::usage)?;
        self.manifest
            .shards
            .insert(name.to_string(), ShardEntry { size, digest });
        Ok(())
    }
}

pub(super) fn dense_object(shape: &[u64], part: Part, attributes: Option<Value>) -> Object {
    Object {
        shape: shape.to_vec(),
        layout: DENSE.to_string(),
        parts: [("data".to_string(), part)].into_iter().collect(),
        attributes,
    }
}

fn sparse_object(shape: &[u64], layout_id: &str, parts: Vec<(&str, Part)>) -> Object {
    Object {
        shape: shape.to_vec(),
        layout: layout_id.to_string(),
        parts: parts.into_iter().map(|(r, p)| (r.to_string(), p)).collect(),
        attributes: None,
    }
}

fn index_dtype<'a>(mut values: impl Iterator<Item = &'a u64>) -> DType {
    if values.any(|&v| v > u32::MAX as u64) {
        DType::U64
    } else {
        DType::U32
    }
}

fn index_bytes(values: &[u64], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::U32 => values
            .iter()
            .flat_map(|&v| (v as u32).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|&v| v.to_le_bytes()).collect(),
    }
}
