//! The test vectors in `spec/vectors/`: small valid files with their
//! expected decoded contents, and one reject file per rule of the spec.
//! Defined here in code; the files on disk must match byte for byte.
//! Regenerate with `ZT_REGEN_VECTORS=1 cargo test --test vectors`.

#[path = "../common/mod.rs"]
mod common;
mod reject;
mod valid;

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
    let mut v = valid::vectors();
    v.extend(reject::vectors());
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
