//! `zt demo`: the README's main job on embedded sample data.

use std::path::Path;
use ztensor::{
    DType, ElementType, Error, LogicalType, PartOptions, Reader, Result, Value, Writer, ZstdOptions,
};

fn fail(what: &str) -> Error {
    Error::Usage(format!("demo read-back mismatch: {what}"))
}

pub fn run(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Io {
        context: format!("creating {}", dir.display()),
        source: e,
    })?;
    let path = dir.join("sample.zt");

    // Sample data: a small "model" with every kind of tensor.
    let weight: Vec<f32> = (0..64 * 32)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
        .collect();
    let bias: Vec<half::f16> = (0..32)
        .map(|i| half::f16::from_f32(i as f32 * 0.5))
        .collect();
    let embed: Vec<half::bf16> = (0..16 * 8)
        .map(|i| half::bf16::from_f32(i as f32 / 8.0))
        .collect();
    let steps: Vec<i64> = vec![0, 1, 2, 3, -4];
    let mask: Vec<u8> = (0..20).map(|i| (i % 3 == 0) as u8).collect();
    let sparse_vals: Vec<f32> = vec![1.0, 2.0, 3.0, 4.0];
    let coo_vals: Vec<f64> = vec![0.5, -1.5, 2.5];
    let activations: Vec<f32> = (0..256 * 1024).map(|i| ((i / 1024) % 7) as f32).collect();

    let mut w = Writer::create(&path)?;
    w.set_attributes(Value::text_map([
        ("model", Value::text("ztensor-demo")),
        ("layers", Value::Uint(2)),
        (
            "tags",
            Value::Array(vec![Value::text("sample"), Value::text("v2")]),
        ),
    ])?)?;
    w.add("layer0.weight", &[64, 32], &weight)?;
    w.add("layer0.bias", &[32], &bias)?;
    w.add("embed", &[16, 8], &embed)?;
    w.add("steps", &[5], &steps)?;
    w.add_bytes(
        "mask",
        &[4, 5],
        ElementType::logical(LogicalType::Bool),
        &mask,
    )?;
    w.add_csr(
        "adjacency",
        [3, 4],
        ElementType::plain(DType::F32),
        ztensor::element::as_bytes(&sparse_vals),
        &[0, 3, 1, 2],
        &[0, 2, 3, 4],
    )?;
    w.add_coo(
        "points",
        &[4, 4, 4],
        ElementType::plain(DType::F64),
        ztensor::element::as_bytes(&coo_vals),
        &[0, 1, 3, 0, 2, 3, 1, 1, 0],
    )?;
    let zopts = PartOptions {
        etype: ElementType::plain(DType::F32),
        compression: Some(ZstdOptions {
            level: 3,
            frame_size: 64 * 1024,
        }),
        digest: Some(ztensor::DigestAlg::Blake3),
    };
    w.add_bytes_with(
        "activations",
        &[256, 1024],
        ztensor::element::as_bytes(&activations),
        &zopts,
        None,
    )?;
    let mut s = w.stream_dense("streamed", &[1024], ElementType::plain(DType::F32))?;
    for chunk in weight[..1024].chunks(100) {
        s.write(ztensor::element::as_bytes(chunk))?;
    }
    s.finish()?;
    w.add_alias("lm_head.weight", "layer0.weight")?;
    let size = w.finish()?;
    println!("wrote {} ({size} bytes)\n", path.display());

    crate::info::run(&path)?;
    println!();
    crate::info::verify(&path, true)?;

    // Read every tensor back and compare.
    let r = Reader::open(&path)?;
    let t = r.read_dense("layer0.weight")?;
    if t.as_slice::<f32>()? != weight.as_slice() || !t.is_zero_copy() {
        return Err(fail("layer0.weight"));
    }
    if r.read_dense("lm_head.weight")?.to_vec::<f32>()? != weight {
        return Err(fail("lm_head.weight"));
    }
    if r.read_dense("layer0.bias")?.to_vec::<half::f16>()? != bias
        || r.read_dense("embed")?.to_vec::<half::bf16>()? != embed
        || r.read_dense("steps")?.to_vec::<i64>()? != steps
        || r.read_dense("mask")?.bytes.as_ref() != mask.as_slice()
    {
        return Err(fail("small tensors"));
    }
    let csr = r.read_csr("adjacency")?;
    if csr.values.to_vec::<f32>()? != sparse_vals || csr.indices != [0, 3, 1, 2] {
        return Err(fail("adjacency"));
    }
    let dense = csr.to_sprs::<f32>()?.to_dense();
    let coo = r.read_coo("points")?;
    if coo.values.to_vec::<f64>()? != coo_vals || coo.nnz() != 3 {
        return Err(fail("points"));
    }
    let act = r.read_dense("activations")?;
    if act.to_vec::<f32>()? != activations {
        return Err(fail("activations"));
    }
    let rows = r.read_rows("activations", 100..102)?;
    if rows.to_vec::<f32>()? != activations[100 * 1024..102 * 1024] {
        return Err(fail("activations rows"));
    }
    if r.read_dense("streamed")?.to_vec::<f32>()? != weight[..1024] {
        return Err(fail("streamed"));
    }
    println!(
        "\nread back all {} objects: values match (adjacency as dense: {:?})",
        r.len(),
        dense
            .outer_iter()
            .map(|row| row.to_vec())
            .collect::<Vec<_>>()
    );
    Ok(())
}
