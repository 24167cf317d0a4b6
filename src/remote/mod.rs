//! Reading files that live elsewhere: a [`RangeSource`] fetches byte
//! ranges of one object (an HTTP(S) URL or an S3 object through
//! `object_store` with the `remote` feature, or anything a caller
//! implements: the Python package plugs `fsspec` in here), and
//! [`RemoteFile`] turns it into a store the [`crate::Reader`] reads like a
//! local file.
//!
//! What a reader asks for (spec §22): opening fetches the object's size,
//! then its first 64 bytes and its last 64 KiB in one batch (the footer,
//! and the manifest when it fits there), and the manifest with one more
//! range when it does not; a tensor read fetches only the byte ranges that
//! cover it (for a zstd part, the seek table and then only the frames
//! covering the range). Ranges of one batch that overlap or lie within
//! [`COALESCE_GAP`] of each other are merged, merged ranges larger than
//! [`MAX_REQUEST`] are split, and the pieces are fetched concurrently.
//! Every body's length is checked against the range asked for: a server
//! that returns more or fewer bytes gives an error, never a wrong tensor.

#[cfg(feature = "remote")]
mod object;

#[cfg(feature = "remote")]
pub use object::{open_url, ObjectSource};

use crate::error::{Error, Result};
use std::ops::Range;
use std::sync::Arc;

/// Bytes read from the start of an object at open (format detection).
pub const HEAD_BYTES: u64 = 64;
/// Bytes read from the end of an object at open (footer and, usually,
/// the manifest).
pub const TAIL_BYTES: u64 = 64 << 10;
/// Ranges of one batch closer than this are fetched as one.
pub const COALESCE_GAP: u64 = 64 << 10;
/// The largest single range request; larger spans are split into
/// requests of this size fetched concurrently.
pub const MAX_REQUEST: u64 = 8 << 20;

/// Byte ranges of one remote object.
pub trait RangeSource: Send + Sync {
    /// What the object is called in errors (its URL).
    fn name(&self) -> &str;
    /// The object's size in bytes, as the server reported it at open.
    fn len(&self) -> u64;
    /// True for an empty object.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fetches every range (concurrently where the source can); returns
    /// one buffer per range, in order. Lengths are checked by the caller.
    fn fetch(&self, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>>;
}

/// A remote object opened for reading: its size, the head and tail
/// fetched at open, and checked, coalesced range reads.
pub struct RemoteFile {
    source: Arc<dyn RangeSource>,
    len: u64,
    head: Vec<u8>,
    tail_start: u64,
    tail: Vec<u8>,
}

impl std::fmt::Debug for RemoteFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteFile")
            .field("name", &self.source.name())
            .field("len", &self.len)
            .finish()
    }
}

/// The error for a body that does not match the range asked for.
fn length_error(name: &str, range: &Range<u64>, got: usize) -> Error {
    Error::io(
        format!("reading {name}"),
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the server returned {got} bytes for the {}-byte range [{}, {})",
                range.end - range.start,
                range.start,
                range.end
            ),
        ),
    )
}

/// Merges ranges closer than `gap` (sorted by start), then splits merged
/// ranges into pieces of at most `max` bytes.
pub fn plan(ranges: &[Range<u64>], gap: u64, max: u64) -> Vec<Range<u64>> {
    let mut sorted: Vec<Range<u64>> = ranges.iter().filter(|r| r.end > r.start).cloned().collect();
    sorted.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match merged.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(gap) => {
                last.end = last.end.max(r.end);
            }
            _ => merged.push(r),
        }
    }
    let max = max.max(1);
    let mut out = Vec::with_capacity(merged.len());
    for r in merged {
        let mut at = r.start;
        while at < r.end {
            let end = r.end.min(at.saturating_add(max));
            out.push(at..end);
            at = end;
        }
    }
    out
}

impl RemoteFile {
    /// Opens `source`: fetches its head and tail in one batch.
    pub fn open(source: Arc<dyn RangeSource>) -> Result<RemoteFile> {
        let len = source.len();
        let mut file = RemoteFile {
            source,
            len,
            head: Vec::new(),
            tail_start: len,
            tail: Vec::new(),
        };
        let head = 0..len.min(HEAD_BYTES);
        let tail = len - len.min(TAIL_BYTES)..len;
        let mut got = file.read_many(&[head, tail])?.into_iter();
        file.head = got.next().unwrap_or_default();
        file.tail = got.next().unwrap_or_default();
        file.tail_start = len - file.tail.len() as u64;
        Ok(file)
    }

    pub fn name(&self) -> &str {
        self.source.name()
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes `[offset, offset + len)`, from the cached head or tail when
    /// they hold them, else fetched.
    pub fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| {
                Error::usage(format!(
                    "read of [{offset}, +{len}) outside the {}-byte object {}",
                    self.len,
                    self.name()
                ))
            })?;
        if end <= self.head.len() as u64 {
            return Ok(self.head[offset as usize..end as usize].to_vec());
        }
        if offset >= self.tail_start {
            let at = (offset - self.tail_start) as usize;
            return Ok(self.tail[at..at + len as usize].to_vec());
        }
        let mut out = self.read_many(std::slice::from_ref(&(offset..end)))?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Copies bytes `[offset, offset + dst.len())` into `dst`.
    pub fn read_into(&self, offset: u64, dst: &mut [u8]) -> Result<()> {
        let bytes = self.read(offset, dst.len() as u64)?;
        dst.copy_from_slice(&bytes);
        Ok(())
    }

    /// Fetches several ranges in one coalesced, concurrent batch; every
    /// body's length is checked. Returns one buffer per range, in order.
    pub fn read_many(&self, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        let mut total = 0u64;
        for r in ranges {
            if r.start > r.end || r.end > self.len {
                return Err(Error::usage(format!(
                    "read of [{}, {}) outside the {}-byte object {}",
                    r.start,
                    r.end,
                    self.len,
                    self.name()
                )));
            }
            total = total.saturating_add(r.end - r.start);
        }
        if total > isize::MAX as u64 {
            return Err(Error::Limit {
                what: "remote read".into(),
                value: total,
                limit: isize::MAX as u64,
            });
        }
        let pieces = plan(ranges, COALESCE_GAP, MAX_REQUEST);
        let bodies = if pieces.is_empty() {
            Vec::new()
        } else {
            self.source.fetch(&pieces)?
        };
        if bodies.len() != pieces.len() {
            return Err(Error::io(
                format!("reading {}", self.name()),
                std::io::Error::other(format!(
                    "{} bodies for {} ranges",
                    bodies.len(),
                    pieces.len()
                )),
            ));
        }
        for (piece, body) in pieces.iter().zip(&bodies) {
            if body.len() as u64 != piece.end - piece.start {
                return Err(length_error(self.name(), piece, body.len()));
            }
        }
        // Every range lies inside one merged span, whose pieces are
        // consecutive: copy it out of them.
        ranges
            .iter()
            .map(|r| {
                let mut out = Vec::new();
                out.try_reserve_exact((r.end - r.start) as usize)
                    .map_err(|_| Error::Limit {
                        what: "remote read buffer".into(),
                        value: r.end - r.start,
                        limit: isize::MAX as u64,
                    })?;
                let first = pieces.partition_point(|p| p.end <= r.start);
                for (piece, body) in pieces[first..].iter().zip(&bodies[first..]) {
                    if piece.start >= r.end {
                        break;
                    }
                    let from = r.start.max(piece.start) - piece.start;
                    let to = r.end.min(piece.end) - piece.start;
                    out.extend_from_slice(&body[from as usize..to as usize]);
                }
                if out.len() as u64 != r.end - r.start {
                    return Err(length_error(self.name(), r, out.len()));
                }
                Ok(out)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// Serves `data`; `lie` rewrites each body before it is returned.
    struct Fake {
        data: Vec<u8>,
        calls: AtomicUsize,
        asked: Mutex<Vec<Range<u64>>>,
        lie: fn(Vec<u8>) -> Vec<u8>,
    }

    impl Fake {
        fn new(data: Vec<u8>, lie: fn(Vec<u8>) -> Vec<u8>) -> Arc<Fake> {
            Arc::new(Fake {
                data,
                calls: AtomicUsize::new(0),
                asked: Mutex::new(Vec::new()),
                lie,
            })
        }
    }

    impl RangeSource for Fake {
        fn name(&self) -> &str {
            "fake"
        }
        fn len(&self) -> u64 {
            self.data.len() as u64
        }
        fn fetch(&self, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.asked.lock().unwrap().extend(ranges.iter().cloned());
            Ok(ranges
                .iter()
                .map(|r| (self.lie)(self.data[r.start as usize..r.end as usize].to_vec()))
                .collect())
        }
    }

    #[test]
    fn plan_merges_near_ranges_and_splits_large_ones() {
        assert_eq!(plan(&[10..20, 0..5, 25..30], 5, 100), vec![0..30]);
        assert_eq!(plan(&[0..5, 20..30], 5, 100), vec![0..5, 20..30]);
        let one = |r: Range<u64>| plan(std::slice::from_ref(&r), 0, 10);
        assert_eq!(one(0..25), vec![0..10, 10..20, 20..25]);
        assert_eq!(one(3..3), Vec::<Range<u64>>::new());
    }

    #[test]
    fn reads_come_from_cache_or_one_fetch() {
        let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let fake = Fake::new(data.clone(), |b| b);
        let f = RemoteFile::open(fake.clone()).unwrap();
        assert_eq!(fake.calls.load(Ordering::Relaxed), 1);
        assert_eq!(f.read(0, 8).unwrap(), &data[..8]);
        assert_eq!(f.read(299_960, 40).unwrap(), &data[299_960..]);
        assert_eq!(fake.calls.load(Ordering::Relaxed), 1, "served from cache");
        assert_eq!(f.read(1000, 20_000).unwrap(), &data[1000..21_000]);
        assert_eq!(fake.calls.load(Ordering::Relaxed), 2);
        let many = f.read_many(&[100..200, 150..400, 5000..6000]).unwrap();
        assert_eq!(many[0], &data[100..200]);
        assert_eq!(many[1], &data[150..400]);
        assert_eq!(many[2], &data[5000..6000]);
        assert_eq!(fake.asked.lock().unwrap().last(), Some(&(100..6000)));
    }

    #[test]
    fn short_and_long_bodies_are_errors() {
        let data = vec![7u8; 200_000];
        for lie in [
            (|mut b: Vec<u8>| {
                b.pop();
                b
            }) as fn(Vec<u8>) -> Vec<u8>,
            |mut b: Vec<u8>| {
                b.push(0);
                b
            },
        ] {
            let e = RemoteFile::open(Fake::new(data.clone(), lie)).unwrap_err();
            assert!(e.to_string().contains("the server returned"), "{e}");
        }
    }
}
