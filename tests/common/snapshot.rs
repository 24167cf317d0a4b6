//! Helpers for the engine snapshot tests: the bundled tiny model, and
//! copying a snapshot with its description or tensors edited.

use std::path::{Path, PathBuf};
use ztensor::cbor::Value;
use ztensor::{Reader, Writer};

/// The tiny llama model bundled with `zt` (q8_0).
pub fn tiny_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/bin/zt/assets/llama-tiny-q8_0.zt")
}

/// Copies snapshot `src` to `dst` (parts digested with the default xxh3),
/// letting `edit_desc` change the `ztensor.snapshot` description and
/// `edit` each tensor: name, shape, bytes (`None` drops it).
pub fn rewrite_snapshot(
    src: &Path,
    dst: &Path,
    edit_desc: impl Fn(&mut Vec<(Value, Value)>),
    edit: impl Fn(&str, Vec<u64>, Vec<u8>) -> Option<(Vec<u64>, Vec<u8>)>,
) {
    let r = Reader::open(src).unwrap();
    let mut w = Writer::create(dst).unwrap();
    let Some(Value::Map(mut top)) = r.attributes().cloned() else {
        panic!("no attributes")
    };
    for (k, v) in top.iter_mut() {
        if k.as_str() == Some("ztensor.snapshot") {
            let Value::Map(mut desc) = v.clone() else {
                panic!("the snapshot description is not a map")
            };
            edit_desc(&mut desc);
            *v = Value::map(desc).unwrap();
        }
    }
    w.set_attributes(Value::map(top).unwrap()).unwrap();
    for name in r.names() {
        let t = r.read_dense(name).unwrap();
        let dtype = t.etype.clone();
        if let Some((shape, bytes)) = edit(name, t.shape.clone(), t.bytes.to_vec()) {
            w.add_bytes(name, &shape, dtype, &bytes).unwrap();
        }
    }
    w.finish().unwrap();
}
