//! Cold loads: several threads issuing large aligned `pread`s straight
//! into caller-owned destination buffers.
//!
//! A cold load of one thread is bound by one request in flight at a time:
//! the disk (or network volume) idles while the thread copies. Here each
//! raw part is cut into chunks of [`LoadOptions::chunk_bytes`] whose file
//! offsets (after the first) fall on multiples of the chunk size, and a few
//! threads pull chunks from one queue, so several large reads are in
//! flight and the kernel's read-ahead sees long sequential runs. Small
//! tensors become one chunk each, so a file of many small tensors is read
//! with the same parallelism. Compressed parts are one work item each
//! (their decoder is itself parallel).
//!
//! When the last chunk of a tensor lands, the thread that wrote it checks
//! the tensor's data rules and, unless disabled, its part digest, so
//! hashing overlaps the reads still in flight.

use super::Reader;
use crate::error::{Error, Result};
use crate::layout;
use crate::store::Store;
use crate::zstd_seekable;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Default size of one `pread` (8 MiB).
pub const DEFAULT_CHUNK_BYTES: usize = 8 << 20;

/// Smallest chunk accepted (64 KiB): smaller reads only add syscalls.
pub const MIN_CHUNK_BYTES: usize = 64 << 10;

/// Reader threads by default. Reads are I/O-bound, so this does not follow
/// the core count: on a 2-core VM's virtio disk, cold loads ran at about
/// 1.0 GB/s with 8 threads against 0.4-0.9 GB/s with 4 and 0.15-0.4 GB/s
/// with 1 (8 MiB chunks; see `benches/bench_coldload.py`).
pub const DEFAULT_THREADS: usize = 8;

/// Most threads one load may start.
pub const MAX_THREADS: usize = 64;

/// How [`Reader::load_dense_into`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Reader threads (I/O-bound, so more than the cores helps on disks
    /// that serve several requests at once; default [`DEFAULT_THREADS`]).
    /// Clamped to 1..=[`MAX_THREADS`].
    pub threads: usize,
    /// Bytes per `pread`; rounded down to a multiple of 4 KiB and raised to
    /// at least [`MIN_CHUNK_BYTES`].
    pub chunk_bytes: usize,
    /// Recompute each part's digest (when it has one of a known algorithm)
    /// over the bytes read, and fail on a mismatch.
    pub verify_digests: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            threads: DEFAULT_THREADS,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            verify_digests: true,
        }
    }
}

impl LoadOptions {
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }
    pub fn chunk_bytes(mut self, n: usize) -> Self {
        self.chunk_bytes = n;
        self
    }
    pub fn verify_digests(mut self, on: bool) -> Self {
        self.verify_digests = on;
        self
    }
    fn chunk(&self) -> usize {
        (self.chunk_bytes & !4095).max(MIN_CHUNK_BYTES)
    }
}

/// Checks a target's bytes once they are all in.
type Check<'r> = Box<dyn Fn(&[u8]) -> Result<()> + Sync + 'r>;

/// One destination: where its bytes start and how many there are. The
/// pointer comes from a `&mut [u8]` the load holds for its whole run.
struct Target<'r> {
    ptr: *mut u8,
    len: usize,
    /// Chunks not yet written; the thread that takes it to zero checks.
    pending: AtomicUsize,
    check: Check<'r>,
}

// SAFETY: `ptr` is only dereferenced for disjoint chunk ranges (one thread
// each) and, after every chunk is written, by the one thread that brought
// `pending` to zero; the atomics order those accesses. `check` is `Sync`.
unsafe impl Sync for Target<'_> {}

enum Work<'r> {
    /// Raw bytes `[at, at + len)` of target `t`, read from `store` at `src`.
    Raw {
        t: usize,
        store: &'r Store,
        src: u64,
        at: usize,
        len: usize,
    },
    /// A whole zstd part of target `t`: `stored` bytes at `src`.
    Decode {
        t: usize,
        store: &'r Store,
        src: u64,
        stored: u64,
    },
}

impl Reader {
    /// Reads dense tensors into caller-owned buffers with several threads
    /// (see the module docs): `jobs` pairs each name with a destination of
    /// exactly [`Reader::dense_len`] bytes. Every tensor's data rules are
    /// checked, and with [`LoadOptions::verify_digests`] its part digest.
    /// On error the destinations hold unspecified bytes.
    pub fn load_dense_into(
        &self,
        jobs: &mut [(&str, &mut [u8])],
        opts: &LoadOptions,
    ) -> Result<()> {
        let chunk = opts.chunk();
        let mut targets = Vec::with_capacity(jobs.len());
        let mut work = Vec::new();
        for (name, dst) in jobs.iter_mut() {
            let name: &str = name;
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
            let t = targets.len();
            let before = work.len();
            match part.decoded_length {
                None => split_raw(&mut work, t, store, part.blob.offset, dst.len(), chunk),
                Some(_) => work.push(Work::Decode {
                    t,
                    store,
                    src: part.blob.offset,
                    stored: part.blob.length,
                }),
            }
            let digest = part
                .digest
                .as_ref()
                .filter(|_| opts.verify_digests)
                .and_then(|d| d.alg.map(|a| (a, d.text.clone())));
            let n = object.num_elements();
            targets.push(Target {
                ptr: dst.as_mut_ptr(),
                len: dst.len(),
                pending: AtomicUsize::new(work.len() - before),
                check: Box::new(move |bytes: &[u8]| {
                    layout::check_values(name, &etype, n, bytes)?;
                    if let Some((alg, text)) = &digest {
                        let actual = alg.digest(bytes);
                        if &actual != text {
                            return Err(Error::Checksum {
                                object: name.to_string(),
                                part: "data".into(),
                                algorithm: alg.to_string(),
                                expected: text.clone(),
                                actual,
                            });
                        }
                    }
                    Ok(())
                }),
            });
        }
        // Empty tensors have no chunk to finish them: check them now.
        for t in targets.iter().filter(|t| t.len == 0) {
            (t.check)(&[])?;
        }
        run(&targets, work, opts.threads.clamp(1, MAX_THREADS))
    }

    /// [`Reader::read_dense_into`] through [`Reader::load_dense_into`]:
    /// one tensor read by several threads.
    pub fn load_one_into(&self, name: &str, dst: &mut [u8], opts: &LoadOptions) -> Result<()> {
        self.load_dense_into(&mut [(name, dst)], opts)
    }

    /// Decoded bytes `[start, start + dst.len())` of any part, raw ones read
    /// by several threads in chunks (for conversion's read-ahead); encoded
    /// parts go through [`Reader::part_range_into`]. No digest is checked
    /// (the range may be part of a part).
    pub fn part_range_into_parallel(
        &self,
        name: &str,
        role: &str,
        start: u64,
        dst: &mut [u8],
        opts: &LoadOptions,
    ) -> Result<()> {
        let (_, part) = self.part(name, role)?;
        if part.decoded_length.is_some() || dst.len() <= opts.chunk() {
            return self.part_range_into(name, role, start, dst);
        }
        self.check_decodable(name, role, part)?;
        if start
            .checked_add(dst.len() as u64)
            .is_none_or(|e| e > part.decoded_size())
        {
            return Err(Error::usage(format!(
                "range [{start}, +{}) is outside {name}/{role}'s {} bytes",
                dst.len(),
                part.decoded_size()
            )));
        }
        let store = self.store_of(part)?;
        let targets = [Target {
            ptr: dst.as_mut_ptr(),
            len: dst.len(),
            pending: AtomicUsize::new(0),
            check: Box::new(|_: &[u8]| Ok(())),
        }];
        let mut work = Vec::new();
        split_raw(
            &mut work,
            0,
            store,
            part.blob.offset + start,
            dst.len(),
            opts.chunk(),
        );
        targets[0].pending.store(work.len(), Ordering::Relaxed);
        run(&targets, work, opts.threads.clamp(1, MAX_THREADS))
    }
}

/// Cuts `len` raw bytes read from `src` into chunks whose file offsets,
/// after the first, are multiples of `chunk`.
fn split_raw<'r>(
    work: &mut Vec<Work<'r>>,
    t: usize,
    store: &'r Store,
    src: u64,
    len: usize,
    chunk: usize,
) {
    let mut at = 0usize;
    while at < len {
        let pos = src + at as u64;
        let to_boundary = chunk - (pos % chunk as u64) as usize;
        // A short head chunk is merged into the next one (never above
        // twice the chunk size) rather than read alone.
        let mut n = to_boundary;
        if n < chunk / 4 {
            n += chunk;
        }
        let n = n.min(len - at);
        work.push(Work::Raw {
            t,
            store,
            src: pos,
            at,
            len: n,
        });
        at += n;
    }
}

/// Runs the work items on `threads` scoped threads (the caller's thread is
/// one of them); the first error stops the others at their next item.
fn run(targets: &[Target<'_>], work: Vec<Work<'_>>, threads: usize) -> Result<()> {
    if work.is_empty() {
        return Ok(());
    }
    let threads = threads.min(work.len());
    let queue = Mutex::new(work.into_iter());
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let worker = || {
        while !failed.load(Ordering::Relaxed) {
            let item = match queue.lock() {
                Ok(mut q) => q.next(),
                Err(_) => None,
            };
            let Some(item) = item else { break };
            if let Err(e) = do_item(targets, item) {
                failed.store(true, Ordering::Relaxed);
                if let Ok(mut slot) = first_error.lock() {
                    slot.get_or_insert(e);
                }
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(worker);
        }
        worker();
    });
    match first_error.into_inner() {
        Ok(Some(e)) => Err(e),
        Ok(None) => Ok(()),
        Err(_) => Err(Error::usage("a load thread panicked")),
    }
}

fn do_item(targets: &[Target<'_>], item: Work<'_>) -> Result<()> {
    let t = match item {
        Work::Raw {
            t,
            store,
            src,
            at,
            len,
        } => {
            let target = &targets[t];
            // SAFETY: `at + len <= target.len` (split_raw cuts inside the
            // destination), and each range is handed to exactly one work
            // item, so this is the only live reference to these bytes.
            let dst = unsafe { std::slice::from_raw_parts_mut(target.ptr.add(at), len) };
            store.read_into(src, dst)?;
            t
        }
        Work::Decode {
            t,
            store,
            src,
            stored,
        } => {
            let target = &targets[t];
            // SAFETY: a decode item is the only work item of its target, so
            // this is the only reference to the destination.
            let dst = unsafe { std::slice::from_raw_parts_mut(target.ptr, target.len) };
            let bytes = store.read(src, stored)?;
            zstd_seekable::decode_into(&bytes, target.len as u64, dst)?;
            t
        }
    };
    let target = &targets[t];
    if target.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
        // SAFETY: every chunk of this target has been written and its
        // writer's reference dropped (the AcqRel decrement orders their
        // writes before this read); no thread touches these bytes again.
        let all = unsafe { std::slice::from_raw_parts(target.ptr, target.len) };
        (target.check)(all)?;
    }
    Ok(())
}
