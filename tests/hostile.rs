//! Hostile input: truncation, corruption, lying sizes. Every case must end
//! in a typed error, never a panic, abort or huge allocation.

mod common;

use common::*;
use ztensor::cbor::Value;
use ztensor::{
    DType, DigestAlg, ElementType, Error, LogicalType, OpenOptions, PartOptions, Reader, Rule,
    WriteOptions, Writer, ZstdOptions,
};

/// A small file with dense, bool, sparse and compressed tensors.
fn sample_file() -> Vec<u8> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let k = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("zt-hostile-{}-{k}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sample.zt");
    let mut w = Writer::create_with(
        &path,
        WriteOptions {
            durable: false,
            ..WriteOptions::default()
        },
    )
    .unwrap();
    w.add("w", &[4, 8], &(0..32).map(|i| i as f32).collect::<Vec<_>>())
        .unwrap();
    w.add_bytes(
        "mask",
        &[5],
        ElementType::logical(LogicalType::Bool),
        &[1, 0, 1, 1, 0],
    )
    .unwrap();
    w.add_csr(
        "csr",
        [2, 3],
        ElementType::plain(DType::F32),
        &f32s(&[1., 2.]),
        &[0, 2],
        &[0, 1, 2],
    )
    .unwrap();
    w.add_coo(
        "coo",
        &[3, 3],
        ElementType::plain(DType::F32),
        &f32s(&[5., 6.]),
        &[0, 2, 1, 0],
    )
    .unwrap();
    let z = PartOptions {
        etype: ElementType::plain(DType::F32),
        compression: Some(ZstdOptions {
            level: 3,
            frame_size: 256,
        }),
        digest: Some(DigestAlg::Crc32c),
    };
    let data = f32s(&(0..1000).map(|i| (i % 10) as f32).collect::<Vec<_>>());
    w.add_bytes_with("z", &[10, 100], &data, &z, None).unwrap();
    w.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    bytes
}

#[test]
fn every_prefix_fails_to_open() {
    let file = sample_file();
    Reader::from_bytes(file.clone()).expect("the full file opens");
    for n in 0..file.len() {
        let r = Reader::from_bytes(file[..n].to_vec());
        let e = r.expect_err("a prefix must not open");
        assert!(e.rule().is_some(), "prefix {n}: {e}");
    }
}

#[test]
fn flipped_data_bytes_are_caught_by_verify() {
    let file = sample_file();
    let original = Reader::from_bytes(file.clone()).unwrap();
    original.verify().unwrap();
    let mut ranges = vec![];
    for name in original.names() {
        for p in original.object(name).unwrap().parts.values() {
            ranges.push((p.blob.offset as usize, p.blob.length as usize));
        }
    }
    for (off, len) in ranges {
        for i in off..off + len {
            let mut bad = file.clone();
            bad[i] ^= 0x01;
            let r = Reader::from_bytes(bad).expect("data bytes do not affect open");
            match r.verify() {
                Err(e) => assert!(e.rule().is_some(), "byte {i}: {e}"),
                // Only bits that cannot change content may pass: the seek
                // table's unused descriptor bits, which the profile says to
                // ignore. Then every decoded part must be unchanged.
                Ok(_) => {
                    for n in original.names() {
                        for role in original.object(n).unwrap().parts.keys() {
                            assert_eq!(
                                r.part_bytes(n, role).unwrap(),
                                original.part_bytes(n, role).unwrap(),
                                "flipped bit at {i} (blob at {off}) changed {n}/{role} silently"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn any_flipped_byte_never_panics() {
    let file = sample_file();
    for i in 0..file.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bad = file.clone();
            bad[i] ^= mask;
            if let Ok(r) = Reader::from_bytes(bad) {
                let names: Vec<String> = r.names().map(str::to_string).collect();
                for n in names {
                    let _ = r.read_dense(&n);
                    let _ = r.read_csr(&n);
                    let _ = r.read_coo(&n);
                }
                let _ = r.verify();
            }
        }
    }
}

#[test]
fn trailing_bytes_and_polyglots_are_rejected() {
    let mut file = sample_file();
    file.push(0);
    assert_eq!(
        Reader::from_bytes(file.clone()).unwrap_err().rule(),
        Some(Rule::FooterMagic)
    );
    let mut zip = sample_file();
    zip.extend_from_slice(b"PK\x03\x04 appended archive");
    assert_eq!(
        Reader::from_bytes(zip).unwrap_err().rule(),
        Some(Rule::FooterMagic)
    );
}

#[test]
fn lying_sizes_never_allocate() {
    // Blob past the end with an offset that would wrap.
    let m = manifest(vec![(
        "t",
        object(
            &[1],
            "dense",
            vec![("data", part("u8", u64::MAX - 4095, 8192, vec![]))],
            vec![],
        ),
    )]);
    let e = Reader::from_bytes(assemble(&[], &m)).unwrap_err();
    assert_eq!(e.rule(), Some(Rule::BlobOutOfBounds));

    // A compressed part claiming 2^60 decoded bytes: refused before allocating.
    let huge = 1u64 << 60;
    let m = manifest(vec![(
        "t",
        object(
            &[huge],
            "dense",
            vec![(
                "data",
                part(
                    "u8",
                    4096,
                    30,
                    vec![
                        ("encoding", t("zt.zstd-seekable/1")),
                        ("decoded_length", u(huge)),
                    ],
                ),
            )],
            vec![],
        ),
    )]);
    let r = Reader::from_bytes(assemble(&[(4096, &[0u8; 30])], &m)).expect("structurally valid");
    assert!(matches!(r.read_dense("t"), Err(Error::Limit { .. })));

    // Same with a small cap set by the caller.
    let small = OpenOptions::default().max_decoded_bytes(1024);
    let m = manifest(vec![(
        "t",
        object(
            &[4096],
            "dense",
            vec![(
                "data",
                part(
                    "u8",
                    4096,
                    30,
                    vec![
                        ("encoding", t("zt.zstd-seekable/1")),
                        ("decoded_length", u(4096)),
                    ],
                ),
            )],
            vec![],
        ),
    )]);
    let r = Reader::from_bytes_with(assemble(&[(4096, &[0u8; 30])], &m), small).unwrap();
    assert!(matches!(r.read_dense("t"), Err(Error::Limit { .. })));

    // A manifest length of u64::MAX and one past the cap.
    let mut img = assemble(&[], &manifest(vec![]));
    let n = img.len();
    img[n - 32..n - 24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(
        Reader::from_bytes(img).unwrap_err().rule(),
        Some(Rule::ManifestTooLarge)
    );
    let mut img = assemble(&[], &manifest(vec![]));
    img[n - 32..n - 24].copy_from_slice(&100u64.to_le_bytes());
    let e =
        Reader::from_bytes_with(img, OpenOptions::default().max_manifest_bytes(50)).unwrap_err();
    assert_eq!(e.rule(), Some(Rule::ManifestTooLarge));

    // CBOR that declares 2^32 objects in a few bytes.
    let bytes = vec![
        0xa1, 0x67, b'o', b'b', b'j', b'e', b'c', b't', b's', 0xba, 0xff, 0xff, 0xff, 0xff,
    ];
    let e = Reader::from_bytes(assemble_raw(&[], &bytes, None)).unwrap_err();
    assert_eq!(e.rule(), Some(Rule::CborSyntax));
}

#[test]
fn sparse_data_rules_hold_on_hostile_indices() {
    // indptr with a huge entry must not index out of bounds.
    let ptr: Vec<u8> = [0u64, u64::MAX, 1]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let idx: Vec<u8> = 0u64.to_le_bytes().to_vec();
    let vals = f32s(&[1.0]);
    let m = manifest(vec![(
        "m",
        object(
            &[2, 2],
            "zt.sparse_csr/1",
            vec![
                ("values", part("f32", 4096, 4, vec![])),
                ("indices", part("u64", 8192, 8, vec![])),
                ("indptr", part("u64", 12288, 24, vec![])),
            ],
            vec![],
        ),
    )]);
    let r =
        Reader::from_bytes(assemble(&[(4096, &vals), (8192, &idx), (12288, &ptr)], &m)).unwrap();
    assert_eq!(r.read_csr("m").unwrap_err().rule(), Some(Rule::CsrData));

    // COO with duplicate coordinates.
    let coords: Vec<u8> = [1u32, 1, 2, 2]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let m = manifest(vec![(
        "c",
        object(
            &[3, 3],
            "zt.sparse_coo/1",
            vec![
                ("values", part("f32", 4096, 8, vec![])),
                ("coords", part("u32", 8192, 16, vec![])),
            ],
            vec![],
        ),
    )]);
    let r = Reader::from_bytes(assemble(&[(4096, &f32s(&[1., 2.])), (8192, &coords)], &m)).unwrap();
    assert_eq!(r.read_coo("c").unwrap_err().rule(), Some(Rule::CooData));
}

#[test]
fn unknown_layouts_types_and_encodings_stay_structural() {
    let m = manifest(vec![
        (
            "a",
            object(
                &[4],
                "pie.paged_kv/1",
                vec![("kv", part("u8", 4096, 4, vec![]))],
                vec![],
            ),
        ),
        (
            "b",
            object(
                &[4],
                "dense",
                vec![("data", part("u8", 8192, 4, vec![("type", t("f6_e3m2"))]))],
                vec![],
            ),
        ),
        (
            "c",
            object(
                &[4],
                "dense",
                vec![(
                    "data",
                    part(
                        "u8",
                        12288,
                        4,
                        vec![("encoding", t("lz4/1")), ("decoded_length", u(4))],
                    ),
                )],
                vec![],
            ),
        ),
    ]);
    let blob = [1u8, 2, 3, 4];
    let r = Reader::from_bytes(assemble(
        &[(4096, &blob), (8192, &blob), (12288, &blob)],
        &m,
    ))
    .unwrap();
    assert_eq!(r.stored_bytes("a", "kv").unwrap().as_ref(), &blob);
    assert!(matches!(r.read_dense("a"), Err(Error::Usage(_))));
    assert!(matches!(r.read_dense("b"), Err(Error::Unsupported(_))));
    assert_eq!(r.stored_bytes("b", "data").unwrap().as_ref(), &blob);
    assert!(matches!(r.read_dense("c"), Err(Error::Unsupported(_))));
    assert_eq!(r.stored_bytes("c", "data").unwrap().as_ref(), &blob);
}

#[test]
fn deep_attributes_are_bounded() {
    let mut v = Value::Uint(0);
    for _ in 0..40 {
        v = Value::Array(vec![v]);
    }
    // The encoder refuses to produce it...
    assert!(ztensor::cbor::encode(&map(vec![
        ("objects", map(vec![])),
        ("attributes", map(vec![("x", v)]))
    ]))
    .is_err());
    // ...and the decoder refuses it from a file.
    let mut raw = vec![0xa2, 0x67];
    raw.extend_from_slice(b"objects");
    raw.push(0xa0);
    raw.push(0x6a);
    raw.extend_from_slice(b"attributes");
    raw.push(0xa1);
    raw.extend_from_slice(&[0x61, b'x']);
    raw.extend(std::iter::repeat_n(0x81, 40));
    raw.push(0x00);
    let e = Reader::from_bytes(assemble_raw(&[], &raw, None)).unwrap_err();
    assert_eq!(e.rule(), Some(Rule::CborDepth));
}

#[test]
fn pread_backend_reads_the_same() {
    let file = sample_file();
    let dir = std::env::temp_dir().join(format!("zt-pread-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.zt");
    std::fs::write(&path, &file).unwrap();
    let a = Reader::open(&path).unwrap();
    let b = OpenOptions::default()
        .backend(ztensor::Backend::Pread)
        .open(&path)
        .unwrap();
    for n in a.names() {
        for role in a.object(n).unwrap().parts.keys() {
            assert_eq!(
                a.part_bytes(n, role).unwrap(),
                b.part_bytes(n, role).unwrap()
            );
        }
    }
    assert!(a.read_dense("w").unwrap().is_zero_copy());
    assert!(!b.read_dense("w").unwrap().is_zero_copy());
    b.verify().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
