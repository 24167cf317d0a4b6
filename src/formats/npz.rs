//! `.npy` files and `.npz` archives as manifests. Stored members are read
//! in place (zero-copy); deflated members (`savez_compressed`) are
//! inflated once at open into one image, bounded by the caller's
//! `max_decoded_bytes`. Every member's CRC-32 is checked at open. Members
//! not ending in `.npy` are skipped; `x.npy` becomes the tensor `x`.

use super::zip::{self, Member};
use super::Foreign;
use crate::container::align_up;
use crate::error::{Error, Result};
use crate::manifest::{Blob, Manifest, Object, Part};
use crate::npy::{self, NpyHeader};
use crate::store::Store;

fn dense(h: &NpyHeader, offset: u64) -> Object {
    let part = Part {
        etype: h.etype.clone(),
        blob: Blob {
            offset,
            length: h.data_len,
        },
        shard: None,
        encoding: None,
        decoded_length: None,
        digest: None,
    };
    Object {
        shape: h.shape.clone(),
        layout: "dense".into(),
        parts: [("data".to_string(), part)].into_iter().collect(),
        attributes: None,
    }
}

/// Parses the `.npy` header at `offset` of a store, for `.npy` bytes of
/// `len` bytes.
fn header_at(store: &Store, offset: u64, len: u64) -> Result<NpyHeader> {
    let first = store.read(offset, len.min(12))?;
    let span = npy::header_span(&first)?.min(len);
    npy::parse_header(&store.read(offset, span)?, len)
}

/// A lone `.npy` file: one tensor named `array`.
pub(crate) fn npy_manifest(store: &Store) -> Result<Manifest> {
    let h = header_at(store, 0, store.len())?;
    let mut m = Manifest::default();
    m.objects.insert("array".into(), dense(&h, h.data_offset));
    Ok(m)
}

fn in_member(e: Error, name: &str) -> Error {
    match e {
        Error::Foreign {
            format,
            rule,
            offset,
            detail,
        } => Error::Foreign {
            format,
            rule,
            offset,
            detail: format!("member {name:?}: {detail}"),
        },
        other => other,
    }
}

/// A `.npz` archive: one tensor per `.npy` member.
pub(crate) fn npz_manifest(store: &Store, max_decoded: u64) -> Result<Foreign> {
    let members: Vec<(String, Member)> = zip::members(store)?
        .into_iter()
        .filter_map(|m| Some((m.name.strip_suffix(".npy")?.to_string(), m)))
        .collect();
    if let Some((_, m)) = members.iter().find(|(n, _)| n.is_empty()) {
        return Err(zip::err(
            "npz-name",
            m.data_offset,
            "member \".npy\" has an empty tensor name",
        ));
    }
    let mut manifest = Manifest::default();
    if members.iter().all(|(_, m)| m.method == zip::STORED) {
        for (name, m) in &members {
            let h = header_at(store, m.data_offset, m.uncompressed)
                .map_err(|e| in_member(e, &m.name))?;
            zip::check_crc(m, zip::stored_crc(store, m)?)?;
            manifest
                .objects
                .insert(name.clone(), dense(&h, m.data_offset + h.data_offset));
        }
        return Ok(Foreign {
            manifest,
            image: None,
        });
    }
    let mut image = super::image_buffer(
        members.iter().map(|(_, m)| m.uncompressed),
        max_decoded,
        "npz members",
    )?;
    for (name, m) in &members {
        let start = image.len();
        image.resize(start + m.uncompressed as usize, 0);
        let dst = &mut image[start..];
        if m.method == zip::STORED {
            store.read_into(m.data_offset, dst)?;
            zip::check_crc(m, crc32fast::hash(dst))?;
        } else {
            zip::inflate_into(store, m, dst)?;
        }
        let h = npy::parse_header(dst, m.uncompressed).map_err(|e| in_member(e, &m.name))?;
        // Keep the data at its place in the decoded member; pad to 64.
        manifest
            .objects
            .insert(name.clone(), dense(&h, start as u64 + h.data_offset));
        let padded = align_up(image.len() as u64, 64).unwrap_or(image.len() as u64);
        image.resize(padded as usize, 0);
    }
    Ok(Foreign {
        manifest,
        image: Some(image),
    })
}
