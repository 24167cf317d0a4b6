//! Every valid file of upstream's conformance corpus opens in our reader,
//! and every reject file is refused with a format error.

use std::fs;
use std::path::Path;
use ztensor::{Error, Reader};

fn corpus(dir: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/upstream-conformance")
        .join(dir);
    let mut files: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "zt"))
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(files.len() > 10, "corpus {dir} is missing");
    files
}

#[test]
fn valid_files_open() {
    for (name, bytes) in corpus("valid") {
        let r = Reader::from_bytes(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Upstream checks this case at open only; its filler byte breaks the
        // f4 padding rule, which its reject twin `f4-nonzero-odd-nibble` tests.
        if name == "f4-packed-odd-count" {
            continue;
        }
        // Data of local parts must read back and verify where it can.
        match r.verify() {
            Ok(_) => {}
            Err(Error::Unsupported(_)) => assert!(name.contains("unknown"), "{name}"),
            Err(Error::Usage(m)) if m.contains("shards") => {
                assert!(!r.manifest().shards.is_empty(), "{name}")
            }
            Err(e) => panic!("{name}: verify failed: {e}"),
        }
    }
}

#[test]
fn reject_files_are_refused() {
    for (name, bytes) in corpus("reject") {
        let err = match Reader::from_bytes(bytes) {
            Err(e) => e,
            Ok(r) => {
                let mut errors = r
                    .names()
                    .map(|n| r.verify_object(n))
                    .filter_map(|x| x.err());
                errors.next().unwrap_or_else(|| panic!("{name}: accepted"))
            }
        };
        assert!(
            err.rule().is_some(),
            "{name}: expected a rule violation, got {err}"
        );
        eprintln!("{name:40} -> {err}");
    }
}
