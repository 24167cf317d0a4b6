//! Writing a sharded `.zt` set (spec §8.5): tensor bytes go into data
//! shards `<stem>-00001.zt`, `<stem>-00002.zt`, ... (manifest-less
//! containers), and the root `<stem>.zt` holds the manifest, whose parts
//! name their shard, and the shard table with every shard's size and
//! BLAKE3 digest. The shards are written and made durable first and the
//! root last, so an interrupted conversion leaves no root that opens.

use super::{copied_object, set_fingerprinted_attributes, start_report, ConvertReport, PartCopier};
use crate::digest::DigestAlg;
use crate::error::{Error, Result};
use crate::manifest::Object;
use crate::reader::{OpenOptions, Reader};
use crate::store::Backend;
use crate::writer::{PartOptions, WriteOptions, Writer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Smallest `max_shard_size` accepted: one aligned blob plus a footer.
pub const MIN_SHARD_SIZE: u64 = 1 << 16;
/// Most data shards one set may have (names are five digits).
pub const MAX_SET_SHARDS: u32 = 99_999;

/// Checks a requested maximum shard size against [`MIN_SHARD_SIZE`].
pub fn check_max_shard_size(max_shard_size: u64) -> Result<()> {
    if max_shard_size < MIN_SHARD_SIZE {
        return Err(Error::usage(format!(
            "max shard size {max_shard_size} is below the minimum of {MIN_SHARD_SIZE} bytes"
        )));
    }
    Ok(())
}

/// Whether an item of `need` bytes still fits a shard holding `items`
/// items in `used` bytes: an empty shard takes anything (an item larger
/// than the limit gets a shard of its own).
pub fn fits(items: usize, used: u64, need: u64, max_shard_size: u64) -> bool {
    items == 0 || used.saturating_add(need) <= max_shard_size
}

/// Groups items of the given byte costs, in order, into consecutive runs
/// (shards) of at most `max_shard_size` bytes, where shard `k` also costs
/// `overhead(k)` bytes; an item that alone exceeds the limit gets a shard
/// of its own. Never returns an empty run, except one for no items.
pub fn plan_runs(
    costs: &[u64],
    overhead: impl Fn(usize) -> u64,
    max_shard_size: u64,
) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let (mut start, mut used) = (0usize, overhead(0));
    for (i, &cost) in costs.iter().enumerate() {
        if !fits(i - start, used, cost, max_shard_size) {
            runs.push(start..i);
            start = i;
            used = overhead(runs.len());
        }
        used = used.saturating_add(cost);
    }
    runs.push(start..costs.len());
    runs
}

/// The path of data shard `name` of root `output`: `<stem>-<name>.zt`.
pub fn shard_file(output: &Path, name: &str) -> Result<PathBuf> {
    let stem = output
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| Error::usage("output file name is not UTF-8"))?;
    Ok(output.with_file_name(format!("{stem}-{name}.zt")))
}

fn shard_name(n: u32) -> String {
    format!("{n:05}")
}

fn align_up(n: u64, align: u64) -> u64 {
    n.div_ceil(align).saturating_mul(align)
}

struct OpenShard {
    name: String,
    path: PathBuf,
    writer: Writer,
    /// Bytes written so far (end of the last blob).
    used: u64,
    parts: usize,
}

/// Converts any readable file or set (see [`Reader`]) into a sharded `.zt`
/// set whose data shards stay under `max_shard_size` bytes (a single part
/// larger than that gets a shard of its own). Returns what was written;
/// `output_bytes` counts the root and every shard.
pub fn convert_sharded(
    input: &Path,
    output: &Path,
    options: WriteOptions,
    max_shard_size: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ConvertReport> {
    check_max_shard_size(max_shard_size)?;
    let reader = OpenOptions::default().backend(Backend::Pread).open(input)?;
    convert_sharded_reader(&reader, output, options, max_shard_size, progress)
}

/// [`convert_sharded`] from an open reader (e.g. a remote object).
pub fn convert_sharded_reader(
    reader: &Reader,
    output: &Path,
    options: WriteOptions,
    max_shard_size: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ConvertReport> {
    check_max_shard_size(max_shard_size)?;
    if options.canonical {
        return Err(Error::usage("canonical form is single-file"));
    }
    let mut report = start_report(reader);
    let mut names: Vec<(&str, (Option<&str>, u64))> = reader
        .manifest()
        .objects
        .iter()
        .map(|(n, o)| {
            let first = o
                .parts
                .values()
                .map(|p| (p.shard.as_deref(), p.blob.offset));
            (n.as_str(), first.min().unwrap_or((None, 0)))
        })
        .collect();
    names.sort_by_key(|&(n, at)| (at, n));

    let mut written: Vec<(String, PathBuf)> = Vec::new();
    let mut objects: Vec<(String, Object)> = Vec::new();
    let mut copier = PartCopier::new(reader, progress);
    let mut current: Option<OpenShard> = None;
    let result = (|| -> Result<()> {
        for &(name, _) in &names {
            let src = reader.object(name)?;
            let mut parts = BTreeMap::new();
            for (role, p) in &src.parts {
                let size = p.decoded_size();
                // Roll over when this part would take the shard past the
                // limit (blob aligned, plus the 40-byte footer).
                let need = align_up(size, options.align).saturating_add(options.align + 40);
                if let Some(s) = &current {
                    if !fits(
                        s.parts,
                        align_up(s.used, options.align),
                        need,
                        max_shard_size,
                    ) {
                        let s = current
                            .take()
                            .ok_or_else(|| Error::usage("no open shard"))?;
                        s.writer.finish_data_shard()?;
                        written.push((s.name, s.path));
                    }
                }
                if current.is_none() {
                    let n = u32::try_from(written.len() + 1)
                        .ok()
                        .filter(|&n| n <= MAX_SET_SHARDS)
                        .ok_or_else(|| Error::usage("more than 99999 shards"))?;
                    let name = shard_name(n);
                    let path = shard_file(output, &name)?;
                    let writer = Writer::create_with(&path, options.clone())?;
                    current = Some(OpenShard {
                        name,
                        path,
                        writer,
                        used: 0,
                        parts: 0,
                    });
                }
                let shard = current
                    .as_mut()
                    .ok_or_else(|| Error::usage("no open shard"))?;
                let mut sink = shard.writer.stream_part(PartOptions {
                    etype: p.etype.clone(),
                    compression: options.compression,
                    digest: options.digest,
                })?;
                copier.copy(reader, name, role, size, &mut sink)?;
                let mut part = sink.finish()?;
                shard.used = part.blob.end().unwrap_or(u64::MAX);
                shard.parts += 1;
                part.shard = Some(shard.name.clone());
                parts.insert(role.clone(), part);
            }
            objects.push((name.to_string(), copied_object(&mut report, src, parts)));
        }
        if let Some(s) = current.take() {
            s.writer.finish_data_shard()?;
            written.push((s.name, s.path));
        }
        Ok(())
    })();
    if let Err(e) = result {
        if let Some(s) = current.take() {
            s.writer.abandon();
        }
        remove_all(&written);
        return Err(e);
    }
    match write_root(reader, output, options, &written, objects, copier.digests) {
        Ok(root) => {
            report.output_bytes = root;
            for (_, path) in &written {
                report.output_bytes += std::fs::metadata(path)
                    .map_err(|e| Error::io(format!("reading metadata of {}", path.display()), e))?
                    .len();
            }
            Ok(report)
        }
        Err(e) => {
            remove_all(&written);
            Err(e)
        }
    }
}

fn remove_all(written: &[(String, PathBuf)]) {
    for (_, path) in written {
        let _ = std::fs::remove_file(path);
    }
}

fn write_root(
    reader: &Reader,
    output: &Path,
    options: WriteOptions,
    shards: &[(String, PathBuf)],
    objects: Vec<(String, Object)>,
    digests: Vec<(String, String, u64, [u8; 32])>,
) -> Result<u64> {
    let mut w = Writer::create_with(output, options)?;
    for (name, path) in shards {
        w.add_shard(name, path, DigestAlg::Blake3)?;
    }
    for (name, object) in objects {
        w.add_object(&name, object)?;
    }
    set_fingerprinted_attributes(&mut w, reader, digests)?;
    w.finish()
}
