//! Property tests: what we write reads back exactly, over dtype × layout ×
//! encoding × digest × whole/streamed writes, and ranged reads equal slicing.

use proptest::prelude::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use ztensor::{
    DType, DigestAlg, ElementType, LogicalType, PartOptions, Reader, WriteOptions, Writer,
    ZstdOptions,
};

fn temp_path() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("zt-prop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{}.zt", N.fetch_add(1, Ordering::Relaxed)))
}

fn etype_strategy() -> impl Strategy<Value = ElementType> {
    prop_oneof![
        (0..DType::ALL.len()).prop_map(|i| ElementType::plain(DType::ALL[i])),
        (0..LogicalType::ALL.len()).prop_map(|i| ElementType::logical(LogicalType::ALL[i])),
    ]
}

fn compression_strategy() -> impl Strategy<Value = Option<ZstdOptions>> {
    prop_oneof![
        Just(None),
        (1i32..6, 1usize..600)
            .prop_map(|(level, frame_size)| Some(ZstdOptions { level, frame_size })),
    ]
}

fn digest_strategy() -> impl Strategy<Value = Option<DigestAlg>> {
    prop_oneof![
        Just(None),
        (0..4usize).prop_map(|i| Some(DigestAlg::ALL[i]))
    ]
}

/// Valid bytes for `n` elements of `etype` (bool 0/1, f4 padding zero).
fn bytes_for(etype: &ElementType, n: u64, seed: u64) -> Vec<u8> {
    let len = etype.size_of(n).unwrap() as usize;
    let mut s = seed | 1;
    let mut v: Vec<u8> = (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect();
    match etype.logical {
        Some(ztensor::Logical::Known(LogicalType::Bool)) => v.iter_mut().for_each(|b| *b &= 1),
        Some(ztensor::Logical::Known(LogicalType::F4E2M1)) if n % 2 == 1 => {
            if let Some(last) = v.last_mut() {
                *last &= 0x0f;
            }
        }
        _ => {}
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn dense_round_trip(
        etype in etype_strategy(),
        shape in prop::collection::vec(0u64..7, 0..4),
        compression in compression_strategy(),
        digest in digest_strategy(),
        streamed in any::<bool>(),
        cut in any::<u64>(),
        seed in any::<u64>(),
    ) {
        let n = shape.iter().product::<u64>();
        let data = bytes_for(&etype, n, seed);
        let path = temp_path();
        let options = WriteOptions { digest, compression, durable: false, ..WriteOptions::default() };
        let mut w = Writer::create_with(&path, options).unwrap();
        if streamed {
            let mut s = w.stream_dense("t", &shape, etype.clone()).unwrap();
            let at = if data.is_empty() { 0 } else { (cut % data.len() as u64) as usize };
            s.write(&data[..at]).unwrap();
            s.write(&data[at..]).unwrap();
            s.finish().unwrap();
        } else {
            let opts = PartOptions { etype: etype.clone(), compression, digest };
            w.add_bytes_with("t", &shape, &data, &opts, None).unwrap();
        }
        w.finish().unwrap();

        let r = Reader::open(&path).unwrap();
        let t = r.read_dense("t").unwrap();
        prop_assert_eq!(&t.shape, &shape);
        prop_assert_eq!(&t.etype, &etype);
        prop_assert_eq!(t.bytes.as_ref(), data.as_slice());
        prop_assert_eq!(t.is_zero_copy(), compression.is_none());
        let rep = r.verify().unwrap();
        prop_assert_eq!(rep.digests_checked, usize::from(digest.is_some()));

        // Ranged reads equal slicing.
        if !data.is_empty() {
            let a = cut % data.len() as u64;
            let b = a + (seed % (data.len() as u64 - a + 1));
            let got = r.part_range("t", "data", a..b).unwrap();
            prop_assert_eq!(got.as_ref(), &data[a as usize..b as usize]);
        }
        if !shape.is_empty() && shape[0] > 0 {
            let rows = shape[0];
            let (a, b) = (cut % rows, cut % rows + (seed % (rows - cut % rows + 1)));
            match r.read_rows("t", a..b) {
                Ok(sl) => {
                    let row_bytes = data.len() as u64 / rows;
                    prop_assert_eq!(sl.bytes.as_ref(), &data[(a * row_bytes) as usize..(b * row_bytes) as usize]);
                }
                // Only packed f4 rows of odd length cannot be sliced.
                Err(e) => prop_assert!(matches!(e, ztensor::Error::Unsupported(_)), "{}", e),
            }
        }
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn sparse_round_trip(
        rows in 1u64..8, cols in 1u64..8,
        density in 0u64..100,
        seed in any::<u64>(),
        compression in compression_strategy(),
    ) {
        let mut s = seed | 1;
        let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; s };
        let mut indices = vec![];
        let mut indptr = vec![0u64];
        let mut values = vec![];
        for _ in 0..rows {
            for c in 0..cols {
                if next() % 100 < density {
                    indices.push(c);
                    values.push((next() % 1000) as f32);
                }
            }
            indptr.push(indices.len() as u64);
        }
        let vbytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        // COO of the same cells, structure-of-arrays.
        let mut coo_r = vec![];
        let mut coo_c = vec![];
        for r in 0..rows as usize {
            for k in indptr[r]..indptr[r + 1] {
                coo_r.push(r as u64);
                coo_c.push(indices[k as usize]);
            }
        }
        let coords: Vec<u64> = coo_r.iter().chain(&coo_c).copied().collect();

        let path = temp_path();
        let opts = WriteOptions { compression, durable: false, ..WriteOptions::default() };
        let mut w = Writer::create_with(&path, opts).unwrap();
        let f32t = ElementType::plain(DType::F32);
        w.add_csr("csr", [rows, cols], f32t.clone(), &vbytes, &indices, &indptr).unwrap();
        w.add_coo("coo", &[rows, cols], f32t, &vbytes, &coords).unwrap();
        w.finish().unwrap();

        let r = Reader::open(&path).unwrap();
        let csr = r.read_csr("csr").unwrap();
        prop_assert_eq!(&csr.indices, &indices);
        prop_assert_eq!(&csr.indptr, &indptr);
        prop_assert_eq!(csr.values.to_vec::<f32>().unwrap(), values.clone());
        let m = csr.to_sprs::<f32>().unwrap();
        prop_assert_eq!(m.nnz(), values.len());
        let coo = r.read_coo("coo").unwrap();
        prop_assert_eq!(&coo.coords, &coords);
        let tri = coo.to_sprs::<f32>().unwrap();
        prop_assert_eq!(tri.to_csr::<usize>(), m);
        r.verify().unwrap();
        let _ = std::fs::remove_file(&path);
    }
}

#[test]
fn append_keeps_old_objects_and_file_stays_valid() {
    let path = temp_path();
    let mut w = Writer::create(&path).unwrap();
    w.add("a", &[2], &[1f32, 2.]).unwrap();
    w.finish().unwrap();
    let before = std::fs::read(&path).unwrap();
    let mut w = Writer::append(&path).unwrap();
    w.add("b", &[1], &[3i64]).unwrap();
    assert!(
        w.add("a", &[1], &[0f32]).is_err(),
        "duplicate names are refused"
    );
    w.finish().unwrap();
    let after = std::fs::read(&path).unwrap();
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "append never rewrites old bytes"
    );
    let r = Reader::open(&path).unwrap();
    assert_eq!(r.names().collect::<Vec<_>>(), vec!["a", "b"]);
    assert_eq!(
        r.read_dense("a").unwrap().to_vec::<f32>().unwrap(),
        vec![1., 2.]
    );
    r.verify().unwrap();

    // An abandoned in-place append leaves the file as it was.
    let len = std::fs::metadata(&path).unwrap().len();
    let mut w = Writer::append_in_place(&path, WriteOptions::default()).unwrap();
    w.add("c", &[1000], &vec![0u8; 1000]).unwrap();
    w.abandon();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
    Reader::open(&path).unwrap().verify().unwrap();
}

#[test]
fn abandoned_writer_leaves_target_untouched() {
    let dir = std::env::temp_dir().join(format!("zt-abandon-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.zt");
    let mut w = Writer::create(&path).unwrap();
    w.add("old", &[1], &[1u8]).unwrap();
    w.finish().unwrap();
    let before = std::fs::read(&path).unwrap();
    {
        let mut w = Writer::create(&path).unwrap();
        w.add("new", &[1], &[2u8]).unwrap();
        // dropped without finish
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let dir = path.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
}

#[test]
fn canonical_output_is_reproducible_and_deduplicated() {
    let write = |path: &PathBuf| {
        let mut w = Writer::create_with(path, WriteOptions::canonical()).unwrap();
        w.add("a", &[3], &[1f32, 2., 3.]).unwrap();
        w.add("b", &[3], &[1f32, 2., 3.]).unwrap();
        w.add("c", &[1], &[9u8]).unwrap();
        assert!(
            w.add("ab", &[1], &[9u8]).is_err(),
            "canonical names must be added in order"
        );
        w.finish().unwrap();
    };
    let (p1, p2) = (temp_path(), temp_path());
    write(&p1);
    write(&p2);
    assert_eq!(std::fs::read(&p1).unwrap(), std::fs::read(&p2).unwrap());
    let r = Reader::open(&p1).unwrap();
    let blob = |n: &str| r.object(n).unwrap().parts["data"].blob;
    assert_eq!(blob("a"), blob("b"));
    assert_eq!(blob("a").offset % 65536, 0);
    assert_eq!(blob("c").offset % 65536, 0);
    assert!(Writer::create_with(
        temp_path(),
        WriteOptions {
            compression: Some(ZstdOptions::default()),
            ..WriteOptions::canonical()
        }
    )
    .is_err());
}

/// Issue 11 item 1: canonical dedup shares blobs between tensors that only
/// hold the same bytes; only `add_alias` declares a tie, and a declaration
/// whose target differs in dtype, shape or blobs ties nothing.
#[test]
fn only_declared_aliases_with_equal_type_and_shape_are_ties() {
    let path = temp_path();
    let mut w = Writer::create_with(&path, WriteOptions::canonical()).unwrap();
    w.add("a", &[4], &[0f32; 4]).unwrap();
    w.add("b", &[4], &[0i32; 4]).unwrap();
    w.add("c", &[2, 2], &[0f32; 4]).unwrap();
    w.add("d", &[4], &[0f32; 4]).unwrap();
    w.add_alias("e", "a").unwrap();
    w.add_alias("f", "e").unwrap(); // an alias of an alias names the first name
    w.finish().unwrap();
    let r = Reader::open(&path).unwrap();
    let blob = |n: &str| r.object(n).unwrap().parts["data"].blob;
    for n in ["b", "c", "d", "e", "f"] {
        assert_eq!(blob(n), blob("a"), "{n} shares a's blob");
    }
    for n in ["a", "b", "c", "d"] {
        assert_eq!(r.declared_alias(n), None, "{n} is deduplicated, not tied");
    }
    assert_eq!(r.declared_alias("e"), Some("a"));
    assert_eq!(r.declared_alias("f"), Some("a"));
    assert_eq!(r.object("b").unwrap().parts["data"].etype.dtype, DType::I32);
    assert_eq!(r.object("c").unwrap().shape, vec![2, 2]);

    // A declaration naming a tensor of another dtype or shape is no tie.
    let mut m = r.manifest().clone();
    let declare = |o: &mut ztensor::Object, target: &str| {
        o.attributes = Some(
            ztensor::Value::text_map([("zt.alias_of", ztensor::Value::text(target))]).unwrap(),
        );
    };
    declare(m.objects.get_mut("b").unwrap(), "a");
    declare(m.objects.get_mut("c").unwrap(), "a");
    declare(m.objects.get_mut("d").unwrap(), "d");
    declare(m.objects.get_mut("a").unwrap(), "missing");
    for n in ["a", "b", "c", "d"] {
        assert_eq!(m.declared_alias(n), None, "{n}");
    }
}

#[test]
fn sharded_model_reads_through_its_shards() {
    let root = temp_path();
    let stem = root.file_stem().unwrap().to_string_lossy().into_owned();
    let shard_path = root.with_file_name(format!("{stem}-00001.zt"));
    let opts = WriteOptions {
        durable: false,
        ..WriteOptions::default()
    };
    let mut s = Writer::create_with(&shard_path, opts.clone()).unwrap();
    let data: Vec<u8> = (0..64u8).collect();
    let part = s
        .write_part(
            &data,
            &PartOptions {
                etype: ElementType::plain(DType::U8),
                compression: None,
                digest: Some(DigestAlg::Xxh3),
            },
        )
        .unwrap();
    s.finish_data_shard().unwrap();
    assert!(Reader::open(&shard_path).unwrap().is_data_shard());

    let mut w = Writer::create_with(&root, opts).unwrap();
    w.add_shard("00001", &shard_path, DigestAlg::Sha256)
        .unwrap();
    let mut p = part.clone();
    p.shard = Some("00001".into());
    let object = ztensor::Object {
        shape: vec![8, 8],
        layout: "dense".into(),
        parts: [("data".to_string(), p)].into_iter().collect(),
        attributes: None,
    };
    w.add_object("sharded", object).unwrap();
    w.add("local", &[2], &[5u16, 6]).unwrap();
    w.finish().unwrap();

    let r = Reader::open(&root).unwrap();
    assert_eq!(
        r.read_dense("sharded").unwrap().bytes.as_ref(),
        data.as_slice()
    );
    let rep = r.verify().unwrap();
    assert_eq!(rep.shards_checked, 1);

    // A changed shard is caught: by size at read, by digest at verify.
    let mut bytes = std::fs::read(&shard_path).unwrap();
    bytes[4096] ^= 1;
    std::fs::write(&shard_path, &bytes).unwrap();
    let r = Reader::open(&root).unwrap();
    assert!(r.verify().is_err());
    bytes.push(0);
    std::fs::write(&shard_path, &bytes).unwrap();
    let r = Reader::open(&root).unwrap();
    assert_eq!(
        r.read_dense("sharded").unwrap_err().rule(),
        Some(ztensor::Rule::ShardFile)
    );
}
