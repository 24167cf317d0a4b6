//! The valid vectors: small files with their expected decoded contents.

use super::*;

pub(super) fn vectors() -> Vec<Vector> {
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

    v
}
