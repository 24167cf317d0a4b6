//! Where a writer's bytes go: a temporary file renamed into place, the end
//! of an existing file, or a buffer in memory; and [`AtomicFile`], a whole
//! file published atomically.

use crate::error::{Error, Result};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) enum Target {
    /// Bytes kept in memory; taken by `Writer::finish_bytes`.
    Memory,
    /// Write to `tmp`, rename over `path` at finish.
    Atomic { path: PathBuf, tmp: PathBuf },
    /// Write past the end of `path`; truncate back to `original_len` on failure.
    InPlace { path: PathBuf, original_len: u64 },
}

/// The byte sink behind a writer: a buffered file or a vector.
pub(crate) enum Output {
    File(BufWriter<File>),
    Memory(Vec<u8>),
}

impl Output {
    pub(crate) fn file(file: File) -> Output {
        Output::File(BufWriter::with_capacity(1 << 20, file))
    }

    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Output::File(f) => f.write_all(bytes),
            Output::Memory(v) => {
                v.try_reserve(bytes.len())
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::OutOfMemory))?;
                v.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    pub(crate) fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Output::File(f) => f.flush(),
            Output::Memory(_) => Ok(()),
        }
    }

    /// Reads back `buf.len()` bytes written at `offset`.
    pub(crate) fn read_back(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        match self {
            Output::File(f) => {
                f.flush().map_err(|e| Error::io("flushing the output", e))?;
                crate::store::read_exact_at(f.get_ref(), buf, offset)
            }
            Output::Memory(v) => {
                let src = usize::try_from(offset)
                    .ok()
                    .and_then(|o| v.get(o..o.checked_add(buf.len())?))
                    .ok_or_else(|| Error::usage("read-back outside the written bytes"))?;
                buf.copy_from_slice(src);
                Ok(())
            }
        }
    }

    /// Flushes, and with `durable` syncs the file (no-op in memory).
    pub(crate) fn sync(&mut self, durable: bool) -> std::io::Result<()> {
        match self {
            Output::File(f) => {
                f.flush()?;
                if durable {
                    f.get_ref().sync_all()?;
                }
                Ok(())
            }
            Output::Memory(_) => Ok(()),
        }
    }

    /// Cuts the file back to `len` bytes (a failed in-place append).
    pub(crate) fn truncate(&mut self, len: u64) {
        match self {
            Output::File(f) => {
                let _ = f.flush();
                let _ = f.get_ref().set_len(len);
            }
            Output::Memory(v) => v.truncate(usize::try_from(len).unwrap_or(usize::MAX)),
        }
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

pub(crate) fn temp_path(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::usage(format!("{} has no file name", path.display())))?;
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = format!(".{}.tmp-{}-{n}", name.to_string_lossy(), std::process::id());
    Ok(path.with_file_name(tmp))
}

pub(crate) fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let context = format!("{what} {}", path.display());
    move |e| Error::io(context, e)
}

pub(crate) fn sync_dir(path: &Path) -> Result<()> {
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
