//! `.npy` writing (format 1.0) and strict reading of little-endian C-order
//! arrays (formats 1-3): the header's dict literal is parsed, never
//! evaluated, and no pickle is ever run.

use crate::dtype::{DType, ElementType, LogicalType};
use crate::error::{Error, Result};
use crate::manifest::MAX_RANK;

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
    pub etype: ElementType,
    pub shape: Vec<u64>,
    pub data: &'a [u8],
}

/// The parsed header of a `.npy` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    pub etype: ElementType,
    pub shape: Vec<u64>,
    /// Offset of the array data from the start of the `.npy` bytes.
    pub data_offset: u64,
    /// Exact byte length of the array data.
    pub data_len: u64,
}

/// Longest header we accept (numpy's own default limit is 10,000 bytes).
pub const MAX_HEADER: usize = 1 << 16;

fn err(rule: &'static str, offset: u64, detail: impl Into<String>) -> Error {
    Error::Foreign {
        format: "npy",
        rule,
        offset: Some(offset),
        detail: detail.into(),
    }
}

/// Bytes needed from the start of a `.npy` file to parse its header, from
/// its first 12 bytes (or fewer for a file that short).
pub fn header_span(first: &[u8]) -> Result<u64> {
    if first.len() < 10 || &first[..6] != NPY_MAGIC {
        return Err(err("npy-magic", 0, "missing \\x93NUMPY magic"));
    }
    match first[6] {
        1 => Ok(10 + u16::from_le_bytes([first[8], first[9]]) as u64),
        2 | 3 if first.len() >= 12 => {
            Ok(12 + u32::from_le_bytes([first[8], first[9], first[10], first[11]]) as u64)
        }
        2 | 3 => Err(err("npy-header", 6, "header length cut short")),
        v => Err(err(
            "npy-version",
            6,
            format!("format version {v} is not 1, 2 or 3"),
        )),
    }
}

/// The element type for a numpy `descr`; refuses what we cannot read as
/// raw little-endian C-order data, naming why.
fn element_type(descr: &str) -> Result<ElementType> {
    // The byte-order mark is the first character (which may be any
    // character in a hostile header, so split at its real length).
    let (order, code) = descr.split_at(descr.chars().next().map_or(0, char::len_utf8));
    let plain = |d| Ok(ElementType::plain(d));
    let one_byte = order == "|" || order == "<";
    match (order, code) {
        ("<", "f8") => plain(DType::F64),
        ("<", "f4") => plain(DType::F32),
        ("<", "f2") => plain(DType::F16),
        ("<", "i8") => plain(DType::I64),
        ("<", "i4") => plain(DType::I32),
        ("<", "i2") => plain(DType::I16),
        ("<", "u8") => plain(DType::U64),
        ("<", "u4") => plain(DType::U32),
        ("<", "u2") => plain(DType::U16),
        (_, "i1") if one_byte => plain(DType::I8),
        (_, "u1") if one_byte => plain(DType::U8),
        (_, "b1") if one_byte => Ok(ElementType::logical(LogicalType::Bool)),
        ("<", "c8") => Ok(ElementType::logical(LogicalType::Complex64)),
        ("<", "c16") => Ok(ElementType::logical(LogicalType::Complex128)),
        (_, "O") | (_, "O8") => Err(err(
            "npy-descr",
            0,
            "object arrays need pickle, which is never executed here",
        )),
        (">", _) => Err(err(
            "npy-descr",
            0,
            format!("big-endian dtype {descr:?} is not supported; save it little-endian"),
        )),
        _ => Err(err(
            "npy-descr",
            0,
            format!("dtype {descr:?} is not supported"),
        )),
    }
}

/// A tiny scanner for the Python dict literal of a `.npy` header.
struct Lit<'a> {
    s: &'a [u8],
    pos: usize,
    base: u64,
}

impl<'a> Lit<'a> {
    fn fail(&self, what: impl Into<String>) -> Error {
        err("npy-header", self.base + self.pos as u64, what)
    }

    fn ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.fail(format!("expected {:?}", c as char)))
        }
    }

    fn string(&mut self) -> Result<&'a str> {
        let q = self.peek().filter(|&q| q == b'\'' || q == b'"');
        let q = q.ok_or_else(|| self.fail("expected a quoted string"))?;
        let start = self.pos + 1;
        let len = self.s[start..]
            .iter()
            .position(|&c| c == q || c == b'\\')
            .ok_or_else(|| self.fail("unterminated string"))?;
        if self.s[start + len] != q {
            return Err(self.fail("escapes are not supported in header strings"));
        }
        self.pos = start + len + 1;
        std::str::from_utf8(&self.s[start..start + len])
            .map_err(|_| self.fail("string is not UTF-8"))
    }

    fn word(&mut self) -> &'a [u8] {
        self.ws();
        let start = self.pos;
        while self.pos < self.s.len()
            && (self.s[self.pos].is_ascii_alphanumeric() || self.s[self.pos] == b'_')
        {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    fn shape(&mut self) -> Result<Vec<u64>> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            if self.eat(b')') {
                return Ok(dims);
            }
            let w = self.word();
            let digits = w.strip_suffix(b"L").unwrap_or(w);
            let text = std::str::from_utf8(digits).unwrap_or("");
            let d = text
                .parse::<u64>()
                .ok()
                .filter(|_| !text.is_empty() && text.bytes().all(|c| c.is_ascii_digit()))
                .ok_or_else(|| self.fail("shape entries must be non-negative integers"))?;
            if dims.len() == MAX_RANK {
                return Err(err(
                    "npy-shape",
                    self.base,
                    format!("more than {MAX_RANK} dimensions"),
                ));
            }
            dims.push(d);
            if !self.eat(b',') {
                self.expect(b')')?;
                if dims.len() == 1 {
                    return Err(self.fail("a one-element shape needs a trailing comma"));
                }
                return Ok(dims);
            }
        }
    }
}

/// Parses a `.npy` header from the file's first bytes (at least
/// [`header_span`] of them): versions 1-3, little-endian C order only,
/// every size checked.
pub fn parse_header(bytes: &[u8], total_len: u64) -> Result<NpyHeader> {
    let span = header_span(bytes)?;
    let start: usize = if bytes[6] == 1 { 10 } else { 12 };
    if span - start as u64 > MAX_HEADER as u64 {
        return Err(err(
            "npy-header",
            8,
            format!(
                "header of {} bytes exceeds {MAX_HEADER}",
                span - start as u64
            ),
        ));
    }
    if span > bytes.len() as u64 || span > total_len {
        return Err(err(
            "npy-header",
            8,
            format!("header of {span} bytes runs past the {total_len}-byte file"),
        ));
    }
    let mut lit = Lit {
        s: &bytes[start..span as usize],
        pos: 0,
        base: start as u64,
    };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    lit.expect(b'{')?;
    while !lit.eat(b'}') {
        let key = lit.string()?;
        lit.expect(b':')?;
        let at = lit.base + lit.pos as u64;
        let dup = match key {
            "descr" => {
                if lit.peek() == Some(b'[') {
                    return Err(err("npy-descr", at, "structured dtypes are not supported"));
                }
                descr.replace(lit.string()?).is_some()
            }
            "fortran_order" => {
                let v = match lit.word() {
                    b"True" => true,
                    b"False" => false,
                    _ => return Err(lit.fail("fortran_order must be True or False")),
                };
                fortran.replace(v).is_some()
            }
            "shape" => shape.replace(lit.shape()?).is_some(),
            other => {
                return Err(err(
                    "npy-header",
                    at,
                    format!("unknown header key {other:?}"),
                ))
            }
        };
        if dup {
            return Err(err("npy-header", at, format!("key {key:?} appears twice")));
        }
        if !lit.eat(b',') {
            lit.expect(b'}')?;
            break;
        }
    }
    if lit.s[lit.pos..].iter().any(|c| !c.is_ascii_whitespace()) {
        return Err(lit.fail("bytes after the header dict"));
    }
    let descr = descr.ok_or_else(|| err("npy-header", 8, "header has no 'descr'"))?;
    let etype = element_type(descr).map_err(|e| match e {
        Error::Foreign {
            format,
            rule,
            detail,
            ..
        } => Error::Foreign {
            format,
            rule,
            offset: Some(start as u64),
            detail,
        },
        other => other,
    })?;
    if fortran.ok_or_else(|| err("npy-header", 8, "header has no 'fortran_order'"))? {
        return Err(err(
            "npy-fortran",
            start as u64,
            "Fortran-order arrays are not supported; save a C-order copy",
        ));
    }
    let shape = shape.ok_or_else(|| err("npy-header", 8, "header has no 'shape'"))?;
    let data_len = shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .and_then(|n| etype.size_of(n))
        .ok_or_else(|| {
            err(
                "npy-shape",
                start as u64,
                format!("shape {shape:?} overflows a 64-bit byte count"),
            )
        })?;
    let have = total_len - span;
    if have != data_len {
        return Err(err(
            "npy-size",
            span,
            format!("shape {shape:?} of {etype} needs {data_len} data bytes, the file has {have}"),
        ));
    }
    Ok(NpyHeader {
        etype,
        shape,
        data_offset: span,
        data_len,
    })
}

/// Parses whole `.npy` bytes.
pub fn decode(bytes: &[u8]) -> Result<NpyArray<'_>> {
    let h = parse_header(bytes, bytes.len() as u64)?;
    Ok(NpyArray {
        etype: h.etype,
        shape: h.shape,
        data: &bytes[h.data_offset as usize..],
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
        assert_eq!(a.etype, ElementType::plain(DType::F32));
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, &data[..]);
        let s = encode(&[], &ElementType::plain(DType::U8), &[7]);
        assert_eq!(decode(&s).unwrap().shape, Vec::<u64>::new());
    }

    #[test]
    fn multibyte_descr_is_refused_not_a_panic() {
        // Found by the npz fuzz target: a descr starting with 'ĕ'.
        let mut bytes = encode(&[1], &ElementType::plain(DType::U8), &[7]);
        let at = bytes.windows(3).position(|w| w == b"|u1").unwrap();
        bytes.splice(at..at + 3, "ĕ8".bytes());
        assert!(matches!(
            decode(&bytes),
            Err(Error::Foreign {
                rule: "npy-descr",
                ..
            })
        ));
    }
}
