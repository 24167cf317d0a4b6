//! Sharded model sets: safetensors index sets, split GGUF and sharded
//! `.zt` sets open as one reader, equal tensor for tensor to the single
//! file they were split from; broken sets fail naming the shard.

mod common;
use common::tmp::tmp;
use std::path::{Path, PathBuf};
use ztensor::convert::shard_write::convert_sharded;
use ztensor::formats::gguf::GgufFile;
use ztensor::{Reader, WriteOptions};

fn fixtures() -> PathBuf {
    std::env::var_os("ZT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
}

/// Every object of `b` equals `a`'s: shape, layout and decoded bytes.
fn assert_same(a: &Reader, b: &Reader) {
    let names: Vec<&str> = a.names().collect();
    assert_eq!(names, b.names().collect::<Vec<_>>());
    for n in names {
        let (oa, ob) = (a.object(n).unwrap(), b.object(n).unwrap());
        assert_eq!(oa.shape, ob.shape, "{n}");
        assert_eq!(oa.layout, ob.layout, "{n}");
        for role in oa.parts.keys() {
            assert_eq!(
                a.part_bytes(n, role).unwrap(),
                b.part_bytes(n, role).unwrap(),
                "{n}/{role}"
            );
        }
    }
}

fn st_original() -> PathBuf {
    fixtures().join("safetensors/llama-tiny/model.safetensors")
}

/// Writes one safetensors file holding `names` of `r`.
fn write_st(r: &Reader, names: &[&str], path: &Path) {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut data = Vec::new();
    for n in names {
        let o = r.object(n).unwrap();
        let p = &o.parts["data"];
        let bytes = r.part_bytes(n, "data").unwrap();
        let dtype = ztensor::formats::safetensors::dtype_name(&p.etype).unwrap();
        header.insert(
            n.to_string(),
            serde_json::json!({"dtype": dtype, "shape": o.shape,
                "data_offsets": [data.len(), data.len() + bytes.len()]}),
        );
        data.extend_from_slice(&bytes);
    }
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    std::fs::write(path, out).unwrap();
}

/// Splits the safetensors fixture into three shards plus an index.
fn st_set(dir: &Path) -> PathBuf {
    let r = Reader::open(st_original()).unwrap();
    let names: Vec<&str> = r.names().collect();
    let mut map = serde_json::Map::new();
    for (i, chunk) in names.chunks(names.len().div_ceil(3)).enumerate() {
        let file = format!("model-{:05}-of-00003.safetensors", i + 1);
        write_st(&r, chunk, &dir.join(&file));
        for n in chunk {
            map.insert(n.to_string(), file.clone().into());
        }
    }
    let index = dir.join("model.safetensors.index.json");
    let json = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(&index, serde_json::to_vec(&json).unwrap()).unwrap();
    index
}

fn err_of(path: &Path) -> String {
    Reader::open(path).unwrap_err().to_string()
}

#[test]
fn safetensors_index_set_equals_the_single_file() {
    let d = tmp();
    let index = st_set(d.path());
    let orig = Reader::open(st_original()).unwrap();
    let set = Reader::open(&index).unwrap();
    assert_eq!(set.format(), ztensor::formats::Format::Safetensors);
    assert_eq!(set.attributes(), orig.attributes());
    assert_same(&orig, &set);
    // A set converts to one .zt and to a sharded .zt set.
    let one = d.path().join("one.zt");
    ztensor::convert::convert(&index, &one, WriteOptions::default()).unwrap();
    assert_same(&orig, &Reader::open(&one).unwrap());
    let root = d.path().join("sharded.zt");
    convert_sharded(
        &index,
        &root,
        WriteOptions::default(),
        1 << 17,
        &mut |_, _| {},
    )
    .unwrap();
    let sharded = Reader::open(&root).unwrap();
    assert!(sharded.manifest().shards.len() >= 3);
    assert_same(&orig, &sharded);
    let report = sharded.verify().unwrap();
    assert_eq!(report.shards_checked, sharded.manifest().shards.len());
}

#[test]
fn safetensors_set_missing_truncated_swapped_shards_name_the_shard() {
    let d = tmp();
    let index = st_set(d.path());
    let s1 = d.path().join("model-00001-of-00003.safetensors");
    let s2 = d.path().join("model-00002-of-00003.safetensors");
    // Swapped: the contents of shards 1 and 2 exchanged.
    let (b1, b2) = (std::fs::read(&s1).unwrap(), std::fs::read(&s2).unwrap());
    std::fs::write(&s1, &b2).unwrap();
    std::fs::write(&s2, &b1).unwrap();
    let e = err_of(&index);
    assert!(
        e.contains("shard-file") && e.contains("model-0000") && e.contains("swapped"),
        "{e}"
    );
    // Truncated.
    std::fs::write(&s1, &b1[..b1.len() - 16]).unwrap();
    std::fs::write(&s2, &b2).unwrap();
    let e = err_of(&index);
    assert!(
        e.contains("shard-file") && e.contains("model-00001-of-00003"),
        "{e}"
    );
    // Missing.
    std::fs::remove_file(&s1).unwrap();
    let e = err_of(&index);
    assert!(
        e.contains("model-00001-of-00003") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn safetensors_index_duplicates_and_path_names_are_refused() {
    let d = tmp();
    let index = st_set(d.path());
    let r = Reader::open(st_original()).unwrap();
    let first = r.names().next().unwrap().to_string();
    // A tensor held by two shards.
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index).unwrap()).unwrap();
    let file = json["weight_map"][&first].as_str().unwrap().to_string();
    let dup = d.path().join("extra.safetensors");
    write_st(&r, &[&first], &dup);
    let other = "model-00003-of-00003.safetensors";
    assert_ne!(file, other);
    let mut names: Vec<String> = Vec::new();
    for (n, f) in json["weight_map"].as_object().unwrap() {
        if f == other {
            names.push(n.clone());
        }
    }
    let mut with_dup: Vec<&str> = names.iter().map(String::as_str).collect();
    with_dup.push(&first);
    write_st(&r, &with_dup, &d.path().join(other));
    let e = err_of(&index);
    assert!(e.contains("shard-file") && e.contains(&first), "{e}");
    // Names that are paths.
    for bad in [
        "../model.safetensors",
        "/etc/passwd",
        "sub/x.safetensors",
        "..",
    ] {
        json["weight_map"][&first] = bad.into();
        std::fs::write(&index, serde_json::to_vec(&json).unwrap()).unwrap();
        let e = err_of(&index);
        assert!(e.contains("shard-name") && e.contains(bad), "{bad}: {e}");
    }
}

// ------------------------------------------------------------ split GGUF

fn gguf_kv(out: &mut Vec<u8>, key: &str, ty: u32, value: &[u8]) {
    out.extend_from_slice(&(key.len() as u64).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(value);
}

/// Splits a GGUF file into `n` shards the way `llama-gguf-split` does:
/// all metadata in the first, `split.*` keys in every one.
fn split_gguf(src: &Path, dir: &Path, n: usize) -> Vec<PathBuf> {
    let bytes = std::fs::read(src).unwrap();
    let g = GgufFile::parse(&bytes).unwrap();
    let align = g.alignment;
    let info_len =
        |t: &ztensor::formats::gguf::GgufTensor| 8 + t.name.len() + 4 + 8 * t.dims.len() + 12;
    let infos: usize = g.tensors.iter().map(info_len).sum();
    // The key-value section ends where the tensor infos start.
    let kv_end = (24..=g.data_offset as usize - infos)
        .rev()
        .find(|&p| {
            let name = g.tensors[0].name.as_bytes();
            bytes[p..p + 8] == (name.len() as u64).to_le_bytes()
                && &bytes[p + 8..p + 8 + name.len()] == name
                && (g.data_offset as usize - (p + infos)) < align as usize
        })
        .unwrap();
    let kv = &bytes[24..kv_end];
    let per = g.tensors.len().div_ceil(n);
    let stem = src.file_stem().unwrap().to_str().unwrap();
    let mut paths = Vec::new();
    for (i, chunk) in g.tensors.chunks(per).enumerate() {
        let mut head = b"GGUF".to_vec();
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(chunk.len() as u64).to_le_bytes());
        let n_kv = if i == 0 { g.metadata.len() + 3 } else { 3 };
        head.extend_from_slice(&(n_kv as u64).to_le_bytes());
        if i == 0 {
            head.extend_from_slice(kv);
        } else {
            assert_eq!(align, 32, "non-first shards carry no alignment key");
        }
        gguf_kv(&mut head, "split.no", 2, &(i as u16).to_le_bytes());
        gguf_kv(&mut head, "split.count", 2, &(n as u16).to_le_bytes());
        gguf_kv(
            &mut head,
            "split.tensors.count",
            5,
            &(g.tensors.len() as i32).to_le_bytes(),
        );
        let mut data = Vec::new();
        for t in chunk {
            head.extend_from_slice(&(t.name.len() as u64).to_le_bytes());
            head.extend_from_slice(t.name.as_bytes());
            head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&t.ggml_type.id.to_le_bytes());
            head.extend_from_slice(&(data.len() as u64).to_le_bytes());
            data.extend_from_slice(g.tensor_bytes(&bytes, t).unwrap());
            data.resize(data.len().next_multiple_of(align as usize), 0);
        }
        head.resize(head.len().next_multiple_of(align as usize), 0);
        head.extend_from_slice(&data);
        let p = dir.join(format!("{stem}-{:05}-of-{n:05}.gguf", i + 1));
        std::fs::write(&p, head).unwrap();
        paths.push(p);
    }
    assert_eq!(paths.len(), n);
    paths
}

fn gguf_original() -> PathBuf {
    fixtures().join("gguf/llama-tiny-q8_0.gguf")
}

#[test]
fn split_gguf_opens_from_any_shard_and_equals_the_single_file() {
    let d = tmp();
    let shards = split_gguf(&gguf_original(), d.path(), 3);
    let orig = Reader::open(gguf_original()).unwrap();
    for s in &shards {
        let set = Reader::open(s).unwrap();
        assert_eq!(set.format(), ztensor::formats::Format::Gguf);
        assert_eq!(set.attributes(), orig.attributes(), "split keys dropped");
        assert_same(&orig, &set);
    }
    // Split GGUF -> sharded .zt -> GGUF again gives back the single file.
    let root = d.path().join("m.zt");
    convert_sharded(
        &shards[1],
        &root,
        WriteOptions::default(),
        1 << 16,
        &mut |_, _| {},
    )
    .unwrap();
    let gguf = d.path().join("back.gguf");
    ztensor::convert::export::export(&root, &gguf).unwrap();
    assert_eq!(
        std::fs::read(&gguf).unwrap(),
        std::fs::read(gguf_original()).unwrap()
    );
}

#[test]
fn split_gguf_missing_truncated_swapped_shards_name_the_shard() {
    let d = tmp();
    let shards = split_gguf(&gguf_original(), d.path(), 3);
    let name = |i: usize| shards[i].file_name().unwrap().to_str().unwrap().to_string();
    let (b1, b2) = (
        std::fs::read(&shards[0]).unwrap(),
        std::fs::read(&shards[1]).unwrap(),
    );
    std::fs::write(&shards[0], &b2).unwrap();
    std::fs::write(&shards[1], &b1).unwrap();
    let e = err_of(&shards[2]);
    assert!(
        e.contains("shard-file") && e.contains(&name(0)) && e.contains("swapped"),
        "{e}"
    );
    std::fs::write(&shards[0], &b1).unwrap();
    std::fs::write(&shards[1], &b2[..b2.len() - 100]).unwrap();
    let e = err_of(&shards[0]);
    assert!(e.contains("shard-file") && e.contains(&name(1)), "{e}");
    std::fs::remove_file(&shards[1]).unwrap();
    let e = err_of(&shards[0]);
    assert!(e.contains(&name(1)) && e.contains("missing"), "{e}");
}

#[test]
fn sharded_zt_missing_truncated_swapped_shards_name_the_shard() {
    let d = tmp();
    let root = d.path().join("m.zt");
    convert_sharded(
        &gguf_original(),
        &root,
        WriteOptions::default(),
        1 << 16,
        &mut |_, _| {},
    )
    .unwrap();
    let orig = Reader::open(gguf_original()).unwrap();
    assert_same(&orig, &Reader::open(&root).unwrap());
    let s1 = d.path().join("m-00001.zt");
    let s2 = d.path().join("m-00002.zt");
    let read_all = || -> Result<(), String> {
        let r = Reader::open(&root).map_err(|e| e.to_string())?;
        r.verify().map_err(|e| e.to_string())?;
        Ok(())
    };
    let (b1, b2) = (std::fs::read(&s1).unwrap(), std::fs::read(&s2).unwrap());
    std::fs::write(&s1, &b2).unwrap();
    std::fs::write(&s2, &b1).unwrap();
    let e = read_all().unwrap_err();
    assert!(e.contains("shard") && e.contains("0000"), "{e}");
    std::fs::write(&s1, &b1[..b1.len() - 1]).unwrap();
    std::fs::write(&s2, &b2).unwrap();
    let e = read_all().unwrap_err();
    assert!(e.contains("shard-file") && e.contains("00001"), "{e}");
    std::fs::remove_file(&s1).unwrap();
    let e = read_all().unwrap_err();
    assert!(e.contains("m-00001.zt"), "{e}");
    assert!(convert_sharded(
        &gguf_original(),
        &root,
        WriteOptions::default(),
        100,
        &mut |_, _| {}
    )
    .is_err());
}

#[cfg(feature = "engine")]
fn greedy(path: &Path) -> Vec<u32> {
    use ztensor::engine::{Engine, EngineOptions, KvType};
    let mut e = Engine::open(
        path,
        EngineOptions {
            n_ctx: 64,
            n_threads: 2,
            kv_type: KvType::F32,
            seed: 0,
        },
    )
    .unwrap();
    let mut logits = e
        .eval(&e.tokenize("Once upon a time", None, false))
        .unwrap();
    let v = e.config().n_vocab;
    let mut got = Vec::new();
    for _ in 0..12 {
        let last = &logits[logits.len() - v..];
        let best = (0..v).fold(0, |b, i| if last[i] > last[b] { i } else { b });
        got.push(best as u32);
        logits = e.eval(&[best as u32]).unwrap();
    }
    got
}

#[cfg(feature = "engine")]
#[test]
fn engine_generates_the_same_tokens_from_split_gguf_and_sharded_zt() {
    let d = tmp();
    let shards = split_gguf(&gguf_original(), d.path(), 3);
    let root = d.path().join("m.zt");
    convert_sharded(
        &shards[0],
        &root,
        WriteOptions::default(),
        1 << 16,
        &mut |_, _| {},
    )
    .unwrap();
    let want = greedy(&gguf_original());
    assert_eq!(greedy(&shards[0]), want);
    assert_eq!(greedy(&shards[2]), want);
    assert_eq!(greedy(&root), want);
}

#[test]
fn zt_convert_max_shard_size_writes_a_set_from_a_set() {
    let d = tmp();
    let index = st_set(d.path());
    let root = d.path().join("cli.zt");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zt"))
        .args(["convert", "-q", "--max-shard-size", "128K"])
        .arg(&index)
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let set = Reader::open(&root).unwrap();
    assert!(set.manifest().shards.len() >= 3);
    for name in set.manifest().shards.keys() {
        let len = std::fs::metadata(set.shard_path(name).unwrap())
            .unwrap()
            .len();
        // Only a part that cannot fit with the container overhead may
        // take a shard past the limit, and then it is alone there.
        let parts = set
            .manifest()
            .objects
            .values()
            .flat_map(|o| o.parts.values())
            .filter(|p| p.shard.as_deref() == Some(name.as_str()))
            .count();
        assert!(
            len <= 128 << 10 || parts == 1,
            "shard {name}: {len} bytes, {parts} parts"
        );
    }
    assert_same(&Reader::open(st_original()).unwrap(), &set);
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_zt"))
        .args(["convert", "-q", "--max-shard-size", "12Q"])
        .arg(&index)
        .arg(d.path().join("bad.zt"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

// ------------------------------------------------- split GGUF export

/// A .zt converted from the GGUF fixture.
fn zt_of_gguf(dir: &Path) -> PathBuf {
    let zt = dir.join("model.zt");
    ztensor::convert::convert(&gguf_original(), &zt, WriteOptions::default()).unwrap();
    zt
}

fn split_key(g: &GgufFile, key: &str) -> ztensor::formats::gguf::GgufValue {
    g.get(key).unwrap_or_else(|| panic!("no {key}")).clone()
}

#[test]
fn zt_export_max_shard_size_writes_a_split_gguf_set_equal_to_the_single_file() {
    use ztensor::formats::gguf::GgufValue;
    let d = tmp();
    let zt = zt_of_gguf(d.path());
    let single = d.path().join("single.gguf");
    ztensor::convert::export::export(&zt, &single).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zt"))
        .args(["export", "--max-shard-size", "64K"])
        .arg(&zt)
        .arg(d.path().join("split.gguf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut shards: Vec<PathBuf> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().unwrap().contains("split-"))
        .collect();
    shards.sort();
    let n = shards.len();
    assert!(n > 1, "{n} shards");
    let whole = GgufFile::parse(&std::fs::read(&single).unwrap()).unwrap();
    let mut tensors = 0;
    for (i, s) in shards.iter().enumerate() {
        assert_eq!(
            s.file_name().unwrap().to_str().unwrap(),
            format!("split-{:05}-of-{n:05}.gguf", i + 1)
        );
        let bytes = std::fs::read(s).unwrap();
        let g = GgufFile::parse(&bytes).unwrap();
        assert_eq!(split_key(&g, "split.no"), GgufValue::U16(i as u16));
        assert_eq!(split_key(&g, "split.count"), GgufValue::U16(n as u16));
        assert_eq!(
            split_key(&g, "split.tensors.count"),
            GgufValue::I32(whole.tensors.len() as i32)
        );
        // All metadata in the first shard, only the split keys after it.
        let want_keys = if i == 0 { whole.metadata.len() + 3 } else { 3 };
        assert_eq!(g.metadata.len(), want_keys, "shard {i}");
        // Within the limit unless a single tensor alone exceeds it.
        assert!(bytes.len() <= 64 << 10 || g.tensors.len() == 1, "shard {i}");
        tensors += g.tensors.len();
    }
    assert_eq!(tensors, whole.tensors.len());
    let one = Reader::open(&single).unwrap();
    for s in &shards {
        let set = Reader::open(s).unwrap();
        assert_eq!(set.attributes(), one.attributes(), "{}", s.display());
        assert_same(&one, &set);
    }
    // Exporting the set back to one file gives the single-file export.
    let back = d.path().join("back.gguf");
    ztensor::convert::export::export(&shards[n - 1], &back).unwrap();
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&single).unwrap()
    );
    #[cfg(feature = "engine")]
    assert_eq!(greedy(&shards[0]), greedy(&single));
}

#[test]
fn zt_export_bad_max_shard_size_is_a_typed_error() {
    use ztensor::convert::export::{export_with, ExportOptions};
    let d = tmp();
    let zt = zt_of_gguf(d.path());
    for bad in ["12Q", "", "1.5G", "99999999999999999999G"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_zt"))
            .args(["export", "--max-shard-size", bad])
            .arg(&zt)
            .arg(d.path().join("bad.gguf"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("byte count"),
            "{bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let small = ExportOptions {
        max_shard_size: Some(1000),
    };
    let e = export_with(&zt, &d.path().join("s.gguf"), &small).unwrap_err();
    assert!(matches!(e, ztensor::Error::Usage(_)), "{e}");
    assert!(e.to_string().contains("minimum"), "{e}");
    let st = ExportOptions {
        max_shard_size: Some(1 << 20),
    };
    let e = export_with(&zt, &d.path().join("s.safetensors"), &st).unwrap_err();
    assert!(matches!(e, ztensor::Error::Usage(_)), "{e}");
    // Nothing was written by the refused exports.
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "model.zt")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
