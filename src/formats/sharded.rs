//! Multi-file model sets opened as one [`crate::Reader`]:
//!
//! - safetensors sets: a `*.safetensors.index.json` whose `weight_map`
//!   maps every tensor name to the shard file holding it;
//! - split GGUF: `<prefix>-00001-of-0000N.gguf` ..., each shard carrying
//!   `split.no` (0-based), `split.count` and `split.tensors.count`; opening
//!   any shard opens the whole set.
//!
//! Every shard is opened and its header parsed up front, so a missing,
//! truncated or swapped shard is an error naming that shard at open time.
//! Our own sharded `.zt` sets need nothing here: their root file declares
//! its data shards (spec §8) and [`crate::convert::shard_write`] writes them.

use crate::error::{Error, Result, Rule};
use crate::formats::gguf::{self, GgufFile, GgufValue};
use crate::formats::gguf_manifest::{gguf_attributes, gguf_manifest};
use crate::formats::safetensors::safetensors_manifest;
use crate::formats::{safetensors, Format};
use crate::manifest::Manifest;
use crate::store::{Backend, Store};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Index files larger than this are refused before they are read.
pub const MAX_INDEX_BYTES: u64 = 64 << 20;
/// Most shard files one set may name.
pub const MAX_SHARDS: usize = 65_535;

/// A set's shards opened and merged into one manifest, whose parts name
/// the shard file they live in; the reader is built from it.
pub(crate) struct Set {
    pub path: PathBuf,
    pub format: Format,
    pub manifest: Manifest,
    pub shards: Vec<(String, Store)>,
}

/// Opens `path` as a set when its name says it is one (a safetensors
/// index, or a split GGUF shard); `None` for an ordinary file.
pub(crate) fn open_set(path: &Path, backend: Backend) -> Result<Option<Set>> {
    let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(None);
    };
    if file_name.ends_with(".safetensors.index.json") {
        return open_safetensors_index(path, backend).map(Some);
    }
    if let Some((prefix, _, count)) = split_gguf_name(file_name) {
        return open_split_gguf(path, prefix, count, backend).map(Some);
    }
    Ok(None)
}

fn shard_error(shard: &str, path: &Path, detail: impl std::fmt::Display) -> Error {
    Error::corrupt(
        Rule::ShardFile,
        format!("shard {shard:?} ({}): {detail}", path.display()),
    )
}

/// A shard named by an index must be a plain file name in the index's own
/// directory: no separators, no `.`/`..`, no NUL, at most 255 bytes.
pub fn check_set_file_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !(name.len() >= 2 && name.as_bytes()[1] == b':');
    if ok {
        Ok(())
    } else {
        Err(Error::corrupt(
            Rule::ShardName,
            format!("shard file name {name:?} must be a plain file name in the same directory"),
        ))
    }
}

/// Opens one shard file, mapping every failure to an error naming it.
fn open_shard(dir: &Path, name: &str, backend: Backend) -> Result<(PathBuf, Store)> {
    check_set_file_name(name)?;
    let path = dir.join(name);
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(shard_error(name, &path, "is missing"))
        }
        Err(e) => return Err(shard_error(name, &path, e)),
        Ok(m) if !m.is_file() => return Err(shard_error(name, &path, "is not a regular file")),
        Ok(_) => {}
    }
    let store = Store::open(&path, backend).map_err(|e| shard_error(name, &path, e))?;
    Ok((path, store))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The `weight_map` of a safetensors index, shard names checked.
pub fn parse_index(bytes: &[u8]) -> Result<BTreeMap<String, String>> {
    let bad = |detail: String| Error::Foreign {
        format: "safetensors-index",
        rule: "st-index",
        offset: None,
        detail,
    };
    let json: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("index is not JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("index has no \"weight_map\" object".into()))?;
    let mut out = BTreeMap::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("weight_map[{tensor:?}] is not a string")))?;
        check_set_file_name(file)?;
        crate::manifest::check_name("tensor", tensor)?;
        out.insert(tensor.clone(), file.to_string());
    }
    if out.is_empty() {
        return Err(bad("index \"weight_map\" is empty".into()));
    }
    Ok(out)
}

fn open_safetensors_index(path: &Path, backend: Backend) -> Result<Set> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("reading metadata of {}", path.display()), e))?
        .len();
    if len > MAX_INDEX_BYTES {
        return Err(Error::Limit {
            what: format!("size of the index {}", path.display()),
            value: len,
            limit: MAX_INDEX_BYTES,
        });
    }
    let bytes =
        std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let weight_map = parse_index(&bytes)?;
    let mut files: Vec<&str> = weight_map.values().map(String::as_str).collect();
    files.sort_unstable();
    files.dedup();
    if files.len() > MAX_SHARDS {
        return Err(Error::Limit {
            what: "shard files named by the index".into(),
            value: files.len() as u64,
            limit: MAX_SHARDS as u64,
        });
    }
    let dir = parent_dir(path);
    let mut merged = Manifest::default();
    let mut held_by: BTreeMap<String, &str> = BTreeMap::new();
    let mut stores = Vec::with_capacity(files.len());
    for &file in &files {
        let (shard_path, store) = open_shard(&dir, file, backend)?;
        let st = safetensors::parse_store(&store).map_err(|e| {
            shard_error(
                file,
                &shard_path,
                format!("not a valid safetensors file: {e}"),
            )
        })?;
        let m = safetensors_manifest(&st)?;
        if merged.attributes.is_none() {
            merged.attributes = m.attributes;
        }
        for (name, mut object) in m.objects {
            if let Some(other) = held_by.get(&name) {
                return Err(shard_error(
                    file,
                    &shard_path,
                    format!("tensor {name:?} is also in shard {other:?}"),
                ));
            }
            match weight_map.get(&name) {
                None => {
                    return Err(shard_error(
                        file,
                        &shard_path,
                        format!("holds tensor {name:?}, which the index does not list"),
                    ))
                }
                Some(f) if f != file => {
                    return Err(shard_error(
                        file,
                        &shard_path,
                        format!(
                        "holds tensor {name:?}, which the index places in {f:?} (swapped shards?)"
                    ),
                    ))
                }
                Some(_) => {}
            }
            for part in object.parts.values_mut() {
                part.shard = Some(file.to_string());
            }
            held_by.insert(name.clone(), file);
            merged.objects.insert(name, object);
        }
        stores.push((file.to_string(), store));
    }
    if let Some((name, file)) = weight_map.iter().find(|(n, _)| !held_by.contains_key(*n)) {
        return Err(shard_error(
            file,
            &dir.join(file),
            format!("does not hold tensor {name:?}, which the index places there"),
        ));
    }
    Ok(Set {
        path: path.to_path_buf(),
        format: Format::Safetensors,
        manifest: merged,
        shards: stores,
    })
}

/// Splits `<prefix>-NNNNN-of-MMMMM.gguf` into (prefix, N, M).
pub fn split_gguf_name(file_name: &str) -> Option<(&str, u32, u32)> {
    let stem = file_name.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, no) = rest.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(no) || !digits(count) || prefix.is_empty() {
        return None;
    }
    let (no, count) = (no.parse().ok()?, count.parse().ok()?);
    (1..=count).contains(&no).then_some((prefix, no, count))
}

/// The file name of shard `no` (1-based) of a split GGUF set.
pub fn split_gguf_file_name(prefix: &str, no: u32, count: u32) -> String {
    format!("{prefix}-{no:05}-of-{count:05}.gguf")
}

fn gguf_uint(g: &GgufFile, key: &str) -> Option<u64> {
    match g.get(key)? {
        GgufValue::U8(x) => Some(*x as u64),
        GgufValue::U16(x) => Some(*x as u64),
        GgufValue::U32(x) => Some(*x as u64),
        GgufValue::U64(x) => Some(*x),
        GgufValue::I8(x) => u64::try_from(*x).ok(),
        GgufValue::I16(x) => u64::try_from(*x).ok(),
        GgufValue::I32(x) => u64::try_from(*x).ok(),
        GgufValue::I64(x) => u64::try_from(*x).ok(),
        _ => None,
    }
}

/// The keys that describe the split itself and are dropped when the set
/// is seen as one model.
pub const SPLIT_KEYS: [&str; 3] = ["split.no", "split.count", "split.tensors.count"];

fn open_split_gguf(path: &Path, prefix: &str, count: u32, backend: Backend) -> Result<Set> {
    let dir = parent_dir(path);
    let mut merged = Manifest::default();
    let mut whole: Option<GgufFile> = None;
    let mut stores = Vec::with_capacity(count as usize);
    let mut declared_total = None;
    for no in 1..=count {
        let file = split_gguf_file_name(prefix, no, count);
        let (shard_path, store) = open_shard(&dir, &file, backend)?;
        let g = gguf::parse_store(&store)
            .map_err(|e| shard_error(&file, &shard_path, format!("not a valid GGUF file: {e}")))?;
        let key = |k: &str| {
            gguf_uint(&g, k)
                .ok_or_else(|| shard_error(&file, &shard_path, format!("has no integer {k:?} key")))
        };
        let (split_no, split_count, total) = (
            key("split.no")?,
            key("split.count")?,
            key("split.tensors.count")?,
        );
        if split_no != u64::from(no - 1) || split_count != u64::from(count) {
            return Err(shard_error(
                &file,
                &shard_path,
                format!(
                    "says it is split {split_no} of {split_count} (0-based), its name says {} of {count} (swapped or renamed shard?)",
                    no - 1
                ),
            ));
        }
        if *declared_total.get_or_insert(total) != total {
            return Err(shard_error(
                &file,
                &shard_path,
                format!(
                    "split.tensors.count is {total}, the first shard says {}",
                    declared_total.unwrap_or(0)
                ),
            ));
        }
        let m = gguf_manifest(&g)?;
        for (name, mut object) in m.objects {
            if merged.objects.contains_key(&name) {
                return Err(shard_error(
                    &file,
                    &shard_path,
                    format!("tensor {name:?} is also in an earlier shard"),
                ));
            }
            for part in object.parts.values_mut() {
                part.shard = Some(file.clone());
            }
            merged.objects.insert(name, object);
        }
        match &mut whole {
            None => whole = Some(g),
            Some(w) => {
                // Keys a later shard adds (normally none): first one wins.
                for (k, v) in g.metadata {
                    if !w.metadata.iter().any(|(have, _)| *have == k) {
                        w.metadata.push((k, v));
                    }
                }
                w.tensors.extend(g.tensors);
            }
        }
        stores.push((file, store));
    }
    let mut whole = whole.ok_or_else(|| Error::usage("a split GGUF set has no shards"))?;
    let total = declared_total.unwrap_or(0);
    if whole.tensors.len() as u64 != total {
        return Err(Error::corrupt(
            Rule::ShardFile,
            format!(
                "split GGUF set {prefix:?}: the shards hold {} tensors, split.tensors.count says {total}",
                whole.tensors.len()
            ),
        ));
    }
    whole
        .metadata
        .retain(|(k, _)| !SPLIT_KEYS.contains(&k.as_str()));
    merged.attributes = Some(gguf_attributes(&whole)?);
    Ok(Set {
        path: path.to_path_buf(),
        format: Format::Gguf,
        manifest: merged,
        shards: stores,
    })
}
