//! The GGUF reader against llama.cpp-made fixtures (`../shared/fixtures`,
//! or `ZT_FIXTURES`): every key, value, tensor name, type, shape and byte
//! count must match what the fixture manifest recorded; plus hostile files.

use serde_json::Value as Json;
use std::path::PathBuf;
use ztensor::formats::gguf::{GgufFile, GgufValue, ValueType};
use ztensor::Error;

fn fixtures() -> PathBuf {
    std::env::var_os("ZT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
}

fn json_of(v: &GgufValue) -> Json {
    match v {
        GgufValue::U8(x) => (*x).into(),
        GgufValue::I8(x) => (*x).into(),
        GgufValue::U16(x) => (*x).into(),
        GgufValue::I16(x) => (*x).into(),
        GgufValue::U32(x) => (*x).into(),
        GgufValue::I32(x) => (*x).into(),
        GgufValue::U64(x) => (*x).into(),
        GgufValue::I64(x) => (*x).into(),
        GgufValue::F32(x) => (*x as f64).into(),
        GgufValue::F64(x) => (*x).into(),
        GgufValue::Bool(b) => (*b).into(),
        GgufValue::String(s) => s.as_str().into(),
        GgufValue::Array(_, items) => serde_json::json!({
            "array_len": items.len(),
            "first": items.iter().take(4).map(json_of).collect::<Vec<_>>(),
        }),
    }
}

#[test]
fn fixtures_match_the_manifest() {
    let root = fixtures();
    let manifest: Json = serde_json::from_slice(
        &std::fs::read(root.join("manifest.json")).expect("fixtures present"),
    )
    .unwrap();
    let files = manifest["gguf"].as_object().unwrap();
    assert!(files.len() >= 19);
    for (file, want) in files {
        let bytes = std::fs::read(root.join("gguf").join(file)).unwrap();
        let g = GgufFile::parse(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            g.version as u64,
            want["gguf_version"].as_u64().unwrap(),
            "{file}"
        );
        assert_eq!(g.alignment, want["alignment"].as_u64().unwrap(), "{file}");
        let meta = want["metadata"].as_object().unwrap();
        assert_eq!(g.metadata.len(), meta.len(), "{file}: key count");
        for (k, v) in meta {
            let got = json_of(g.get(k).unwrap_or_else(|| panic!("{file}: missing {k}")));
            assert_eq!(&got, v, "{file}: {k}");
        }
        let tensors = want["tensors"].as_array().unwrap();
        assert_eq!(g.tensors.len(), tensors.len(), "{file}");
        let mut counts = std::collections::BTreeMap::<String, u64>::new();
        for t in tensors {
            let name = t["name"].as_str().unwrap();
            let got = g
                .tensor(name)
                .unwrap_or_else(|| panic!("{file}: no tensor {name}"));
            assert_eq!(
                got.ggml_type.name.to_uppercase(),
                t["type"].as_str().unwrap(),
                "{file} {name}"
            );
            let dims: Vec<u64> = t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .collect();
            assert_eq!(got.dims, dims, "{file} {name}");
            assert_eq!(got.n_elements(), t["n_elements"].as_u64().unwrap());
            assert_eq!(got.n_bytes, t["n_bytes"].as_u64().unwrap(), "{file} {name}");
            assert_eq!(
                g.tensor_bytes(&bytes, got).unwrap().len() as u64,
                got.n_bytes
            );
            *counts
                .entry(t["type"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        let want_counts: std::collections::BTreeMap<String, u64> =
            serde_json::from_value(want["type_counts"].clone()).unwrap();
        assert_eq!(counts, want_counts, "{file}");
        // Typed getters check the stored type.
        assert!(g.get_str("general.architecture").unwrap().is_some());
        assert!(g.get_u32("general.architecture").is_err());
        assert!(g
            .get_array("tokenizer.ggml.tokens", ValueType::String)
            .unwrap()
            .is_some());
        assert!(g
            .get_array("tokenizer.ggml.tokens", ValueType::F32)
            .is_err());
    }
}

#[test]
fn every_prefix_of_a_fixture_fails_cleanly() {
    let bytes = std::fs::read(fixtures().join("gguf/qwen2-tiny-q8_0.gguf")).unwrap();
    let g = GgufFile::parse(&bytes).unwrap();
    // Every cut inside the header, and a sample through the data.
    let header = g.data_offset as usize;
    let cuts = (0..header).chain((header..bytes.len()).step_by(997));
    for n in cuts {
        match GgufFile::parse(&bytes[..n]) {
            Err(Error::Foreign { .. }) => {}
            other => panic!("prefix {n}: {other:?}"),
        }
    }
}

/// Builds a GGUF v3 header by hand.
struct Builder(Vec<u8>);

impl Builder {
    fn new(n_tensors: u64, n_kv: u64) -> Builder {
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&n_tensors.to_le_bytes());
        b.extend_from_slice(&n_kv.to_le_bytes());
        Builder(b)
    }
    fn str(mut self, s: &str) -> Self {
        self.0.extend_from_slice(&(s.len() as u64).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn u32(mut self, x: u32) -> Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn u64(mut self, x: u64) -> Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn pad_to(mut self, a: usize) -> Self {
        while !self.0.len().is_multiple_of(a) {
            self.0.push(0);
        }
        self
    }
}

fn rule(bytes: &[u8]) -> &'static str {
    match GgufFile::parse(bytes) {
        Err(Error::Foreign { rule, .. }) => rule,
        other => panic!("expected a GGUF error, got {other:?}"),
    }
}

#[test]
fn hostile_headers_give_named_errors() {
    assert_eq!(rule(b"GGML\x03\0\0\0"), "gguf-magic");
    assert_eq!(rule(&Builder::new(0, 0).0[..10]), "gguf-truncated");
    let mut v1 = Builder::new(0, 0).0;
    v1[4] = 1;
    assert_eq!(rule(&v1), "gguf-version");
    let mut swapped = Builder::new(0, 0).0;
    swapped[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert_eq!(rule(&swapped), "gguf-version");
    // Lying counts (CVE-2024-21836 class).
    assert_eq!(rule(&Builder::new(u64::MAX, 0).0), "gguf-count");
    assert_eq!(rule(&Builder::new(0, 1 << 40).0), "gguf-count");
    // Lying string length (CVE-2024-23496 class).
    assert_eq!(
        rule(&Builder::new(0, 1).u64(u64::MAX).bytes(&[0; 16]).0),
        "gguf-string-length"
    );
    // Array of 2^40 u32 in a few bytes.
    let b = Builder::new(0, 1)
        .str("k")
        .u32(9)
        .u32(4)
        .u64(1 << 40)
        .u64(0);
    assert_eq!(rule(&b.0), "gguf-count");
    // Nested array, unknown value type, bad bool, empty and duplicate keys.
    assert_eq!(
        rule(&Builder::new(0, 1).str("k").u32(9).u32(9).u64(0).0),
        "gguf-value"
    );
    assert_eq!(rule(&Builder::new(0, 1).str("k").u32(13).0), "gguf-value");
    assert_eq!(
        rule(&Builder::new(0, 1).str("k").u32(7).bytes(&[2]).0),
        "gguf-value"
    );
    assert_eq!(
        rule(&Builder::new(0, 1).str("").u32(0).bytes(&[1]).0),
        "gguf-key"
    );
    let dup = Builder::new(0, 2)
        .str("k")
        .u32(0)
        .bytes(&[1])
        .str("k")
        .u32(0)
        .bytes(&[2]);
    assert_eq!(rule(&dup.0), "gguf-duplicate");
    // Alignment: wrong type, zero, not a power of two.
    assert_eq!(
        rule(
            &Builder::new(0, 1)
                .str("general.alignment")
                .u32(5)
                .bytes(&[32, 0, 0, 0])
                .0
        ),
        "gguf-alignment"
    );
    assert_eq!(
        rule(&Builder::new(0, 1).str("general.alignment").u32(4).u32(0).0),
        "gguf-alignment"
    );
    assert_eq!(
        rule(&Builder::new(0, 1).str("general.alignment").u32(4).u32(48).0),
        "gguf-alignment"
    );
    // Bad UTF-8 key.
    assert_eq!(
        rule(
            &Builder::new(0, 1)
                .u64(2)
                .bytes(&[0xff, 0xfe])
                .u32(0)
                .bytes(&[0])
                .0
        ),
        "gguf-string-utf8"
    );
}

#[test]
fn hostile_tensor_infos_give_named_errors() {
    let t = |name: &str, dims: &[u64], ty: u32, off: u64| {
        let mut b = Builder::new(1, 0).str(name).u32(dims.len() as u32);
        for d in dims {
            b = b.u64(*d);
        }
        b.u32(ty).u64(off)
    };
    // Five dimensions (CVE-2024-21802 class), unknown/removed types.
    assert_eq!(rule(&t("w", &[1, 1, 1, 1, 1], 0, 0).0), "gguf-tensor");
    assert_eq!(rule(&t("w", &[32], 4, 0).0), "gguf-type");
    assert_eq!(rule(&t("w", &[32], 99, 0).0), "gguf-type");
    // Element count overflow and a row that is not whole blocks.
    assert_eq!(rule(&t("w", &[1 << 32, 1 << 32], 0, 0).0), "gguf-shape");
    assert_eq!(rule(&t("w", &[255], 12, 0).0), "gguf-shape");
    // Misaligned offset, and data past the end.
    assert_eq!(rule(&t("w", &[4], 0, 3).0), "gguf-offset");
    assert_eq!(rule(&t("w", &[4], 0, 0).pad_to(32).0), "gguf-offset");
    // Byte size near u64::MAX (CVE-2025-53630 class).
    assert_eq!(
        rule(&t("w", &[u64::MAX / 4 + 1], 0, 0).pad_to(32).0),
        "gguf-shape"
    );
    // Two tensors side by side are fine; overlapping ones are not.
    let pair = |b_off: u64| {
        Builder::new(2, 0)
            .str("a")
            .u32(1)
            .u64(4)
            .u32(0)
            .u64(0)
            .str("b")
            .u32(1)
            .u64(4)
            .u32(0)
            .u64(b_off)
            .pad_to(32)
            .bytes(&[0u8; 64])
    };
    assert!(GgufFile::parse(&pair(32).0).is_ok());
    let mut wide = pair(32).0;
    let at = wide.windows(2).position(|w| w == b"a\x01").unwrap() + 5;
    wide[at..at + 8].copy_from_slice(&16u64.to_le_bytes()); // a: 16 floats = 64 bytes
    assert_eq!(rule(&wide), "gguf-offset");
    // Duplicate tensor names.
    let dup = Builder::new(2, 0)
        .str("a")
        .u32(1)
        .u64(4)
        .u32(0)
        .u64(0)
        .str("a")
        .u32(1)
        .u64(4)
        .u32(0)
        .u64(32);
    assert_eq!(rule(&dup.0), "gguf-duplicate");
}
