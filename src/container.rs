//! The container layer (L0): magic, footer, alignment and the structural
//! checks on every blob reference.

use crate::error::{Error, Result, Rule};
use crate::manifest::{Blob, Manifest};
use std::collections::BTreeMap;

/// `\x89ZT2\r\n\x1a\n`, at offset 0 and at the end of the footer.
pub const MAGIC: [u8; 8] = [0x89, b'Z', b'T', b'2', 0x0d, 0x0a, 0x1a, 0x0a];
/// Size of the footer.
pub const FOOTER_LEN: u64 = 40;
/// Smallest possible file: magic + footer.
pub const MIN_FILE_LEN: u64 = 48;
/// Every blob offset is a multiple of this and at least this.
pub const ALIGN_FLOOR: u64 = 4096;
/// Placement of canonical files.
pub const CANONICAL_ALIGN: u64 = 65536;
/// The footer version this crate reads and writes.
pub const VERSION: u32 = 2;
/// Manifest size cap of the format.
pub const MAX_MANIFEST_LEN: u64 = 1 << 30;

/// The 40-byte footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Footer {
    pub manifest_offset: u64,
    pub manifest_length: u64,
    pub manifest_hash: u64,
    pub version: u32,
    pub reserved: u32,
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

impl Footer {
    /// Parses the last 40 bytes of a file of `file_len` bytes.
    pub fn parse(bytes: &[u8; 40], file_len: u64) -> Result<Footer> {
        let at = file_len - FOOTER_LEN;
        if bytes[32..40] != MAGIC {
            return Err(Error::corrupt_at(
                Rule::FooterMagic,
                at + 32,
                "the file does not end with the ztensor v2 magic (truncated or not a .zt file)",
            ));
        }
        let version = u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
        if version != VERSION {
            return Err(Error::corrupt_at(
                Rule::VersionUnsupported,
                at + 24,
                format!("footer version is {version}; this reader supports {VERSION}"),
            ));
        }
        Ok(Footer {
            manifest_offset: le_u64(&bytes[0..8]),
            manifest_length: le_u64(&bytes[8..16]),
            manifest_hash: le_u64(&bytes[16..24]),
            version,
            reserved: u32::from_le_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]),
        })
    }

    pub fn encode(&self) -> [u8; 40] {
        let mut out = [0u8; 40];
        out[0..8].copy_from_slice(&self.manifest_offset.to_le_bytes());
        out[8..16].copy_from_slice(&self.manifest_length.to_le_bytes());
        out[16..24].copy_from_slice(&self.manifest_hash.to_le_bytes());
        out[24..28].copy_from_slice(&self.version.to_le_bytes());
        out[28..32].copy_from_slice(&self.reserved.to_le_bytes());
        out[32..40].copy_from_slice(&MAGIC);
        out
    }

    /// A data shard has no manifest: offset, length and hash all zero.
    pub fn is_data_shard(&self) -> bool {
        self.manifest_length == 0
    }

    /// Checks the manifest reference; returns its blob, or `None` for a
    /// data shard.
    pub fn manifest_blob(&self, file_len: u64, max_len: u64) -> Result<Option<Blob>> {
        let at = file_len - FOOTER_LEN;
        if self.manifest_length == 0 {
            if self.manifest_offset != 0 || self.manifest_hash != 0 {
                return Err(Error::corrupt_at(
                    Rule::DataShardFooter,
                    at,
                    "manifest length is 0 (data shard) but offset or hash is not",
                ));
            }
            return Ok(None);
        }
        let cap = max_len.min(MAX_MANIFEST_LEN);
        if self.manifest_length > cap {
            return Err(Error::corrupt_at(
                Rule::ManifestTooLarge,
                at + 8,
                format!(
                    "manifest is {} bytes, the cap is {cap}",
                    self.manifest_length
                ),
            ));
        }
        let blob = Blob {
            offset: self.manifest_offset,
            length: self.manifest_length,
        };
        if blob.offset < ALIGN_FLOOR || !blob.offset.is_multiple_of(ALIGN_FLOOR) {
            return Err(Error::corrupt_at(
                Rule::ManifestMisaligned,
                at,
                format!(
                    "manifest offset {} is not a multiple of 4096 ≥ 4096",
                    blob.offset
                ),
            ));
        }
        match blob.end() {
            Some(end) if end <= at => Ok(Some(blob)),
            _ => Err(Error::corrupt_at(
                Rule::ManifestOutOfBounds,
                at,
                format!(
                    "manifest [{}, +{}) runs past the data region ending at {at}",
                    blob.offset, blob.length
                ),
            )),
        }
    }
}

/// Checks the header magic and the minimum length.
pub fn check_header(first: &[u8], file_len: u64) -> Result<()> {
    if file_len < MIN_FILE_LEN {
        return Err(Error::corrupt_at(
            Rule::FileTooSmall,
            0,
            format!("file is {file_len} bytes; a .zt file has at least {MIN_FILE_LEN}"),
        ));
    }
    if first.get(..8) != Some(&MAGIC[..]) {
        return Err(Error::corrupt_at(
            Rule::HeaderMagic,
            0,
            "the file does not start with the ztensor v2 magic",
        ));
    }
    Ok(())
}

/// Checks alignment and bounds of one blob in a file of `file_len` bytes.
pub fn check_blob(blob: Blob, file_len: u64) -> Result<()> {
    if blob.offset < ALIGN_FLOOR {
        return Err(Error::corrupt(
            Rule::BlobBelowFloor,
            format!("blob offset {} is below 4096", blob.offset),
        ));
    }
    if !blob.offset.is_multiple_of(ALIGN_FLOOR) {
        return Err(Error::corrupt(
            Rule::BlobMisaligned,
            format!("blob offset {} is not a multiple of 4096", blob.offset),
        ));
    }
    let limit = file_len.saturating_sub(FOOTER_LEN);
    match blob.end() {
        Some(end) if end <= limit => Ok(()),
        _ => Err(Error::corrupt(
            Rule::BlobOutOfBounds,
            format!(
                "blob [{}, +{}) runs past the data region ending at {limit}",
                blob.offset, blob.length
            ),
        )),
    }
}

/// Requires a set of references into one file to be pairwise identical
/// or disjoint (zero-length blobs are exempt). `label` names a reference
/// for the error message.
pub fn check_overlap<L: Fn(usize) -> String>(
    file: &str,
    refs: &mut Vec<(Blob, usize)>,
    label: L,
) -> Result<()> {
    refs.retain(|(b, _)| b.length > 0);
    refs.sort_unstable();
    refs.dedup_by(|a, b| a.0 == b.0);
    for w in refs.windows(2) {
        let (a, ai) = w[0];
        let (b, bi) = w[1];
        // Ends were bounds-checked before this runs.
        if a.end().unwrap_or(u64::MAX) > b.offset {
            return Err(Error::corrupt(
                Rule::BlobPartialOverlap,
                format!(
                    "in {file}: {} [{}, +{}) partly overlaps {} [{}, +{})",
                    label(ai),
                    a.offset,
                    a.length,
                    label(bi),
                    b.offset,
                    b.length
                ),
            ));
        }
    }
    Ok(())
}

/// Runs the structural checks of every blob reference in a manifest:
/// bounds and alignment (against this file, or a shard's declared size)
/// and the identical-or-disjoint rule per file.
pub fn check_manifest_blobs(manifest: &Manifest, manifest_blob: Blob, file_len: u64) -> Result<()> {
    // Reference labels: index 0 is the manifest, then (object, part) pairs.
    let mut labels: Vec<(&str, &str)> = vec![("", "")];
    let mut groups: BTreeMap<Option<&str>, Vec<(Blob, usize)>> = BTreeMap::new();
    groups.entry(None).or_default().push((manifest_blob, 0));
    for (name, object) in &manifest.objects {
        for (role, part) in &object.parts {
            let len = match &part.shard {
                None => file_len,
                Some(s) => manifest.shards.get(s).map_or(0, |e| e.size),
            };
            check_blob(part.blob, len).map_err(|e| match e {
                Error::Corrupt {
                    rule,
                    offset,
                    detail,
                } => Error::Corrupt {
                    rule,
                    offset,
                    detail: format!("object {name:?} part {role:?}: {detail}"),
                },
                other => other,
            })?;
            labels.push((name, role));
            groups
                .entry(part.shard.as_deref())
                .or_default()
                .push((part.blob, labels.len() - 1));
        }
    }
    let label = |i: usize| match labels[i] {
        ("", "") => "the manifest".to_string(),
        (o, p) => format!("object {o:?} part {p:?}"),
    };
    for (shard, refs) in groups.iter_mut() {
        let file = match shard {
            None => "this file".to_string(),
            Some(s) => format!("shard {s:?}"),
        };
        check_overlap(&file, refs, label)?;
    }
    Ok(())
}

/// Rounds `x` up to a multiple of `align` (a power of two), `None` on overflow.
pub fn align_up(x: u64, align: u64) -> Option<u64> {
    x.checked_add(align - 1).map(|v| v & !(align - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(offset: u64, length: u64) -> (Blob, usize) {
        (Blob { offset, length }, 0)
    }

    fn check_overlap(file: &str, refs: &mut Vec<(Blob, usize)>) -> Result<()> {
        super::check_overlap(file, refs, |i| i.to_string())
    }

    #[test]
    fn overlap_rule() {
        assert!(check_overlap("f", &mut vec![b(4096, 10), b(4096, 10), b(8192, 1)]).is_ok());
        assert!(check_overlap("f", &mut vec![b(4096, 10), b(4096, 0), b(4096, 20)]).is_err());
        assert!(check_overlap("f", &mut vec![b(4096, 5000), b(8192, 1)]).is_err());
        assert!(check_overlap("f", &mut vec![b(4096, 4096), b(8192, 1)]).is_ok());
    }

    #[test]
    fn blob_bounds() {
        assert_eq!(
            check_blob(
                Blob {
                    offset: 0,
                    length: 0
                },
                10_000
            )
            .unwrap_err()
            .rule(),
            Some(Rule::BlobBelowFloor)
        );
        assert_eq!(
            check_blob(
                Blob {
                    offset: 4097,
                    length: 0
                },
                10_000
            )
            .unwrap_err()
            .rule(),
            Some(Rule::BlobMisaligned)
        );
        assert_eq!(
            check_blob(
                Blob {
                    offset: u64::MAX - 4095,
                    length: 8192
                },
                10_000
            )
            .unwrap_err()
            .rule(),
            Some(Rule::BlobOutOfBounds)
        );
        assert!(check_blob(
            Blob {
                offset: 4096,
                length: 100
            },
            4096 + 100 + 40
        )
        .is_ok());
        assert!(check_blob(
            Blob {
                offset: 4096,
                length: 101
            },
            4096 + 100 + 40
        )
        .is_err());
    }

    #[test]
    fn footer_round_trip() {
        let f = Footer {
            manifest_offset: 8192,
            manifest_length: 99,
            manifest_hash: 0xdead_beef,
            version: 2,
            reserved: 0,
        };
        assert_eq!(Footer::parse(&f.encode(), 10_000).unwrap(), f);
        let mut bad = f.encode();
        bad[24] = 3;
        assert_eq!(
            Footer::parse(&bad, 10_000).unwrap_err().rule(),
            Some(Rule::VersionUnsupported)
        );
    }
}
