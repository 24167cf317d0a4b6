//! Export to a split GGUF set, llama.cpp's convention (`gguf-split`):
//! files `<stem>-00001-of-0000N.gguf`, each a complete GGUF file carrying
//! `split.no` (u16, 0-based), `split.count` (u16) and
//! `split.tensors.count` (i32, the tensors of the whole set). The first
//! shard also holds every metadata key of the model (before the split
//! keys, as `gguf-split` writes them); later shards hold only the split
//! keys, plus `general.alignment` when it is not the default 32 (each
//! shard is parsed on its own and places its data by its own key). Tensors keep their export order and are never cut: shards are
//! planned with [`crate::convert::shard_write::plan_runs`] so that each
//! stays within the maximum size, except that a tensor larger than it
//! gets a shard of its own.
//!
//! Every limit of the single-file export holds per shard (it is the same
//! plan, checked before anything is written), plus the split's own: at
//! most 65,535 shards (`split.count` is a u16) and `i32::MAX` tensors.
//! Shards are written to temp files and renamed one by one; on a failure
//! the shards already in place are removed.

use crate::convert::export::{plan_gguf, write_gguf_file, ExportReport, GgufPlan, TensorInfo};
use crate::convert::shard_write::{check_max_shard_size, plan_runs};
use crate::error::{Error, Result};
use crate::formats::sharded::{split_gguf_file_name, SPLIT_KEYS};
use crate::reader::Reader;
use std::path::{Path, PathBuf};

/// Most shards a split GGUF set can name (`split.count` is a u16).
pub const MAX_SPLIT_SHARDS: usize = u16::MAX as usize;

const GGUF_U16: u32 = 2;
const GGUF_I32: u32 = 5;
const GGUF_U32: u32 = 4;

/// The encoded split keys of shard `no` (0-based) of `count`.
fn split_kv(no: u16, count: u16, tensors: i32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut key = |k: &str, t: u32, v: &[u8]| {
        out.extend_from_slice(&(k.len() as u64).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&t.to_le_bytes());
        out.extend_from_slice(v);
    };
    key(SPLIT_KEYS[0], GGUF_U16, &no.to_le_bytes());
    key(SPLIT_KEYS[1], GGUF_U16, &count.to_le_bytes());
    key(SPLIT_KEYS[2], GGUF_I32, &tensors.to_le_bytes());
    out
}

/// What a later shard carries besides the split keys: `general.alignment`
/// when the data is not placed by GGUF's default of 32 (each shard is
/// parsed on its own, so each must say how its data is aligned).
fn alignment_kv(alignment: u64) -> Vec<u8> {
    let mut out = Vec::new();
    if alignment != crate::formats::gguf::DEFAULT_ALIGNMENT {
        let k = "general.alignment";
        out.extend_from_slice(&(k.len() as u64).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&GGUF_U32.to_le_bytes());
        out.extend_from_slice(&(alignment as u32).to_le_bytes());
    }
    out
}

/// The shard paths of a split export to `output` (`dir/<stem>.gguf`).
pub fn split_paths(output: &Path, count: usize) -> Result<Vec<PathBuf>> {
    let stem = output
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::usage(format!("{}: no UTF-8 file stem", output.display())))?;
    let count = u32::try_from(count).map_err(|_| Error::usage("too many shards"))?;
    Ok((1..=count)
        .map(|no| output.with_file_name(split_gguf_file_name(stem, no, count)))
        .collect())
}

/// Writes `r` as a split GGUF set next to `output`, each file within
/// `max_shard_size` bytes (a larger tensor gets a file of its own).
pub fn to_split_gguf(r: &Reader, output: &Path, max_shard_size: u64) -> Result<ExportReport> {
    check_max_shard_size(max_shard_size)?;
    let plan = plan_gguf(r)?;
    let n_tensors = i32::try_from(plan.tensors.len()).map_err(|_| {
        Error::Unsupported(format!(
            "{} tensors: split.tensors.count is an i32",
            plan.tensors.len()
        ))
    })?;
    let runs = shard_runs(&plan, max_shard_size);
    if runs.len() > MAX_SPLIT_SHARDS {
        return Err(Error::Unsupported(format!(
            "{} shards of at most {max_shard_size} bytes: split.count is a u16 (at most {MAX_SPLIT_SHARDS})",
            runs.len()
        )));
    }
    let count = runs.len() as u16;
    let paths = split_paths(output, runs.len())?;
    let mut written: Vec<PathBuf> = Vec::with_capacity(paths.len());
    let mut bytes = 0u64;
    for (no, (run, path)) in runs.iter().zip(&paths).enumerate() {
        let split = split_kv(no as u16, count, n_tensors);
        let (kv, n_keys) = if no == 0 {
            ([plan.kv.as_slice(), &split].concat(), plan.n_keys + 3)
        } else {
            let align = alignment_kv(plan.alignment);
            let n = 3 + usize::from(!align.is_empty());
            ([align.as_slice(), &split].concat(), n)
        };
        let tensors: &[TensorInfo] = &plan.tensors[run.clone()];
        match write_gguf_file(r, path, &plan, &kv, n_keys, tensors) {
            Ok(n) => bytes += n,
            Err(e) => {
                for p in &written {
                    let _ = std::fs::remove_file(p);
                }
                return Err(e);
            }
        }
        written.push(path.clone());
    }
    Ok(ExportReport {
        tensors: plan.tensors.len(),
        metadata_keys: plan.n_keys,
        skipped_attributes: 0,
        bytes,
        files: written,
    })
}

/// Groups the plan's tensors into shards: a shard costs its 24-byte
/// header, its keys, the padding to the data (at most the alignment) and
/// each tensor's info record and aligned data.
fn shard_runs(plan: &GgufPlan, max_shard_size: u64) -> Vec<std::ops::Range<usize>> {
    let split = split_kv(0, 0, 0).len() as u64;
    let overhead = |k: usize| {
        let kv = if k == 0 {
            plan.kv.len()
        } else {
            alignment_kv(plan.alignment).len()
        } as u64;
        (24 + split + plan.alignment).saturating_add(kv)
    };
    let costs: Vec<u64> = plan
        .tensors
        .iter()
        .map(|t| t.cost(plan.alignment))
        .collect();
    plan_runs(&costs, overhead, max_shard_size)
}
