//! Conversion of other formats into `.zt`, and (in [`export`]) back out;
//! this module sits above [`crate::Reader`] and [`crate::Writer`], and the
//! format parsers below it never call it. GGUF: every tensor keeps its
//! name; f32/f16/bf16/f64/i8..i64 tensors become `dense`, quantized ones
//! `gguf.<type>/1` with their block bytes verbatim; the logical shape is the
//! GGUF dims reversed. Metadata becomes file attributes (plain values, as
//! upstream ztensor writes them) plus `gguf: {version, alignment, types,
//! keys, tensors}`, where `types` records every key's exact GGUF type and
//! `keys` / `tensors` the file order, so an export rebuilds the file bit
//! for bit. Parts are written straight from the
//! input in fixed-size chunks with `pread` (the header is read alone), so
//! memory stays flat whatever the model size.

pub mod export;
pub mod export_split;
pub mod shard_write;

use crate::cbor::Value;
use crate::error::{Error, Result};
use crate::fingerprint;
use crate::formats::Format;
use crate::manifest::{Object, Part};
use crate::reader::{LoadOptions, OpenOptions, Reader};
use crate::store::Backend;
use crate::writer::{PartOptions, PartSink, WriteOptions, Writer};
use std::collections::BTreeMap;
use std::path::Path;

/// What a conversion wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvertReport {
    pub format: Option<Format>,
    pub tensors: usize,
    pub quantized: usize,
    pub metadata_keys: usize,
    pub input_bytes: u64,
    pub output_bytes: u64,
}

/// Copy buffer for streaming tensor data from the input file.
const CHUNK: u64 = 8 << 20;

/// Bytes the read-ahead thread fills at a time (several parallel 8 MiB
/// `pread`s); at most three windows are alive at once.
const WINDOW: u64 = 32 << 20;

/// Converts any readable file (GGUF, safetensors, npy, npz, legacy ztensor
/// or `.zt`) into `.zt`. Every object keeps its name, shape, layout,
/// element types and attributes; part bytes are copied unchanged.
pub fn convert(input: &Path, output: &Path, options: WriteOptions) -> Result<ConvertReport> {
    convert_with_progress(input, output, options, &mut |_, _| {})
}

/// [`convert`], calling `progress(bytes_done, bytes_total)` after every
/// chunk. The input is read by a read-ahead thread in 32 MiB windows,
/// each filled by several threads' 8 MiB `pread`s (its header alone is
/// parsed), while this thread writes the previous window: memory stays
/// flat (three windows) whatever the model size, and a cold input has
/// several reads in flight.
pub fn convert_with_progress(
    input: &Path,
    output: &Path,
    options: WriteOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ConvertReport> {
    let reader = OpenOptions::default().backend(Backend::Pread).open(input)?;
    convert_reader(&reader, output, options, progress)
}

/// [`convert_with_progress`] from an open reader (a local file, a set, or
/// a remote object opened with [`Reader::open_url`](crate::Reader)).
pub fn convert_reader(
    reader: &Reader,
    output: &Path,
    options: WriteOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ConvertReport> {
    let mut w = Writer::create_with(output, options.clone())?;
    let mut report = start_report(reader);
    // Every part's BLAKE3, taken as the bytes stream through.
    let mut digests = Vec::new();
    // Copy in file order so the input is read front to back.
    let mut names: Vec<(&str, u64)> = reader
        .manifest()
        .objects
        .iter()
        .map(|(n, o)| {
            (
                n.as_str(),
                o.parts.values().map(|p| p.blob.offset).min().unwrap_or(0),
            )
        })
        .collect();
    names.sort_by_key(|&(n, off)| (off, n));
    let total = decoded_total(reader);
    let mut done = 0u64;
    // Every part in copy order; a read-ahead thread fills windows of them
    // with parallel `pread`s while this thread writes the previous one.
    let plan: Vec<(&str, &str, u64)> = names
        .iter()
        .filter_map(|&(n, _)| reader.manifest().objects.get(n).map(|o| (n, o)))
        .flat_map(|(n, o)| {
            o.parts
                .iter()
                .map(move |(r, p)| (n, r.as_str(), p.decoded_size()))
        })
        .collect();
    let window = WINDOW.min(total.max(1)) as usize;
    let (filled_tx, filled_rx) = std::sync::mpsc::sync_channel::<Result<Vec<u8>>>(1);
    let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let load = LoadOptions::default().verify_digests(false);
    let reader_ref = reader;
    std::thread::scope(|s| -> Result<()> {
        // Owned by this closure, so an early `?` drops it and the
        // read-ahead thread's next send fails instead of blocking the join.
        let filled_rx = filled_rx;
        s.spawn(move || {
            for &(name, role, size) in &plan {
                let mut at = 0u64;
                while at < size {
                    let n = (size - at).min(window as u64) as usize;
                    let mut buf = empty_rx.try_recv().unwrap_or_default();
                    buf.resize(n, 0);
                    let got = reader_ref.part_range_into_parallel(name, role, at, &mut buf, &load);
                    let failed = got.is_err();
                    if filled_tx.send(got.map(|()| buf)).is_err() || failed {
                        return;
                    }
                    at += n as u64;
                }
            }
        });
        for &(name, _) in &names {
            let src = reader.object(name)?;
            let mut parts = std::collections::BTreeMap::new();
            for (role, p) in &src.parts {
                let mut sink = w.stream_part(PartOptions {
                    etype: p.etype.clone(),
                    compression: options.compression,
                    digest: options.digest,
                })?;
                let size = p.decoded_size();
                let mut at = 0u64;
                let mut hasher = blake3::Hasher::new();
                while at < size {
                    let buf = filled_rx
                        .recv()
                        .map_err(|_| Error::usage("the read-ahead thread stopped early"))??;
                    sink.write(&buf)?;
                    hasher.update_rayon(&buf);
                    at += buf.len() as u64;
                    done += buf.len() as u64;
                    progress(done, total);
                    let _ = empty_tx.send(buf);
                }
                parts.insert(role.clone(), sink.finish()?);
                digests.push((
                    name.to_string(),
                    role.clone(),
                    size,
                    *hasher.finalize().as_bytes(),
                ));
            }
            w.add_object(name, copied_object(&mut report, src, parts))?;
        }
        Ok(())
    })?;
    set_fingerprinted_attributes(&mut w, reader, digests)?;
    report.output_bytes = w.finish()?;
    Ok(report)
}

/// Decoded bytes of every part of every object (the progress total).
fn decoded_total(reader: &Reader) -> u64 {
    reader
        .manifest()
        .objects
        .values()
        .flat_map(|o| o.parts.values())
        .map(|p| p.decoded_size())
        .sum()
}

/// A report with what is known before any copying: the input's format,
/// size and metadata key count (the `gguf` bookkeeping map and a cached
/// fingerprint do not count).
pub(crate) fn start_report(reader: &Reader) -> ConvertReport {
    let format = reader.format();
    let mut report = ConvertReport {
        format: Some(format),
        input_bytes: reader.file_len(),
        ..ConvertReport::default()
    };
    if let Some(Value::Map(entries)) = reader.attributes() {
        report.metadata_keys = entries
            .iter()
            .filter(|(k, _)| !(format == Format::Gguf && k.as_str() == Some("gguf")))
            .filter(|(k, _)| k.as_str() != Some(fingerprint::FINGERPRINT_KEY))
            .count();
    }
    report
}

/// The output object for input object `src` whose parts were copied as
/// `parts`, counted (and, if GGUF-quantized, counted as such) in `report`.
pub(crate) fn copied_object(
    report: &mut ConvertReport,
    src: &Object,
    parts: BTreeMap<String, Part>,
) -> Object {
    if src.layout.starts_with("gguf.") {
        report.quantized += 1;
    }
    report.tensors += 1;
    Object {
        shape: src.shape.clone(),
        layout: src.layout.clone(),
        parts,
        attributes: src.attributes.clone(),
    }
}

/// Streams parts from the input into part sinks in [`CHUNK`]-sized reads,
/// reporting progress over the whole input and taking every part's BLAKE3
/// as the bytes stream through (for the model fingerprint).
pub(crate) struct PartCopier<'p> {
    buf: Vec<u8>,
    done: u64,
    total: u64,
    progress: &'p mut dyn FnMut(u64, u64),
    /// `(object, role, size, BLAKE3)` of every part copied so far.
    pub(crate) digests: Vec<(String, String, u64, [u8; 32])>,
}

impl<'p> PartCopier<'p> {
    pub(crate) fn new(reader: &Reader, progress: &'p mut dyn FnMut(u64, u64)) -> Self {
        let total = decoded_total(reader);
        PartCopier {
            buf: vec![0u8; CHUNK.min(total.max(1)) as usize],
            done: 0,
            total,
            progress,
            digests: Vec::new(),
        }
    }

    /// Copies the `size` decoded bytes of part `role` of object `name`
    /// into `sink` (which the caller finishes).
    pub(crate) fn copy(
        &mut self,
        reader: &Reader,
        name: &str,
        role: &str,
        size: u64,
        sink: &mut PartSink<'_>,
    ) -> Result<()> {
        let mut at = 0u64;
        let mut hasher = blake3::Hasher::new();
        while at < size {
            let n = (size - at).min(self.buf.len() as u64) as usize;
            let chunk = &mut self.buf[..n];
            reader.part_range_into(name, role, at, chunk)?;
            sink.write(chunk)?;
            hasher.update_rayon(chunk);
            at += n as u64;
            self.done += n as u64;
            (self.progress)(self.done, self.total);
        }
        self.digests.push((
            name.to_string(),
            role.to_string(),
            size,
            *hasher.finalize().as_bytes(),
        ));
        Ok(())
    }
}

/// Copies the input's attributes to `w` with the model's fingerprint
/// (combined from `digests`) cached, replacing a stale one a `.zt` input
/// may carry. Free-form attributes that are not a map are copied as they
/// are.
pub(crate) fn set_fingerprinted_attributes(
    w: &mut Writer,
    reader: &Reader,
    digests: Vec<(String, String, u64, [u8; 32])>,
) -> Result<()> {
    match reader.attributes() {
        Some(other) if !matches!(other, Value::Map(_)) => w.set_attributes(other.clone()),
        attrs => {
            let mut entries = match attrs {
                Some(Value::Map(e)) => e.clone(),
                _ => Vec::new(),
            };
            entries.retain(|(k, _)| k.as_str() != Some(fingerprint::FINGERPRINT_KEY));
            entries.push((
                Value::text(fingerprint::FINGERPRINT_KEY),
                Value::text(fingerprint::combine(digests)),
            ));
            w.set_attributes(Value::map(entries)?)
        }
    }
}

/// The GGUF value type recorded for `key` in a converted file's attributes.
pub fn recorded_type(attributes: &Value, key: &str) -> Option<String> {
    attributes
        .get("gguf")?
        .get("types")?
        .get(key)?
        .as_str()
        .map(str::to_string)
}

/// `u32`, `string`, `array[f32]`, ...: re-exported from the GGUF manifest
/// synthesis, which records them.
pub use crate::formats::gguf_manifest::type_name;
