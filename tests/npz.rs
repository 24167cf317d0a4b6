//! npy and npz files written by numpy (`tests/data/npz/make_npz.py`) read
//! exactly; refused dtypes and layouts and crafted zips (bombs, overlapping
//! members, bad CRCs, unsupported methods) give named errors.

use serde_json::Value as Json;
use std::io::Write;
use std::path::PathBuf;
use ztensor::{Error, OpenOptions, Reader};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/npz")
        .join(name)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const DTYPES: [(&str, &str); 7] = [
    ("float32", "f32"),
    ("float16", "f16"),
    ("bool", "bool"),
    ("int64", "i64"),
    ("uint32", "u32"),
    ("int8", "i8"),
    ("complex64", "complex64"),
];

#[test]
fn numpy_archives_read_exactly() {
    let exp: Json =
        serde_json::from_str(&std::fs::read_to_string(data("expected.json")).unwrap()).unwrap();
    for file in ["stored.npz", "deflated.npz"] {
        let r = Reader::open(data(file)).unwrap();
        assert_eq!(r.len(), exp.as_object().unwrap().len(), "{file}");
        for (name, e) in exp.as_object().unwrap() {
            let got = r.read_dense(name).unwrap();
            let want_type = DTYPES.iter().find(|(np, _)| *np == e["dtype"]).unwrap().1;
            assert_eq!(got.etype.name(), want_type, "{file}:{name}");
            let shape: Vec<u64> = e["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .collect();
            assert_eq!(got.shape, shape, "{file}:{name}");
            assert_eq!(hex(&got.bytes), e["hex"].as_str().unwrap(), "{file}:{name}");
            // Stored members are served from the map without a copy.
            if file == "stored.npz" {
                assert!(got.is_zero_copy(), "{name}");
            }
        }
    }
    let one = Reader::open(data("one.npy")).unwrap();
    let a = one.read_dense("array").unwrap();
    assert!(a.is_zero_copy());
    assert_eq!(hex(&a.bytes), exp["weight"]["hex"].as_str().unwrap());
}

fn rule_of(r: ztensor::Result<Reader>) -> &'static str {
    match r {
        Err(Error::Foreign { rule, .. }) => rule,
        other => panic!("expected a foreign-format error, got {other:?}"),
    }
}

#[test]
fn unsupported_arrays_are_refused_by_name() {
    assert_eq!(rule_of(Reader::open(data("big_endian.npy"))), "npy-descr");
    assert_eq!(rule_of(Reader::open(data("fortran.npy"))), "npy-fortran");
    assert_eq!(rule_of(Reader::open(data("object.npy"))), "npy-descr");
    assert_eq!(rule_of(Reader::open(data("structured.npy"))), "npy-descr");
}

#[test]
fn every_prefix_and_byte_flip_is_handled() {
    for file in ["stored.npz", "deflated.npz", "one.npy"] {
        let bytes = std::fs::read(data(file)).unwrap();
        for n in 0..bytes.len() {
            assert!(
                Reader::from_bytes(bytes[..n].to_vec()).is_err(),
                "{file} prefix {n}"
            );
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x41;
            // Any result but a panic; data flips in stored members are CRC errors.
            if let Ok(r) = Reader::from_bytes(b) {
                for name in r.names().map(str::to_string).collect::<Vec<_>>() {
                    let _ = r.read_dense(&name);
                }
            }
        }
    }
}

/// One member of a crafted archive.
struct M<'a> {
    name: &'a str,
    method: u16,
    flags: u16,
    stored: Vec<u8>,
    crc: u32,
    size: u32,
    /// Point the directory entry at another member's local header.
    local_of: Option<usize>,
}

fn member<'a>(name: &'a str, payload: &[u8], deflate: bool) -> M<'a> {
    let stored = if deflate {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(payload).unwrap();
        e.finish().unwrap()
    } else {
        payload.to_vec()
    };
    M {
        name,
        method: if deflate { 8 } else { 0 },
        flags: 0,
        stored,
        crc: crc32fast::hash(payload),
        size: payload.len() as u32,
        local_of: None,
    }
}

fn zip(members: &[M]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut locals = Vec::new();
    for m in members {
        locals.push(out.len() as u32);
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&20u16.to_le_bytes());
        out.extend_from_slice(&m.flags.to_le_bytes());
        out.extend_from_slice(&m.method.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&m.crc.to_le_bytes());
        out.extend_from_slice(&(m.stored.len() as u32).to_le_bytes());
        out.extend_from_slice(&m.size.to_le_bytes());
        out.extend_from_slice(&(m.name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(m.name.as_bytes());
        out.extend_from_slice(&m.stored);
    }
    let cd_at = out.len() as u32;
    for (i, m) in members.iter().enumerate() {
        out.extend_from_slice(b"PK\x01\x02");
        out.extend_from_slice(&[20, 0, 20, 0]);
        out.extend_from_slice(&m.flags.to_le_bytes());
        out.extend_from_slice(&m.method.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&m.crc.to_le_bytes());
        out.extend_from_slice(&(m.stored.len() as u32).to_le_bytes());
        out.extend_from_slice(&m.size.to_le_bytes());
        out.extend_from_slice(&(m.name.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0; 12]);
        out.extend_from_slice(&locals[m.local_of.unwrap_or(i)].to_le_bytes());
        out.extend_from_slice(m.name.as_bytes());
    }
    let cd_len = out.len() as u32 - cd_at;
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&cd_len.to_le_bytes());
    out.extend_from_slice(&cd_at.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

fn npy(n: usize) -> Vec<u8> {
    ztensor::npy::encode(
        &[n as u64],
        &ztensor::ElementType::plain(ztensor::DType::U8),
        &vec![7u8; n],
    )
}

#[test]
fn crafted_archives_name_the_fault() {
    let a = npy(100);
    assert!(Reader::from_bytes(zip(&[
        member("a.npy", &a, false),
        member("b.npy", &a, true)
    ]))
    .is_ok());

    // Zip bomb: the directory declares 100 bytes, the stream inflates to 1 MB.
    let big = npy(1 << 20);
    let mut bomb = member("a.npy", &big, true);
    bomb.size = a.len() as u32;
    assert_eq!(rule_of(Reader::from_bytes(zip(&[bomb]))), "zip-inflate");

    // A declared size beyond the caller's decode limit is refused before allocating.
    let small = OpenOptions::default().max_decoded_bytes(1 << 10);
    let bytes = zip(&[member("a.npy", &npy(4096), true)]);
    std::fs::write(std::env::temp_dir().join("zt-npz-limit.npz"), &bytes).unwrap();
    assert!(matches!(
        small.open(std::env::temp_dir().join("zt-npz-limit.npz")),
        Err(Error::Limit { .. })
    ));

    // Two directory entries sharing one local header (overlapping-member bomb).
    let mut second = member("b.npy", &a, false);
    second.local_of = Some(0);
    let r = Reader::from_bytes(zip(&[member("a.npy", &a, false), second]));
    assert!(matches!(
        rule_of(r),
        "zip-local-header" | "zip-member-overlap"
    ));

    let mut enc = member("a.npy", &a, false);
    enc.flags = 1;
    assert_eq!(rule_of(Reader::from_bytes(zip(&[enc]))), "zip-unsupported");
    let mut bz = member("a.npy", &a, false);
    bz.method = 12;
    assert_eq!(rule_of(Reader::from_bytes(zip(&[bz]))), "zip-unsupported");
    let mut crc = member("a.npy", &a, false);
    crc.crc ^= 1;
    assert_eq!(rule_of(Reader::from_bytes(zip(&[crc]))), "zip-crc");
    let mut crc = member("a.npy", &a, true);
    crc.crc ^= 1;
    assert_eq!(rule_of(Reader::from_bytes(zip(&[crc]))), "zip-crc");
    assert_eq!(
        rule_of(Reader::from_bytes(zip(&[
            member("a.npy", &a, false),
            member("a.npy", &a, false)
        ]))),
        "zip-duplicate-name"
    );
    // An entry count the directory cannot hold.
    let mut many = zip(&[member("a.npy", &a, false)]);
    let n = many.len();
    many[n - 12..n - 10].copy_from_slice(&500u16.to_le_bytes());
    many[n - 14..n - 12].copy_from_slice(&500u16.to_le_bytes());
    assert_eq!(rule_of(Reader::from_bytes(many)), "zip-entry-count");
    // A member whose npy payload is shorter than its shape says.
    let mut short = npy(100);
    short.truncate(short.len() - 1);
    assert_eq!(
        rule_of(Reader::from_bytes(zip(&[member("a.npy", &short, false)]))),
        "npy-size"
    );
    // Not a zip at all past the magic.
    assert_eq!(
        rule_of(Reader::from_bytes(b"PK\x03\x04garbage".to_vec())),
        "zip-eocd"
    );
}
