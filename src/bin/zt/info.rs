//! `zt info`, `zt verify` and `zt get`.

use crate::util::{emit, human_bytes, open_input, table};
use std::path::Path;
use ztensor::{npy, Backend, Error, Result};

fn shape_str(shape: &[u64]) -> String {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    format!("[{}]", dims.join(", "))
}

pub fn run(file: &Path) -> Result<()> {
    let r = open_input(file, Backend::Mmap)?;
    emit(&format!(
        "{}: {} objects, {} ({})\n",
        file.display(),
        r.len(),
        human_bytes(r.file_len()),
        match r.format() {
            _ if r.is_data_shard() => "data shard",
            ztensor::formats::Format::Zt => "ztensor v2",
            other => other.name(),
        }
    ));
    let mut rows = Vec::new();
    for name in r.names() {
        let o = r.object(name)?;
        for (role, p) in &o.parts {
            let label = if o.parts.len() == 1 && role == "data" {
                name.to_string()
            } else {
                format!("{name}/{role}")
            };
            rows.push(vec![
                label,
                o.layout.clone(),
                p.etype.to_string(),
                shape_str(&o.shape),
                p.encoding.clone().unwrap_or_else(|| "raw".into()),
                human_bytes(p.blob.length),
                p.digest.as_ref().map_or("-".into(), |d| d.text.clone()),
            ]);
        }
    }
    emit(&table(
        &[
            "name", "layout", "dtype", "shape", "encoding", "stored", "digest",
        ],
        &rows,
    ));
    if let Some(a) = r.attributes() {
        emit(&format!("attributes: {a}\n"));
    }
    for (name, s) in &r.manifest().shards {
        emit(&format!(
            "shard {name}: {} {}\n",
            human_bytes(s.size),
            s.digest.text
        ));
    }
    Ok(())
}

pub fn verify(file: &Path, deep: bool) -> Result<()> {
    let r = open_input(file, Backend::Mmap)?;
    if !deep {
        println!(
            "ok: {} objects, structure valid (use --deep to check data and digests)",
            r.len()
        );
        return Ok(());
    }
    let rep = r.verify()?;
    println!(
        "ok: {} objects, {} parts, {} decoded; {} digests checked, {} without digest, {} unknown algorithm, {} shards",
        r.len(),
        rep.parts,
        human_bytes(rep.bytes),
        rep.digests_checked,
        rep.without_digest,
        rep.unknown_algorithm,
        rep.shards_checked
    );
    Ok(())
}

pub fn get(file: &Path, name: &str, output: &Path) -> Result<()> {
    let r = open_input(file, Backend::Mmap)?;
    let t = r.read_dense(name)?;
    if npy::descr(&t.etype).is_none() {
        eprintln!(
            "note: numpy has no {} type; writing the raw {} storage",
            t.etype, t.etype.dtype
        );
    }
    let bytes = npy::encode(&t.shape, &t.etype, &t.bytes);
    std::fs::write(output, bytes).map_err(|e| Error::Io {
        context: format!("writing {}", output.display()),
        source: e,
    })?;
    println!(
        "{name}: {} {} -> {}",
        t.etype,
        shape_str(&t.shape),
        output.display()
    );
    Ok(())
}
