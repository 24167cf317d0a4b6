//! Where a file's bytes come from: a memory map, `pread` on an open file,
//! or a buffer in memory. Every read is bounds-checked here.

use crate::error::{Error, Result};
use memmap2::Mmap;
use std::borrow::Cow;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// How a file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// Map the file; raw parts are borrowed zero-copy from the map.
    #[default]
    Mmap,
    /// Read with `pread`: for files that may change or shrink under us,
    /// where a map would fault (SIGBUS) instead of returning an error.
    Pread,
}

pub(crate) enum Store {
    Mapped(Mmap, File),
    Memory(Arc<[u8]>),
    Pread {
        file: File,
        len: u64,
    },
    /// An object read with range requests (see [`crate::remote`]).
    Remote(Arc<crate::remote::RemoteFile>),
}

impl Store {
    pub(crate) fn open(path: &Path, backend: Backend) -> Result<Store> {
        let file =
            File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("reading metadata of {}", path.display()), e))?
            .len();
        match backend {
            Backend::Pread => Ok(Store::Pread { file, len }),
            Backend::Mmap if len == 0 => Ok(Store::Memory(Arc::from(Vec::new()))),
            Backend::Mmap => {
                // SAFETY: the map is read-only and never handed out as
                // mutable. Another process truncating the file while it is
                // mapped would fault on access; that hazard is documented
                // and `Backend::Pread` exists for such files.
                let map = unsafe { Mmap::map(&file) }
                    .map_err(|e| Error::io(format!("mapping {}", path.display()), e))?;
                Ok(Store::Mapped(map, file))
            }
        }
    }

    pub(crate) fn len(&self) -> u64 {
        match self {
            Store::Mapped(m, _) => m.len() as u64,
            Store::Memory(b) => b.len() as u64,
            Store::Pread { len, .. } => *len,
            Store::Remote(r) => r.len(),
        }
    }

    /// The whole file as a slice, when it is in memory or mapped.
    pub(crate) fn as_slice(&self) -> Option<&[u8]> {
        match self {
            Store::Mapped(m, _) => Some(m),
            Store::Memory(b) => Some(b),
            Store::Pread { .. } | Store::Remote(_) => None,
        }
    }

    /// Bytes `[offset, offset + len)`: borrowed when mapped or in memory.
    pub(crate) fn read(&self, offset: u64, len: u64) -> Result<Cow<'_, [u8]>> {
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.len())
            .ok_or_else(|| {
                Error::usage(format!(
                    "read of [{offset}, +{len}) outside a {}-byte file",
                    self.len()
                ))
            })?;
        if let Some(all) = self.as_slice() {
            // In range: checked against the length above.
            return Ok(Cow::Borrowed(&all[offset as usize..end as usize]));
        }
        let file = match self {
            Store::Pread { file, .. } => file,
            Store::Remote(r) => return Ok(Cow::Owned(r.read(offset, len)?)),
            _ => return Err(Error::usage("unreachable store kind")),
        };
        let n = usize::try_from(len).map_err(|_| Error::usage("read too large"))?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(n).map_err(|_| Error::Limit {
            what: "read buffer".into(),
            value: len,
            limit: isize::MAX as u64,
        })?;
        buf.resize(n, 0);
        read_exact_at(file, &mut buf, offset)?;
        Ok(Cow::Owned(buf))
    }

    /// Copies bytes `[offset, offset + dst.len())` into `dst`. File-backed
    /// stores use `pread`, which copies from the page cache without
    /// faulting the mapping in page by page.
    pub(crate) fn read_into(&self, offset: u64, dst: &mut [u8]) -> Result<()> {
        let len = dst.len() as u64;
        if offset.checked_add(len).is_none_or(|e| e > self.len()) {
            return Err(Error::usage(format!(
                "read of [{offset}, +{len}) outside a {}-byte file",
                self.len()
            )));
        }
        match self {
            Store::Mapped(_, file) | Store::Pread { file, .. } => read_exact_at(file, dst, offset),
            Store::Memory(b) => {
                dst.copy_from_slice(&b[offset as usize..(offset + len) as usize]);
                Ok(())
            }
            Store::Remote(r) => r.read_into(offset, dst),
        }
    }

    /// True for an object read with range requests: each read is a round
    /// trip, so readers fetch only what a range needs.
    pub(crate) fn is_remote(&self) -> bool {
        matches!(self, Store::Remote(_))
    }

    /// Asks the kernel to read a range ahead (mapped files only).
    pub(crate) fn prefetch(&self, offset: u64, len: u64) {
        #[cfg(unix)]
        if let Store::Mapped(m, _) = self {
            if let (Ok(o), Ok(l)) = (usize::try_from(offset), usize::try_from(len)) {
                if o.checked_add(l).is_some_and(|e| e <= m.len()) && l > 0 {
                    let _ = m.advise_range(memmap2::Advice::WillNeed, o, l);
                }
            }
        }
        let _ = (offset, len);
    }
}

/// Reads exactly `buf.len()` bytes at `offset` (pread where available).
#[cfg(unix)]
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
        .map_err(|e| Error::io(format!("reading {} bytes at offset {offset}", buf.len()), e))
}

#[cfg(not(unix))]
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = file;
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.read_exact(buf))
        .map_err(|e| Error::io(format!("reading {} bytes at offset {offset}", buf.len()), e))
}
