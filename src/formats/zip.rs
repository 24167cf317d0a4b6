//! A small, strict zip reader for `.npz`: the central directory (with
//! zip64 records), local headers checked against it, stored and deflated
//! members. Every count and offset is bounded by the bytes that hold it;
//! member spans may not overlap (the overlapping-entry zip bomb), and
//! inflating never produces more than the declared size.

use crate::error::{Error, Result};
use crate::store::Store;
use std::collections::HashSet;
use std::io::Read;

pub(crate) const STORED: u16 = 0;
pub(crate) const DEFLATED: u16 = 8;

const EOCD_LEN: u64 = 22;
const CD_ENTRY_LEN: u64 = 46;
const LOCAL_LEN: u64 = 30;
const ZIP64_LOCATOR_LEN: u64 = 20;
const ZIP64_EOCD_LEN: u64 = 56;

pub(crate) fn err(rule: &'static str, offset: u64, detail: impl Into<String>) -> Error {
    Error::Foreign {
        format: "npz",
        rule,
        offset: Some(offset),
        detail: detail.into(),
    }
}

/// One member of the archive.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub name: String,
    pub method: u16,
    pub crc32: u32,
    pub compressed: u64,
    pub uncompressed: u64,
    /// Absolute offset of the member's (possibly compressed) data.
    pub data_offset: u64,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

struct Directory {
    entries: u64,
    size: u64,
    offset: u64,
    /// Where the end records start; the directory must end at or before.
    end: u64,
}

/// Finds the end-of-central-directory record (and its zip64 twin).
fn directory(store: &Store) -> Result<Directory> {
    let len = store.len();
    if len < EOCD_LEN {
        return Err(err(
            "zip-eocd",
            0,
            format!("{len} bytes is too small for a zip archive"),
        ));
    }
    let window = len.min(EOCD_LEN + u16::MAX as u64);
    let tail = store.read(len - window, window)?;
    // The record whose comment length reaches exactly to the end of file.
    let pos = (0..=tail.len() - EOCD_LEN as usize)
        .rev()
        .find(|&i| {
            tail[i..].starts_with(b"PK\x05\x06")
                && i + EOCD_LEN as usize + u16_at(&tail, i + 20) as usize == tail.len()
        })
        .ok_or_else(|| err("zip-eocd", len, "no end-of-central-directory record"))?;
    let eocd_at = len - window + pos as u64;
    let e = &tail[pos..];
    let (disk, cd_disk) = (u16_at(e, 4), u16_at(e, 6));
    let (here, total) = (u16_at(e, 8), u16_at(e, 10));
    let mut dir = Directory {
        entries: total as u64,
        size: u32_at(e, 12) as u64,
        offset: u32_at(e, 16) as u64,
        end: eocd_at,
    };
    let zip64 = total == u16::MAX || dir.size == u32::MAX as u64 || dir.offset == u32::MAX as u64;
    if zip64 {
        let at = eocd_at
            .checked_sub(ZIP64_LOCATOR_LEN)
            .ok_or_else(|| err("zip-zip64", eocd_at, "zip64 locator missing"))?;
        let loc = store.read(at, ZIP64_LOCATOR_LEN)?;
        if !loc.starts_with(b"PK\x06\x07") {
            return Err(err("zip-zip64", at, "zip64 locator missing"));
        }
        let rec_at = u64_at(&loc, 8);
        if rec_at.checked_add(ZIP64_EOCD_LEN).is_none_or(|e| e > at) {
            return Err(err(
                "zip-zip64",
                at,
                format!("zip64 record offset {rec_at} is out of bounds"),
            ));
        }
        let rec = store.read(rec_at, ZIP64_EOCD_LEN)?;
        if !rec.starts_with(b"PK\x06\x06") {
            return Err(err("zip-zip64", rec_at, "bad zip64 end record signature"));
        }
        if u32_at(&rec, 16) != 0 || u32_at(&rec, 20) != 0 || u64_at(&rec, 24) != u64_at(&rec, 32) {
            return Err(err(
                "zip-unsupported",
                rec_at,
                "multi-disk archives are not supported",
            ));
        }
        dir.entries = u64_at(&rec, 32);
        dir.size = u64_at(&rec, 40);
        dir.offset = u64_at(&rec, 48);
        dir.end = rec_at;
    } else if disk != 0 || cd_disk != 0 || here != total {
        return Err(err(
            "zip-unsupported",
            eocd_at,
            "multi-disk archives are not supported",
        ));
    }
    if dir.offset.checked_add(dir.size).is_none_or(|e| e > dir.end) {
        return Err(err(
            "zip-central-directory",
            eocd_at,
            format!(
                "central directory [{}, +{}) runs past its end records at {}",
                dir.offset, dir.size, dir.end
            ),
        ));
    }
    if dir
        .entries
        .checked_mul(CD_ENTRY_LEN)
        .is_none_or(|n| n > dir.size)
    {
        return Err(err(
            "zip-entry-count",
            eocd_at,
            format!(
                "{} entries cannot fit in a {}-byte central directory",
                dir.entries, dir.size
            ),
        ));
    }
    Ok(dir)
}

/// Reads the zip64 extended-information extra field, replacing each
/// 32-bit field that is saturated with its 64-bit value, in order.
fn apply_zip64(extra: &[u8], fields: &mut [&mut u64], at: u64) -> Result<()> {
    let mut i = 0usize;
    while i + 4 <= extra.len() {
        let (id, n) = (u16_at(extra, i), u16_at(extra, i + 2) as usize);
        let body = extra.get(i + 4..i + 4 + n).ok_or_else(|| {
            err(
                "zip-central-directory",
                at,
                "extra field runs past its entry",
            )
        })?;
        if id == 1 {
            let mut j = 0usize;
            for f in fields.iter_mut() {
                if **f == u32::MAX as u64 {
                    let v = body
                        .get(j..j + 8)
                        .ok_or_else(|| err("zip-zip64", at, "zip64 extra field is too short"))?;
                    **f = u64_at(v, 0);
                    j += 8;
                }
            }
            return Ok(());
        }
        i += 4 + n;
    }
    if fields.iter().any(|f| **f == u32::MAX as u64) {
        return Err(err(
            "zip-zip64",
            at,
            "saturated size or offset without a zip64 extra field",
        ));
    }
    Ok(())
}

/// Lists the members, each checked against its local header.
pub(crate) fn members(store: &Store) -> Result<Vec<Member>> {
    let dir = directory(store)?;
    let cd = store.read(dir.offset, dir.size)?;
    let mut out = Vec::new();
    let mut names = HashSet::new();
    let mut spans = Vec::new();
    let mut p = 0usize;
    for _ in 0..dir.entries {
        let at = dir.offset + p as u64;
        let fixed = cd
            .get(p..p + CD_ENTRY_LEN as usize)
            .ok_or_else(|| err("zip-central-directory", at, "entry runs past the directory"))?;
        if !fixed.starts_with(b"PK\x01\x02") {
            return Err(err(
                "zip-central-directory",
                at,
                "bad central directory entry signature",
            ));
        }
        let flags = u16_at(fixed, 8);
        let method = u16_at(fixed, 10);
        let crc32 = u32_at(fixed, 16);
        let mut compressed = u32_at(fixed, 20) as u64;
        let mut uncompressed = u32_at(fixed, 24) as u64;
        let (nlen, xlen, clen) = (
            u16_at(fixed, 28) as usize,
            u16_at(fixed, 30) as usize,
            u16_at(fixed, 32) as usize,
        );
        let mut local = u32_at(fixed, 42) as u64;
        let var_end = p + CD_ENTRY_LEN as usize + nlen + xlen + clen;
        let var = cd.get(p + CD_ENTRY_LEN as usize..var_end).ok_or_else(|| {
            err(
                "zip-central-directory",
                at,
                "entry name or extra runs past the directory",
            )
        })?;
        let name = std::str::from_utf8(&var[..nlen])
            .map_err(|_| err("zip-central-directory", at, "member name is not UTF-8"))?
            .to_string();
        apply_zip64(
            &var[nlen..nlen + xlen],
            &mut [&mut uncompressed, &mut compressed, &mut local],
            at,
        )?;
        if flags & 1 != 0 {
            return Err(err(
                "zip-unsupported",
                at,
                format!("member {name:?} is encrypted"),
            ));
        }
        if method != STORED && method != DEFLATED {
            return Err(err(
                "zip-unsupported",
                at,
                format!("member {name:?} uses compression method {method}; only stored and deflate are read"),
            ));
        }
        if method == STORED && compressed != uncompressed {
            return Err(err(
                "zip-central-directory",
                at,
                format!("stored member {name:?} has sizes {compressed} and {uncompressed}"),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(err(
                "zip-duplicate-name",
                at,
                format!("member {name:?} appears twice"),
            ));
        }
        // The local header must agree with the directory.
        if local.checked_add(LOCAL_LEN).is_none_or(|e| e > dir.offset) {
            return Err(err(
                "zip-local-header",
                at,
                format!("local header offset {local} is out of bounds"),
            ));
        }
        let lh = store.read(local, LOCAL_LEN)?;
        if !lh.starts_with(b"PK\x03\x04") {
            return Err(err("zip-local-header", local, "bad local header signature"));
        }
        if u16_at(&lh, 8) != method {
            return Err(err(
                "zip-local-header",
                local,
                format!("member {name:?}: local and central methods differ"),
            ));
        }
        let (lnlen, lxlen) = (u16_at(&lh, 26) as u64, u16_at(&lh, 28) as u64);
        if lnlen != nlen as u64 || store.read(local + LOCAL_LEN, lnlen)?.as_ref() != name.as_bytes()
        {
            return Err(err(
                "zip-local-header",
                local,
                format!("member {name:?}: local name differs"),
            ));
        }
        let data_offset = local + LOCAL_LEN + lnlen + lxlen;
        let end = data_offset
            .checked_add(compressed)
            .filter(|&e| e <= dir.offset)
            .ok_or_else(|| {
                err(
                    "zip-member-bounds",
                    local,
                    format!("member {name:?} data runs past the central directory"),
                )
            })?;
        spans.push((local, end, name.clone()));
        out.push(Member {
            name,
            method,
            crc32,
            compressed,
            uncompressed,
            data_offset,
        });
        p = var_end;
    }
    spans.sort();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(err(
                "zip-member-overlap",
                w[1].0,
                format!("members {:?} and {:?} overlap", w[0].2, w[1].2),
            ));
        }
    }
    Ok(out)
}

/// Checks a member's CRC-32 over its uncompressed bytes.
pub(crate) fn check_crc(m: &Member, crc: u32) -> Result<()> {
    if crc != m.crc32 {
        return Err(err(
            "zip-crc",
            m.data_offset,
            format!(
                "member {:?}: CRC-32 is {crc:08x}, the directory says {:08x}",
                m.name, m.crc32
            ),
        ));
    }
    Ok(())
}

/// CRC-32 of a stored member, read in chunks.
pub(crate) fn stored_crc(store: &Store, m: &Member) -> Result<u32> {
    const CHUNK: u64 = 8 << 20;
    let mut h = crc32fast::Hasher::new();
    let mut at = 0u64;
    while at < m.compressed {
        let n = (m.compressed - at).min(CHUNK);
        h.update(&store.read(m.data_offset + at, n)?);
        at += n;
    }
    Ok(h.finalize())
}

/// Inflates a member into `dst`, which has exactly its declared
/// uncompressed size: a stream that ends early or would write past it is
/// an error, so a crafted member can never grow memory.
pub(crate) fn inflate_into(store: &Store, m: &Member, dst: &mut [u8]) -> Result<()> {
    let src = store.read(m.data_offset, m.compressed)?;
    let mut dec = flate2::read::DeflateDecoder::new(&src[..]);
    let bad = |detail: String| {
        err(
            "zip-inflate",
            m.data_offset,
            format!("member {:?}: {detail}", m.name),
        )
    };
    dec.read_exact(dst).map_err(|e| {
        bad(format!(
            "deflate stream ends before the declared {} bytes: {e}",
            dst.len()
        ))
    })?;
    let mut probe = [0u8; 1];
    match dec.read(&mut probe) {
        Ok(0) => {}
        Ok(_) => {
            return Err(bad(format!(
                "deflate stream is longer than the declared {} bytes",
                dst.len()
            )))
        }
        Err(e) => return Err(bad(format!("corrupt deflate stream: {e}"))),
    }
    check_crc(m, crc32fast::hash(dst))
}
