//! Replays every fuzz seed and every saved fuzz finding through the same
//! entry points the cargo-fuzz targets call, so a fixed crash stays fixed
//! under a plain `cargo test`.

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_file() && path.file_name().is_some_and(|n| n != ".gitkeep") {
                f(&std::fs::read(&path).unwrap());
                count += 1;
            }
        }
    }
    assert!(count > 0, "no seeds for {target}");
}

#[test]
fn manifest_decode() {
    replay("manifest_decode", ztensor::fuzzing::manifest_decode);
}

#[test]
fn open_read() {
    replay("open_read", ztensor::fuzzing::open_and_read);
}

#[test]
fn zstd_decode() {
    replay("zstd_decode", ztensor::fuzzing::zstd_decode);
}

#[test]
fn round_trip() {
    replay("round_trip", ztensor::fuzzing::write_read_round_trip);
}

#[test]
fn gguf() {
    replay("gguf", ztensor::fuzzing::gguf_parse);
}

#[test]
fn safetensors() {
    replay("safetensors", ztensor::fuzzing::safetensors_parse);
}

#[test]
fn npz() {
    replay("npz", ztensor::fuzzing::npz_open);
}

#[test]
fn legacy() {
    replay("legacy", ztensor::fuzzing::legacy_open);
}
