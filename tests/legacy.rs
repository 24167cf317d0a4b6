//! ztensor 1.x and 0.1 files: the ones the old packages wrote
//! (`tests/data/legacy/make_*.py`) read exactly, checksums checked, and
//! crafted bad files refused with the rule that names the fault.

mod common;

use common::{enc, map, t, u};
use serde_json::Value as Json;
use std::path::PathBuf;
use ztensor::{Error, Reader, Value};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/legacy")
        .join(name)
}

/// Compares every dense tensor of a file with the package's own read-back.
fn check_against_expected(file: &str, expected: &str) {
    let exp: Json =
        serde_json::from_str(&std::fs::read_to_string(data(expected)).unwrap()).unwrap();
    let r = Reader::open(data(file)).unwrap();
    for (name, e) in exp[file].as_object().unwrap() {
        let got = r.read_dense(name).unwrap();
        let shape: Vec<u64> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(got.shape, shape, "{file}:{name}");
        let values: Vec<f64> = match e["dtype"].as_str().unwrap() {
            "float32" => got
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .map(|&x| x as f64)
                .collect(),
            "float64" => got.to_vec::<f64>().unwrap(),
            "float16" => got
                .to_vec::<half::f16>()
                .unwrap()
                .iter()
                .map(|x| x.to_f64())
                .collect(),
            "int64" => got
                .to_vec::<i64>()
                .unwrap()
                .iter()
                .map(|&x| x as f64)
                .collect(),
            "int32" => got
                .to_vec::<i32>()
                .unwrap()
                .iter()
                .map(|&x| x as f64)
                .collect(),
            "int16" => got
                .to_vec::<i16>()
                .unwrap()
                .iter()
                .map(|&x| x as f64)
                .collect(),
            "uint16" => got
                .to_vec::<u16>()
                .unwrap()
                .iter()
                .map(|&x| x as f64)
                .collect(),
            "uint8" | "bool" => got.bytes.iter().map(|&x| x as f64).collect(),
            other => panic!("{other}"),
        };
        let want: Vec<f64> = e["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                v.as_f64()
                    .or_else(|| v.as_bool().map(|b| b as u8 as f64))
                    .unwrap()
            })
            .collect();
        assert_eq!(values, want, "{file}:{name}");
    }
}

#[test]
fn files_from_ztensor_1_2_3_read_exactly() {
    check_against_expected("v1_mixed.zt", "v1_expected.json");
    check_against_expected("v1_raw.zt", "v1_expected.json");
    let r = Reader::open(data("v1_raw.zt")).unwrap();
    assert_eq!(r.format(), ztensor::formats::Format::ZtV1);
    // Raw parts keep their crc32c / sha256 checksums as digests.
    let report = r.verify().unwrap();
    assert_eq!(report.digests_checked, 2);
    // Object attributes survive; sparse objects become our layouts.
    let tagged = r.object("tagged").unwrap().attributes.clone().unwrap();
    assert_eq!(tagged.get("role"), Some(&Value::text("bias")));
    let csr = r.read_csr("csr").unwrap().to_sprs::<f32>().unwrap();
    assert_eq!(
        csr.to_dense().into_raw_vec_and_offset().0,
        [1.5, 0., 2.5, 0., 0., 0., 0., 0., 0., 3.5, 0., 0.]
    );
    let coo = r.read_coo("coo").unwrap();
    assert_eq!(coo.nnz(), 2);
}

#[test]
fn file_from_ztensor_0_1_4_reads_exactly() {
    check_against_expected("v01.zt", "v01_expected.json");
}

/// A 0.1 file: magic, data at 64-byte offsets, CBOR array, u64 size.
fn v01(entries: Vec<Value>, blobs: &[(u64, &[u8])]) -> Vec<u8> {
    let mut out = b"ZTEN0001".to_vec();
    for (off, b) in blobs {
        out.resize(*off as usize, 0);
        out.extend_from_slice(b);
    }
    out.resize(out.len().div_ceil(64) * 64, 0);
    let m = enc(&Value::Array(entries));
    out.extend_from_slice(&m);
    out.extend_from_slice(&(m.len() as u64).to_le_bytes());
    out
}

fn entry(name: &str, offset: u64, size: u64, extra: Vec<(&str, Value)>) -> Value {
    let mut e = vec![
        ("name", t(name)),
        ("offset", u(offset)),
        ("size", u(size)),
        ("dtype", t("float32")),
        ("layout", t("dense")),
        ("shape", Value::Array(vec![u(4)])),
        ("encoding", t("raw")),
    ];
    e.retain(|(k, _)| !extra.iter().any(|(x, _)| x == k));
    e.extend(extra);
    map(e)
}

fn rule_of(bytes: Vec<u8>) -> &'static str {
    match Reader::from_bytes(bytes) {
        Err(Error::Foreign { rule, .. }) => rule,
        other => panic!("expected a foreign-format error, got {other:?}"),
    }
}

#[test]
fn zstd_and_checksums_in_0_1_files() {
    let raw: Vec<u8> = [1f32, 2., 3., 4.]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let z = zstd::bulk::compress(&raw, 3).unwrap();
    let crc = format!("crc32c:0x{:08X}", crc32c::crc32c(&z));
    let e = entry(
        "x",
        64,
        z.len() as u64,
        vec![
            ("encoding", t("zstd")),
            ("checksum", t(&crc)),
            ("note", t("hi")),
        ],
    );
    let file = v01(vec![e], &[(64, &z)]);
    let r = Reader::from_bytes(file.clone()).unwrap();
    assert_eq!(
        r.read_dense("x").unwrap().to_vec::<f32>().unwrap(),
        [1., 2., 3., 4.]
    );
    assert_eq!(
        r.object("x")
            .unwrap()
            .attributes
            .as_ref()
            .unwrap()
            .get("note"),
        Some(&t("hi"))
    );

    // The checksum covers the stored bytes: flip one and open fails.
    let mut bad = file.clone();
    bad[64 + z.len() / 2] ^= 0x10;
    assert!(matches!(
        Reader::from_bytes(bad),
        Err(Error::Foreign {
            rule: "legacy-checksum" | "legacy-zstd",
            ..
        })
    ));

    let be = entry("x", 64, 16, vec![("data_endianness", t("big"))]);
    assert_eq!(rule_of(v01(vec![be], &[(64, &raw)])), "legacy-endianness");
}

#[test]
fn hostile_legacy_files_name_the_fault() {
    let raw = [0u8; 16];
    let ok = v01(vec![entry("x", 64, 16, vec![])], &[(64, &raw)]);
    assert!(Reader::from_bytes(ok.clone()).is_ok());
    // Every prefix fails cleanly (no panic).
    for n in 0..ok.len() {
        assert!(Reader::from_bytes(ok[..n].to_vec()).is_err(), "prefix {n}");
    }
    assert_eq!(
        rule_of(v01(vec![entry("x", 64, 1 << 40, vec![])], &[(64, &raw)])),
        "legacy-bounds"
    );
    assert_eq!(
        rule_of(v01(vec![entry("x", 0, 16, vec![])], &[(64, &raw)])),
        "legacy-bounds"
    );
    let two = vec![entry("x", 64, 16, vec![]), entry("y", 72, 16, vec![])];
    assert_eq!(
        rule_of(v01(two, &[(64, &raw), (80, &raw)])),
        "legacy-overlap"
    );
    // A manifest size larger than the file.
    let mut big = ok.clone();
    let n = big.len();
    big[n - 8..].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(rule_of(big), "legacy-manifest-size");
    // CBOR garbage and duplicate keys.
    let mut garbage = b"ZTEN0001".to_vec();
    garbage.extend_from_slice(&[0x9f, 0x1c, 0xff]);
    garbage.extend_from_slice(&3u64.to_le_bytes());
    assert_eq!(rule_of(garbage), "legacy-cbor");
    let mut dup = b"ZTEN0001".to_vec();
    dup.extend_from_slice(&[0x81, 0xa2, 0x61, b'a', 0x01, 0x61, b'a', 0x02]);
    dup.extend_from_slice(&8u64.to_le_bytes());
    assert_eq!(rule_of(dup), "legacy-cbor");
    // A 1.x file whose footer magic is gone.
    let mut v1 = std::fs::read(data("v1_raw.zt")).unwrap();
    let n = v1.len();
    v1[n - 1] = b'X';
    assert_eq!(rule_of(v1), "legacy-magic");
    // A flipped byte in a raw 1.x part with a crc32c is caught by verify.
    let mut v1 = std::fs::read(data("v1_raw.zt")).unwrap();
    let r = Reader::from_bytes(v1.clone()).unwrap();
    let off = r.object("w").unwrap().parts["data"].blob.offset as usize;
    v1[off + 3] ^= 1;
    let r = Reader::from_bytes(v1).unwrap();
    assert!(r.verify_object("w").is_err());
    // Every prefix of a real 1.x file fails cleanly.
    let v1 = std::fs::read(data("v1_mixed.zt")).unwrap();
    for n in 0..v1.len() {
        assert!(Reader::from_bytes(v1[..n].to_vec()).is_err(), "prefix {n}");
    }
}
