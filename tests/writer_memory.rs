//! The writer's in-memory target and the rule ids its refusals keep.

use ztensor::{DType, ElementType, Error, Reader, Rule, WriteOptions, Writer, ZstdOptions};

fn f32s() -> ElementType {
    ElementType::plain(DType::F32)
}

fn fill(w: &mut Writer) -> ztensor::Result<()> {
    w.add("a", &[2, 3], &[1f32, 2., 3., 4., 5., 6.])?;
    w.add("b", &[4], &[7u64, 8, 9, 10])?;
    w.add_csr("s", [2, 2], f32s(), &[0u8; 8], &[1, 0], &[0, 1, 2])
}

#[test]
fn in_memory_writer_gives_the_bytes_a_file_gets() {
    for options in [
        WriteOptions::default(),
        WriteOptions {
            compression: Some(ZstdOptions::default()),
            ..WriteOptions::default()
        },
        WriteOptions::canonical(),
    ] {
        let path = std::env::temp_dir().join(format!(
            "zt-writer-memory-{}-{}.zt",
            std::process::id(),
            options.compression.is_some() as u8 + 2 * options.canonical as u8
        ));
        let mut w = Writer::create_with(&path, options.clone()).unwrap();
        fill(&mut w).unwrap();
        w.finish().unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();

        let mut w = Writer::in_memory(options).unwrap();
        fill(&mut w).unwrap();
        let bytes = w.finish_bytes().unwrap();
        assert_eq!(bytes, on_disk);
        let r = Reader::from_bytes(bytes).unwrap();
        r.verify().unwrap();
        assert_eq!(
            r.read_dense("b").unwrap().to_vec::<u64>().unwrap(),
            [7, 8, 9, 10]
        );
    }
}

#[test]
fn finishing_a_writer_the_wrong_way_is_a_usage_error() {
    let w = Writer::in_memory(WriteOptions::default()).unwrap();
    assert!(matches!(w.finish(), Err(Error::Usage(_))));
    let path = std::env::temp_dir().join(format!("zt-writer-memory-{}-x.zt", std::process::id()));
    let w = Writer::create(&path).unwrap();
    assert!(matches!(w.finish_bytes(), Err(Error::Usage(_))));
    assert!(
        !path.exists(),
        "the refused file writer left nothing behind"
    );
}

#[test]
fn refusals_keep_the_rule_the_reader_would_name() {
    let mut w = Writer::in_memory(WriteOptions::default()).unwrap();
    let cases: Vec<(ztensor::Result<()>, Rule)> = vec![
        (w.add("", &[1], &[1f32]), Rule::NameEmpty),
        (w.add("a\0b", &[1], &[1f32]), Rule::NameNul),
        (w.add(&"n".repeat(1025), &[1], &[1f32]), Rule::NameTooLong),
        (
            w.add_csr("c", [2, 2], f32s(), &[0u8; 8], &[0, 1], &[0, 2, 1]),
            Rule::CsrData,
        ),
    ];
    for (result, rule) in cases {
        let e = result.unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
        assert_eq!(e.rule(), Some(rule), "{e}");
        assert!(e.to_string().contains(rule.id()), "{e}");
    }
}
