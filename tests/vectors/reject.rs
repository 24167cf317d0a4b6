//! The reject vectors: one file per rule of the spec, each failing with it.

use super::*;

pub(super) fn vectors() -> Vec<Vector> {
    let mut v = vec![];
    let data = one_f32();
    let good = || assemble(&[(4096, &one_f32())], &dense1("f32", 16, vec![], &[2, 2]));

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
