//! `convert` from every readable format keeps every object's bytes, and
//! `export` writes GGUF (byte-identical to the original for files converted
//! from GGUF) and safetensors.

use std::path::{Path, PathBuf};
use ztensor::cbor::Value;
use ztensor::fingerprint;
use ztensor::formats::convert::convert;
use ztensor::formats::export::{export, to_safetensors};
use ztensor::{Error, Reader, WriteOptions, Writer, ZstdOptions};

fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn fixtures() -> PathBuf {
    std::env::var_os("ZT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo("../shared/fixtures"))
}

fn gguf_fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures().join("gguf"))
        .expect("../shared/fixtures/gguf")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    v.sort();
    assert!(!v.is_empty());
    v
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zt-convert-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Every object of `a` and `b` has the same shape, layout, types,
/// attributes and decoded part bytes.
fn same_objects(a: &Reader, b: &Reader) {
    assert_eq!(a.names().collect::<Vec<_>>(), b.names().collect::<Vec<_>>());
    for name in a.names() {
        let (x, y) = (a.object(name).unwrap(), b.object(name).unwrap());
        assert_eq!(
            (&x.shape, &x.layout, &x.attributes),
            (&y.shape, &y.layout, &y.attributes),
            "{name}"
        );
        for (role, p) in &x.parts {
            assert_eq!(p.etype, y.parts[role].etype, "{name}/{role}");
            assert_eq!(
                a.part_bytes(name, role).unwrap(),
                b.part_bytes(name, role).unwrap(),
                "{name}/{role}"
            );
        }
    }
    // The same attributes, apart from the fingerprint a conversion caches,
    // which must be the one computed from the tensors themselves.
    let without = |r: &Reader| match r.attributes() {
        Some(Value::Map(e)) => e
            .iter()
            .filter(|(k, _)| k.as_str() != Some(fingerprint::FINGERPRINT_KEY))
            .cloned()
            .collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    assert!(without(a) == without(b), "attributes differ");
    for r in [a, b] {
        if let Some(cached) = fingerprint::cached(r) {
            assert_eq!(cached, fingerprint::compute(r).unwrap());
        }
    }
    assert_eq!(fingerprint::of(a).unwrap(), fingerprint::of(b).unwrap());
}

#[test]
fn gguf_converts_and_exports_back_byte_identical() {
    for src in gguf_fixtures() {
        let zt = tmp("m.zt");
        let back = tmp("m.gguf");
        let rep = convert(&src, &zt, WriteOptions::default()).unwrap();
        assert_eq!(rep.format, Some(ztensor::formats::Format::Gguf));
        same_objects(&Reader::open(&src).unwrap(), &Reader::open(&zt).unwrap());
        export(&zt, &back).unwrap();
        assert!(
            std::fs::read(&src).unwrap() == std::fs::read(&back).unwrap(),
            "{}",
            src.display()
        );
    }
}

#[test]
fn compressed_conversion_exports_the_same_gguf() {
    let src = &gguf_fixtures()[0];
    let zt = tmp("c.zt");
    let back = tmp("c.gguf");
    let opts = WriteOptions {
        compression: Some(ZstdOptions::level(3)),
        ..WriteOptions::default()
    };
    convert(src, &zt, opts).unwrap();
    export(&zt, &back).unwrap();
    assert!(std::fs::read(src).unwrap() == std::fs::read(&back).unwrap());
}

#[test]
fn every_foreign_format_converts_losslessly() {
    let mut inputs = vec![
        repo("tests/data/npz/stored.npz"),
        repo("tests/data/npz/deflated.npz"),
        repo("tests/data/npz/one.npy"),
        repo("tests/data/legacy/v1_mixed.zt"),
        repo("tests/data/legacy/v1_raw.zt"),
        repo("tests/data/legacy/v01.zt"),
    ];
    for dir in ["safetensors/llama-tiny", "safetensors/qwen2-tiny"] {
        inputs.push(fixtures().join(dir).join("model.safetensors"));
    }
    for src in inputs {
        assert!(src.exists(), "{}", src.display());
        let zt = tmp("f.zt");
        convert(&src, &zt, WriteOptions::default()).unwrap();
        let out = Reader::open(&zt).unwrap();
        same_objects(&Reader::open(&src).unwrap(), &out);
        assert!(
            out.verify().unwrap().digests_checked > 0,
            "{}",
            src.display()
        );
    }
}

#[test]
fn dense_files_export_to_safetensors() {
    let src = repo("tests/data/npz/stored.npz");
    let st = tmp("s.safetensors");
    export(&src, &st).unwrap();
    let back = Reader::open(&st).unwrap();
    assert_eq!(back.format(), ztensor::formats::Format::Safetensors);
    same_objects(&Reader::open(&src).unwrap(), &back);

    // Text attributes become __metadata__.
    let zt = tmp("attrs.zt");
    let mut w = Writer::create(&zt).unwrap();
    w.add("x", &[2], &[1.0f32, 2.0]).unwrap();
    w.set_attributes(
        ztensor::Value::text_map([
            ("format", ztensor::Value::text("pt")),
            ("n", ztensor::Value::Uint(3)),
        ])
        .unwrap(),
    )
    .unwrap();
    w.finish().unwrap();
    let r = Reader::open(&zt).unwrap();
    let rep = to_safetensors(&r, &st).unwrap();
    assert_eq!((rep.metadata_keys, rep.skipped_attributes), (1, 1));
    let back = Reader::open(&st).unwrap();
    assert_eq!(
        back.attributes().unwrap().get("format"),
        Some(&ztensor::Value::text("pt"))
    );
}

fn assert_unsupported_and_absent(src: &Path, out: &Path) {
    assert!(
        matches!(export(src, out), Err(Error::Unsupported(_))),
        "{}",
        out.display()
    );
    assert!(!out.exists());
}

#[test]
fn what_a_target_cannot_hold_is_refused_without_leaving_a_file() {
    let sparse = repo("tests/data/legacy/v1_raw.zt");
    assert_unsupported_and_absent(&sparse, &tmp("sparse.safetensors"));
    assert_unsupported_and_absent(&sparse, &tmp("sparse.gguf"));
    let zt = tmp("rank5.zt");
    let mut w = Writer::create(&zt).unwrap();
    w.add("x", &[1, 1, 1, 1, 2], &[1.0f32, 2.0]).unwrap();
    w.finish().unwrap();
    assert_unsupported_and_absent(&zt, &tmp("rank5.gguf"));
    assert!(matches!(export(&zt, &tmp("x.bin")), Err(Error::Usage(_))));
}

#[test]
fn foreign_files_are_read_only() {
    let src = repo("tests/data/npz/stored.npz");
    let copy = tmp("ro.npz");
    std::fs::copy(&src, &copy).unwrap();
    assert!(matches!(Writer::append(&copy), Err(Error::Usage(_))));
    assert!(matches!(
        Writer::append_in_place(&copy, WriteOptions::default()),
        Err(Error::Usage(_))
    ));
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&src).unwrap());
}
