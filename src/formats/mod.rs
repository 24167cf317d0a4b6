//! Readers of other tensor formats, each in its own module. Every reader
//! turns its file into a [`Manifest`] whose parts point at the tensor bytes
//! in the file, so [`crate::Reader`] serves every format with the same
//! zero-copy reads, slicing and conversion. This layer sits below the
//! reader: it parses bytes from a store and never opens a `Reader` or a
//! `Writer` (conversion and export, which do, live in [`crate::convert`]).

pub mod gguf;
pub mod gguf_manifest;
pub mod legacy;
pub mod npz;
pub mod safetensors;
pub mod sharded;
mod zip;

use crate::cbor::Value;
use crate::dtype::ElementType;
use crate::error::{Error, Result};
use crate::manifest::{Blob, Manifest, Object, Part};
use crate::store::Store;

/// File formats recognised by their first bytes (never by the extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A ztensor v2 container.
    Zt,
    Gguf,
    Safetensors,
    Npy,
    /// A zip archive of `.npy` members (`numpy.savez[_compressed]`).
    Npz,
    /// ztensor 1.x (`ZTEN1000`).
    ZtV1,
    /// ztensor 0.1 (`ZTEN0001`).
    ZtV01,
    Unknown,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Zt => "zt",
            Format::Gguf => "gguf",
            Format::Safetensors => "safetensors",
            Format::Npy => "npy",
            Format::Npz => "npz",
            Format::ZtV1 => "ztensor-1",
            Format::ZtV01 => "ztensor-0.1",
            Format::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Detects a format from the leading bytes.
pub fn detect(head: &[u8]) -> Format {
    if head.starts_with(&crate::container::MAGIC) {
        Format::Zt
    } else if head.starts_with(b"GGUF") {
        Format::Gguf
    } else if head.starts_with(b"\x93NUMPY") {
        Format::Npy
    } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Format::Npz
    } else if head.starts_with(legacy::MAGIC_V1) {
        Format::ZtV1
    } else if head.starts_with(legacy::MAGIC_V01) {
        Format::ZtV01
    } else if head.len() > 8 && head[8..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        // safetensors: a u64 header length, then a JSON object.
        Format::Safetensors
    } else {
        Format::Unknown
    }
}

/// A foreign file seen as a container: its manifest, and for formats whose
/// tensors are stored encoded (deflated npz members, zstd legacy parts) the
/// decoded image the manifest's blobs point into instead of the file.
pub(crate) struct Foreign {
    pub manifest: Manifest,
    pub image: Option<Vec<u8>>,
}

/// An empty buffer with room for parts of the given decoded sizes, each
/// padded to 64 bytes: the total is checked against `max_decoded` (and the
/// allocation made fallibly) before any decoding starts.
pub(crate) fn image_buffer(
    sizes: impl Iterator<Item = u64> + Clone,
    max_decoded: u64,
    what: &str,
) -> Result<Vec<u8>> {
    let too_big = |value| Error::Limit {
        what: format!("decoded size of the {what}"),
        value,
        limit: max_decoded,
    };
    let total = sizes
        .clone()
        .try_fold(0u64, |t, n| {
            t.checked_add(crate::container::align_up(n, 64)?)
        })
        .filter(|&t| t <= max_decoded)
        .ok_or_else(|| too_big(sizes.fold(0u64, u64::saturating_add)))?;
    let mut image = Vec::new();
    image
        .try_reserve_exact(usize::try_from(total).unwrap_or(usize::MAX))
        .map_err(|_| too_big(total))?;
    Ok(image)
}

pub(crate) fn open_foreign(format: Format, store: &Store, max_decoded: u64) -> Result<Foreign> {
    let plain = |manifest| Foreign {
        manifest,
        image: None,
    };
    match format {
        Format::Gguf => Ok(plain(gguf_manifest::gguf_manifest(&gguf::parse_store(
            store,
        )?)?)),
        Format::Safetensors => Ok(plain(safetensors::safetensors_manifest(
            &safetensors::parse_store(store)?,
        )?)),
        Format::Npy => Ok(plain(npz::npy_manifest(store)?)),
        Format::Npz => npz::npz_manifest(store, max_decoded),
        Format::ZtV1 | Format::ZtV01 => legacy::open(format, store, max_decoded),
        Format::Zt | Format::Unknown => Err(Error::usage(format!(
            "{format} files are not read through a synthesized manifest"
        ))),
    }
}
/// A raw part at `[offset, offset + length)` of the file.
pub(crate) fn part(etype: ElementType, offset: u64, length: u64) -> Part {
    Part {
        etype,
        blob: Blob { offset, length },
        shard: None,
        encoding: None,
        decoded_length: None,
        digest: None,
    }
}

/// A one-part object (role `data`).
pub(crate) fn object(
    shape: Vec<u64>,
    layout: String,
    part: Part,
    attributes: Option<Value>,
) -> Object {
    Object {
        shape,
        layout,
        parts: [("data".to_string(), part)].into_iter().collect(),
        attributes,
    }
}
