//! Layout rules: the size equations checked at open for every layout we
//! interpret (`dense`, `zt.sparse_csr/1`, `zt.sparse_coo/1`, `gguf.*/1`) and
//! the data rules checked when values are decoded (bool bytes, the f4
//! padding nibble, CSR/COO index invariants).

use crate::dtype::{DType, ElementType, Logical, LogicalType};
use crate::error::{Error, Result, Rule};
use crate::manifest::{Object, Part, DENSE, SPARSE_COO, SPARSE_CSR};

/// What kind of layout an object uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutKind {
    Dense,
    SparseCsr,
    SparseCoo,
    /// `gguf.<type>/1`; holds `<type>`.
    Gguf(String),
    /// A layout we do not interpret.
    Other(String),
}

impl LayoutKind {
    pub fn of(layout: &str) -> LayoutKind {
        match layout {
            DENSE => LayoutKind::Dense,
            SPARSE_CSR => LayoutKind::SparseCsr,
            SPARSE_COO => LayoutKind::SparseCoo,
            _ => match layout
                .strip_prefix("gguf.")
                .and_then(|rest| rest.strip_suffix("/1"))
            {
                Some(t) if !t.is_empty() => LayoutKind::Gguf(t.to_string()),
                _ => LayoutKind::Other(layout.to_string()),
            },
        }
    }
}

fn exact_parts(name: &str, object: &Object, want: &[&str], rule: Rule) -> Result<()> {
    // `want` is given sorted, like the BTreeMap's keys.
    let same =
        object.parts.len() == want.len() && object.parts.keys().zip(want).all(|(a, b)| a == b);
    if !same {
        let have: Vec<&str> = object.parts.keys().map(String::as_str).collect();
        return Err(Error::corrupt(
            rule,
            format!(
                "object {name:?} ({}) must have exactly the parts {want:?}, found {have:?}",
                object.layout
            ),
        ));
    }
    Ok(())
}

fn part<'a>(name: &str, object: &'a Object, role: &str) -> Result<&'a Part> {
    object.parts.get(role).ok_or_else(|| {
        Error::corrupt(
            Rule::SchemaMissingField,
            format!("object {name:?} has no part {role:?}"),
        )
    })
}

fn index_dtype(p: &Part) -> Option<DType> {
    match (p.etype.dtype, &p.etype.logical) {
        (d @ (DType::U32 | DType::U64), None) => Some(d),
        _ => None,
    }
}

/// Checks the metadata rules of an object's layout (sizes, part sets).
/// Unknown layouts pass: they are only readable structurally.
pub fn validate_object(name: &str, object: &Object) -> Result<()> {
    match LayoutKind::of(&object.layout) {
        LayoutKind::Dense => validate_dense(name, object),
        LayoutKind::SparseCsr => validate_csr(name, object),
        LayoutKind::SparseCoo => validate_coo(name, object),
        LayoutKind::Gguf(_) => validate_gguf(name, object),
        LayoutKind::Other(_) => Ok(()),
    }
}

fn validate_dense(name: &str, object: &Object) -> Result<()> {
    exact_parts(name, object, &["data"], Rule::DenseParts)?;
    let data = part(name, object, "data")?;
    let n = object.num_elements();
    if let Some(want) = data.etype.size_of(n) {
        if data.decoded_size() != want {
            return Err(Error::corrupt(
                Rule::DenseSize,
                format!(
                    "object {name:?}: {n} elements of {} need {want} bytes, the part holds {}",
                    data.etype,
                    data.decoded_size()
                ),
            ));
        }
    } else if !matches!(data.etype.logical, Some(Logical::Unknown(_))) {
        return Err(Error::corrupt(
            Rule::DenseSize,
            format!("object {name:?}: byte size of {n} elements overflows u64"),
        ));
    }
    Ok(())
}

fn values_size_check(name: &str, values: &Part, nnz: u64, rule: Rule) -> Result<()> {
    if let Some(want) = values.etype.size_of(nnz) {
        if values.decoded_size() != want {
            return Err(Error::corrupt(
                rule,
                format!(
                    "object {name:?}: {nnz} values of {} need {want} bytes, the part holds {}",
                    values.etype,
                    values.decoded_size()
                ),
            ));
        }
    }
    Ok(())
}

fn validate_csr(name: &str, object: &Object) -> Result<()> {
    let rule = Rule::CsrMetadata;
    if object.shape.len() != 2 {
        return Err(Error::corrupt(
            rule,
            format!(
                "object {name:?}: CSR needs rank 2, shape is {:?}",
                object.shape
            ),
        ));
    }
    exact_parts(name, object, &["indices", "indptr", "values"], rule)?;
    let indices = part(name, object, "indices")?;
    let indptr = part(name, object, "indptr")?;
    let Some(idx) = index_dtype(indices) else {
        return Err(Error::corrupt(
            rule,
            format!(
                "object {name:?}: CSR indices must be plain u32 or u64, found {}",
                indices.etype
            ),
        ));
    };
    if index_dtype(indptr) != Some(idx) {
        return Err(Error::corrupt(
            rule,
            format!(
                "object {name:?}: CSR indptr must have the indices dtype {idx}, found {}",
                indptr.etype
            ),
        ));
    }
    let w = idx.width() as u64;
    if indices.decoded_size() % w != 0 {
        return Err(Error::corrupt(
            rule,
            format!(
                "object {name:?}: indices size {} is not a multiple of {w}",
                indices.decoded_size()
            ),
        ));
    }
    let nnz = indices.decoded_size() / w;
    let want_ptr = object.shape[0]
        .checked_add(1)
        .and_then(|r| r.checked_mul(w));
    if want_ptr != Some(indptr.decoded_size()) {
        return Err(Error::corrupt(
            rule,
            format!(
                "object {name:?}: indptr must hold {} + 1 entries, it holds {} bytes",
                object.shape[0],
                indptr.decoded_size()
            ),
        ));
    }
    values_size_check(name, part(name, object, "values")?, nnz, rule)
}

fn validate_coo(name: &str, object: &Object) -> Result<()> {
    let rule = Rule::CooMetadata;
    if object.shape.is_empty() {
        return Err(Error::corrupt(
            rule,
            format!("object {name:?}: COO needs rank ≥ 1"),
        ));
    }
    exact_parts(name, object, &["coords", "values"], rule)?;
    let coords = part(name, object, "coords")?;
    let Some(idx) = index_dtype(coords) else {
        return Err(Error::corrupt(
            rule,
            format!(
                "object {name:?}: COO coords must be plain u32 or u64, found {}",
                coords.etype
            ),
        ));
    };
    let per = (idx.width() as u64).saturating_mul(object.shape.len() as u64);
    if coords.decoded_size() % per != 0 {
        return Err(Error::corrupt(
            rule,
            format!(
                "object {name:?}: coords size {} is not a multiple of ndim × width = {per}",
                coords.decoded_size()
            ),
        ));
    }
    let nnz = coords.decoded_size() / per;
    values_size_check(name, part(name, object, "values")?, nnz, rule)
}

/// `elems_per_block` and `block_bytes` of a `gguf.*` object.
pub fn gguf_geometry(name: &str, object: &Object) -> Result<(u64, u64)> {
    let get = |key: &str| -> Result<u64> {
        match object.attribute(key).and_then(|v| v.as_u64()) {
            Some(v) if v >= 1 => Ok(v),
            _ => Err(Error::corrupt(
                Rule::GgufMetadata,
                format!(
                    "object {name:?}: {} needs attribute {key:?} ≥ 1",
                    object.layout
                ),
            )),
        }
    };
    Ok((get("elems_per_block")?, get("block_bytes")?))
}

fn validate_gguf(name: &str, object: &Object) -> Result<()> {
    let rule = Rule::GgufMetadata;
    exact_parts(name, object, &["data"], rule)?;
    let data = part(name, object, "data")?;
    if data.etype != ElementType::plain(DType::U8) {
        return Err(Error::corrupt(
            rule,
            format!(
                "object {name:?}: gguf data must be plain u8, found {}",
                data.etype
            ),
        ));
    }
    let (epb, bb) = gguf_geometry(name, object)?;
    let n = object.num_elements();
    if !n.is_multiple_of(epb) {
        return Err(Error::corrupt(
            rule,
            format!("object {name:?}: {n} elements are not a whole number of {epb}-element blocks"),
        ));
    }
    let want = (n / epb).checked_mul(bb);
    if want != Some(data.decoded_size()) {
        return Err(Error::corrupt(
            rule,
            format!(
                "object {name:?}: {} blocks of {bb} bytes do not match the part's {} bytes",
                n / epb,
                data.decoded_size()
            ),
        ));
    }
    Ok(())
}

/// Data rules of element values: bool bytes are 0/1; an odd f4 count has
/// a zero padding nibble. `n` is the logical element count.
pub fn check_values(what: &str, etype: &ElementType, n: u64, bytes: &[u8]) -> Result<()> {
    match &etype.logical {
        Some(Logical::Known(LogicalType::Bool)) => {
            if let Some(i) = bytes.iter().position(|&b| b > 1) {
                return Err(Error::corrupt(
                    Rule::BoolByte,
                    format!("{what}: bool element {i} is {:#04x}, not 0 or 1", bytes[i]),
                ));
            }
        }
        Some(Logical::Known(LogicalType::F4E2M1)) if n % 2 == 1 => {
            if let Some(&last) = bytes.last() {
                if last & 0xf0 != 0 {
                    return Err(Error::corrupt(
                        Rule::F4Nibble,
                        format!(
                            "{what}: the padding nibble of the last f4 byte is {:#x}",
                            last >> 4
                        ),
                    ));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Reads little-endian u32 or u64 indices into u64s.
pub fn read_indices(dtype: DType, bytes: &[u8]) -> Result<Vec<u64>> {
    let w = dtype.width();
    let mut out = Vec::new();
    out.try_reserve_exact(bytes.len() / w)
        .map_err(|_| Error::usage("index array too large to allocate"))?;
    match dtype {
        DType::U32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u64),
        ),
        DType::U64 => out.extend(bytes.chunks_exact(8).map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_le_bytes(a)
        })),
        other => {
            return Err(Error::usage(format!(
                "indices must be u32 or u64, not {other}"
            )));
        }
    }
    Ok(out)
}

/// Checks CSR data rules over decoded `indptr` and `indices`.
pub fn check_csr(name: &str, shape: [u64; 2], indptr: &[u64], indices: &[u64]) -> Result<()> {
    let err = |d: String| Error::corrupt(Rule::CsrData, format!("object {name:?}: {d}"));
    let nnz = indices.len() as u64;
    if indptr.first() != Some(&0) {
        return Err(err("indptr[0] is not 0".into()));
    }
    if indptr.last() != Some(&nnz) {
        return Err(err(format!(
            "indptr[last] is {:?}, nnz is {nnz}",
            indptr.last()
        )));
    }
    for (row, w) in indptr.windows(2).enumerate() {
        if w[1] < w[0] {
            return Err(err(format!("indptr decreases at row {row}")));
        }
        // Bounded by nnz: indptr is non-decreasing up to here and ends at nnz.
        let (a, b) = (w[0] as usize, w[1].min(nnz) as usize);
        let cols = &indices[a.min(b)..b];
        for (i, &c) in cols.iter().enumerate() {
            if c >= shape[1] {
                return Err(err(format!(
                    "row {row}: column {c} is ≥ {} columns",
                    shape[1]
                )));
            }
            if i > 0 && cols[i - 1] >= c {
                return Err(err(format!(
                    "row {row}: column indices are not strictly increasing"
                )));
            }
        }
    }
    Ok(())
}

/// Checks COO data rules: coordinates in range and unique.
/// `coords` is structure-of-arrays, `ndim × nnz`.
pub fn check_coo(name: &str, shape: &[u64], coords: &[u64]) -> Result<()> {
    let err = |d: String| Error::corrupt(Rule::CooData, format!("object {name:?}: {d}"));
    let ndim = shape.len();
    if ndim == 0 {
        return Err(err("COO needs rank ≥ 1".into()));
    }
    let nnz = coords.len() / ndim;
    let mut linear = Vec::new();
    linear
        .try_reserve_exact(nnz)
        .map_err(|_| Error::usage("coordinate array too large to allocate"))?;
    for i in 0..nnz {
        let mut lin = 0u64;
        for (d, &extent) in shape.iter().enumerate() {
            let c = coords[d * nnz + i];
            if c >= extent {
                return Err(err(format!(
                    "element {i}: coordinate {c} in dimension {d} is ≥ {extent}"
                )));
            }
            // Fits: the shape's product was checked not to overflow.
            lin = lin * extent + c;
        }
        linear.push(lin);
    }
    linear.sort_unstable();
    if linear.windows(2).any(|w| w[0] == w[1]) {
        return Err(err("two elements have the same coordinates".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_ids() {
        assert_eq!(LayoutKind::of("dense"), LayoutKind::Dense);
        assert_eq!(
            LayoutKind::of("gguf.q4_k/1"),
            LayoutKind::Gguf("q4_k".into())
        );
        assert_eq!(
            LayoutKind::of("gguf./1"),
            LayoutKind::Other("gguf./1".into())
        );
        assert_eq!(
            LayoutKind::of("pie.paged_kv/1"),
            LayoutKind::Other("pie.paged_kv/1".into())
        );
    }

    #[test]
    fn csr_data_rules() {
        assert!(check_csr("m", [2, 3], &[0, 1, 3], &[2, 0, 1]).is_ok());
        let rule = |r: Result<()>| r.unwrap_err().rule();
        assert_eq!(
            rule(check_csr("m", [2, 3], &[1, 1, 3], &[2, 0, 1])),
            Some(Rule::CsrData)
        );
        assert_eq!(
            rule(check_csr("m", [2, 3], &[0, 2, 1], &[2, 0, 1])),
            Some(Rule::CsrData)
        );
        assert_eq!(
            rule(check_csr("m", [2, 3], &[0, 1, 3], &[2, 1, 0])),
            Some(Rule::CsrData)
        );
        assert_eq!(
            rule(check_csr("m", [2, 3], &[0, 1, 3], &[2, 0, 3])),
            Some(Rule::CsrData)
        );
        assert_eq!(
            rule(check_csr("m", [2, 3], &[0, 1, 2], &[2, 0, 1])),
            Some(Rule::CsrData)
        );
        // A huge indptr entry cannot index out of bounds.
        assert!(check_csr("m", [2, 3], &[0, u64::MAX, 3], &[0, 1, 2]).is_err());
    }

    #[test]
    fn coo_data_rules() {
        assert!(check_coo("t", &[2, 3], &[0, 1, 2, 0]).is_ok());
        assert_eq!(
            check_coo("t", &[2, 3], &[0, 0, 2, 2]).unwrap_err().rule(),
            Some(Rule::CooData)
        );
        assert_eq!(
            check_coo("t", &[2, 3], &[0, 2, 2, 0]).unwrap_err().rule(),
            Some(Rule::CooData)
        );
    }

    #[test]
    fn value_rules() {
        let b = ElementType::logical(LogicalType::Bool);
        assert!(check_values("x", &b, 3, &[0, 1, 0]).is_ok());
        assert_eq!(
            check_values("x", &b, 3, &[0, 2, 0]).unwrap_err().rule(),
            Some(Rule::BoolByte)
        );
        let f4 = ElementType::logical(LogicalType::F4E2M1);
        assert!(check_values("x", &f4, 3, &[0xff, 0x0f]).is_ok());
        assert_eq!(
            check_values("x", &f4, 3, &[0xff, 0x1f]).unwrap_err().rule(),
            Some(Rule::F4Nibble)
        );
        assert!(check_values("x", &f4, 4, &[0xff, 0xff]).is_ok());
    }
}
