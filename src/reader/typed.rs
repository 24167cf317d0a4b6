//! Typed reads over the part access of [`Reader`]: dense tensors, row
//! slices, sparse assembly, prefetch and digest verification.

use super::{CooTensor, CsrTensor, Reader, TensorData, VerifyReport};
use crate::digest::DigestAlg;
use crate::dtype::{ElementType, Logical};
use crate::error::{Error, Result, Rule};
use crate::layout::{self, LayoutKind};
use crate::manifest::{self, Object, Part};
use crate::store::{Backend, Store};
use crate::zstd_seekable;
use rayon::prelude::*;
use std::ops::Range;
use std::path::Path;

impl Reader {
    pub(super) fn typed_etype(name: &str, role: &str, part: &Part) -> Result<ElementType> {
        if let Some(Logical::Unknown(t)) = &part.etype.logical {
            return Err(Error::Unsupported(format!(
                "{name}/{role}: logical type {t:?} is unknown; only structural access is possible"
            )));
        }
        Ok(part.etype.clone())
    }

    /// Reads a dense tensor (zero-copy for raw parts), checking the data
    /// rules of its logical type.
    pub fn read_dense(&self, name: &str) -> Result<TensorData<'_>> {
        let object = self.object(name)?;
        if LayoutKind::of(&object.layout) != LayoutKind::Dense {
            return Err(Error::usage(format!(
                "{name:?} has layout {}, not dense",
                object.layout
            )));
        }
        let (_, part) = self.part(name, "data")?;
        let etype = Reader::typed_etype(name, "data", part)?;
        let bytes = self.part_bytes(name, "data")?;
        layout::check_values(name, &etype, object.num_elements(), &bytes)?;
        Ok(TensorData {
            shape: object.shape.clone(),
            etype,
            bytes,
        })
    }

    /// Decoded byte size of a dense tensor (what [`Reader::read_dense_into`]
    /// fills).
    pub fn dense_len(&self, name: &str) -> Result<u64> {
        let object = self.object(name)?;
        if LayoutKind::of(&object.layout) != LayoutKind::Dense {
            return Err(Error::usage(format!(
                "{name:?} has layout {}, not dense",
                object.layout
            )));
        }
        Ok(self.part(name, "data")?.1.decoded_size())
    }

    /// Reads (raw: `pread`; compressed: parallel decode) a dense tensor
    /// straight into `dst`, which must be [`Reader::dense_len`] bytes, and
    /// checks its data rules. For callers that own the destination memory.
    pub fn read_dense_into(&self, name: &str, dst: &mut [u8]) -> Result<()> {
        let want = self.dense_len(name)?;
        let (object, part) = self.part(name, "data")?;
        let etype = Reader::typed_etype(name, "data", part)?;
        self.check_decodable(name, "data", part)?;
        if dst.len() as u64 != want {
            return Err(Error::usage(format!(
                "{name:?}: destination is {} bytes, the tensor is {want}",
                dst.len()
            )));
        }
        let store = self.store_of(part)?;
        match part.decoded_length {
            None => store.read_into(part.blob.offset, dst)?,
            Some(n) => {
                let stored = store.read(part.blob.offset, part.blob.length)?;
                zstd_seekable::decode_into(&stored, n, dst)?;
            }
        }
        layout::check_values(name, &etype, object.num_elements(), dst)
    }

    /// Reads rows `[rows)` of a dense tensor along its first dimension.
    /// Compressed parts decode only the frames covering those rows.
    pub fn read_rows(&self, name: &str, rows: Range<u64>) -> Result<TensorData<'_>> {
        let object = self.object(name)?;
        if LayoutKind::of(&object.layout) != LayoutKind::Dense || object.shape.is_empty() {
            return Err(Error::usage(format!(
                "{name:?}: row slicing needs a dense tensor of rank ≥ 1"
            )));
        }
        let (_, part) = self.part(name, "data")?;
        let etype = Reader::typed_etype(name, "data", part)?;
        if rows.start > rows.end || rows.end > object.shape[0] {
            return Err(Error::usage(format!(
                "rows {rows:?} outside {name:?}'s {} rows",
                object.shape[0]
            )));
        }
        let per_row = manifest::num_elements(&object.shape[1..]).unwrap_or(0);
        // Packed f4 rows of odd length do not start on byte boundaries.
        let packed_odd = per_row % 2 == 1
            && etype.logical == Some(Logical::Known(crate::dtype::LogicalType::F4E2M1));
        let row_bytes = etype
            .size_of(per_row)
            .filter(|_| !packed_odd)
            .ok_or_else(|| Error::Unsupported(format!("{name:?}: rows are not byte-aligned")))?;
        let start = rows.start * row_bytes;
        let end = rows.end * row_bytes;
        let bytes = self.part_range(name, "data", start..end)?;
        let mut shape = object.shape.clone();
        shape[0] = rows.end - rows.start;
        let n = manifest::num_elements(&shape).unwrap_or(0);
        layout::check_values(name, &etype, n, &bytes)?;
        Ok(TensorData {
            shape,
            etype,
            bytes,
        })
    }

    fn sparse_values(&self, name: &str, nnz: u64) -> Result<TensorData<'_>> {
        let (_, part) = self.part(name, "values")?;
        let etype = Reader::typed_etype(name, "values", part)?;
        let bytes = self.part_bytes(name, "values")?;
        layout::check_values(name, &etype, nnz, &bytes)?;
        Ok(TensorData {
            shape: vec![nnz],
            etype,
            bytes,
        })
    }

    /// Reads a CSR matrix and checks its data rules.
    pub fn read_csr(&self, name: &str) -> Result<CsrTensor<'_>> {
        let object = self.object(name)?;
        if LayoutKind::of(&object.layout) != LayoutKind::SparseCsr {
            return Err(Error::usage(format!(
                "{name:?} has layout {}, not CSR",
                object.layout
            )));
        }
        let idx = object.parts["indices"].etype.dtype;
        let indices = layout::read_indices(idx, &self.part_bytes(name, "indices")?)?;
        let indptr = layout::read_indices(idx, &self.part_bytes(name, "indptr")?)?;
        let shape = [object.shape[0], object.shape[1]];
        layout::check_csr(name, shape, &indptr, &indices)?;
        let values = self.sparse_values(name, indices.len() as u64)?;
        Ok(CsrTensor {
            shape,
            values,
            indices,
            indptr,
        })
    }

    /// Reads a COO tensor and checks its data rules.
    pub fn read_coo(&self, name: &str) -> Result<CooTensor<'_>> {
        let object = self.object(name)?;
        if LayoutKind::of(&object.layout) != LayoutKind::SparseCoo {
            return Err(Error::usage(format!(
                "{name:?} has layout {}, not COO",
                object.layout
            )));
        }
        let idx = object.parts["coords"].etype.dtype;
        let coords = layout::read_indices(idx, &self.part_bytes(name, "coords")?)?;
        layout::check_coo(name, &object.shape, &coords)?;
        let nnz = (coords.len() / object.shape.len()) as u64;
        let values = self.sparse_values(name, nnz)?;
        Ok(CooTensor {
            shape: object.shape.clone(),
            values,
            coords,
        })
    }

    /// Hints the kernel to read every part of an object ahead of use.
    pub fn prefetch(&self, name: &str) -> Result<()> {
        let object = self.object(name)?;
        for part in object.parts.values() {
            if let Ok(store) = self.store_of(part) {
                store.prefetch(part.blob.offset, part.blob.length);
            }
        }
        Ok(())
    }

    fn verify_part(
        &self,
        name: &str,
        object: &Object,
        role: &str,
        part: &Part,
    ) -> Result<(bool, bool, u64)> {
        let bytes = self.part_bytes(name, role)?;
        if part.etype.logical.is_some() {
            let n = match (role, LayoutKind::of(&object.layout)) {
                ("data", LayoutKind::Dense) => Some(object.num_elements()),
                _ => None,
            };
            if let Some(n) = n {
                layout::check_values(name, &part.etype, n, &bytes)?;
            }
        }
        let Some(d) = &part.digest else {
            return Ok((false, false, bytes.len() as u64));
        };
        let Some(alg) = d.alg else {
            return Ok((false, true, bytes.len() as u64));
        };
        let actual = alg.digest(&bytes);
        if actual != d.text {
            return Err(Error::Checksum {
                object: name.to_string(),
                part: role.to_string(),
                algorithm: alg.to_string(),
                expected: d.text.clone(),
                actual,
            });
        }
        Ok((true, false, bytes.len() as u64))
    }

    /// Verifies one object: decodes every part (zstd frames checked),
    /// checks every digest and the layout's data rules.
    pub fn verify_object(&self, name: &str) -> Result<VerifyReport> {
        let object = self.object(name)?;
        let mut report = VerifyReport::default();
        let results: Vec<Result<(bool, bool, u64)>> = object
            .parts
            .par_iter()
            .map(|(role, part)| self.verify_part(name, object, role, part))
            .collect();
        for r in results {
            let (checked, unknown, bytes) = r?;
            report.parts += 1;
            report.bytes += bytes;
            if checked {
                report.digests_checked += 1;
            } else if unknown {
                report.unknown_algorithm += 1;
            } else {
                report.without_digest += 1;
            }
        }
        match LayoutKind::of(&object.layout) {
            LayoutKind::SparseCsr => self.read_csr(name).map(|_| ())?,
            LayoutKind::SparseCoo => self.read_coo(name).map(|_| ())?,
            _ => {}
        }
        Ok(report)
    }

    /// Verifies every object in parallel, and every shard's size and
    /// whole-file digest.
    pub fn verify(&self) -> Result<VerifyReport> {
        let names: Vec<&String> = self.manifest.objects.keys().collect();
        let reports: Vec<Result<VerifyReport>> =
            names.par_iter().map(|n| self.verify_object(n)).collect();
        let mut total = VerifyReport::default();
        for r in reports {
            let r = r?;
            total.parts += r.parts;
            total.digests_checked += r.digests_checked;
            total.without_digest += r.without_digest;
            total.unknown_algorithm += r.unknown_algorithm;
            total.bytes += r.bytes;
        }
        for (shard, entry) in &self.manifest.shards {
            let store = self.shard_store(shard)?;
            if let Some(alg) = entry.digest.alg {
                let whole = store.read(0, store.len())?;
                let actual = alg.digest(&whole);
                if actual != entry.digest.text {
                    return Err(Error::corrupt(
                        Rule::ShardDigest,
                        format!(
                            "shard {shard:?} hashes to {actual}, the shard table says {}",
                            entry.digest.text
                        ),
                    ));
                }
            }
            total.shards_checked += 1;
        }
        Ok(total)
    }
}

/// Whole-file digest, as recorded in a shard table.
pub fn file_digest(path: impl AsRef<Path>, alg: DigestAlg) -> Result<(u64, String)> {
    let store = Store::open(path.as_ref(), Backend::Mmap)?;
    let bytes = store.read(0, store.len())?;
    Ok((store.len(), alg.digest(&bytes)))
}
