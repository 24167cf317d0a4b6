//! Reading `.zt` files: open (with every structural and schema check up
//! front), zero-copy part access, decoding, slicing, sparse assembly and
//! digest verification.

use crate::cbor::Value;
use crate::container::{self, Footer, FOOTER_LEN};
use crate::digest::DigestAlg;
use crate::dtype::{ElementType, Logical};
use crate::element::{self, Element};
use crate::error::{Error, Result, Rule};
use crate::formats::{self, Format};
use crate::layout::{self, LayoutKind};
use crate::manifest::{self, Manifest, Object, Part, ZSTD_SEEKABLE};
use crate::store::{Backend, Store};
use crate::zstd_seekable;
use rayon::prelude::*;
use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Default cap on the bytes one decode call may allocate (64 GiB).
pub const DEFAULT_MAX_DECODED: u64 = 64 << 30;

/// Options for opening a file.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub backend: Backend,
    /// Manifests larger than this are refused before they are read.
    pub max_manifest_bytes: u64,
    /// Decoding a part larger than this is refused before allocating.
    pub max_decoded_bytes: u64,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            backend: Backend::Mmap,
            max_manifest_bytes: container::MAX_MANIFEST_LEN,
            max_decoded_bytes: DEFAULT_MAX_DECODED,
        }
    }
}

impl OpenOptions {
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }
    pub fn max_manifest_bytes(mut self, n: u64) -> Self {
        self.max_manifest_bytes = n;
        self
    }
    pub fn max_decoded_bytes(mut self, n: u64) -> Self {
        self.max_decoded_bytes = n;
        self
    }
    pub fn open(&self, path: impl AsRef<Path>) -> Result<Reader> {
        let path = path.as_ref();
        if let Some(set) = formats::sharded::open_set(path, self)? {
            return Ok(set);
        }
        let store = Store::open(path, self.backend)?;
        Reader::from_store(store, Some(path.to_path_buf()), self.clone())
    }
}

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

/// An open tensor file: a `.zt` container, or a GGUF, safetensors, npy,
/// npz or legacy ztensor file seen through an equivalent manifest.
pub struct Reader {
    store: Store,
    path: Option<PathBuf>,
    format: Format,
    /// Size of the file opened (the decoded image may differ).
    source_len: u64,
    /// `None` for files of other formats, read through a synthesized manifest.
    footer: Option<Footer>,
    manifest: Manifest,
    options: OpenOptions,
    shards: HashMap<String, OnceLock<Arc<Store>>>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("path", &self.path)
            .field("objects", &self.manifest.objects.len())
            .finish()
    }
}

/// Reads and checks a footer from a store; `None` for a data shard.
fn read_footer(store: &Store) -> Result<Footer> {
    let len = store.len();
    let head = store.read(0, len.min(8))?;
    container::check_header(&head, len)?;
    let raw = store.read(len - FOOTER_LEN, FOOTER_LEN)?;
    let mut buf = [0u8; 40];
    buf.copy_from_slice(&raw);
    Footer::parse(&buf, len)
}

impl Reader {
    /// Opens a file by memory map with default limits.
    pub fn open(path: impl AsRef<Path>) -> Result<Reader> {
        OpenOptions::default().open(path)
    }

    /// Opens a file held in memory.
    pub fn from_bytes(bytes: impl Into<Arc<[u8]>>) -> Result<Reader> {
        Reader::from_bytes_with(bytes, OpenOptions::default())
    }

    pub fn from_bytes_with(bytes: impl Into<Arc<[u8]>>, options: OpenOptions) -> Result<Reader> {
        Reader::from_store(Store::Memory(bytes.into()), None, options)
    }

    fn from_store(store: Store, path: Option<PathBuf>, options: OpenOptions) -> Result<Reader> {
        let head = store.read(0, store.len().min(64))?;
        let format = formats::detect(&head);
        if format != Format::Zt && format != Format::Unknown {
            drop(head);
            let foreign = formats::open_foreign(format, &store, &options)?;
            let source_len = store.len();
            let store = match foreign.image {
                Some(image) => Store::Memory(Arc::from(image)),
                None => store,
            };
            for (name, object) in &foreign.manifest.objects {
                for (role, part) in &object.parts {
                    if part
                        .blob
                        .offset
                        .checked_add(part.blob.length)
                        .is_none_or(|e| e > store.len())
                    {
                        return Err(Error::usage(format!(
                            "{name}/{role}: synthesized part lies outside the file"
                        )));
                    }
                }
                layout::validate_object(name, object)?;
            }
            return Ok(Reader {
                store,
                path,
                format,
                source_len,
                footer: None,
                manifest: foreign.manifest,
                options,
                shards: HashMap::new(),
            });
        }
        drop(head);
        let footer = read_footer(&store)?;
        let len = store.len();
        let manifest = match footer.manifest_blob(len, options.max_manifest_bytes)? {
            None => Manifest::default(),
            Some(blob) => {
                let bytes = store.read(blob.offset, blob.length)?;
                let hash = xxhash_rust::xxh3::xxh3_64(&bytes);
                if hash != footer.manifest_hash {
                    return Err(Error::corrupt_at(
                        Rule::ManifestHashMismatch,
                        len - 24,
                        format!(
                            "footer says the manifest hashes to {:016x}, it hashes to {hash:016x}",
                            footer.manifest_hash
                        ),
                    ));
                }
                let manifest = Manifest::decode(&bytes, blob.offset)?;
                container::check_manifest_blobs(&manifest, blob, len)?;
                for (name, object) in &manifest.objects {
                    layout::validate_object(name, object)?;
                }
                manifest
            }
        };
        let shards = manifest
            .shards
            .keys()
            .map(|k| (k.clone(), OnceLock::new()))
            .collect();
        Ok(Reader {
            store,
            path,
            format: Format::Zt,
            source_len: len,
            footer: Some(footer),
            manifest,
            options,
            shards,
        })
    }

    /// A multi-file model of another format (safetensors index, split
    /// GGUF) as one reader: every part names the shard file it lives in,
    /// and `shards` holds those files already opened.
    pub(crate) fn from_set(
        path: PathBuf,
        format: Format,
        manifest: Manifest,
        shards: Vec<(String, Store)>,
        options: OpenOptions,
    ) -> Result<Reader> {
        let lens: HashMap<&str, u64> = shards.iter().map(|(n, s)| (n.as_str(), s.len())).collect();
        for (name, object) in &manifest.objects {
            for (role, part) in &object.parts {
                let len = part.shard.as_deref().and_then(|s| lens.get(s)).copied();
                let len = len.ok_or_else(|| {
                    Error::usage(format!("{name}/{role}: synthesized part names no shard"))
                })?;
                if part.blob.end().is_none_or(|e| e > len) {
                    return Err(Error::usage(format!(
                        "{name}/{role}: synthesized part lies outside its shard"
                    )));
                }
            }
            layout::validate_object(name, object)?;
        }
        let source_len = lens.values().sum();
        let shards = shards
            .into_iter()
            .map(|(n, s)| (n, OnceLock::from(Arc::new(s))))
            .collect();
        Ok(Reader {
            store: Store::Memory(Arc::from(Vec::new())),
            path: Some(path),
            format,
            source_len,
            footer: None,
            manifest,
            options,
            shards,
        })
    }

    /// True for a manifest-less data shard.
    pub fn is_data_shard(&self) -> bool {
        self.footer.as_ref().is_some_and(Footer::is_data_shard)
    }

    /// The format the file was read as (detected from its first bytes).
    pub fn format(&self) -> Format {
        self.format
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The container footer; `None` for files of other formats.
    pub fn footer(&self) -> Option<&Footer> {
        self.footer.as_ref()
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// File size in bytes.
    pub fn file_len(&self) -> u64 {
        self.source_len
    }

    /// File-level attributes.
    pub fn attributes(&self) -> Option<&Value> {
        self.manifest.attributes.as_ref()
    }

    /// Object names in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.manifest.objects.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.manifest.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.manifest.objects.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.manifest.objects.contains_key(name)
    }

    pub fn object(&self, name: &str) -> Result<&Object> {
        self.manifest
            .objects
            .get(name)
            .ok_or_else(|| Error::NotFound {
                kind: "object",
                name: name.to_string(),
            })
    }

    /// The object `name` is a declared alias of (tied weights), if any:
    /// only then may a loader share one writable buffer between the two
    /// names. See [`crate::manifest::Manifest::declared_alias`].
    pub fn declared_alias(&self, name: &str) -> Option<&str> {
        self.manifest.declared_alias(name)
    }

    fn part(&self, name: &str, role: &str) -> Result<(&Object, &Part)> {
        let object = self.object(name)?;
        let part = object.parts.get(role).ok_or_else(|| Error::NotFound {
            kind: "part",
            name: format!("{name}/{role}"),
        })?;
        Ok((object, part))
    }

    fn shard_store(&self, shard: &str) -> Result<&Store> {
        let cell = self.shards.get(shard).ok_or_else(|| {
            Error::corrupt(
                Rule::ShardUnknown,
                format!("shard {shard:?} is not declared"),
            )
        })?;
        if let Some(s) = cell.get() {
            return Ok(s);
        }
        let entry = &self.manifest.shards[shard];
        let path = self.shard_path(shard)?;
        let store = Store::open(&path, self.options.backend)?;
        if store.len() != entry.size {
            return Err(Error::corrupt(
                Rule::ShardFile,
                format!(
                    "shard {shard:?} ({}) is {} bytes, the shard table says {}",
                    path.display(),
                    store.len(),
                    entry.size
                ),
            ));
        }
        read_footer(&store).map_err(|e| {
            Error::corrupt(
                Rule::ShardFile,
                format!(
                    "shard {shard:?} ({}) is not a valid container: {e}",
                    path.display()
                ),
            )
        })?;
        let _ = cell.set(Arc::new(store));
        cell.get()
            .map(|s| s.as_ref())
            .ok_or_else(|| Error::usage("shard cache"))
    }

    /// Where shard `name` lives: `<stem>-<name>.zt` next to the root file.
    pub fn shard_path(&self, name: &str) -> Result<PathBuf> {
        manifest::check_shard_name(name)?;
        let root = self
            .path
            .as_ref()
            .ok_or_else(|| Error::usage("shards can only be resolved for a file opened by path"))?;
        let stem = root
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| Error::usage("root file name is not UTF-8"))?;
        Ok(root.with_file_name(format!("{stem}-{name}.zt")))
    }

    fn store_of(&self, part: &Part) -> Result<&Store> {
        match &part.shard {
            None => Ok(&self.store),
            Some(s) => self.shard_store(s),
        }
    }

    /// The stored (possibly encoded) bytes of a part. Borrowed when mapped.
    pub fn stored_bytes(&self, name: &str, role: &str) -> Result<Cow<'_, [u8]>> {
        let (_, part) = self.part(name, role)?;
        self.store_of(part)?
            .read(part.blob.offset, part.blob.length)
    }

    fn check_decodable(&self, name: &str, role: &str, part: &Part) -> Result<()> {
        match part.encoding.as_deref() {
            None | Some(ZSTD_SEEKABLE) => {}
            Some(other) => {
                return Err(Error::Unsupported(format!(
                    "{name}/{role}: encoding {other:?} is not one this reader decodes"
                )))
            }
        }
        if part.decoded_size() > self.options.max_decoded_bytes {
            return Err(Error::Limit {
                what: format!("decoded size of {name}/{role}"),
                value: part.decoded_size(),
                limit: self.options.max_decoded_bytes,
            });
        }
        Ok(())
    }

    /// The decoded bytes of a part: borrowed for raw parts, decoded in
    /// parallel for compressed ones.
    pub fn part_bytes(&self, name: &str, role: &str) -> Result<Cow<'_, [u8]>> {
        let (_, part) = self.part(name, role)?;
        self.check_decodable(name, role, part)?;
        let stored = self
            .store_of(part)?
            .read(part.blob.offset, part.blob.length)?;
        match part.decoded_length {
            None => Ok(stored),
            Some(n) => Ok(Cow::Owned(zstd_seekable::decode(&stored, n)?)),
        }
    }

    /// Decoded bytes `[range)` of a part; for compressed parts only the
    /// frames covering the range are decoded.
    pub fn part_range(&self, name: &str, role: &str, range: Range<u64>) -> Result<Cow<'_, [u8]>> {
        let (_, part) = self.part(name, role)?;
        self.check_decodable(name, role, part)?;
        if range.start > range.end || range.end > part.decoded_size() {
            return Err(Error::usage(format!(
                "range {range:?} is outside {name}/{role}'s {} bytes",
                part.decoded_size()
            )));
        }
        let store = self.store_of(part)?;
        match part.decoded_length {
            None => store.read(part.blob.offset + range.start, range.end - range.start),
            Some(n) => {
                let stored = store.read(part.blob.offset, part.blob.length)?;
                Ok(Cow::Owned(zstd_seekable::decode_range(
                    &stored,
                    n,
                    range.start,
                    range.end,
                )?))
            }
        }
    }

    /// Copies decoded bytes `[start, start + dst.len())` of a part into
    /// `dst` (`pread` for raw parts of file-backed readers).
    pub fn part_range_into(
        &self,
        name: &str,
        role: &str,
        start: u64,
        dst: &mut [u8],
    ) -> Result<()> {
        let (_, part) = self.part(name, role)?;
        let end = start
            .checked_add(dst.len() as u64)
            .filter(|&e| e <= part.decoded_size())
            .ok_or_else(|| {
                Error::usage(format!(
                    "range [{start}, +{}) is outside {name}/{role}'s {} bytes",
                    dst.len(),
                    part.decoded_size()
                ))
            })?;
        if part.decoded_length.is_none() {
            self.check_decodable(name, role, part)?;
            return self
                .store_of(part)?
                .read_into(part.blob.offset + start, dst);
        }
        let bytes = self.part_range(name, role, start..end)?;
        dst.copy_from_slice(&bytes);
        Ok(())
    }

    fn typed_etype(name: &str, role: &str, part: &Part) -> Result<ElementType> {
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
