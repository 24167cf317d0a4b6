//! `zt rewrite`: re-encode every object of a file.

use std::path::Path;
use ztensor::{
    DigestAlg, Error, Object, PartOptions, Reader, Result, WriteOptions, Writer, ZstdOptions,
};

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
