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
//!
//! [`Writer::in_memory`] writes the same bytes into a buffer instead
//! ([`Writer::finish_bytes`] returns them), for files that never touch a
//! disk (engine snapshots sent over a wire, tests).

mod objects;
mod options;
mod output;
mod sink;

pub use options::{PartOptions, WriteOptions};
pub use output::AtomicFile;
pub use sink::{DenseSink, PartSink};

use crate::container::{self, align_up, Footer, ALIGN_FLOOR, MAGIC};
use crate::digest::{DigestAlg, DigestString};
use crate::dtype::{DType, ElementType};
use crate::error::{Error, Result};
use crate::manifest::{Blob, Manifest, Part, ZSTD_SEEKABLE};
use crate::reader::Reader;
use crate::zstd_seekable::{self, ZstdOptions};
use output::{io, sync_dir, temp_path, Output, Target};
use sink::ZstdState;
use std::collections::HashMap;
use std::fs::{self, File};
use std::path::Path;

/// Parts at least this large hash on one core while the other writes.
const PARALLEL_HASH_MIN: usize = 4 << 20;

/// Writes one `.zt` file.
pub struct Writer {
    out: Output,
    pos: u64,
    target: Target,
    options: WriteOptions,
    manifest: Manifest,
    /// Raw blobs by (xxh3-128, length), for dedup.
    blobs_by_hash: HashMap<(u128, u64), Vec<Blob>>,
    last_name: Option<String>,
    done: bool,
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

    /// Writes into memory: the same bytes a file would get, returned by
    /// [`Writer::finish_bytes`].
    pub fn in_memory(options: WriteOptions) -> Result<Writer> {
        options.validate()?;
        let mut w = Writer::with_output(Output::Memory(Vec::new()), Target::Memory, options, 0);
        w.put(&MAGIC)?;
        Ok(w)
    }

    fn new(file: File, target: Target, options: WriteOptions, pos: u64) -> Writer {
        Writer::with_output(Output::file(file), target, options, pos)
    }

    fn with_output(out: Output, target: Target, options: WriteOptions, pos: u64) -> Writer {
        Writer {
            out,
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
            Target::Memory => Path::new("<memory>"),
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
        for blob in candidates {
            let mut existing = vec![0u8; blob.length as usize];
            self.out.read_back(blob.offset, &mut existing)?;
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

    /// Writes the manifest and footer, makes the file durable and moves it
    /// into place. Returns the file size.
    pub fn finish(mut self) -> Result<u64> {
        self.write_manifest()?;
        self.commit()
    }

    /// Finishes an in-memory writer ([`Writer::in_memory`]): the complete
    /// file's bytes.
    pub fn finish_bytes(mut self) -> Result<Vec<u8>> {
        if !matches!(self.target, Target::Memory) {
            return Err(Error::usage("finish_bytes is for in-memory writers"));
        }
        self.write_manifest()?;
        self.done = true;
        match std::mem::replace(&mut self.out, Output::Memory(Vec::new())) {
            Output::Memory(bytes) => Ok(bytes),
            Output::File(_) => Err(Error::usage("in-memory writer without a buffer")),
        }
    }

    /// Appends the manifest and footer.
    fn write_manifest(&mut self) -> Result<()> {
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
        Ok(())
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
        if matches!(self.target, Target::Memory) {
            return Err(Error::usage(
                "an in-memory writer finishes with finish_bytes",
            ));
        }
        let path = self.target_path().to_path_buf();
        self.out
            .sync(self.options.durable)
            .map_err(io("syncing", &path))?;
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
            Target::InPlace { original_len, .. } => self.out.truncate(*original_len),
            Target::Memory => self.out.truncate(0),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.cleanup();
    }
}
