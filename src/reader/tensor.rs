//! What typed reads return: dense [`TensorData`], [`CsrTensor`],
//! [`CooTensor`], and the [`VerifyReport`] of a digest check.

use crate::dtype::ElementType;
use crate::element::{self, Element};
use crate::error::{Error, Result};
use std::borrow::Cow;

/// A decoded dense tensor (or the values of a sparse one).
#[derive(Debug, Clone)]
pub struct TensorData<'a> {
    pub shape: Vec<u64>,
    pub etype: ElementType,
    /// Borrowed from the map for raw parts; owned after decoding.
    pub bytes: Cow<'a, [u8]>,
}

impl<'a> TensorData<'a> {
    /// True when the bytes are borrowed from the file (no copy was made).
    pub fn is_zero_copy(&self) -> bool {
        matches!(self.bytes, Cow::Borrowed(_))
    }

    fn check_type<T: Element>(&self) -> Result<()> {
        if self.etype.dtype != T::DTYPE || self.etype.logical.is_some() {
            return Err(Error::usage(format!(
                "tensor has type {}, asked for {}",
                self.etype,
                T::DTYPE
            )));
        }
        Ok(())
    }

    /// A typed zero-copy view; fails if the element type differs or the
    /// bytes are not aligned for `T` (use [`TensorData::to_vec`] then).
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        self.check_type::<T>()?;
        bytemuck::try_cast_slice(&self.bytes)
            .map_err(|e| Error::usage(format!("cannot view the bytes as {}: {e}", T::DTYPE)))
    }

    /// A typed copy.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        self.check_type::<T>()?;
        Ok(element::to_vec(&self.bytes))
    }

    pub fn into_owned(self) -> TensorData<'static> {
        TensorData {
            shape: self.shape,
            etype: self.etype,
            bytes: Cow::Owned(self.bytes.into_owned()),
        }
    }
}

/// A CSR matrix read from a `zt.sparse_csr/1` object, invariants checked.
#[derive(Debug, Clone)]
pub struct CsrTensor<'a> {
    pub shape: [u64; 2],
    pub values: TensorData<'a>,
    pub indices: Vec<u64>,
    pub indptr: Vec<u64>,
}

/// A COO tensor read from a `zt.sparse_coo/1` object, invariants checked.
/// `coords` is structure-of-arrays: `coords[d * nnz + i]`.
#[derive(Debug, Clone)]
pub struct CooTensor<'a> {
    pub shape: Vec<u64>,
    pub values: TensorData<'a>,
    pub coords: Vec<u64>,
}

impl CooTensor<'_> {
    pub fn nnz(&self) -> usize {
        self.coords.len() / self.shape.len().max(1)
    }
}

impl CsrTensor<'_> {
    /// Converts to an `sprs` matrix (values must be of type `T`).
    pub fn to_sprs<T: Element>(&self) -> Result<sprs::CsMat<T>> {
        let rows = usize::try_from(self.shape[0]).map_err(|_| Error::usage("too many rows"))?;
        let cols = usize::try_from(self.shape[1]).map_err(|_| Error::usage("too many columns"))?;
        let to_usize = |v: &[u64]| v.iter().map(|&x| x as usize).collect::<Vec<_>>();
        sprs::CsMat::try_new(
            (rows, cols),
            to_usize(&self.indptr),
            to_usize(&self.indices),
            self.values.to_vec::<T>()?,
        )
        .map_err(|(_, _, _, e)| Error::usage(format!("sprs refused the matrix: {e}")))
    }
}

impl CooTensor<'_> {
    /// Converts a rank-2 COO tensor to an `sprs` triplet matrix.
    pub fn to_sprs<T: Element>(&self) -> Result<sprs::TriMat<T>> {
        if self.shape.len() != 2 {
            return Err(Error::usage("sprs triplet matrices are rank 2"));
        }
        let nnz = self.nnz();
        let rows: Vec<usize> = self.coords[..nnz].iter().map(|&x| x as usize).collect();
        let cols: Vec<usize> = self.coords[nnz..].iter().map(|&x| x as usize).collect();
        Ok(sprs::TriMat::from_triplets(
            (self.shape[0] as usize, self.shape[1] as usize),
            rows,
            cols,
            self.values.to_vec::<T>()?,
        ))
    }
}

/// What `verify` checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Parts read (and decoded when encoded).
    pub parts: usize,
    /// Parts whose digest was recomputed and matched.
    pub digests_checked: usize,
    /// Parts that carry no digest.
    pub without_digest: usize,
    /// Parts whose digest algorithm we do not know.
    pub unknown_algorithm: usize,
    /// Decoded bytes covered.
    pub bytes: u64,
    /// Shards whose size and whole-file digest were checked.
    pub shards_checked: usize,
}
