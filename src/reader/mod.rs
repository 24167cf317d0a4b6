//! Reading `.zt` files: open (with every structural and schema check up
//! front), zero-copy part access, decoding, slicing, sparse assembly and
//! digest verification.

use crate::cbor::Value;
use crate::container::{self, Footer, FOOTER_LEN};
use crate::error::{Error, Result, Rule};
use crate::formats::{self, Format};
use crate::layout::{self};
use crate::manifest::{self, Blob, Manifest, Object, Part, ZSTD_SEEKABLE};
use crate::remote::{RangeSource, RemoteFile};
use crate::store::{Backend, Store};
use crate::zstd_seekable;
use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

mod parallel;
mod tensor;
mod typed;

pub use parallel::{
    LoadOptions, DEFAULT_CHUNK_BYTES, DEFAULT_THREADS, MAX_THREADS, MIN_CHUNK_BYTES,
};
pub use tensor::{CooTensor, CsrTensor, TensorData, VerifyReport};
pub use typed::file_digest;

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
        if let Some(set) = formats::sharded::open_set(path, self.backend)? {
            return Reader::from_set(set.path, set.format, set.manifest, set.shards, self.clone());
        }
        let store = Store::open(path, self.backend)?;
        Reader::from_store(store, Some(path.to_path_buf()), self.clone())
    }
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
    /// Opens a data shard, by shard name, for a root not opened by path
    /// (a URL: see [`crate::remote::open_url`]); returns where it is.
    shard_opener: Option<ShardOpener>,
}

/// Opens the data shard of the given name for a root read remotely:
/// returns the shard's location (for errors) and its store.
pub(crate) type ShardOpener = Arc<dyn Fn(&str) -> Result<(String, Store)> + Send + Sync>;

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

    /// Opens an object read through range requests (`http(s)://` and
    /// `s3://` URLs with the `remote` feature, or any [`RangeSource`]):
    /// see [`crate::remote`] for the requests this makes.
    pub fn open_source(source: Arc<dyn RangeSource>, options: OpenOptions) -> Result<Reader> {
        let file = RemoteFile::open(source)?;
        Reader::from_store(Store::Remote(Arc::new(file)), None, options)
    }

    fn from_store(store: Store, path: Option<PathBuf>, options: OpenOptions) -> Result<Reader> {
        let head = store.read(0, store.len().min(64))?;
        let format = formats::detect(&head);
        if format != Format::Zt && format != Format::Unknown {
            drop(head);
            let foreign = formats::open_foreign(format, &store, options.max_decoded_bytes)?;
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
                shard_opener: None,
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
            shard_opener: None,
        })
    }

    /// Sets how data shards are found when the root was not opened by path
    /// (only remote roots do, today).
    #[cfg(feature = "remote")]
    pub(crate) fn set_shard_opener(&mut self, opener: ShardOpener) {
        self.shard_opener = Some(opener);
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
            shard_opener: None,
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
        let (location, store) = match &self.shard_opener {
            Some(open) if self.path.is_none() => {
                manifest::check_shard_name(shard)?;
                open(shard)?
            }
            _ => {
                let path = self.shard_path(shard)?;
                let store = Store::open(&path, self.options.backend)?;
                (path.display().to_string(), store)
            }
        };
        if store.len() != entry.size {
            return Err(Error::corrupt(
                Rule::ShardFile,
                format!(
                    "shard {shard:?} ({location}) is {} bytes, the shard table says {}",
                    store.len(),
                    entry.size
                ),
            ));
        }
        read_footer(&store).map_err(|e| {
            Error::corrupt(
                Rule::ShardFile,
                format!("shard {shard:?} ({location}) is not a valid container: {e}"),
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
            Some(n) if store.is_remote() => {
                remote_frames(store, part.blob, n, range).map(Cow::Owned)
            }
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
}

/// Decoded bytes `range` of a zstd part of a remote object, fetching only
/// its seek table (the part's last 64 KiB, or the whole table when it is
/// larger) and then the frames covering the range.
fn remote_frames(store: &Store, blob: Blob, decoded: u64, range: Range<u64>) -> Result<Vec<u8>> {
    let end = blob.offset + blob.length;
    let mut tail_len = blob.length.min(crate::remote::TAIL_BYTES);
    let mut tail = store.read(end - tail_len, tail_len)?;
    if let Some(need) = zstd_seekable::SeekTable::table_len(&tail) {
        if need > tail_len && need <= blob.length {
            tail_len = need;
            tail = store.read(end - tail_len, tail_len)?;
        }
    }
    let table = zstd_seekable::SeekTable::parse_suffix(&tail, blob.length, decoded)?;
    let span = table.stored_span(range.start, range.end);
    let frames = store.read(blob.offset + span.start, span.end - span.start)?;
    zstd_seekable::decode_span(&table, &frames, range.start, range.end)
}
