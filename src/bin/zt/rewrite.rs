//! `zt rewrite`: re-encode every object of a file.

use std::path::Path;
use ztensor::{
    DigestAlg, Error, Object, PartOptions, Reader, Result, WriteOptions, Writer, ZstdOptions,
};

/// `zt convert`: GGUF (or .zt) in, .zt out.
pub fn convert(
    input: &Path,
    output: &Path,
    compress: Option<i32>,
    digest: &str,
    align: u64,
) -> Result<()> {
    let mut head = [0u8; 64];
    let n = std::fs::File::open(input)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(|e| Error::Io {
            context: format!("reading {}", input.display()),
            source: e,
        })?;
    match ztensor::formats::convert::detect(&head[..n]) {
        ztensor::formats::convert::Format::Zt => run(
            input,
            output,
            compress,
            ztensor::zstd_seekable::DEFAULT_FRAME_SIZE,
            digest,
            false,
            align,
        ),
        f @ (ztensor::formats::convert::Format::Gguf
        | ztensor::formats::convert::Format::Safetensors) => {
            let options = WriteOptions {
                align,
                digest: parse_digest(digest)?,
                compression: compress.map(ZstdOptions::level),
                ..WriteOptions::default()
            };
            let t = std::time::Instant::now();
            let rep = if f == ztensor::formats::convert::Format::Gguf {
                ztensor::formats::convert::gguf_to_zt(input, output, options)?
            } else {
                ztensor::formats::convert::safetensors_to_zt(input, output, options)?
            };
            let secs = t.elapsed().as_secs_f64();
            println!(
                "{} -> {}: {} tensors ({} quantized blocks kept verbatim), {} metadata keys, {} bytes in {:.2}s ({:.2} GB/s)",
                input.display(),
                output.display(),
                rep.tensors,
                rep.quantized,
                rep.metadata_keys,
                rep.output_bytes,
                secs,
                rep.input_bytes as f64 / secs.max(1e-9) / 1e9
            );
            Ok(())
        }
        ztensor::formats::convert::Format::Unknown => Err(Error::Unsupported(format!(
            "{}: not a format zt converts yet (GGUF, safetensors or .zt; detected by content)",
            input.display()
        ))),
    }
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
    let r = Reader::open(input)?;
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
