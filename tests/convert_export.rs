//! `convert` from every readable format keeps every object's bytes, and
//! `export` writes GGUF (byte-identical to the original for files converted
//! from GGUF) and safetensors.

use std::path::{Path, PathBuf};
use ztensor::cbor::Value;
use ztensor::convert::convert;
use ztensor::convert::export::{export, to_safetensors};
use ztensor::fingerprint;
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

/// A `.zt` file of the given f32 tensors and file attributes.
fn zt_of(file: &str, tensors: &[(&str, &[u64])], attrs: Option<Value>) -> PathBuf {
    let path = tmp(file);
    let mut w = Writer::create(&path).unwrap();
    for (name, shape) in tensors {
        let n: u64 = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
        w.add(name, shape, &data).unwrap();
    }
    if let Some(a) = attrs {
        w.set_attributes(a).unwrap();
    }
    w.finish().unwrap();
    path
}

/// Exports `src` to `out`, which must then open with our reader and hold
/// the same tensor bytes.
fn exports_and_reopens(src: &Path, out: &Path) {
    export(src, out).unwrap();
    let (a, b) = (Reader::open(src).unwrap(), Reader::open(out).unwrap());
    for name in a.names() {
        assert_eq!(
            a.part_bytes(name, "data").unwrap(),
            b.part_bytes(name, "data").unwrap(),
            "{name}"
        );
    }
}

/// Issue 11 item 2: a tensor named `__metadata__` would be read back as the
/// metadata map (safetensors 0.8 and our reader refuse the file).
#[test]
fn safetensors_export_refuses_the_metadata_name() {
    let attrs = Value::text_map([("format", Value::text("pt"))]).unwrap();
    let zt = zt_of(
        "meta.zt",
        &[("__metadata__", &[2]), ("w", &[2])],
        Some(attrs),
    );
    assert_unsupported_and_absent(&zt, &tmp("meta.safetensors"));
    let ok = zt_of("meta-ok.zt", &[("__metadata__x", &[2])], None);
    exports_and_reopens(&ok, &tmp("meta-ok.safetensors"));
}

/// Issue 11 item 3: GGUF tensor names hold at most 63 bytes.
#[test]
fn gguf_export_refuses_names_longer_than_63_bytes() {
    let long = "blk.0.".to_string() + &"x".repeat(76); // 82 bytes
    let zt = zt_of("long.zt", &[(&long, &[4])], None);
    assert_unsupported_and_absent(&zt, &tmp("long.gguf"));
    let at_limit = "n".repeat(63);
    let zt = zt_of("limit.zt", &[(&at_limit, &[4])], None);
    exports_and_reopens(&zt, &tmp("limit.gguf"));
}

/// `general.alignment` must be what the reader accepts (a power-of-two
/// u32), and the data is placed by it, or by 32 when it is absent.
#[test]
fn gguf_export_checks_the_alignment_key() {
    let with = |v: Value| Some(Value::text_map([("general.alignment", v)]).unwrap());
    for (i, bad) in [
        Value::Uint(48),
        Value::Uint(0),
        Value::text("64"),
        Value::Uint(1 << 32),
    ]
    .into_iter()
    .enumerate()
    {
        let zt = zt_of(&format!("align{i}.zt"), &[("t", &[3])], with(bad));
        assert_unsupported_and_absent(&zt, &tmp(&format!("align{i}.gguf")));
    }
    // Recorded as u64 (a type the reader refuses for this key).
    let record = Value::text_map([(
        "types",
        Value::text_map([("general.alignment", Value::text("u64"))]).unwrap(),
    )])
    .unwrap();
    let attrs =
        Value::text_map([("general.alignment", Value::Uint(64)), ("gguf", record)]).unwrap();
    let zt = zt_of("align-u64.zt", &[("t", &[3])], Some(attrs));
    assert_unsupported_and_absent(&zt, &tmp("align-u64.gguf"));
    let zt = zt_of(
        "align64.zt",
        &[("t", &[3]), ("u", &[5])],
        with(Value::Uint(64)),
    );
    exports_and_reopens(&zt, &tmp("align64.gguf"));
    // A recorded alignment without the key: readers place the data by 32.
    let record = Value::text_map([("alignment", Value::Uint(64))]).unwrap();
    let attrs = Value::text_map([("gguf", record)]).unwrap();
    let zt = zt_of(
        "align-record.zt",
        &[("a", &[3]), ("b", &[5]), ("c", &[7])],
        Some(attrs),
    );
    exports_and_reopens(&zt, &tmp("align-record.gguf"));
}

/// Rows of a quantized type are whole blocks, and element counts fit i64.
#[test]
fn gguf_export_checks_rows_and_element_counts() {
    let zt = tmp("rows.zt");
    let mut w = Writer::create(&zt).unwrap();
    // 64 elements (two q8_0 blocks) as 4 rows of 16: a valid .zt object
    // that GGUF cannot hold.
    w.add_gguf("q", &[4, 16], "q8_0", 32, 34, &[0u8; 68])
        .unwrap();
    w.finish().unwrap();
    assert_unsupported_and_absent(&zt, &tmp("rows.gguf"));
    let zt = tmp("rows-ok.zt");
    let mut w = Writer::create(&zt).unwrap();
    w.add_gguf("q", &[2, 32], "q8_0", 32, 34, &[0u8; 68])
        .unwrap();
    w.finish().unwrap();
    exports_and_reopens(&zt, &tmp("rows-ok.gguf"));

    let zt = tmp("count.zt");
    let mut w = Writer::create(&zt).unwrap();
    w.add::<f32>("e", &[0, 1 << 62, 4], &[]).unwrap();
    w.finish().unwrap();
    assert_unsupported_and_absent(&zt, &tmp("count.gguf"));
}

/// safetensors holds whole bytes (an odd count of f4 values is not) and a
/// header of at most 100,000,000 bytes.
#[test]
fn safetensors_export_checks_whole_bytes_and_header_size() {
    let f4 = ztensor::ElementType::logical(ztensor::LogicalType::F4E2M1);
    let zt = tmp("f4.zt");
    let mut w = Writer::create(&zt).unwrap();
    w.add_bytes("odd", &[3], f4.clone(), &[0x21, 0x03]).unwrap();
    w.finish().unwrap();
    assert_unsupported_and_absent(&zt, &tmp("f4.safetensors"));
    let zt = tmp("f4-even.zt");
    let mut w = Writer::create(&zt).unwrap();
    w.add_bytes("even", &[4], f4, &[0x21, 0x43]).unwrap();
    w.finish().unwrap();
    exports_and_reopens(&zt, &tmp("f4-even.safetensors"));

    let big = Value::text_map([("notes", Value::text("n".repeat(100_000_000)))]).unwrap();
    let zt = zt_of("header.zt", &[("t", &[1])], Some(big));
    assert_unsupported_and_absent(&zt, &tmp("header.safetensors"));
}
