//! The parallel cold-load path (`Reader::load_dense_into`): equal byte for
//! byte to mapped reads whatever the thread count and chunk size, digests
//! and data rules checked, and a file truncated under the reader is a
//! typed error, never zeros or a panic.

mod common;
use common::tmp::tmp;
use std::path::Path;
use ztensor::{
    DigestAlg, ElementType, Error, LoadOptions, OpenOptions, Reader, WriteOptions, Writer,
    ZstdOptions,
};

/// Deterministic bytes that differ from tensor to tensor.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Byte sizes around page and chunk boundaries, plus empty tensors.
const SIZES: [usize; 12] = [
    0,
    1,
    3,
    4095,
    4097,
    65_535,
    65_537,
    200_001,
    (1 << 20) + 7,
    (3 << 20) - 1,
    5 << 20,
    17,
];

/// A file of many u8 tensors of odd sizes, one zstd tensor and a bool
/// tensor; every part has an xxh3 digest.
fn write_model(path: &Path) {
    let mut w = Writer::create_with(path, WriteOptions::default()).unwrap();
    for round in 0..6u64 {
        for (i, &n) in SIZES.iter().enumerate() {
            let name = format!("t{round}.{i:02}");
            w.add(&name, &[n as u64], &bytes(round * 100 + i as u64, n))
                .unwrap();
        }
    }
    let bools: Vec<u8> = (0..10_001u32).map(|i| (i % 3 == 0) as u8).collect();
    w.add_bytes(
        "mask",
        &[10_001],
        ElementType::logical(ztensor::LogicalType::Bool),
        &bools,
    )
    .unwrap();
    w.set_defaults(Some(ZstdOptions::default()), Some(DigestAlg::Xxh3))
        .unwrap();
    w.add("packed", &[3 << 20], &bytes(7, 3 << 20)).unwrap();
    w.finish().unwrap();
}

/// Every tensor loaded in one call into fresh buffers.
fn load_all(r: &Reader, opts: &LoadOptions) -> ztensor::Result<Vec<(String, Vec<u8>)>> {
    let names: Vec<String> = r.names().map(str::to_string).collect();
    let mut bufs: Vec<Vec<u8>> = names
        .iter()
        .map(|n| vec![0xAA; r.dense_len(n).unwrap() as usize])
        .collect();
    let mut jobs: Vec<(&str, &mut [u8])> = names
        .iter()
        .map(String::as_str)
        .zip(bufs.iter_mut().map(Vec::as_mut_slice))
        .collect();
    r.load_dense_into(&mut jobs, opts)?;
    Ok(names.into_iter().zip(bufs).collect())
}

#[test]
fn parallel_loads_equal_mapped_reads() {
    let dir = tmp();
    let path = dir.0.join("many.zt");
    write_model(&path);
    let mapped = Reader::open(&path).unwrap();
    let pread = OpenOptions::default()
        .backend(ztensor::Backend::Pread)
        .open(&path)
        .unwrap();
    for (threads, chunk) in [(1, 64 << 10), (3, 64 << 10), (8, 1 << 20), (16, 8 << 20)] {
        let opts = LoadOptions::default().threads(threads).chunk_bytes(chunk);
        for r in [&mapped, &pread] {
            let got = load_all(r, &opts).unwrap();
            assert_eq!(got.len(), SIZES.len() * 6 + 2);
            for (name, buf) in &got {
                let want = mapped.read_dense(name).unwrap();
                assert!(
                    buf.as_slice() == &want.bytes[..],
                    "{name} with {threads} threads, {chunk}-byte chunks"
                );
            }
        }
    }
    // One tensor across several threads, and from memory.
    let mut one = vec![0u8; 5 << 20];
    let opts = LoadOptions::default().threads(4).chunk_bytes(64 << 10);
    mapped.load_one_into("t3.10", &mut one, &opts).unwrap();
    assert!(one == mapped.read_dense("t3.10").unwrap().bytes.as_ref());
    let mem = Reader::from_bytes(std::fs::read(&path).unwrap()).unwrap();
    for (name, buf) in load_all(&mem, &opts).unwrap() {
        assert!(
            buf == mapped.read_dense(&name).unwrap().bytes.as_ref(),
            "{name}"
        );
    }
}

#[test]
fn parallel_part_ranges_equal_mapped_ranges() {
    let dir = tmp();
    let path = dir.0.join("many.zt");
    write_model(&path);
    let r = Reader::open(&path).unwrap();
    let opts = LoadOptions::default().threads(5).chunk_bytes(64 << 10);
    for (name, start, len) in [
        ("t0.10", 0u64, 5usize << 20),
        ("t1.09", 4097, (2 << 20) + 3),
        ("packed", 1 << 20, 1 << 20),
        ("t2.01", 0, 1),
    ] {
        let mut dst = vec![0u8; len];
        r.part_range_into_parallel(name, "data", start, &mut dst, &opts)
            .unwrap();
        let want = r
            .part_range(name, "data", start..start + len as u64)
            .unwrap();
        assert!(dst == want.as_ref(), "{name} [{start}, +{len})");
    }
    let mut dst = vec![0u8; 2 << 20];
    let e = r
        .part_range_into_parallel("t0.10", "data", 4 << 20, &mut dst, &opts)
        .unwrap_err();
    assert!(matches!(e, Error::Usage(_)), "{e:?}");
}

/// Where `name`'s data part lies in the file.
fn blob_offset(path: &Path, name: &str) -> u64 {
    Reader::open(path).unwrap().object(name).unwrap().parts["data"]
        .blob
        .offset
}

#[test]
fn a_changed_byte_fails_the_digest_unless_verification_is_off() {
    let dir = tmp();
    let path = dir.0.join("many.zt");
    write_model(&path);
    let at = blob_offset(&path, "t4.09") + 1_000_000;
    let mut data = std::fs::read(&path).unwrap();
    data[at as usize] ^= 0x40;
    std::fs::write(&path, &data).unwrap();
    let r = Reader::open(&path).unwrap();
    let opts = LoadOptions::default().threads(4).chunk_bytes(64 << 10);
    match load_all(&r, &opts) {
        Err(Error::Checksum { object, .. }) => assert_eq!(object, "t4.09"),
        other => panic!(
            "expected a checksum error, got {:?}",
            other.map(|v| v.len())
        ),
    }
    let unchecked = load_all(&r, &opts.clone().verify_digests(false)).unwrap();
    let (_, buf) = unchecked.iter().find(|(n, _)| n == "t4.09").unwrap();
    assert!(buf.as_slice() == &r.read_dense("t4.09").unwrap().bytes[..]);
}

#[test]
fn a_bad_bool_byte_is_a_data_rule_error() {
    let dir = tmp();
    let path = dir.0.join("many.zt");
    write_model(&path);
    let at = blob_offset(&path, "mask") + 5;
    let mut data = std::fs::read(&path).unwrap();
    data[at as usize] = 2;
    std::fs::write(&path, &data).unwrap();
    let r = Reader::open(&path).unwrap();
    let e = load_all(&r, &LoadOptions::default().verify_digests(false)).unwrap_err();
    assert!(e.to_string().contains("bool element 5"), "{e}");
}

#[test]
fn a_file_truncated_under_the_reader_is_an_io_error() {
    let dir = tmp();
    let path = dir.0.join("many.zt");
    write_model(&path);
    let len = std::fs::metadata(&path).unwrap().len();
    for backend in [ztensor::Backend::Mmap, ztensor::Backend::Pread] {
        let copy = dir.0.join("cut.zt");
        std::fs::copy(&path, &copy).unwrap();
        let r = OpenOptions::default().backend(backend).open(&copy).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
        f.set_len(len / 2).unwrap();
        drop(f);
        let opts = LoadOptions::default().threads(4).chunk_bytes(64 << 10);
        // The last raw tensors lie past the cut: the load must fail.
        let names = ["t5.10", "t5.09"];
        let mut a = vec![0u8; r.dense_len(names[0]).unwrap() as usize];
        let mut b = vec![0u8; r.dense_len(names[1]).unwrap() as usize];
        let e = r
            .load_dense_into(&mut [(names[0], &mut a), (names[1], &mut b)], &opts)
            .unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{backend:?}: {e:?}");
        drop(r);
        // Opened after the cut, the file is refused up front.
        let e = Reader::open(&copy).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
    }
}

#[test]
fn destinations_of_the_wrong_size_and_sparse_names_are_refused() {
    let dir = tmp();
    let path = dir.0.join("s.zt");
    let mut w = Writer::create(&path).unwrap();
    w.add("d", &[4], &[1.0f32, 2.0, 3.0, 4.0]).unwrap();
    w.add_csr(
        "s",
        [2, 2],
        ElementType::plain(ztensor::DType::F32),
        &1.0f32.to_le_bytes(),
        &[1],
        &[0, 1, 1],
    )
    .unwrap();
    w.finish().unwrap();
    let r = Reader::open(&path).unwrap();
    let opts = LoadOptions::default();
    let mut small = vec![0u8; 15];
    let e = r.load_one_into("d", &mut small, &opts).unwrap_err();
    assert!(e.to_string().contains("destination is 15 bytes"), "{e}");
    let mut any = vec![0u8; 4];
    assert!(r.load_one_into("s", &mut any, &opts).is_err());
    assert!(matches!(
        r.load_one_into("nope", &mut any, &opts).unwrap_err(),
        Error::NotFound { .. }
    ));
}

#[test]
fn conversion_reads_ahead_across_windows_and_stops_on_a_cut_input() {
    let dir = tmp();
    let input = dir.0.join("in.zt");
    let mut w = Writer::create(&input).unwrap();
    w.add("a.small", &[5], &bytes(1, 5)).unwrap();
    // Larger than the 32 MiB read-ahead window, and not a multiple of it.
    w.add("b.big", &[(40 << 20) + 3], &bytes(2, (40 << 20) + 3))
        .unwrap();
    w.add("c.empty", &[0], &bytes(3, 0)).unwrap();
    w.add("d.odd", &[70_001], &bytes(4, 70_001)).unwrap();
    w.finish().unwrap();
    let out = dir.0.join("out.zt");
    let mut calls = 0;
    ztensor::convert::convert_with_progress(&input, &out, WriteOptions::default(), &mut |_, _| {
        calls += 1
    })
    .unwrap();
    assert!(calls >= 4, "{calls} progress calls");
    let (a, b) = (Reader::open(&input).unwrap(), Reader::open(&out).unwrap());
    assert_eq!(a.names().collect::<Vec<_>>(), b.names().collect::<Vec<_>>());
    for n in a.names() {
        assert!(
            a.read_dense(n).unwrap().bytes == b.read_dense(n).unwrap().bytes,
            "{n}"
        );
    }
    b.verify().unwrap();

    // Cut under an open reader: the read-ahead thread's error ends the
    // conversion (no hang, nothing published).
    let r = OpenOptions::default()
        .backend(ztensor::Backend::Pread)
        .open(&input)
        .unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&input)
        .unwrap();
    f.set_len(20 << 20).unwrap();
    drop(f);
    let cut = dir.0.join("cut.zt");
    let e = ztensor::convert::convert_reader(&r, &cut, WriteOptions::default(), &mut |_, _| {})
        .unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(!cut.exists());
}
