//! Every limit the `.zt` reader enforces, the writer enforces first (issue
//! 11 item 3): a value at the limit writes a file that opens, one past it is
//! refused with a typed error before the file exists.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use ztensor::cbor::{Value, MAX_DEPTH};
use ztensor::{DType, ElementType, Error, LogicalType, Reader, WriteOptions, Writer};

fn tmp() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("zt-writer-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{}.zt", N.fetch_add(1, Ordering::Relaxed)))
}

/// Runs `f` on a fresh writer: `Ok` must give a file that opens (and `f`'s
/// objects verify), `Err` must be a usage error (with the rule it would
/// break, when it is one) that leaves no file.
fn write(f: impl FnOnce(&mut Writer) -> ztensor::Result<()>) -> Result<(), Error> {
    let path = tmp();
    let mut w = Writer::create(&path).unwrap();
    match f(&mut w) {
        Ok(()) => {
            w.finish().unwrap();
            let r = Reader::open(&path).expect("what the writer accepted opens");
            r.verify().expect("and verifies");
            Ok(())
        }
        Err(e) => {
            drop(w);
            assert!(!path.exists(), "a refused write leaves no file");
            assert!(
                matches!(e, Error::Usage(_) | Error::Invalid { .. }),
                "{e:?}"
            );
            Err(e)
        }
    }
}

fn one(w: &mut Writer, name: &str) -> ztensor::Result<()> {
    w.add(name, &[1], &[1f32])
}

/// A value whose deepest scalar sits `depth` levels below it (arrays).
fn nested(depth: u32) -> Value {
    (0..depth).fold(Value::Uint(0), |v, _| Value::Array(vec![v]))
}

#[test]
fn names_empty_too_long_or_with_nul_are_refused() {
    assert!(write(|w| one(w, &"n".repeat(1024))).is_ok());
    for bad in ["", "a\0b"] {
        assert!(write(|w| one(w, bad)).is_err(), "{bad:?}");
    }
    assert!(write(|w| one(w, &"n".repeat(1025))).is_err());
    assert!(write(|w| {
        one(w, "x")?;
        one(w, "x")
    })
    .is_err());
}

#[test]
fn rank_and_element_count_limits() {
    assert!(write(|w| w.add("r", &[1; 64], &[1f32])).is_ok());
    assert!(write(|w| w.add("r", &[1; 65], &[1f32])).is_err());
    // A zero dimension makes the count 0, but a product that overflows
    // before it does is still refused by the reader, so by the writer.
    assert!(write(|w| w.add::<f32>("z", &[0, u64::MAX, 2], &[])).is_ok());
    assert!(write(|w| w.add::<f32>("o", &[u64::MAX, 2, 0], &[])).is_err());
}

#[test]
fn attribute_keys_and_depth_limits() {
    // File attributes sit at depth 1 of the manifest, an object's at depth 3.
    let file_limit = MAX_DEPTH - 2;
    let object_limit = MAX_DEPTH - 4;
    let attrs = |d: u32| Value::text_map([("k", nested(d))]).unwrap();
    assert!(write(|w| w.set_attributes(attrs(file_limit))).is_ok());
    assert!(write(|w| w.set_attributes(attrs(file_limit + 1))).is_err());
    let with_attrs = |w: &mut Writer, a: Value| {
        let et = ElementType::plain(DType::F32);
        let opts = ztensor::PartOptions {
            etype: et,
            digest: None,
            compression: None,
        };
        w.add_bytes_with("t", &[1], &[0; 4], &opts, Some(a))
    };
    assert!(write(|w| with_attrs(w, attrs(object_limit))).is_ok());
    assert!(write(|w| with_attrs(w, attrs(object_limit + 1))).is_err());
    for bad in [String::new(), "k".repeat(1025), "a\0".into()] {
        let a = Value::Map(vec![(Value::Text(bad.clone()), Value::Uint(1))]);
        assert!(write(|w| w.set_attributes(a)).is_err(), "{bad:?}");
    }
    let not_text = Value::Map(vec![(Value::Uint(1), Value::Uint(1))]);
    assert!(write(|w| w.set_attributes(not_text)).is_err());
    assert!(write(|w| w.set_attributes(Value::Uint(1))).is_err());
}

#[test]
fn alignment_must_be_a_power_of_two_of_at_least_4096() {
    for align in [0, 2048, 4096 + 512, 12288] {
        let opts = WriteOptions {
            align,
            ..WriteOptions::default()
        };
        let path = tmp();
        assert!(Writer::create_with(&path, opts).is_err(), "{align}");
        assert!(!path.exists());
    }
    let path = tmp();
    let opts = WriteOptions {
        align: 1 << 16,
        ..WriteOptions::default()
    };
    let mut w = Writer::create_with(&path, opts).unwrap();
    one(&mut w, "x").unwrap();
    w.finish().unwrap();
    assert_eq!(
        Reader::open(&path).unwrap().object("x").unwrap().parts["data"]
            .blob
            .offset
            % (1 << 16),
        0
    );
}

#[test]
fn data_rules_are_checked_before_writing() {
    let bool_t = ElementType::logical(LogicalType::Bool);
    assert!(write(|w| w.add_bytes("b", &[2], bool_t.clone(), &[0, 1])).is_ok());
    assert!(write(|w| w.add_bytes("b", &[2], bool_t.clone(), &[0, 2])).is_err());
    let f4 = ElementType::logical(LogicalType::F4E2M1);
    assert!(write(|w| w.add_bytes("f", &[3], f4.clone(), &[0x21, 0x03])).is_ok());
    assert!(write(|w| w.add_bytes("f", &[3], f4.clone(), &[0x21, 0x43])).is_err());
    assert!(write(|w| w.add_bytes("f", &[3], ElementType::plain(DType::F32), &[0; 8])).is_err());
    let f32t = ElementType::plain(DType::F32);
    let v = [0u8; 8];
    assert!(write(|w| w.add_csr("c", [2, 3], f32t.clone(), &v, &[0, 2], &[0, 1, 2])).is_ok());
    // Unsorted columns, a column past the width, indptr not ending at nnz.
    assert!(write(|w| w.add_csr("c", [2, 3], f32t.clone(), &v, &[2, 0], &[0, 2, 2])).is_err());
    assert!(write(|w| w.add_csr("c", [2, 3], f32t.clone(), &v, &[0, 3], &[0, 1, 2])).is_err());
    assert!(write(|w| w.add_csr("c", [2, 3], f32t.clone(), &v, &[0, 1], &[0, 1, 1])).is_err());
    assert!(write(|w| w.add_coo("o", &[2, 3], f32t.clone(), &v, &[0, 1, 0, 2])).is_ok());
    // A duplicate coordinate; a coordinate out of range.
    assert!(write(|w| w.add_coo("o", &[2, 3], f32t.clone(), &v, &[0, 0, 1, 1])).is_err());
    assert!(write(|w| w.add_coo("o", &[2, 3], f32t.clone(), &v, &[0, 2, 0, 1])).is_err());
}

#[test]
fn gguf_block_layouts_need_whole_blocks() {
    let blocks = vec![0u8; 2 * 34];
    assert!(write(|w| w.add_gguf("q", &[2, 32], "q8_0", 32, 34, &blocks)).is_ok());
    assert!(write(|w| w.add_gguf("q", &[2, 31], "q8_0", 32, 34, &blocks)).is_err());
    assert!(write(|w| w.add_gguf("q", &[2, 32], "q8_0", 0, 34, &blocks)).is_err());
    assert!(write(|w| w.add_gguf("q", &[2, 32], "q8_0", 32, 34, &blocks[1..])).is_err());
}
