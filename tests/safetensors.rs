//! The safetensors reader: fixtures parse and tile; hostile headers give
//! named errors (incl. duplicate keys, which the reference accepts).

use std::path::PathBuf;
use ztensor::formats::safetensors::SafetensorsFile;
use ztensor::Error;

fn file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

fn rule(bytes: &[u8]) -> &'static str {
    match SafetensorsFile::parse(bytes) {
        Err(Error::Foreign { rule, .. }) => rule,
        other => panic!("expected a safetensors error, got {other:?}"),
    }
}

#[test]
fn fixtures_parse() {
    let root = std::env::var_os("ZT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
    for model in ["llama-tiny", "qwen2-tiny"] {
        let bytes = std::fs::read(
            root.join("safetensors")
                .join(model)
                .join("model.safetensors"),
        )
        .unwrap();
        let st = SafetensorsFile::parse(&bytes).unwrap();
        assert!(st.tensors.len() > 10);
        let total: u64 = st.tensors.iter().map(|t| t.end - t.begin).sum();
        assert_eq!(st.data_start + total, bytes.len() as u64);
        for t in &st.tensors {
            assert_eq!(t.dtype, "F32");
            t.element_type().unwrap();
        }
    }
}

#[test]
fn valid_small_files() {
    let h = r#"{"__metadata__":{"k":"v"},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let st = SafetensorsFile::parse(&file(h, &[0, 0, 128, 63, 7, 8])).unwrap();
    assert_eq!(st.tensors[0].name, "a");
    assert_eq!(st.metadata.unwrap()["k"], "v");
    // Leading whitespace before '{' is accepted (as the reference does).
    let padded = format!("   {h}  ");
    assert!(SafetensorsFile::parse(&file(&padded, &[0, 0, 128, 63, 7, 8])).is_ok());
    // Zero-size and scalar tensors.
    let z = r#"{"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"s":{"dtype":"I64","shape":[],"data_offsets":[0,8]}}"#;
    assert!(SafetensorsFile::parse(&file(z, &[0; 8])).is_ok());
}

#[test]
fn hostile_files_give_named_errors() {
    let t = r#""t":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}"#;
    assert_eq!(rule(&[1, 2, 3]), "safetensors-too-small");
    assert_eq!(rule(&u64::MAX.to_le_bytes()), "safetensors-header-length");
    assert_eq!(
        rule(&100_000_001u64.to_le_bytes()),
        "safetensors-header-length"
    );
    let mut past = file(&format!("{{{t}}}"), &[1, 2]);
    past[0] = 200;
    assert_eq!(rule(&past), "safetensors-header-length");
    assert_eq!(rule(&file("[1]", &[])), "safetensors-header");
    let mut bad_utf8 = file("{\"\u{e9}\":1}", &[]);
    bad_utf8[10] = 0xff;
    assert_eq!(rule(&bad_utf8), "safetensors-header");
    // Duplicate keys, top level and nested (the reference keeps the last).
    assert_eq!(
        rule(&file(&format!("{{{t},{t}}}"), &[1, 2])),
        "safetensors-header"
    );
    let nested = r#"{"t":{"dtype":"U8","dtype":"F32","shape":[2],"data_offsets":[0,2]}}"#;
    assert_eq!(rule(&file(nested, &[1, 2])), "safetensors-header");
    // Layout: gap, overlap, trailing bytes, size mismatch, overflow.
    let two = |a: &str, b: &str| {
        format!(
            r#"{{"a":{{"dtype":"U8","shape":[2],"data_offsets":{a}}},"b":{{"dtype":"U8","shape":[2],"data_offsets":{b}}}}}"#
        )
    };
    assert_eq!(
        rule(&file(&two("[0,2]", "[3,5]"), &[0; 5])),
        "safetensors-offsets"
    );
    assert_eq!(
        rule(&file(&two("[0,2]", "[1,3]"), &[0; 3])),
        "safetensors-offsets"
    );
    assert_eq!(
        rule(&file(&two("[0,2]", "[0,2]"), &[0; 2])),
        "safetensors-offsets"
    );
    assert_eq!(
        rule(&file(&format!("{{{t}}}"), &[1, 2, 3])),
        "safetensors-offsets"
    );
    let wrong = r#"{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#;
    assert_eq!(rule(&file(wrong, &[0; 4])), "safetensors-tensor");
    let huge = r#"{"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#;
    assert_eq!(rule(&file(huge, &[0; 4])), "safetensors-tensor");
    let unknown = r#"{"t":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}"#;
    assert_eq!(rule(&file(unknown, &[0])), "safetensors-tensor");
    let odd_f4 = r#"{"t":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#;
    assert_eq!(rule(&file(odd_f4, &[0; 2])), "safetensors-tensor");
    let meta = r#"{"__metadata__":{"k":1}}"#;
    assert_eq!(rule(&file(meta, &[])), "safetensors-metadata");
}
