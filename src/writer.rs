//! Writing `.zt` files.
//!
//! A [`Writer`] writes blobs as they are added and the manifest and footer
//! at [`Writer::finish`]. Saves are atomic and durable: bytes go to a
//! temporary file in the target's directory, which is fsynced and renamed
//! over the target, then the directory is fsynced. An abandoned or failed
//! writer removes its temporary file; the target is never touched before
//! the rename. Appending copies the old file into the temporary file first
//! (cheap with `copy_file_range`), or, with [`Writer::append_in_place`],
//! writes past the old end and truncates back on failure.

use crate::cbor::Value;
use crate::container::{self, align_up, Footer, ALIGN_FLOOR, CANONICAL_ALIGN, MAGIC};
use crate::digest::{DigestAlg, DigestString, Hasher};
use crate::dtype::{DType, ElementType};
use crate::element::{self, Element};
use crate::error::{Error, Result};
use crate::layout;
use crate::manifest::{
    self, Blob, Manifest, Object, Part, ShardEntry, DENSE, SPARSE_COO, SPARSE_CSR, ZSTD_SEEKABLE,
};
use crate::reader::Reader;
use crate::zstd_seekable::{self, ZstdOptions};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use unicode_normalization::is_nfc;

/// Parts at least this large hash on one core while the other writes.
const PARALLEL_HASH_MIN: usize = 4 << 20;

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Blob placement; a multiple of 4096 (default 4096).
    pub align: u64,
    /// Canonical form: 64 KiB placement, sorted names, raw parts with xxh3
    /// digests, identical parts stored once, NFC names, single file.
    pub canonical: bool,
    /// Default digest for parts (`None`: no digest).
    pub digest: Option<DigestAlg>,
    /// Default compression for parts (`None`: raw).
    pub compression: Option<ZstdOptions>,
    /// Store byte-identical raw parts once (always on when canonical).
    pub dedup: bool,
    /// fsync the file and directory before returning from `finish`.
    pub durable: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            align: ALIGN_FLOOR,
            canonical: false,
            digest: Some(DigestAlg::Xxh3),
            compression: None,
            dedup: false,
            durable: true,
        }
    }
}

impl WriteOptions {
    pub fn canonical() -> WriteOptions {
        WriteOptions {
            align: CANONICAL_ALIGN,
            canonical: true,
            digest: Some(DigestAlg::Xxh3),
            compression: None,
            dedup: true,
            durable: true,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.align < ALIGN_FLOOR
            || !self.align.is_multiple_of(ALIGN_FLOOR)
            || !self.align.is_power_of_two()
        {
            return Err(Error::usage(format!(
                "alignment must be a power of two ≥ 4096, got {}",
                self.align
            )));
        }
        if self.canonical {
            if self.align != CANONICAL_ALIGN {
                return Err(Error::usage("canonical form places blobs at 64 KiB"));
            }
            if self.compression.is_some() {
                return Err(Error::usage("canonical form forbids compressed parts"));
            }
            if self.digest != Some(DigestAlg::Xxh3) {
                return Err(Error::usage(
                    "canonical form needs an xxh3 digest on every part",
                ));
            }
        }
        if let Some(z) = &self.compression {
            z.validate()?;
        }
        Ok(())
    }
}

/// Per-part settings; defaults come from the writer's options.
#[derive(Debug, Clone)]
pub struct PartOptions {
    pub etype: ElementType,
    pub compression: Option<ZstdOptions>,
    pub digest: Option<DigestAlg>,
}

enum Target {
    /// Write to `tmp`, rename over `path` at finish.
    Atomic { path: PathBuf, tmp: PathBuf },
    /// Write past the end of `path`; truncate back to `original_len` on failure.
    InPlace { path: PathBuf, original_len: u64 },
}

/// Writes one `.zt` file.
pub struct Writer {
    out: BufWriter<File>,
    pos: u64,
    target: Target,
    options: WriteOptions,
    manifest: Manifest,
    /// Raw blobs by (xxh3-128, length), for dedup.
    blobs_by_hash: HashMap<(u128, u64), Vec<Blob>>,
    last_name: Option<String>,
    done: bool,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_path(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::usage(format!("{} has no file name", path.display())))?;
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = format!(".{}.tmp-{}-{n}", name.to_string_lossy(), std::process::id());
    Ok(path.with_file_name(tmp))
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let context = format!("{what} {}", path.display());
    move |e| Error::io(context, e)
}

fn sync_dir(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing directory", &dir))?;
    }
    let _ = path;
    Ok(())
}

/// A file written whole and published atomically: bytes go to a temp
/// file in the same directory, which `commit` syncs and renames over the
/// target; dropped uncommitted, the temp file is removed.
pub struct AtomicFile {
    out: Option<BufWriter<File>>,
    tmp: PathBuf,
    path: PathBuf,
}

impl AtomicFile {
    pub fn create(path: impl AsRef<Path>) -> Result<AtomicFile> {
        let path = path.as_ref().to_path_buf();
        let tmp = temp_path(&path)?;
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io("creating", &tmp))?;
        Ok(AtomicFile {
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            tmp,
            path,
        })
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| Error::usage("file already committed"))?;
        out.write_all(bytes).map_err(io("writing", &self.tmp))
    }

    /// Syncs the data, renames it over the target and syncs the directory.
    pub fn commit(mut self) -> Result<()> {
        let out = self
            .out
            .take()
            .ok_or_else(|| Error::usage("file already committed"))?;
        let file = out
            .into_inner()
            .map_err(|e| Error::io(format!("writing {}", self.tmp.display()), e.into_error()))?;
        file.sync_all().map_err(io("syncing", &self.tmp))?;
        std::fs::rename(&self.tmp, &self.path).map_err(io("renaming onto", &self.path))?;
        sync_dir(&self.path)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Writer {
    /// Creates (or replaces, atomically at finish) a file with default options.
    pub fn create(path: impl AsRef<Path>) -> Result<Writer> {
        Writer::create_with(path, WriteOptions::default())
    }

    pub fn create_with(path: impl AsRef<Path>, options: WriteOptions) -> Result<Writer> {
        options.validate()?;
        let path = path.as_ref().to_path_buf();
        let tmp = temp_path(&path)?;
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io("creating", &tmp))?;
        let mut w = Writer::new(file, Target::Atomic { path, tmp }, options, 0);
        w.put(&MAGIC)?;
        Ok(w)
    }

    /// Appends a new generation to an existing file, atomically: the old
    /// bytes are copied to a temporary file, which replaces the original
    /// at finish. Old objects are kept; new names must not collide.
    pub fn append(path: impl AsRef<Path>) -> Result<Writer> {
        Writer::append_with(path, WriteOptions::default())
    }

    pub fn append_with(path: impl AsRef<Path>, options: WriteOptions) -> Result<Writer> {
        let path = path.as_ref().to_path_buf();
        let manifest = Writer::appendable(&path, &options)?;
        let tmp = temp_path(&path)?;
        let copied = fs::copy(&path, &tmp).map_err(io("copying", &path));
        let len = match copied {
            Ok(n) => n,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let file = fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(&tmp)
            .map_err(io("opening", &tmp))?;
        let mut w = Writer::new(file, Target::Atomic { path, tmp }, options, len);
        w.manifest = manifest;
        Ok(w)
    }

    /// Appends by writing past the old end of the file (no copy). Not
    /// atomic against a crash: a torn append leaves the file without a
    /// footer at EOF (invalid by the spec) until it is truncated back.
    /// An abandoned or failed writer truncates back itself.
    pub fn append_in_place(path: impl AsRef<Path>, options: WriteOptions) -> Result<Writer> {
        let path = path.as_ref().to_path_buf();
        let manifest = Writer::appendable(&path, &options)?;
        let file = fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io("opening", &path))?;
        let len = file
            .metadata()
            .map_err(io("reading metadata of", &path))?
            .len();
        let mut w = Writer::new(
            file,
            Target::InPlace {
                path,
                original_len: len,
            },
            options,
            len,
        );
        w.manifest = manifest;
        Ok(w)
    }

    fn appendable(path: &Path, options: &WriteOptions) -> Result<Manifest> {
        options.validate()?;
        if options.canonical {
            return Err(Error::usage(
                "appending makes a file non-canonical; use canonical = false",
            ));
        }
        let reader = Reader::open(path)?;
        if reader.format() != crate::formats::Format::Zt {
            return Err(Error::usage(format!(
                "{} is a {} file, which is read-only; convert it to .zt first",
                path.display(),
                reader.format()
            )));
        }
        if reader.is_data_shard() {
            return Err(Error::usage("cannot append objects to a data shard"));
        }
        Ok(reader.manifest().clone())
    }

    fn new(file: File, target: Target, options: WriteOptions, pos: u64) -> Writer {
        Writer {
            out: BufWriter::with_capacity(1 << 20, file),
            pos,
            target,
            options,
            manifest: Manifest::default(),
            blobs_by_hash: HashMap::new(),
            last_name: None,
            done: false,
        }
    }

    pub fn options(&self) -> &WriteOptions {
        &self.options
    }

    /// Objects written so far (including those of an appended file).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn target_path(&self) -> &Path {
        match &self.target {
            Target::Atomic { tmp, .. } => tmp,
            Target::InPlace { path, .. } => path,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        let path = self.target_path().to_path_buf();
        self.out.write_all(bytes).map_err(io("writing", &path))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Pads with zeros to the next blob boundary; returns the offset.
    fn pad_to(&mut self, align: u64) -> Result<u64> {
        let at = align_up(self.pos, align)
            .ok_or_else(|| Error::usage("file offset overflow"))?
            .max(ALIGN_FLOOR);
        const ZEROS: [u8; 4096] = [0; 4096];
        while self.pos < at {
            let n = ((at - self.pos) as usize).min(ZEROS.len());
            self.put(&ZEROS[..n])?;
        }
        Ok(at)
    }

    /// Changes the compression and digest used by the `add*` helpers from
    /// now on (canonical writers keep their fixed settings).
    pub fn set_defaults(
        &mut self,
        compression: Option<ZstdOptions>,
        digest: Option<DigestAlg>,
    ) -> Result<()> {
        let probe = PartOptions {
            etype: ElementType::plain(DType::U8),
            compression,
            digest,
        };
        self.check_part_options(&probe)?;
        self.options.compression = compression;
        self.options.digest = digest;
        Ok(())
    }

    fn part_options(&self, etype: ElementType) -> PartOptions {
        PartOptions {
            etype,
            compression: self.options.compression,
            digest: self.options.digest,
        }
    }

    fn check_part_options(&self, opts: &PartOptions) -> Result<()> {
        if self.options.canonical {
            if opts.compression.is_some() {
                return Err(Error::usage("canonical form forbids compressed parts"));
            }
            if opts.digest != Some(DigestAlg::Xxh3) {
                return Err(Error::usage(
                    "canonical form needs an xxh3 digest on every part",
                ));
            }
        }
        if let Some(z) = &opts.compression {
            z.validate()?;
        }
        Ok(())
    }

    fn find_duplicate(&mut self, key: (u128, u64), bytes: &[u8]) -> Result<Option<Blob>> {
        let Some(candidates) = self.blobs_by_hash.get(&key).cloned() else {
            return Ok(None);
        };
        // Confirm on the bytes themselves: a hash match is not proof.
        let path = self.target_path().to_path_buf();
        self.out.flush().map_err(io("flushing", &path))?;
        for blob in candidates {
            let mut existing = vec![0u8; blob.length as usize];
            crate::store::read_exact_at(self.out.get_ref(), &mut existing, blob.offset)?;
            if existing == bytes {
                return Ok(Some(blob));
            }
        }
        Ok(None)
    }

    /// Writes one part's bytes as a blob and returns its manifest entry.
    /// The part is not part of the file until an object references it.
    pub fn write_part(&mut self, bytes: &[u8], opts: &PartOptions) -> Result<Part> {
        self.check_part_options(opts)?;
        let digest_of = |alg: Option<DigestAlg>| -> Result<Option<DigestString>> {
            alg.map(|a| DigestString::parse(&a.digest(bytes)).map_err(Error::usage))
                .transpose()
        };
        if let Some(z) = opts.compression {
            let (encoded, digest) = rayon::join(
                || zstd_seekable::encode(bytes, z),
                || digest_of(opts.digest),
            );
            let encoded = encoded?;
            let offset = self.pad_to(self.options.align)?;
            self.put(&encoded)?;
            return Ok(Part {
                etype: opts.etype.clone(),
                blob: Blob {
                    offset,
                    length: encoded.len() as u64,
                },
                shard: None,
                encoding: Some(ZSTD_SEEKABLE.to_string()),
                decoded_length: Some(bytes.len() as u64),
                digest: digest?,
            });
        }
        let dedup_key = if self.options.dedup && !bytes.is_empty() {
            let key = (xxhash_rust::xxh3::xxh3_128(bytes), bytes.len() as u64);
            if let Some(blob) = self.find_duplicate(key, bytes)? {
                return Ok(Part {
                    etype: opts.etype.clone(),
                    blob,
                    shard: None,
                    encoding: None,
                    decoded_length: None,
                    digest: digest_of(opts.digest)?,
                });
            }
            Some(key)
        } else {
            None
        };
        let offset = self.pad_to(self.options.align)?;
        let digest = if bytes.len() >= PARALLEL_HASH_MIN {
            let path = self.target_path().to_path_buf();
            let out = &mut self.out;
            let (written, digest) = rayon::join(
                || out.write_all(bytes).map_err(io("writing", &path)),
                || digest_of(opts.digest),
            );
            written?;
            self.pos += bytes.len() as u64;
            digest?
        } else {
            self.put(bytes)?;
            digest_of(opts.digest)?
        };
        let blob = Blob {
            offset,
            length: bytes.len() as u64,
        };
        if let Some(key) = dedup_key {
            self.blobs_by_hash.entry(key).or_default().push(blob);
        }
        Ok(Part {
            etype: opts.etype.clone(),
            blob,
            shard: None,
            encoding: None,
            decoded_length: None,
            digest,
        })
    }

    /// Starts a streamed part: feed it chunks with [`PartSink::write`] and
    /// close it with [`PartSink::finish`]. Nothing is held in memory beyond
    /// a few compression frames.
    pub fn stream_part(&mut self, opts: PartOptions) -> Result<PartSink<'_>> {
        self.check_part_options(&opts)?;
        if self.options.dedup && opts.compression.is_none() && self.options.canonical {
            return Err(Error::usage(
                "canonical form cannot stream parts (dedup needs the whole part)",
            ));
        }
        let offset = self.pad_to(self.options.align)?;
        Ok(PartSink {
            hasher: opts.digest.map(DigestAlg::hasher),
            zstd: opts.compression.map(|z| ZstdState {
                opts: z,
                pending: Vec::new(),
                frames: Vec::new(),
            }),
            etype: opts.etype,
            offset,
            decoded: 0,
            writer: self,
        })
    }

    fn check_new_name(&mut self, name: &str) -> Result<()> {
        manifest::check_name("object", name).map_err(|e| Error::usage(e.to_string()))?;
        if self.manifest.objects.contains_key(name) {
            return Err(Error::usage(format!(
                "an object named {name:?} already exists"
            )));
        }
        if self.options.canonical {
            if !is_nfc(name) {
                return Err(Error::usage(format!(
                    "canonical form needs NFC names; {name:?} is not"
                )));
            }
            if let Some(last) = &self.last_name {
                if last.as_str() >= name {
                    return Err(Error::usage(format!(
                        "canonical form needs objects in sorted order: {name:?} after {last:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Validates an object against the layout rules before its parts are
    /// written, using the parts' decoded sizes.
    fn precheck(
        name: &str,
        shape: &[u64],
        layout_id: &str,
        parts: &[(&str, &ElementType, u64)],
        attributes: Option<&Value>,
    ) -> Result<()> {
        let object = Object {
            shape: shape.to_vec(),
            layout: layout_id.to_string(),
            parts: parts
                .iter()
                .map(|(role, etype, len)| {
                    (
                        role.to_string(),
                        Part {
                            etype: (*etype).clone(),
                            blob: Blob {
                                offset: ALIGN_FLOOR,
                                length: *len,
                            },
                            shard: None,
                            encoding: None,
                            decoded_length: None,
                            digest: None,
                        },
                    )
                })
                .collect(),
            attributes: attributes.cloned(),
        };
        Writer::check_object(name, &object)
    }

    fn check_object(name: &str, object: &Object) -> Result<()> {
        let usage = |e: Error| Error::usage(e.to_string());
        if object.shape.len() > manifest::MAX_RANK {
            return Err(Error::usage(format!(
                "rank {} exceeds {}",
                object.shape.len(),
                manifest::MAX_RANK
            )));
        }
        if manifest::num_elements(&object.shape).is_none() {
            return Err(Error::usage(format!(
                "shape {:?} overflows u64",
                object.shape
            )));
        }
        if object.parts.is_empty() {
            return Err(Error::usage("an object needs at least one part"));
        }
        for role in object.parts.keys() {
            manifest::check_name("part", role).map_err(usage)?;
        }
        if let Some(a) = &object.attributes {
            manifest::check_attributes("object", a).map_err(usage)?;
            // An object's attributes map sits at depth 3 of the manifest.
            if a.depth() > crate::cbor::MAX_DEPTH - 3 {
                return Err(Error::usage(format!(
                    "{name}: attributes nest {} levels, at most {}",
                    a.depth(),
                    crate::cbor::MAX_DEPTH - 3
                )));
            }
        }
        layout::validate_object(name, object).map_err(usage)
    }

    /// Commits an object whose parts were written with [`Writer::write_part`]
    /// or [`Writer::stream_part`] (or live in a declared shard).
    pub fn add_object(&mut self, name: &str, object: Object) -> Result<()> {
        self.check_new_name(name)?;
        Writer::check_object(name, &object)?;
        for (role, part) in &object.parts {
            if let Some(s) = &part.shard {
                if !self.manifest.shards.contains_key(s) {
                    return Err(Error::usage(format!(
                        "{name}/{role}: shard {s:?} is not declared"
                    )));
                }
            } else if part.blob.end().is_none_or(|e| e > self.pos) {
                return Err(Error::usage(format!(
                    "{name}/{role}: blob is not in this file"
                )));
            }
        }
        self.last_name = Some(name.to_string());
        self.manifest.objects.insert(name.to_string(), object);
        Ok(())
    }

    /// Adds a dense tensor from raw little-endian bytes.
    pub fn add_bytes(
        &mut self,
        name: &str,
        shape: &[u64],
        etype: ElementType,
        bytes: &[u8],
    ) -> Result<()> {
        let opts = self.part_options(etype);
        self.add_bytes_with(name, shape, bytes, &opts, None)
    }

    /// Adds a dense tensor with explicit part options and attributes.
    pub fn add_bytes_with(
        &mut self,
        name: &str,
        shape: &[u64],
        bytes: &[u8],
        opts: &PartOptions,
        attributes: Option<Value>,
    ) -> Result<()> {
        self.check_new_name(name)?;
        Writer::precheck(
            name,
            shape,
            DENSE,
            &[("data", &opts.etype, bytes.len() as u64)],
            attributes.as_ref(),
        )?;
        let n = manifest::num_elements(shape).unwrap_or(0);
        layout::check_values(name, &opts.etype, n, bytes)
            .map_err(|e| Error::usage(e.to_string()))?;
        let part = self.write_part(bytes, opts)?;
        self.add_object(name, dense_object(shape, part, attributes))
    }

    /// Adds a dense tensor of a plain element type.
    pub fn add<T: Element>(&mut self, name: &str, shape: &[u64], data: &[T]) -> Result<()> {
        self.add_bytes(
            name,
            shape,
            ElementType::plain(T::DTYPE),
            element::as_bytes(data),
        )
    }

    /// Adds a CSR matrix. Indices are stored as u32 when they fit, else u64.
    pub fn add_csr(
        &mut self,
        name: &str,
        shape: [u64; 2],
        values_type: ElementType,
        values: &[u8],
        indices: &[u64],
        indptr: &[u64],
    ) -> Result<()> {
        self.check_new_name(name)?;
        layout::check_csr(name, shape, indptr, indices).map_err(|e| Error::usage(e.to_string()))?;
        let idx = index_dtype(indices.iter().chain(indptr));
        let (ib, pb) = (index_bytes(indices, idx), index_bytes(indptr, idx));
        let it = ElementType::plain(idx);
        Writer::precheck(
            name,
            &shape,
            SPARSE_CSR,
            &[
                ("indices", &it, ib.len() as u64),
                ("indptr", &it, pb.len() as u64),
                ("values", &values_type, values.len() as u64),
            ],
            None,
        )?;
        layout::check_values(name, &values_type, indices.len() as u64, values)
            .map_err(|e| Error::usage(e.to_string()))?;
        let pi = self.write_part(&ib, &self.part_options(it.clone()))?;
        let pp = self.write_part(&pb, &self.part_options(it))?;
        let pv = self.write_part(values, &self.part_options(values_type))?;
        self.add_object(
            name,
            sparse_object(
                &shape,
                SPARSE_CSR,
                vec![("indices", pi), ("indptr", pp), ("values", pv)],
            ),
        )
    }

    /// Adds a COO tensor; `coords` is structure-of-arrays (`ndim × nnz`).
    pub fn add_coo(
        &mut self,
        name: &str,
        shape: &[u64],
        values_type: ElementType,
        values: &[u8],
        coords: &[u64],
    ) -> Result<()> {
        self.check_new_name(name)?;
        if shape.is_empty() || !coords.len().is_multiple_of(shape.len()) {
            return Err(Error::usage("coords must hold ndim × nnz indices"));
        }
        layout::check_coo(name, shape, coords).map_err(|e| Error::usage(e.to_string()))?;
        let nnz = (coords.len() / shape.len()) as u64;
        let idx = index_dtype(coords.iter());
        let cb = index_bytes(coords, idx);
        let it = ElementType::plain(idx);
        Writer::precheck(
            name,
            shape,
            SPARSE_COO,
            &[
                ("coords", &it, cb.len() as u64),
                ("values", &values_type, values.len() as u64),
            ],
            None,
        )?;
        layout::check_values(name, &values_type, nnz, values)
            .map_err(|e| Error::usage(e.to_string()))?;
        let pc = self.write_part(&cb, &self.part_options(it))?;
        let pv = self.write_part(values, &self.part_options(values_type))?;
        self.add_object(
            name,
            sparse_object(shape, SPARSE_COO, vec![("coords", pc), ("values", pv)]),
        )
    }

    /// Adds opaque ggml blocks as `gguf.<ggml_type>/1`.
    pub fn add_gguf(
        &mut self,
        name: &str,
        shape: &[u64],
        ggml_type: &str,
        elems_per_block: u64,
        block_bytes: u64,
        data: &[u8],
    ) -> Result<()> {
        self.check_new_name(name)?;
        let layout_id = format!("gguf.{ggml_type}/1");
        let attrs = Value::text_map([
            ("block_bytes", Value::Uint(block_bytes)),
            ("elems_per_block", Value::Uint(elems_per_block)),
        ])?;
        let u8t = ElementType::plain(DType::U8);
        Writer::precheck(
            name,
            shape,
            &layout_id,
            &[("data", &u8t, data.len() as u64)],
            Some(&attrs),
        )?;
        let part = self.write_part(data, &self.part_options(u8t))?;
        let mut object = dense_object(shape, part, Some(attrs));
        object.layout = layout_id;
        self.add_object(name, object)
    }

    /// Adds `name` as another name for `target`'s blobs (tied weights),
    /// declared with the [`manifest::ALIAS_OF`] attribute (naming the
    /// first name of the data when `target` is itself an alias) so loaders
    /// can tell a tie from canonical dedup of equal bytes.
    pub fn add_alias(&mut self, name: &str, target: &str) -> Result<()> {
        let mut object =
            self.manifest
                .objects
                .get(target)
                .cloned()
                .ok_or_else(|| Error::NotFound {
                    kind: "object",
                    name: target.to_string(),
                })?;
        let root = match self.manifest.declared_alias(target) {
            Some(root) => root.to_string(),
            None => target.to_string(),
        };
        let mut entries = match object.attributes.take() {
            Some(Value::Map(entries)) => entries,
            Some(other) => {
                return Err(Error::usage(format!(
                    "{target}: attributes are a {}, not a map",
                    other.kind()
                )))
            }
            None => Vec::new(),
        };
        entries.retain(|(k, _)| k.as_str() != Some(manifest::ALIAS_OF));
        entries.push((Value::text(manifest::ALIAS_OF), Value::Text(root)));
        object.attributes = Some(Value::map(entries)?);
        self.add_object(name, object)
    }

    /// Starts a streamed dense tensor of `shape`; the byte count fed must
    /// match the shape exactly.
    pub fn stream_dense(
        &mut self,
        name: &str,
        shape: &[u64],
        etype: ElementType,
    ) -> Result<DenseSink<'_>> {
        self.check_new_name(name)?;
        let n = manifest::num_elements(shape).ok_or_else(|| Error::usage("shape overflows u64"))?;
        let expected = etype
            .size_of(n)
            .ok_or_else(|| Error::usage("size overflows u64"))?;
        Writer::precheck(name, shape, DENSE, &[("data", &etype, expected)], None)?;
        let opts = self.part_options(etype);
        Ok(DenseSink {
            name: name.to_string(),
            shape: shape.to_vec(),
            expected,
            sink: self.stream_part(opts)?,
        })
    }

    /// Sets the file-level attributes (a map with text keys).
    pub fn set_attributes(&mut self, attributes: Value) -> Result<()> {
        manifest::check_attributes("file", &attributes).map_err(|e| Error::usage(e.to_string()))?;
        // The file's attributes map sits at depth 1 of the manifest.
        if attributes.depth() > crate::cbor::MAX_DEPTH - 1 {
            return Err(Error::usage(format!(
                "file attributes nest {} levels, at most {}",
                attributes.depth(),
                crate::cbor::MAX_DEPTH - 1
            )));
        }
        self.manifest.attributes = Some(attributes);
        Ok(())
    }

    /// Declares a shard file under `name`, recording its size and digest.
    pub fn add_shard(&mut self, name: &str, path: impl AsRef<Path>, alg: DigestAlg) -> Result<()> {
        if self.options.canonical {
            return Err(Error::usage("canonical form is single-file"));
        }
        manifest::check_shard_name(name).map_err(|e| Error::usage(e.to_string()))?;
        let (size, digest) = crate::reader::file_digest(path, alg)?;
        let digest = DigestString::parse(&digest).map_err(Error::usage)?;
        self.manifest
            .shards
            .insert(name.to_string(), ShardEntry { size, digest });
        Ok(())
    }

    /// Writes the manifest and footer, makes the file durable and moves it
    /// into place. Returns the file size.
    pub fn finish(mut self) -> Result<u64> {
        let manifest = self.manifest.encode()?;
        if manifest.len() as u64 > container::MAX_MANIFEST_LEN {
            return Err(Error::usage("manifest exceeds 1 GiB"));
        }
        let offset = self.pad_to(self.options.align)?;
        self.put(&manifest)?;
        let footer = Footer {
            manifest_offset: offset,
            manifest_length: manifest.len() as u64,
            manifest_hash: xxhash_rust::xxh3::xxh3_64(&manifest),
            version: container::VERSION,
            reserved: 0,
        };
        self.put(&footer.encode())?;
        self.commit()
    }

    /// Finishes as a manifest-less data shard (footer fields all zero).
    pub fn finish_data_shard(mut self) -> Result<u64> {
        if !self.manifest.objects.is_empty() {
            return Err(Error::usage(
                "a data shard carries no objects; reference its parts from a root file",
            ));
        }
        if self.pos < ALIGN_FLOOR {
            self.pad_to(ALIGN_FLOOR)?;
        }
        let footer = Footer {
            version: container::VERSION,
            ..Footer::default()
        };
        self.put(&footer.encode())?;
        self.commit()
    }

    fn commit(&mut self) -> Result<u64> {
        let len = self.pos;
        let path = self.target_path().to_path_buf();
        self.out.flush().map_err(io("flushing", &path))?;
        if self.options.durable {
            self.out
                .get_ref()
                .sync_all()
                .map_err(io("syncing", &path))?;
        }
        if let Target::Atomic { path, tmp } = &self.target {
            fs::rename(tmp, path).map_err(io("renaming into", path))?;
            if self.options.durable {
                sync_dir(path)?;
            }
        }
        self.done = true;
        Ok(len)
    }

    /// Drops the file being written; the target is left as it was.
    pub fn abandon(mut self) {
        self.cleanup();
    }

    fn cleanup(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let _ = self.out.flush();
        match &self.target {
            Target::Atomic { tmp, .. } => {
                let _ = fs::remove_file(tmp);
            }
            Target::InPlace { original_len, .. } => {
                let _ = self.out.get_ref().set_len(*original_len);
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn dense_object(shape: &[u64], part: Part, attributes: Option<Value>) -> Object {
    Object {
        shape: shape.to_vec(),
        layout: DENSE.to_string(),
        parts: [("data".to_string(), part)].into_iter().collect(),
        attributes,
    }
}

fn sparse_object(shape: &[u64], layout_id: &str, parts: Vec<(&str, Part)>) -> Object {
    Object {
        shape: shape.to_vec(),
        layout: layout_id.to_string(),
        parts: parts.into_iter().map(|(r, p)| (r.to_string(), p)).collect(),
        attributes: None,
    }
}

fn index_dtype<'a>(mut values: impl Iterator<Item = &'a u64>) -> DType {
    if values.any(|&v| v > u32::MAX as u64) {
        DType::U64
    } else {
        DType::U32
    }
}

fn index_bytes(values: &[u64], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::U32 => values
            .iter()
            .flat_map(|&v| (v as u32).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|&v| v.to_le_bytes()).collect(),
    }
}

struct ZstdState {
    opts: ZstdOptions,
    pending: Vec<u8>,
    frames: Vec<(u32, u32)>,
}

/// A part being streamed into the file.
pub struct PartSink<'w> {
    writer: &'w mut Writer,
    etype: ElementType,
    offset: u64,
    decoded: u64,
    hasher: Option<Hasher>,
    zstd: Option<ZstdState>,
}

impl<'w> PartSink<'w> {
    /// Frames compressed per parallel batch.
    fn batch_frames() -> usize {
        2 * rayon::current_num_threads().max(1)
    }

    /// Feeds the next chunk of decoded bytes.
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        if let Some(h) = &mut self.hasher {
            h.update(chunk);
        }
        self.decoded += chunk.len() as u64;
        match &mut self.zstd {
            None => self.writer.put(chunk),
            Some(z) => {
                z.pending.extend_from_slice(chunk);
                let batch = z.opts.frame_size * PartSink::batch_frames();
                if z.pending.len() >= batch {
                    self.flush_frames(false)?;
                }
                Ok(())
            }
        }
    }

    /// Compresses pending full frames (all of them when `last`) in parallel.
    fn flush_frames(&mut self, last: bool) -> Result<()> {
        let Some(z) = &mut self.zstd else {
            return Ok(());
        };
        let fs = z.opts.frame_size;
        let take = if last {
            z.pending.len()
        } else {
            z.pending.len() / fs * fs
        };
        if take == 0 {
            return Ok(());
        }
        let chunks: Vec<&[u8]> = z.pending[..take].chunks(fs).collect();
        let frames = zstd_seekable::compress_frames(&chunks, z.opts.level)?;
        let sizes: Vec<(u32, u32)> = frames
            .iter()
            .zip(&chunks)
            .map(|(f, c)| (f.len() as u32, c.len() as u32))
            .collect();
        z.frames.extend(sizes);
        z.pending.drain(..take);
        for f in frames {
            self.writer.put(&f)?;
        }
        Ok(())
    }

    /// Bytes fed so far.
    pub fn written(&self) -> u64 {
        self.decoded
    }

    /// Ends the part and returns its manifest entry.
    pub fn finish(self) -> Result<Part> {
        self.finish_inner().map(|(part, _)| part)
    }

    fn finish_inner(mut self) -> Result<(Part, &'w mut Writer)> {
        let mut encoding = None;
        if self.zstd.is_some() {
            self.flush_frames(true)?;
            let table = self
                .zstd
                .as_ref()
                .map(|z| zstd_seekable::seek_table(&z.frames))
                .unwrap_or_default();
            self.writer.put(&table)?;
            encoding = Some(ZSTD_SEEKABLE.to_string());
        }
        let digest = match self.hasher.take() {
            Some(h) => Some(DigestString::parse(&h.finish()).map_err(Error::usage)?),
            None => None,
        };
        let PartSink {
            writer,
            etype,
            offset,
            decoded,
            ..
        } = self;
        let part = Part {
            etype,
            blob: Blob {
                offset,
                length: writer.pos - offset,
            },
            shard: None,
            decoded_length: encoding.as_ref().map(|_| decoded),
            encoding,
            digest,
        };
        Ok((part, writer))
    }
}

/// A dense tensor being streamed; see [`Writer::stream_dense`].
pub struct DenseSink<'w> {
    name: String,
    shape: Vec<u64>,
    expected: u64,
    sink: PartSink<'w>,
}

impl DenseSink<'_> {
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        if self.sink.written() + chunk.len() as u64 > self.expected {
            return Err(Error::usage(format!(
                "{}: more than the {} bytes its shape needs",
                self.name, self.expected
            )));
        }
        self.sink.write(chunk)
    }

    /// Ends the tensor and adds it to the file.
    pub fn finish(self) -> Result<()> {
        if self.sink.written() != self.expected {
            return Err(Error::usage(format!(
                "{}: got {} bytes, its shape needs {}",
                self.name,
                self.sink.written(),
                self.expected
            )));
        }
        let DenseSink {
            name, shape, sink, ..
        } = self;
        let (part, writer) = sink.finish_inner()?;
        writer.add_object(&name, dense_object(&shape, part, None))
    }
}

impl std::io::Write for DenseSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        DenseSink::write(self, buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
