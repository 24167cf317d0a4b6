//! The test vectors in `spec/vectors/`: small valid files with their
//! expected decoded contents, and one reject file per rule of the spec.
//! Defined here in code; the files on disk must match byte for byte.
//! Regenerate with `ZT_REGEN_VECTORS=1 cargo test --test vectors`.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use ztensor::cbor::Value;
use ztensor::container::Footer;
use ztensor::{Reader, Rule};

/// Expected content of one part: object, part, layout, shape, type, bytes.
type Content = (String, String, String, Vec<u64>, String, Vec<u8>);

/// A vector: main file, companion shard files, and for valid files the
/// expected `(object, part) -> (layout, shape, type, bytes)`.
struct Vector {
    name: String,
    bytes: Vec<u8>,
    shards: Vec<(String, Vec<u8>)>,
    expect: Option<Rule>,
    contents: Vec<Content>,
}

fn valid(name: &str, bytes: Vec<u8>) -> Vector {
    Vector {
        name: name.into(),
        bytes,
        shards: vec![],
        expect: None,
        contents: vec![],
    }
}

fn reject(rule: Rule, bytes: Vec<u8>) -> Vector {
    Vector {
        name: rule.id().into(),
        bytes,
        shards: vec![],
        expect: Some(rule),
        contents: vec![],
    }
}

impl Vector {
    fn content(
        mut self,
        object: &str,
        role: &str,
        layout: &str,
        shape: &[u64],
        etype: &str,
        bytes: &[u8],
    ) -> Self {
        self.contents.push((
            object.into(),
            role.into(),
            layout.into(),
            shape.to_vec(),
            etype.into(),
            bytes.to_vec(),
        ));
        self
    }
    fn shard(mut self, suffix: &str, bytes: Vec<u8>) -> Self {
        self.shards.push((suffix.into(), bytes));
        self
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::new();
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn dense1(dtype: &str, len: u64, extra: Vec<(&str, Value)>, shape: &[u64]) -> Value {
    manifest(vec![(
        "t",
        object(
            shape,
            "dense",
            vec![("data", part(dtype, 4096, len, extra))],
            vec![],
        ),
    )])
}

fn one_f32() -> Vec<u8> {
    f32s(&[1.0, 2.0, 3.0, 4.0])
}

/// A valid single-tensor image whose manifest bytes are replaced.
fn with_manifest_bytes(m: &[u8]) -> Vec<u8> {
    assemble_raw(&[(4096, &one_f32())], m, None)
}

fn with_footer(mut img: Vec<u8>, edit: impl FnOnce(&mut Footer)) -> Vec<u8> {
    let n = img.len();
    let mut raw = [0u8; 40];
    raw.copy_from_slice(&img[n - 40..]);
    let mut f = Footer {
        manifest_offset: u64::from_le_bytes(raw[0..8].try_into().unwrap()),
        manifest_length: u64::from_le_bytes(raw[8..16].try_into().unwrap()),
        manifest_hash: u64::from_le_bytes(raw[16..24].try_into().unwrap()),
        version: u32::from_le_bytes(raw[24..28].try_into().unwrap()),
        reserved: 0,
    };
    edit(&mut f);
    img[n - 40..].copy_from_slice(&f.encode());
    img
}

fn zstd(data: &[u8], frame: usize) -> Vec<u8> {
    ztensor::zstd_seekable::encode(
        data,
        ztensor::ZstdOptions {
            level: 3,
            frame_size: frame,
        },
    )
    .unwrap()
}

fn all_vectors() -> Vec<Vector> {
    let mut v = vec![];
    let data = one_f32();
    let good = || assemble(&[(4096, &one_f32())], &dense1("f32", 16, vec![], &[2, 2]));

    // ---------------------------------------------------------------- valid
    v.push(valid("minimal", good()).content("t", "data", "dense", &[2, 2], "f32", &data));
    {
        let mut objects = vec![];
        let mut blobs: Vec<(u64, Vec<u8>)> = vec![];
        let mut vec_ = valid("every-dtype", vec![]);
        for (i, d) in ztensor::DType::ALL.iter().enumerate() {
            let bytes: Vec<u8> = (0..3 * d.width()).map(|k| (k * 31 + i) as u8).collect();
            let off = 4096 * (i as u64 + 1);
            objects.push((
                format!("t_{d}"),
                object(
                    &[3],
                    "dense",
                    vec![("data", part(d.as_str(), off, bytes.len() as u64, vec![]))],
                    vec![],
                ),
            ));
            vec_ = vec_.content(&format!("t_{d}"), "data", "dense", &[3], d.as_str(), &bytes);
            blobs.push((off, bytes));
        }
        let m = manifest(
            objects
                .iter()
                .map(|(n, o)| (n.as_str(), o.clone()))
                .collect(),
        );
        let refs: Vec<(u64, &[u8])> = blobs.iter().map(|(o, b)| (*o, b.as_slice())).collect();
        vec_.bytes = assemble(&refs, &m);
        v.push(vec_);
    }
    {
        let bools = [1u8, 0, 1];
        let f4 = [0x21u8, 0x03];
        let c64 = f32s(&[1.0, -1.0]);
        let m = manifest(vec![
            (
                "b",
                object(
                    &[3],
                    "dense",
                    vec![("data", part("u8", 4096, 3, vec![("type", t("bool"))]))],
                    vec![],
                ),
            ),
            (
                "c",
                object(
                    &[1],
                    "dense",
                    vec![("data", part("f32", 8192, 8, vec![("type", t("complex64"))]))],
                    vec![],
                ),
            ),
            (
                "f",
                object(
                    &[3],
                    "dense",
                    vec![("data", part("u8", 12288, 2, vec![("type", t("f4_e2m1"))]))],
                    vec![],
                ),
            ),
        ]);
        v.push(
            valid(
                "logical-types",
                assemble(&[(4096, &bools), (8192, &c64), (12288, &f4)], &m),
            )
            .content("b", "data", "dense", &[3], "bool", &bools)
            .content("c", "data", "dense", &[1], "complex64", &c64)
            .content("f", "data", "dense", &[3], "f4_e2m1", &f4),
        );
    }
    v.push(
        valid(
            "scalar",
            assemble(&[(4096, &data[..4])], &dense1("f32", 4, vec![], &[])),
        )
        .content("t", "data", "dense", &[], "f32", &data[..4]),
    );
    v.push(
        valid(
            "zero-size",
            assemble(&[], &dense1("f32", 0, vec![], &[0, 5])),
        )
        .content("t", "data", "dense", &[0, 5], "f32", &[]),
    );
    {
        let xxh = ztensor::DigestAlg::Xxh3.digest(&data);
        let sha = ztensor::DigestAlg::Sha256.digest(&data);
        let crc = ztensor::DigestAlg::Crc32c.digest(&data);
        let b3 = ztensor::DigestAlg::Blake3.digest(&data);
        let m = manifest(vec![
            (
                "a",
                object(
                    &[4],
                    "dense",
                    vec![("data", part("f32", 4096, 16, vec![("digest", t(&xxh))]))],
                    vec![],
                ),
            ),
            (
                "b",
                object(
                    &[4],
                    "dense",
                    vec![("data", part("f32", 4096, 16, vec![("digest", t(&sha))]))],
                    vec![],
                ),
            ),
            (
                "c",
                object(
                    &[4],
                    "dense",
                    vec![("data", part("f32", 4096, 16, vec![("digest", t(&crc))]))],
                    vec![],
                ),
            ),
            (
                "d",
                object(
                    &[4],
                    "dense",
                    vec![("data", part("f32", 4096, 16, vec![("digest", t(&b3))]))],
                    vec![],
                ),
            ),
        ]);
        let mut vv = valid("digests-and-aliases", assemble(&[(4096, &data)], &m));
        for n in ["a", "b", "c", "d"] {
            vv = vv.content(n, "data", "dense", &[4], "f32", &data);
        }
        v.push(vv);
    }
    {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i % 11) as u8).collect();
        let enc = zstd(&payload, 1024);
        let m = manifest(vec![(
            "z",
            object(
                &[5000],
                "dense",
                vec![(
                    "data",
                    part(
                        "u8",
                        4096,
                        enc.len() as u64,
                        vec![
                            ("encoding", t("zt.zstd-seekable/1")),
                            ("decoded_length", u(5000)),
                        ],
                    ),
                )],
                vec![],
            ),
        )]);
        v.push(
            valid("zstd-seekable", assemble(&[(4096, &enc)], &m)).content(
                "z",
                "data",
                "dense",
                &[5000],
                "u8",
                &payload,
            ),
        );
    }
    {
        let vals = f32s(&[1.0, 2.0, 3.0]);
        let idx: Vec<u8> = [0u32, 2, 1].iter().flat_map(|x| x.to_le_bytes()).collect();
        let ptr: Vec<u8> = [0u32, 2, 3].iter().flat_map(|x| x.to_le_bytes()).collect();
        let coords: Vec<u8> = [0u64, 1, 1, 0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let m = manifest(vec![
            (
                "csr",
                object(
                    &[2, 3],
                    "zt.sparse_csr/1",
                    vec![
                        ("values", part("f32", 4096, 12, vec![])),
                        ("indices", part("u32", 8192, 12, vec![])),
                        ("indptr", part("u32", 12288, 12, vec![])),
                    ],
                    vec![],
                ),
            ),
            (
                "coo",
                object(
                    &[2, 2],
                    "zt.sparse_coo/1",
                    vec![
                        ("values", part("f32", 16384, 8, vec![])),
                        ("coords", part("u64", 20480, 32, vec![])),
                    ],
                    vec![],
                ),
            ),
        ]);
        v.push(
            valid(
                "sparse",
                assemble(
                    &[
                        (4096, &vals),
                        (8192, &idx),
                        (12288, &ptr),
                        (16384, &vals[..8]),
                        (20480, &coords),
                    ],
                    &m,
                ),
            )
            .content("csr", "values", "zt.sparse_csr/1", &[2, 3], "f32", &vals)
            .content("csr", "indices", "zt.sparse_csr/1", &[2, 3], "u32", &idx)
            .content("csr", "indptr", "zt.sparse_csr/1", &[2, 3], "u32", &ptr)
            .content(
                "coo",
                "values",
                "zt.sparse_coo/1",
                &[2, 2],
                "f32",
                &vals[..8],
            )
            .content("coo", "coords", "zt.sparse_coo/1", &[2, 2], "u64", &coords),
        );
    }
    {
        let blocks: Vec<u8> = (0..68u8).collect();
        let attrs = map(vec![("elems_per_block", u(32)), ("block_bytes", u(34))]);
        let m = manifest(vec![(
            "q",
            object(
                &[2, 32],
                "gguf.q8_0/1",
                vec![("data", part("u8", 4096, 68, vec![]))],
                vec![("attributes", attrs)],
            ),
        )]);
        v.push(
            valid("gguf-blocks", assemble(&[(4096, &blocks)], &m)).content(
                "q",
                "data",
                "gguf.q8_0/1",
                &[2, 32],
                "u8",
                &blocks,
            ),
        );
    }
    {
        let m = map(vec![
            (
                "objects",
                map(vec![(
                    "t",
                    object(
                        &[4],
                        "pie.paged_kv/1",
                        vec![("kv", part("u8", 4096, 16, vec![("type", t("x_unknown"))]))],
                        vec![("attributes", map(vec![("page", u(16))]))],
                    ),
                )]),
            ),
            (
                "attributes",
                map(vec![
                    ("name", t("vector")),
                    ("pi", Value::Float(3.25)),
                    ("neg", Value::Nint(4)),
                    ("raw", Value::Bytes(vec![1, 2])),
                    ("none", Value::Null),
                    ("ok", Value::Bool(true)),
                    ("list", Value::Array(vec![u(1), t("x")])),
                ]),
            ),
            ("unknown_root_key", u(7)),
        ]);
        v.push(
            valid("unknown-layout-attributes", assemble(&[(4096, &data)], &m)).content(
                "t",
                "kv",
                "pie.paged_kv/1",
                &[4],
                "x_unknown",
                &data,
            ),
        );
    }
    v.push(valid("data-shard", data_shard(&[(4096, &data)])));
    {
        let shard = data_shard(&[(4096, &data)]);
        let digest = ztensor::DigestAlg::Xxh3.digest(&shard);
        let m = map(vec![
            (
                "objects",
                map(vec![(
                    "t",
                    object(
                        &[2, 2],
                        "dense",
                        vec![("data", part("f32", 4096, 16, vec![("shard", t("00001"))]))],
                        vec![],
                    ),
                )]),
            ),
            (
                "shards",
                map(vec![(
                    "00001",
                    map(vec![
                        ("size", u(shard.len() as u64)),
                        ("digest", t(&digest)),
                    ]),
                )]),
            ),
        ]);
        v.push(
            valid("shards-table", assemble(&[], &m))
                .shard("00001", shard)
                .content("t", "data", "dense", &[2, 2], "f32", &data),
        );
    }
    {
        // Two generations: the first manifest stays as an unreferenced blob.
        let first = assemble(&[(4096, &data)], &dense1("f32", 16, vec![], &[4]));
        let mut img = first[..first.len() - 40].to_vec();
        img.resize(12288, 0);
        img.extend_from_slice(&data);
        let m = manifest(vec![
            (
                "t",
                object(
                    &[4],
                    "dense",
                    vec![("data", part("f32", 4096, 16, vec![]))],
                    vec![],
                ),
            ),
            (
                "u",
                object(
                    &[4],
                    "dense",
                    vec![("data", part("f32", 12288, 16, vec![]))],
                    vec![],
                ),
            ),
        ]);
        let mb = enc(&m);
        img.resize(16384, 0);
        img.extend_from_slice(&mb);
        let f = Footer {
            manifest_offset: 16384,
            manifest_length: mb.len() as u64,
            manifest_hash: xxhash_rust::xxh3::xxh3_64(&mb),
            version: 2,
            reserved: 0,
        };
        img.extend_from_slice(&f.encode());
        v.push(
            valid("appended-generation", img)
                .content("t", "data", "dense", &[4], "f32", &data)
                .content("u", "data", "dense", &[4], "f32", &data),
        );
    }

    // --------------------------------------------------------------- reject
    v.push(reject(Rule::FileTooSmall, good()[..47].to_vec()));
    v.push(reject(Rule::HeaderMagic, {
        let mut b = good();
        b[1] = b'z';
        b
    }));
    v.push(reject(Rule::FooterMagic, {
        let mut b = good();
        let n = b.len();
        b[n - 1] = 0;
        b
    }));
    v.push(reject(
        Rule::VersionUnsupported,
        with_footer(good(), |f| f.version = 3),
    ));
    v.push(reject(
        Rule::DataShardFooter,
        with_footer(good(), |f| f.manifest_length = 0),
    ));
    v.push(reject(
        Rule::ManifestOutOfBounds,
        with_footer(good(), |f| f.manifest_offset = 1 << 20),
    ));
    v.push(reject(
        Rule::ManifestTooLarge,
        with_footer(good(), |f| f.manifest_length = (1 << 30) + 1),
    ));
    v.push(reject(
        Rule::ManifestMisaligned,
        with_footer(good(), |f| f.manifest_offset += 8),
    ));
    v.push(reject(
        Rule::ManifestHashMismatch,
        with_footer(good(), |f| f.manifest_hash ^= 1),
    ));
    let mbytes = enc(&dense1("f32", 16, vec![], &[2, 2]));
    v.push(reject(
        Rule::CborSyntax,
        with_manifest_bytes(&mbytes[..mbytes.len() - 1]),
    ));
    v.push(reject(
        Rule::CborNonShortest,
        with_manifest_bytes(&[
            0xb8, 0x01, 0x67, b'o', b'b', b'j', b'e', b'c', b't', b's', 0xa0,
        ]),
    ));
    v.push(reject(
        Rule::CborIndefinite,
        with_manifest_bytes(&[
            0xbf, 0x67, b'o', b'b', b'j', b'e', b'c', b't', b's', 0xa0, 0xff,
        ]),
    ));
    v.push(reject(
        Rule::CborTag,
        with_manifest_bytes(&[
            0xc0, 0xa1, 0x67, b'o', b'b', b'j', b'e', b'c', b't', b's', 0xa0,
        ]),
    ));
    v.push(reject(
        Rule::CborUnsortedKeys,
        with_manifest_bytes(&[
            0xa2, 0x67, b'o', b'b', b'j', b'e', b'c', b't', b's', 0xa0, 0x61, b'a', 0x00,
        ]),
    ));
    v.push(reject(
        Rule::CborDuplicateKey,
        with_manifest_bytes(&[
            0xa2, 0x67, b'o', b'b', b'j', b'e', b'c', b't', b's', 0xa0, 0x67, b'o', b'b', b'j',
            b'e', b'c', b't', b's', 0xa0,
        ]),
    ));
    v.push(reject(
        Rule::CborTrailingBytes,
        with_manifest_bytes(&[&mbytes[..], &[0x00]].concat()),
    ));
    {
        let mut raw = vec![0xa2, 0x67];
        raw.extend_from_slice(b"objects");
        raw.push(0xa0);
        raw.push(0x6a);
        raw.extend_from_slice(b"attributes");
        raw.extend_from_slice(&[0xa1, 0x61, b'x']);
        raw.extend(std::iter::repeat_n(0x81, 33));
        raw.push(0x00);
        v.push(reject(Rule::CborDepth, with_manifest_bytes(&raw)));
    }
    {
        let mut raw = vec![0xa2, 0x67];
        raw.extend_from_slice(b"objects");
        raw.push(0xa0);
        raw.push(0x6a);
        raw.extend_from_slice(b"attributes");
        raw.extend_from_slice(&[0xa1, 0x61, b'x', 0xfa, 0x3f, 0xc0, 0x00, 0x00]); // 1.5 as f32
        v.push(reject(Rule::CborFloat, with_manifest_bytes(&raw)));
    }
    v.push(reject(
        Rule::SchemaType,
        assemble(&[], &Value::Array(vec![])),
    ));
    v.push(reject(
        Rule::SchemaMissingField,
        assemble(
            &[(4096, &data)],
            &manifest(vec![(
                "t",
                map(vec![
                    ("shape", Value::Array(vec![u(4)])),
                    ("parts", map(vec![("data", part("f32", 4096, 16, vec![]))])),
                ]),
            )]),
        ),
    ));
    v.push(reject(
        Rule::SchemaBlobArity,
        assemble(
            &[(4096, &data)],
            &manifest(vec![(
                "t",
                object(
                    &[4],
                    "dense",
                    vec![(
                        "data",
                        map(vec![
                            ("dtype", t("f32")),
                            ("blob", Value::Array(vec![u(4096), u(16), u(0)])),
                        ]),
                    )],
                    vec![],
                ),
            )]),
        ),
    ));
    v.push(reject(
        Rule::SchemaUnknownDtype,
        assemble(&[(4096, &data)], &dense1("f128", 16, vec![], &[1])),
    ));
    v.push(reject(
        Rule::SchemaLtypeDtypeMismatch,
        assemble(
            &[(4096, &data)],
            &dense1("f32", 16, vec![("type", t("bool"))], &[4]),
        ),
    ));
    v.push(reject(
        Rule::SchemaEncodingLength,
        assemble(
            &[(4096, &data)],
            &dense1("f32", 16, vec![("encoding", t("zt.zstd-seekable/1"))], &[4]),
        ),
    ));
    v.push(reject(
        Rule::SchemaDigestFormat,
        assemble(
            &[(4096, &data)],
            &dense1(
                "f32",
                16,
                vec![("digest", t("xxh3:ABCDEF0123456789"))],
                &[4],
            ),
        ),
    ));
    v.push(reject(
        Rule::SchemaEmptyParts,
        assemble(
            &[],
            &manifest(vec![("t", object(&[4], "dense", vec![], vec![]))]),
        ),
    ));
    v.push(reject(
        Rule::AttributeKey,
        assemble(
            &[(4096, &data)],
            &map(vec![
                ("objects", map(vec![])),
                ("attributes", Value::Map(vec![(u(1), u(2))])),
            ]),
        ),
    ));
    v.push(reject(
        Rule::NameEmpty,
        assemble(
            &[(4096, &data)],
            &manifest(vec![(
                "",
                object(
                    &[4],
                    "dense",
                    vec![("data", part("f32", 4096, 16, vec![]))],
                    vec![],
                ),
            )]),
        ),
    ));
    v.push(reject(
        Rule::NameNul,
        assemble(
            &[(4096, &data)],
            &manifest(vec![(
                "a\0b",
                object(
                    &[4],
                    "dense",
                    vec![("data", part("f32", 4096, 16, vec![]))],
                    vec![],
                ),
            )]),
        ),
    ));
    let long = "n".repeat(1025);
    v.push(reject(
        Rule::NameTooLong,
        assemble(
            &[(4096, &data)],
            &manifest(vec![(
                long.as_str(),
                object(
                    &[4],
                    "dense",
                    vec![("data", part("f32", 4096, 16, vec![]))],
                    vec![],
                ),
            )]),
        ),
    ));
    v.push(reject(
        Rule::ShapeRank,
        assemble(&[(4096, &data)], &dense1("f32", 16, vec![], &[1; 65])),
    ));
    v.push(reject(
        Rule::ShapeOverflow,
        assemble(
            &[(4096, &data)],
            &dense1("f32", 16, vec![], &[1 << 32, 1 << 32]),
        ),
    ));
    v.push(reject(
        Rule::BlobBelowFloor,
        assemble(
            &[],
            &manifest(vec![(
                "t",
                object(
                    &[0],
                    "dense",
                    vec![("data", part("f32", 0, 0, vec![]))],
                    vec![],
                ),
            )]),
        ),
    ));
    v.push(reject(
        Rule::BlobMisaligned,
        assemble(
            &[(4096, &data)],
            &manifest(vec![(
                "t",
                object(
                    &[2],
                    "dense",
                    vec![("data", part("f32", 4104, 8, vec![]))],
                    vec![],
                ),
            )]),
        ),
    ));
    v.push(reject(
        Rule::BlobOutOfBounds,
        assemble(
            &[(4096, &data)],
            &manifest(vec![(
                "t",
                object(
                    &[4],
                    "dense",
                    vec![("data", part("f32", 1 << 40, 16, vec![]))],
                    vec![],
                ),
            )]),
        ),
    ));
    v.push(reject(
        Rule::BlobPartialOverlap,
        assemble(
            &[(4096, &[0u8; 4104])],
            &manifest(vec![
                (
                    "a",
                    object(
                        &[2],
                        "dense",
                        vec![(
                            "data",
                            part("f32", 4096, 4104, vec![("type", t("x_opaque"))]),
                        )],
                        vec![],
                    ),
                ),
                (
                    "b",
                    object(
                        &[2],
                        "dense",
                        vec![("data", part("f32", 8192, 8, vec![]))],
                        vec![],
                    ),
                ),
            ]),
        ),
    ));
    let table = |name: &str| {
        map(vec![(
            name,
            map(vec![
                ("size", u(8232)),
                ("digest", t("xxh3:0000000000000000")),
            ]),
        )])
    };
    v.push(reject(
        Rule::ShardName,
        assemble(
            &[],
            &map(vec![("objects", map(vec![])), ("shards", table("../up"))]),
        ),
    ));
    v.push(reject(
        Rule::ShardUnknown,
        assemble(
            &[],
            &manifest(vec![(
                "t",
                object(
                    &[4],
                    "dense",
                    vec![("data", part("f32", 4096, 16, vec![("shard", t("x"))]))],
                    vec![],
                ),
            )]),
        ),
    ));
    v.push(reject(
        Rule::ShardEntry,
        assemble(
            &[],
            &map(vec![
                ("objects", map(vec![])),
                ("shards", map(vec![("s1", map(vec![("size", u(1))]))])),
            ]),
        ),
    ));
    {
        let shard = data_shard(&[(4096, &data)]);
        let shard_ref = |size: u64, digest: &str| {
            map(vec![
                (
                    "objects",
                    map(vec![(
                        "t",
                        object(
                            &[4],
                            "dense",
                            vec![("data", part("f32", 4096, 16, vec![("shard", t("s1"))]))],
                            vec![],
                        ),
                    )]),
                ),
                (
                    "shards",
                    map(vec![(
                        "s1",
                        map(vec![("size", u(size)), ("digest", t(digest))]),
                    )]),
                ),
            ])
        };
        let real = ztensor::DigestAlg::Xxh3.digest(&shard);
        let mut grown = shard.clone();
        grown.extend_from_slice(&[0u8; 8]);
        v.push(
            reject(
                Rule::ShardFile,
                assemble(&[], &shard_ref(shard.len() as u64, &real)),
            )
            .shard("s1", grown),
        );
        let mut flipped = shard.clone();
        flipped[4096] ^= 1;
        v.push(
            reject(
                Rule::ShardDigest,
                assemble(&[], &shard_ref(shard.len() as u64, &real)),
            )
            .shard("s1", flipped),
        );
    }
    v.push(reject(
        Rule::DenseParts,
        assemble(
            &[(4096, &data)],
            &manifest(vec![(
                "t",
                object(
                    &[4],
                    "dense",
                    vec![("values", part("f32", 4096, 16, vec![]))],
                    vec![],
                ),
            )]),
        ),
    ));
    v.push(reject(
        Rule::DenseSize,
        assemble(&[(4096, &data)], &dense1("f32", 16, vec![], &[5])),
    ));
    v.push(reject(
        Rule::CsrMetadata,
        assemble(
            &[(4096, &data)],
            &manifest(vec![(
                "m",
                object(
                    &[2, 2],
                    "zt.sparse_csr/1",
                    vec![("values", part("f32", 4096, 16, vec![]))],
                    vec![],
                ),
            )]),
        ),
    ));
    {
        let vals = f32s(&[1.0]);
        let idx = 5u32.to_le_bytes();
        let ptr: Vec<u8> = [0u32, 1].iter().flat_map(|x| x.to_le_bytes()).collect();
        let m = manifest(vec![(
            "m",
            object(
                &[1, 3],
                "zt.sparse_csr/1",
                vec![
                    ("values", part("f32", 4096, 4, vec![])),
                    ("indices", part("u32", 8192, 4, vec![])),
                    ("indptr", part("u32", 12288, 8, vec![])),
                ],
                vec![],
            ),
        )]);
        v.push(reject(
            Rule::CsrData,
            assemble(&[(4096, &vals), (8192, &idx), (12288, &ptr)], &m),
        ));
    }
    v.push(reject(
        Rule::CooMetadata,
        assemble(
            &[(4096, &data), (8192, &[0u8; 8])],
            &manifest(vec![(
                "c",
                object(
                    &[2, 2],
                    "zt.sparse_coo/1",
                    vec![
                        ("values", part("f32", 4096, 4, vec![])),
                        ("coords", part("i32", 8192, 8, vec![])),
                    ],
                    vec![],
                ),
            )]),
        ),
    ));
    {
        let vals = f32s(&[1.0, 2.0]);
        let coords: Vec<u8> = [1u32, 1, 0, 0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let m = manifest(vec![(
            "c",
            object(
                &[2, 2],
                "zt.sparse_coo/1",
                vec![
                    ("values", part("f32", 4096, 8, vec![])),
                    ("coords", part("u32", 8192, 16, vec![])),
                ],
                vec![],
            ),
        )]);
        v.push(reject(
            Rule::CooData,
            assemble(&[(4096, &vals), (8192, &coords)], &m),
        ));
    }
    v.push(reject(
        Rule::GgufMetadata,
        assemble(
            &[(4096, &data)],
            &manifest(vec![(
                "q",
                object(
                    &[32],
                    "gguf.q8_0/1",
                    vec![("data", part("u8", 4096, 16, vec![]))],
                    vec![("attributes", map(vec![("elems_per_block", u(32))]))],
                ),
            )]),
        ),
    ));
    v.push(reject(
        Rule::BoolByte,
        assemble(
            &[(4096, &[0u8, 1, 2])],
            &dense1("u8", 3, vec![("type", t("bool"))], &[3]),
        ),
    ));
    v.push(reject(
        Rule::F4Nibble,
        assemble(
            &[(4096, &[0x21u8, 0x43, 0xa5])],
            &dense1("u8", 3, vec![("type", t("f4_e2m1"))], &[5]),
        ),
    ));
    v.push(reject(
        Rule::DigestMismatch,
        assemble(
            &[(4096, &data)],
            &dense1(
                "f32",
                16,
                vec![("digest", t("xxh3:0000000000000000"))],
                &[4],
            ),
        ),
    ));
    {
        let payload = [7u8; 100];
        let mut enc = zstd(&payload, 64);
        let n = enc.len();
        enc[n - 1] ^= 0xff; // seekable magic
        let m = dense1(
            "u8",
            enc.len() as u64,
            vec![
                ("encoding", t("zt.zstd-seekable/1")),
                ("decoded_length", u(100)),
            ],
            &[100],
        );
        v.push(reject(Rule::ZstdSeekTable, assemble(&[(4096, &enc)], &m)));
        let frame = zstd::bulk::compress(&payload, 3).unwrap(); // no content checksum
        let mut enc = frame.clone();
        enc.extend_from_slice(&ztensor::zstd_seekable::seek_table(&[(
            frame.len() as u32,
            100,
        )]));
        let m = dense1(
            "u8",
            enc.len() as u64,
            vec![
                ("encoding", t("zt.zstd-seekable/1")),
                ("decoded_length", u(100)),
            ],
            &[100],
        );
        v.push(reject(Rule::ZstdFrame, assemble(&[(4096, &enc)], &m)));
        let enc = zstd(&payload, 64);
        let m = dense1(
            "u8",
            enc.len() as u64,
            vec![
                ("encoding", t("zt.zstd-seekable/1")),
                ("decoded_length", u(99)),
            ],
            &[99],
        );
        v.push(reject(Rule::ZstdLength, assemble(&[(4096, &enc)], &m)));
    }
    v
}

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/vectors")
}

fn file_of(v: &Vector) -> PathBuf {
    vectors_dir()
        .join(if v.expect.is_some() {
            "reject"
        } else {
            "valid"
        })
        .join(format!("{}.zt", v.name))
}

fn shard_file(v: &Vector, suffix: &str) -> PathBuf {
    file_of(v).with_file_name(format!("{}-{suffix}.zt", v.name))
}

fn expected_text(v: &Vector) -> String {
    let mut s = String::from("# object\tpart\tlayout\tshape\ttype\tdecoded bytes (hex)\n");
    for (o, p, l, shape, ty, bytes) in &v.contents {
        let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
        let _ = writeln!(
            s,
            "{o}\t{p}\t{l}\t[{}]\t{ty}\t{}",
            dims.join(","),
            hex(bytes)
        );
    }
    s
}

#[test]
fn vectors_on_disk_match_the_code() {
    let vectors = all_vectors();
    let regen = std::env::var_os("ZT_REGEN_VECTORS").is_some();
    let mut expected_files = BTreeMap::new();
    for v in &vectors {
        let mut files = vec![(file_of(v), v.bytes.clone())];
        for (suffix, b) in &v.shards {
            files.push((shard_file(v, suffix), b.clone()));
        }
        if v.expect.is_none() {
            files.push((
                file_of(v).with_extension("expected"),
                expected_text(v).into_bytes(),
            ));
        }
        for (path, bytes) in files {
            if regen {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            let disk = std::fs::read(&path).unwrap_or_else(|_| {
                panic!("{} missing; run with ZT_REGEN_VECTORS=1", path.display())
            });
            assert!(
                disk == bytes,
                "{} is out of date; run with ZT_REGEN_VECTORS=1",
                path.display()
            );
            expected_files.insert(path, ());
        }
    }
    for sub in ["valid", "reject"] {
        for e in std::fs::read_dir(vectors_dir().join(sub)).unwrap() {
            let p = e.unwrap().path();
            assert!(
                expected_files.contains_key(&p),
                "{} is not a vector; delete it",
                p.display()
            );
        }
    }
}

#[test]
fn every_rule_has_a_reject_vector() {
    let vectors = all_vectors();
    for rule in Rule::ALL {
        assert!(
            vectors.iter().any(|v| v.expect == Some(*rule)),
            "no vector for {rule}"
        );
    }
}

#[test]
fn valid_vectors_read_as_expected() {
    for v in all_vectors().iter().filter(|v| v.expect.is_none()) {
        let r = Reader::open(file_of(v)).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        let rep = r.verify().unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(rep.shards_checked, v.shards.len(), "{}", v.name);
        for (o, p, l, shape, ty, bytes) in &v.contents {
            let obj = r.object(o).unwrap();
            assert_eq!(&obj.layout, l);
            assert_eq!(&obj.shape, shape);
            assert_eq!(obj.parts[p].etype.name(), ty);
            let got = if obj.parts[p]
                .etype
                .logical
                .as_ref()
                .is_some_and(|x| matches!(x, ztensor::Logical::Unknown(_)))
            {
                r.stored_bytes(o, p).unwrap()
            } else {
                r.part_bytes(o, p).unwrap()
            };
            assert_eq!(got.as_ref(), bytes.as_slice(), "{} {o}/{p}", v.name);
        }
    }
}

#[test]
fn reject_vectors_fail_with_their_rule() {
    for v in all_vectors() {
        let Some(rule) = v.expect else { continue };
        let err = match Reader::open(file_of(&v)) {
            Err(e) => e,
            Ok(r) => {
                let mut first = None;
                for n in r.names() {
                    let o = r.object(n).unwrap();
                    let res = match ztensor::layout::LayoutKind::of(&o.layout) {
                        ztensor::layout::LayoutKind::SparseCsr => r.read_csr(n).map(|_| ()),
                        ztensor::layout::LayoutKind::SparseCoo => r.read_coo(n).map(|_| ()),
                        _ => r.read_dense(n).map(|_| ()),
                    };
                    if let Err(e) = res {
                        first = Some(e);
                        break;
                    }
                }
                first
                    .or_else(|| r.verify().err())
                    .unwrap_or_else(|| panic!("{}: accepted", v.name))
            }
        };
        assert_eq!(err.rule(), Some(rule), "{}: {err}", v.name);
    }
}

#[test]
fn the_spec_lists_every_rule_with_its_number() {
    let spec =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/ztensor.md"))
            .unwrap();
    for rule in Rule::ALL {
        let row = format!("| R{} | `{}` |", rule.number(), rule.id());
        assert!(spec.contains(&row), "spec/ztensor.md lacks the row {row}");
    }
}
