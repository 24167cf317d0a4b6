//! `zt rewrite`: re-encode every object of a file.

use crate::util::open_input;
use std::path::Path;
use ztensor::{
    Backend, DigestAlg, Error, Object, PartOptions, Result, WriteOptions, Writer, ZstdOptions,
};

/// Inputs above this size get a progress bar (unless `--quiet`).
const PROGRESS_FROM: u64 = 256 << 20;

/// `zt convert`: any readable format in (detected by content), `.zt` out.
pub fn convert(
    input: &Path,
    output: &Path,
    compress: Option<i32>,
    digest: &str,
    align: u64,
    quiet: bool,
) -> Result<()> {
    let options = WriteOptions {
        align,
        digest: parse_digest(digest)?,
        compression: compress.map(ZstdOptions::level),
        ..WriteOptions::default()
    };
    let reader = open_input(input, Backend::Pread)?;
    let size = reader.file_len();
    // indicatif draws nothing when stderr is not a terminal.
    let bar = (!quiet && size >= PROGRESS_FROM).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let t = std::time::Instant::now();
    let rep = ztensor::convert::convert_reader(&reader, output, options, &mut |done, total| {
        if let Some(b) = &bar {
            b.set_length(total);
            b.set_position(done);
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let secs = t.elapsed().as_secs_f64();
    if !quiet {
        println!(
            "{} ({}) -> {}: {} tensors ({} quantized blocks kept verbatim), {} metadata keys, {} bytes in {:.2}s ({:.2} GB/s)",
            input.display(),
            rep.format.map_or("?", |f| f.name()),
            output.display(),
            rep.tensors,
            rep.quantized,
            rep.metadata_keys,
            rep.output_bytes,
            secs,
            rep.input_bytes as f64 / secs.max(1e-9) / 1e9
        );
    }
    Ok(())
}

/// A byte count with an optional binary K/M/G suffix.
pub fn parse_size(s: &str) -> Result<u64> {
    let (digits, shift) = match s.trim().char_indices().last() {
        Some((i, 'K' | 'k')) => (&s.trim()[..i], 10),
        Some((i, 'M' | 'm')) => (&s.trim()[..i], 20),
        Some((i, 'G' | 'g')) => (&s.trim()[..i], 30),
        _ => (s.trim(), 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| Error::Usage(format!("size {s:?} is not a byte count (e.g. 2G, 500M)")))
}

/// `zt convert --max-shard-size`: a sharded `.zt` set.
pub fn convert_sharded(
    input: &Path,
    output: &Path,
    compress: Option<i32>,
    digest: &str,
    align: u64,
    quiet: bool,
    max_shard_size: &str,
) -> Result<()> {
    let options = WriteOptions {
        align,
        digest: parse_digest(digest)?,
        compression: compress.map(ZstdOptions::level),
        ..WriteOptions::default()
    };
    let max = parse_size(max_shard_size)?;
    let reader = open_input(input, Backend::Pread)?;
    let rep = ztensor::convert::shard_write::convert_sharded_reader(
        &reader,
        output,
        options,
        max,
        &mut |_, _| {},
    )?;
    if !quiet {
        println!(
            "{} ({}) -> {} (sharded, at most {max} bytes a shard): {} tensors ({} quantized), {} metadata keys, {} bytes",
            input.display(),
            rep.format.map_or("?", |f| f.name()),
            output.display(),
            rep.tensors,
            rep.quantized,
            rep.metadata_keys,
            rep.output_bytes,
        );
    }
    Ok(())
}

/// `zt export`: .zt (or any readable file) to GGUF or safetensors.
pub fn export(input: &Path, output: &Path, max_shard_size: Option<&str>) -> Result<()> {
    let options = ztensor::convert::export::ExportOptions {
        max_shard_size: max_shard_size.map(parse_size).transpose()?,
    };
    let reader = open_input(input, Backend::Mmap)?;
    let rep = ztensor::convert::export::export_reader(&reader, output, &options)?;
    let files = match rep.files.as_slice() {
        [one] => one.display().to_string(),
        many => format!(
            "{} files {} .. {}",
            many.len(),
            many.first()
                .map_or(String::new(), |p| p.display().to_string()),
            many.last()
                .map_or(String::new(), |p| p.display().to_string())
        ),
    };
    println!(
        "{} -> {}: {} tensors, {} metadata keys ({} attributes without a form there), {} bytes",
        input.display(),
        files,
        rep.tensors,
        rep.metadata_keys,
        rep.skipped_attributes,
        rep.bytes
    );
    Ok(())
}

fn parse_digest(digest: &str) -> Result<Option<DigestAlg>> {
    match digest {
        "none" => Ok(None),
        other => other.parse::<DigestAlg>().map(Some).map_err(|()| {
            Error::Usage(format!(
                "unknown digest {other:?}; use xxh3, sha256, crc32c, blake3 or none"
            ))
        }),
    }
}

pub fn run(
    input: &Path,
    output: &Path,
    compress: Option<i32>,
    frame_size: usize,
    digest: &str,
    canonical: bool,
    align: u64,
) -> Result<()> {
    let digest = match digest {
        "none" => None,
        other => Some(other.parse::<DigestAlg>().map_err(|()| {
            Error::Usage(format!(
                "unknown digest {other:?}; use xxh3, sha256, crc32c, blake3 or none"
            ))
        })?),
    };
    let compression = compress.map(|level| ZstdOptions { level, frame_size });
    let options = if canonical {
        if compression.is_some() || digest != Some(DigestAlg::Xxh3) {
            return Err(Error::Usage(
                "--canonical means raw parts with xxh3 digests".into(),
            ));
        }
        WriteOptions::canonical()
    } else {
        WriteOptions {
            align,
            digest,
            compression,
            dedup: true,
            ..WriteOptions::default()
        }
    };
    let r = open_input(input, Backend::Mmap)?;
    let mut w = Writer::create_with(output, options)?;
    if let Some(a) = r.attributes() {
        w.set_attributes(a.clone())?;
    }
    for name in r.names() {
        let object = r.object(name)?;
        let mut parts = std::collections::BTreeMap::new();
        for (role, part) in &object.parts {
            let bytes = r.part_bytes(name, role)?;
            let opts = PartOptions {
                etype: part.etype.clone(),
                compression,
                digest,
            };
            parts.insert(role.clone(), w.write_part(&bytes, &opts)?);
        }
        w.add_object(
            name,
            Object {
                shape: object.shape.clone(),
                layout: object.layout.clone(),
                parts,
                attributes: object.attributes.clone(),
            },
        )?;
    }
    let n = w.finish()?;
    println!(
        "{} -> {} ({} bytes, {} objects)",
        input.display(),
        output.display(),
        n,
        r.len()
    );
    Ok(())
}
