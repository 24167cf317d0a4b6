//! Interop with upstream ztensor 2.1.2 in both directions. Needs a Python
//! with `ztensor==2.1.2` and numpy in `ZT_INTEROP_PYTHON`; the README's
//! test command (`scripts/test.sh`) makes that venv and runs these.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use ztensor::{
    DType, DigestAlg, ElementType, LogicalType, PartOptions, Reader, Value, WriteOptions, Writer,
    ZstdOptions,
};

fn python() -> PathBuf {
    PathBuf::from(
        std::env::var("ZT_INTEROP_PYTHON")
            .expect("set ZT_INTEROP_PYTHON to a python with ztensor==2.1.2"),
    )
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/upstream_interop.py")
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run_script(mode: &str, dir: &Path) {
    let out = Command::new(python())
        .arg(script())
        .arg(mode)
        .arg(dir)
        .output()
        .expect("run python");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "upstream_interop.py {mode} failed");
}

/// Upstream converts `src` itself and compares its result with `ours`.
fn convert_check(src: &Path, ours: &Path) {
    let res = Command::new(python())
        .arg(script())
        .arg("convert-check")
        .arg(src)
        .arg(ours)
        .output()
        .expect("run python");
    print!("{}", String::from_utf8_lossy(&res.stdout));
    eprint!("{}", String::from_utf8_lossy(&res.stderr));
    assert!(
        res.status.success(),
        "{} differs from upstream's conversion",
        src.display()
    );
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[test]
#[ignore = "needs ZT_INTEROP_PYTHON with ztensor==2.1.2; scripts/test.sh runs it"]
fn upstream_files_read_exactly_in_ours() {
    let dir = scratch("interop-upstream");
    run_script("write", &dir);
    let expected = std::fs::read_to_string(dir.join("expected.tsv")).unwrap();
    let mut per_file: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut n = 0;
    for line in expected.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let (file, obj, layout, shape, role, dtype, logical, data) =
            (f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7]);
        let r = Reader::open(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let o = r.object(obj).unwrap();
        assert_eq!(o.layout, layout, "{file} {obj}");
        let shape: Vec<u64> = shape
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(o.shape, shape, "{file} {obj}");
        let p = &o.parts[role];
        assert_eq!(p.etype.dtype.as_str(), dtype, "{file} {obj}/{role}");
        assert_eq!(
            p.etype.logical.as_ref().map_or("-", |l| l.as_str()),
            logical,
            "{file} {obj}/{role}"
        );
        assert_eq!(
            r.part_bytes(obj, role).unwrap().as_ref(),
            unhex(data).as_slice(),
            "{file} {obj}/{role}"
        );
        per_file
            .entry(file.to_string())
            .or_default()
            .push(obj.to_string());
        n += 1;
    }
    assert!(n > 30, "too few expectations: {n}");
    for (file, mut objects) in per_file {
        let r = Reader::open(dir.join(&file)).unwrap();
        objects.sort();
        objects.dedup();
        assert_eq!(r.names().collect::<Vec<_>>(), objects, "{file}: object set");
        let report = r.verify().unwrap_or_else(|e| panic!("{file}: verify: {e}"));
        assert_eq!(
            report.without_digest, 0,
            "{file}: upstream digests every part"
        );
    }
    // Typed reads of what upstream wrote.
    let r = Reader::open(dir.join("up-sparse.zt")).unwrap();
    let csr = r.read_csr("csr").unwrap();
    assert_eq!(csr.indptr, vec![0, 2, 3, 4]);
    assert_eq!(
        csr.values.to_vec::<f32>().unwrap(),
        vec![1.0, 2.0, 3.0, 4.0]
    );
    let coo = r.read_coo("coo").unwrap();
    assert_eq!(coo.coords, vec![0, 1, 2, 2, 0, 1]);
    let r = Reader::open(dir.join("up-logical.zt")).unwrap();
    assert_eq!(
        r.read_dense("a_bool").unwrap().bytes.as_ref(),
        &[1, 0, 1, 1, 0]
    );
    let r = Reader::open(dir.join("up-zstd.zt")).unwrap();
    let rows = r.read_rows("small", 1..3).unwrap();
    assert_eq!(rows.shape, vec![2, 8]);
    let whole = r.read_dense("small").unwrap().to_vec::<f32>().unwrap();
    assert_eq!(rows.to_vec::<f32>().unwrap(), whole[8..24]);
    // Our canonical writer reproduces upstream's canonical file byte for byte.
    let up = Reader::open(dir.join("up-dense-canonical.zt")).unwrap();
    let ours = dir.join("ours-canonical-copy.zt");
    let mut w = Writer::create_with(&ours, WriteOptions::canonical()).unwrap();
    for name in up.names() {
        let t = up.read_dense(name).unwrap();
        w.add_bytes(name, &t.shape, t.etype.clone(), &t.bytes)
            .unwrap();
    }
    w.finish().unwrap();
    assert_eq!(
        std::fs::read(&ours).unwrap(),
        std::fs::read(dir.join("up-dense-canonical.zt")).unwrap(),
        "canonical output differs from upstream's"
    );

    let r = Reader::open(dir.join("up-attrs.zt")).unwrap();
    let a = r.attributes().unwrap();
    assert_eq!(a.get("name"), Some(&Value::text("upstream")));
    assert_eq!(a.get("n"), Some(&Value::Uint(3)));
    assert_eq!(a.get("pi"), Some(&Value::Float(1.5)));
    assert_eq!(
        a.get("list"),
        Some(&Value::Array(vec![Value::Uint(1), Value::Uint(2)]))
    );
}

/// Records what we write so the upstream side can compare.
#[derive(Default)]
struct Expect {
    lines: Vec<String>,
}

impl Expect {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        file: &str,
        obj: &str,
        layout: &str,
        shape: &[u64],
        role: &str,
        etype: &ElementType,
        data: &[u8],
    ) {
        let shape: Vec<String> = shape.iter().map(u64::to_string).collect();
        let logical = etype
            .logical
            .as_ref()
            .map_or("-".to_string(), |l| l.as_str().to_string());
        self.lines.push(
            [
                file,
                obj,
                layout,
                &shape.join(","),
                role,
                etype.dtype.as_str(),
                &logical,
                &hex(data),
            ]
            .join("\t"),
        );
    }

    fn dense(&mut self, file: &str, obj: &str, shape: &[u64], etype: &ElementType, data: &[u8]) {
        self.push(file, obj, "dense", shape, "data", etype, data);
    }
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| ((i * 131 + seed as usize * 17) % 251) as u8)
        .collect()
}

fn write_dense_set(dir: &Path, file: &str, options: WriteOptions, ex: &mut Expect) {
    let mut w = Writer::create_with(dir.join(file), options).unwrap();
    for (i, d) in DType::ALL.iter().enumerate() {
        let et = ElementType::plain(*d);
        let shape = [3u64, 5];
        let data = pattern(15 * d.width(), i as u8);
        let name = format!("t_{d}");
        w.add_bytes(&name, &shape, et.clone(), &data).unwrap();
        ex.dense(file, &name, &shape, &et, &data);
    }
    let logical: &[(LogicalType, Vec<u8>, Vec<u64>)] = &[
        (LogicalType::Bool, vec![1, 0, 0, 1, 1], vec![5]),
        (LogicalType::F8E4M3Fn, pattern(6, 1), vec![2, 3]),
        (LogicalType::F8E5M2, pattern(6, 2), vec![6]),
        (LogicalType::F8E4M3Fnuz, pattern(4, 3), vec![4]),
        (LogicalType::F8E5M2Fnuz, pattern(4, 4), vec![4]),
        (LogicalType::F8E8M0, pattern(4, 5), vec![4]),
        (LogicalType::F4E2M1, vec![0x21, 0x43, 0x05], vec![5]),
        (LogicalType::Complex64, pattern(24, 6), vec![3]),
        (LogicalType::Complex128, pattern(32, 7), vec![2]),
    ];
    for (t, data, shape) in logical {
        let et = ElementType::logical(*t);
        let name = format!("l_{t}");
        w.add_bytes(&name, shape, et.clone(), data).unwrap();
        ex.dense(file, &name, shape, &et, data);
    }
    let et = ElementType::plain(DType::F32);
    w.add_bytes("scalar", &[], et.clone(), &2.5f32.to_le_bytes())
        .unwrap();
    ex.dense(file, "scalar", &[], &et, &2.5f32.to_le_bytes());
    w.add_bytes("empty", &[0, 4], et.clone(), &[]).unwrap();
    ex.dense(file, "empty", &[0, 4], &et, &[]);
    w.finish().unwrap();
}

#[test]
#[ignore = "needs ZT_INTEROP_PYTHON with ztensor==2.1.2; scripts/test.sh runs it"]
fn our_files_read_exactly_in_upstream() {
    let dir = scratch("interop-ours");
    let mut ex = Expect::default();
    for alg in DigestAlg::ALL {
        let opts = WriteOptions {
            digest: Some(alg),
            ..WriteOptions::default()
        };
        write_dense_set(&dir, &format!("ours-dense-{alg}.zt"), opts, &mut ex);
    }
    write_dense_set(
        &dir,
        "ours-nodigest.zt",
        WriteOptions {
            digest: None,
            ..WriteOptions::default()
        },
        &mut ex,
    );
    write_dense_set(
        &dir,
        "ours-align64k.zt",
        WriteOptions {
            align: 65536,
            ..WriteOptions::default()
        },
        &mut ex,
    );

    // zstd at several levels and frame sizes, whole and streamed.
    let file = "ours-zstd.zt";
    let mut w = Writer::create(dir.join(file)).unwrap();
    let big: Vec<u8> = (0..600_000u32)
        .flat_map(|i| ((i % 97) as f32).to_le_bytes())
        .collect();
    let f32t = ElementType::plain(DType::F32);
    for (level, frame) in [(1, 64 * 1024), (3, 1 << 20), (19, 256 * 1024)] {
        let name = format!("z{level}");
        let opts = PartOptions {
            etype: f32t.clone(),
            compression: Some(ZstdOptions {
                level,
                frame_size: frame,
            }),
            digest: Some(DigestAlg::Xxh3),
        };
        w.add_bytes_with(&name, &[600, 1000], &big, &opts, None)
            .unwrap();
        ex.dense(file, &name, &[600, 1000], &f32t, &big);
    }
    let bools = vec![1u8, 0, 1];
    let opts = PartOptions {
        etype: ElementType::logical(LogicalType::Bool),
        compression: Some(ZstdOptions::default()),
        digest: Some(DigestAlg::Sha256),
    };
    w.add_bytes_with("zbool", &[3], &bools, &opts, None)
        .unwrap();
    ex.dense(
        file,
        "zbool",
        &[3],
        &ElementType::logical(LogicalType::Bool),
        &bools,
    );
    w.finish().unwrap();

    let file = "ours-stream.zt";
    let opts = WriteOptions {
        compression: Some(ZstdOptions {
            level: 3,
            frame_size: 100_000,
        }),
        ..WriteOptions::default()
    };
    let mut w = Writer::create_with(dir.join(file), opts).unwrap();
    let mut s = w
        .stream_dense("streamed_zstd", &[600_000], f32t.clone())
        .unwrap();
    for c in big.chunks(77_777) {
        s.write(c).unwrap();
    }
    s.finish().unwrap();
    ex.dense(file, "streamed_zstd", &[600_000], &f32t, &big);
    w.finish().unwrap();

    // Sparse: CSR with u32 and u64 indices, COO rank 3, and gguf blocks.
    let file = "ours-sparse.zt";
    let mut w = Writer::create(dir.join(file)).unwrap();
    let vals: Vec<u8> = [1f32, 2., 3., 4.]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    w.add_csr(
        "csr32",
        [3, 4],
        f32t.clone(),
        &vals,
        &[0, 3, 1, 2],
        &[0, 2, 3, 4],
    )
    .unwrap();
    let u32le =
        |v: &[u64]| -> Vec<u8> { v.iter().flat_map(|&x| (x as u32).to_le_bytes()).collect() };
    let u64le = |v: &[u64]| -> Vec<u8> { v.iter().flat_map(|&x| x.to_le_bytes()).collect() };
    let (u32t, u64t) = (
        ElementType::plain(DType::U32),
        ElementType::plain(DType::U64),
    );
    ex.push(
        file,
        "csr32",
        "zt.sparse_csr/1",
        &[3, 4],
        "values",
        &f32t,
        &vals,
    );
    ex.push(
        file,
        "csr32",
        "zt.sparse_csr/1",
        &[3, 4],
        "indices",
        &u32t,
        &u32le(&[0, 3, 1, 2]),
    );
    ex.push(
        file,
        "csr32",
        "zt.sparse_csr/1",
        &[3, 4],
        "indptr",
        &u32t,
        &u32le(&[0, 2, 3, 4]),
    );
    let wide = 5_000_000_000u64;
    w.add_csr(
        "csr64",
        [2, wide],
        f32t.clone(),
        &vals[..8],
        &[7, wide - 1],
        &[0, 1, 2],
    )
    .unwrap();
    ex.push(
        file,
        "csr64",
        "zt.sparse_csr/1",
        &[2, wide],
        "values",
        &f32t,
        &vals[..8],
    );
    ex.push(
        file,
        "csr64",
        "zt.sparse_csr/1",
        &[2, wide],
        "indices",
        &u64t,
        &u64le(&[7, wide - 1]),
    );
    ex.push(
        file,
        "csr64",
        "zt.sparse_csr/1",
        &[2, wide],
        "indptr",
        &u64t,
        &u64le(&[0, 1, 2]),
    );
    let coords = [0u64, 1, 1, 2, 0, 2];
    w.add_coo("coo", &[2, 3, 4], f32t.clone(), &vals[..8], &coords)
        .unwrap();
    ex.push(
        file,
        "coo",
        "zt.sparse_coo/1",
        &[2, 3, 4],
        "values",
        &f32t,
        &vals[..8],
    );
    ex.push(
        file,
        "coo",
        "zt.sparse_coo/1",
        &[2, 3, 4],
        "coords",
        &u32t,
        &u32le(&coords),
    );
    let blocks = pattern(4 * 34, 9);
    w.add_gguf("q8", &[2, 64], "q8_0", 32, 34, &blocks).unwrap();
    ex.push(
        file,
        "q8",
        "gguf.q8_0/1",
        &[2, 64],
        "data",
        &ElementType::plain(DType::U8),
        &blocks,
    );
    w.finish().unwrap();

    // Canonical with deduplicated identical parts; aliases (tied weights).
    let file = "ours-canonical.zt";
    let mut w = Writer::create_with(dir.join(file), WriteOptions::canonical()).unwrap();
    let same = pattern(4096 * 3, 1);
    for name in ["a", "b"] {
        w.add_bytes(name, &[3072], f32t.clone(), &same).unwrap();
        ex.dense(file, name, &[3072], &f32t, &same);
    }
    w.add_alias("c", "a").unwrap();
    ex.dense(file, "c", &[3072], &f32t, &same);
    w.finish().unwrap();
    let r = Reader::open(dir.join(file)).unwrap();
    assert_eq!(
        r.object("a").unwrap().parts["data"].blob,
        r.object("b").unwrap().parts["data"].blob
    );

    // Append: atomic, then in place.
    let file = "ours-append.zt";
    let path = dir.join(file);
    let mut w = Writer::create(&path).unwrap();
    w.add("g0", &[4], &[1f32, 2., 3., 4.]).unwrap();
    w.finish().unwrap();
    let mut w = Writer::append(&path).unwrap();
    w.add("g1", &[2], &[7i32, 8]).unwrap();
    w.finish().unwrap();
    let mut w = Writer::append_in_place(&path, WriteOptions::default()).unwrap();
    w.add("g2", &[1], &[9u8]).unwrap();
    w.finish().unwrap();
    ex.dense(
        file,
        "g0",
        &[4],
        &f32t,
        &[1f32, 2., 3., 4.]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<_>>(),
    );
    ex.dense(
        file,
        "g1",
        &[2],
        &ElementType::plain(DType::I32),
        &[7i32, 8]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<_>>(),
    );
    ex.dense(file, "g2", &[1], &ElementType::plain(DType::U8), &[9]);

    // Attributes of every JSON-like kind.
    let file = "ours-attrs.zt";
    let mut w = Writer::create(dir.join(file)).unwrap();
    w.set_attributes(
        Value::text_map([
            ("name", Value::text("ours")),
            ("count", Value::Uint(42)),
            ("neg", Value::Nint(6)),
            ("ratio", Value::Float(0.1)),
            ("flag", Value::Bool(true)),
            ("nothing", Value::Null),
            (
                "list",
                Value::Array(vec![Value::Uint(1), Value::text("two")]),
            ),
            (
                "nested",
                Value::text_map([("k", Value::text("v"))]).unwrap(),
            ),
        ])
        .unwrap(),
    )
    .unwrap();
    w.add("x", &[1], &[1f32]).unwrap();
    ex.dense(file, "x", &[1], &f32t, &1f32.to_le_bytes());
    w.finish().unwrap();
    std::fs::write(
        dir.join("expected-attrs.json"),
        r#"{"name": "ours", "count": 42, "neg": -7, "ratio": 0.1, "flag": true, "nothing": null, "list": [1, "two"], "nested": {"k": "v"}}"#,
    )
    .unwrap();

    std::fs::write(dir.join("expected.tsv"), ex.lines.join("\n") + "\n").unwrap();
    run_script("check", &dir);
}

#[test]
#[ignore = "needs ZT_INTEROP_PYTHON with ztensor==2.1.2; scripts/test.sh runs it"]
fn conversion_matches_upstream_convert() {
    use ztensor::convert::{convert, recorded_type, type_name};
    use ztensor::formats::gguf::GgufFile;
    let fixtures = std::env::var_os("ZT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
        .join("gguf");
    let dir = scratch("interop-convert");
    let mut n = 0;
    for entry in std::fs::read_dir(&fixtures).expect("GGUF fixtures") {
        let src = entry.unwrap().path();
        if src.extension().is_none_or(|e| e != "gguf") {
            continue;
        }
        let out = dir.join(src.file_stem().unwrap()).with_extension("zt");
        let rep = convert(&src, &out, WriteOptions::default()).unwrap();
        // Every key's exact GGUF type is recorded.
        let g = GgufFile::parse(&std::fs::read(&src).unwrap()).unwrap();
        let r = Reader::open(&out).unwrap();
        r.verify().unwrap();
        let attrs = r.attributes().unwrap();
        for (k, v) in &g.metadata {
            assert_eq!(recorded_type(attrs, k), Some(type_name(v)), "{k}");
        }
        assert_eq!(rep.tensors, g.tensors.len());
        convert_check(&src, &out);
        n += 1;
    }
    assert!(n >= 19, "only {n} fixtures converted");

    // safetensors checkpoints too.
    for model in ["llama-tiny", "qwen2-tiny"] {
        let src = fixtures
            .join("../safetensors")
            .join(model)
            .join("model.safetensors");
        let out = dir.join(format!("{model}-st.zt"));
        ztensor::convert::convert(&src, &out, WriteOptions::default()).unwrap();
        Reader::open(&out).unwrap().verify().unwrap();
        convert_check(&src, &out);
    }

    // numpy archives, stored and deflated.
    for name in ["interop.npz", "interop_deflated.npz"] {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/npz")
            .join(name);
        let out = dir.join(name).with_extension("zt");
        ztensor::convert::convert(&src, &out, WriteOptions::default()).unwrap();
        convert_check(&src, &out);
    }
}
