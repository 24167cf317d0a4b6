//! Minimal `.npy` (format 1.0) writing and strict reading of little-endian
//! C-order arrays, for `zt get` and for interop tests.

use crate::dtype::{DType, ElementType, LogicalType};
use crate::error::{Error, Result};

const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// numpy's descr for an element type, if numpy has one.
pub fn descr(etype: &ElementType) -> Option<&'static str> {
    match &etype.logical {
        None if etype.dtype == DType::BF16 => None,
        None => Some(etype.dtype.numpy_descr()),
        Some(crate::dtype::Logical::Known(LogicalType::Bool)) => Some("|b1"),
        Some(crate::dtype::Logical::Known(LogicalType::Complex64)) => Some("<c8"),
        Some(crate::dtype::Logical::Known(LogicalType::Complex128)) => Some("<c16"),
        _ => None,
    }
}

/// Serialises an array as `.npy` bytes. Types numpy lacks (bf16, fp8, f4)
/// are written as their raw storage (`<u2` / `|u1`).
pub fn encode(shape: &[u64], etype: &ElementType, data: &[u8]) -> Vec<u8> {
    let d = descr(etype).unwrap_or(match etype.dtype.width() {
        2 => "<u2",
        _ => "|u1",
    });
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    let shape_s = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{d}', 'fortran_order': False, 'shape': {shape_s}, }}");
    let unpadded = NPY_MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len());
    out.extend_from_slice(NPY_MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A parsed `.npy` array (data borrowed from the input).
#[derive(Debug)]
pub struct NpyArray<'a> {
    pub descr: String,
    pub shape: Vec<u64>,
    pub data: &'a [u8],
}

fn field<'h>(header: &'h str, key: &str) -> Result<&'h str> {
    let pat = format!("'{key}':");
    let at = header
        .find(&pat)
        .ok_or_else(|| Error::usage(format!("npy header has no {key:?}")))?;
    Ok(header[at + pat.len()..].trim_start())
}

/// Parses `.npy` bytes: versions 1-3, little-endian C order only.
pub fn decode(bytes: &[u8]) -> Result<NpyArray<'_>> {
    let bad = |m: &str| Error::usage(format!("not a supported .npy file: {m}"));
    if bytes.len() < 10 || &bytes[..6] != NPY_MAGIC {
        return Err(bad("missing magic"));
    }
    let (hlen, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(bad("unknown version")),
    };
    let end = start
        .checked_add(hlen)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| bad("header runs past the end"))?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| bad("header is not text"))?;
    let descr_s = field(header, "descr")?;
    let descr: String = descr_s
        .strip_prefix('\'')
        .and_then(|s| s.split('\'').next())
        .ok_or_else(|| bad("descr"))?
        .to_string();
    if !field(header, "fortran_order")?.starts_with("False") {
        return Err(bad("Fortran order is not supported"));
    }
    let shape_s = field(header, "shape")?;
    let inner = shape_s
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("shape"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>().map_err(|_| bad("shape entry")))
        .collect::<Result<Vec<u64>>>()?;
    Ok(NpyArray {
        descr,
        shape,
        data: &bytes[end..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let data: Vec<u8> = (0..24).collect();
        let enc = encode(&[2, 3], &ElementType::plain(DType::F32), &data);
        assert_eq!((enc.len() - data.len()) % 64, 0);
        let a = decode(&enc).unwrap();
        assert_eq!(a.descr, "<f4");
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, &data[..]);
        let s = encode(&[], &ElementType::plain(DType::U8), &[7]);
        assert_eq!(decode(&s).unwrap().shape, Vec::<u64>::new());
    }
}
