//! Entry points shared by the cargo-fuzz targets and the regression tests
//! that replay their findings. Each must return normally on any input.

use crate::formats::Format;
use crate::reader::{OpenOptions, Reader};
use crate::writer::{PartOptions, WriteOptions, Writer};
use crate::{cbor, zstd_seekable, DType, ElementType, Manifest, ZstdOptions};

/// Strict CBOR decode, then manifest schema; re-encoding a decoded value
/// must reproduce the input exactly (the codec is canonical).
pub fn manifest_decode(data: &[u8]) {
    if let Ok(v) = cbor::decode(data) {
        let again = cbor::encode(&v).expect("a decoded value re-encodes");
        assert_eq!(again, data, "decode accepted a non-canonical encoding");
    }
    let _ = Manifest::decode(data, 0);
}

/// Open from memory and read every object every way we can.
pub fn open_and_read(data: &[u8]) {
    let options = OpenOptions::default().max_decoded_bytes(64 << 20);
    let Ok(r) = Reader::from_bytes_with(data.to_vec(), options) else {
        return;
    };
    let names: Vec<String> = r.names().map(str::to_string).collect();
    for name in names {
        let _ = r.read_dense(&name);
        let _ = r.read_rows(&name, 0..1);
        let _ = r.read_csr(&name);
        let _ = r.read_coo(&name);
        let _ = r.verify_object(&name);
        if let Ok(o) = r.object(&name) {
            for role in o.parts.keys() {
                let _ = r.stored_bytes(&name, role);
                let _ = r.part_range(&name, role, 0..1);
            }
        }
    }
    let _ = r.verify();
}

/// Decode a zstd-seekable part with a decoded length taken from the input.
pub fn zstd_decode(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as u64 % (8 << 20);
    let body = &data[4..];
    if let Ok(out) = zstd_seekable::decode(body, len) {
        assert_eq!(out.len() as u64, len);
        if len > 2 {
            let part = zstd_seekable::decode_range(body, len, 1, len - 1)
                .expect("range of a decodable part");
            assert_eq!(part, out[1..len as usize - 1]);
        }
    }
}

/// Write the input as tensors with options chosen by its first bytes,
/// read them back and require equality.
pub fn write_read_round_trip(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let dtype = DType::ALL[data[0] as usize % DType::ALL.len()];
    let compress = data[1] & 1 == 1;
    let digest = crate::DigestAlg::ALL[(data[1] >> 1) as usize % 4];
    let body = &data[2..];
    let n = body.len() / dtype.width();
    let bytes = &body[..n * dtype.width()];
    let dir = std::env::temp_dir().join(format!("zt-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("rt.zt");
    let opts = WriteOptions {
        digest: Some(digest),
        durable: false,
        ..WriteOptions::default()
    };
    let mut w = Writer::create_with(&path, opts).expect("create");
    let part = PartOptions {
        etype: ElementType::plain(dtype),
        compression: compress.then_some(ZstdOptions {
            level: 1,
            frame_size: 97,
        }),
        digest: Some(digest),
    };
    w.add_bytes_with("t", &[n as u64], bytes, &part, None)
        .expect("add");
    w.finish().expect("finish");
    let r = Reader::open(&path).expect("open what we wrote");
    assert_eq!(r.read_dense("t").expect("read").bytes.as_ref(), bytes);
    r.verify().expect("verify what we wrote");
    let _ = std::fs::remove_file(&path);
}

/// Parse a GGUF file and touch every tensor's byte range.
pub fn gguf_parse(data: &[u8]) {
    if let Ok(g) = crate::formats::gguf::GgufFile::parse(data) {
        for t in &g.tensors {
            let bytes = g
                .tensor_bytes(data, t)
                .expect("validated offsets are in bounds");
            assert_eq!(bytes.len() as u64, t.n_bytes);
        }
    }
}

/// Parse a safetensors file and touch every tensor's byte range.
pub fn safetensors_parse(data: &[u8]) {
    if let Ok(st) = crate::formats::safetensors::SafetensorsFile::parse(data) {
        for t in &st.tensors {
            st.tensor_bytes(data, t)
                .expect("validated offsets are in bounds");
        }
    }
}

/// Open an npz/npy archive (or anything else) and read every member.
pub fn npz_open(data: &[u8]) {
    let detected = crate::formats::detect(&data[..data.len().min(64)]);
    if matches!(detected, Format::Npz | Format::Npy) {
        open_and_read(data);
    }
}

/// Open a ztensor 1.x / 0.1 file and read every object.
pub fn legacy_open(data: &[u8]) {
    let detected = crate::formats::detect(&data[..data.len().min(64)]);
    if matches!(detected, Format::ZtV1 | Format::ZtV01) {
        open_and_read(data);
    }
}

/// Read an engine snapshot's description and state (no engine needed).
#[cfg(feature = "engine")]
pub fn snapshot_read(data: &[u8]) {
    use crate::engine::snapshot;
    if let Ok(r) = snapshot::from_bytes(data.to_vec()) {
        if let Ok(info) = snapshot::read_info(&r) {
            let _ = snapshot::read_state(&r, &info);
        }
    }
}
