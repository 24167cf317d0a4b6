//! The prefix cache: a request whose prompt tokens share a prefix with an
//! earlier context (the usual multi-turn chat) restores the longest cached
//! prefix — KV rows and the engine state — instead of prefilling it again.
//!
//! - **Memory**: the contexts left by finished runs, least recently used
//!   evicted beyond `--cache-ram` bytes.
//! - **Disk** (`--cache-dir`, `--cache-bytes`): the same contexts as `.zt`
//!   state snapshots (`p<id>.zt`), written atomically by a background
//!   thread, least recently used (file mtime) evicted beyond the budget.
//!   At start every file is listed again after checking it was made by this
//!   model (fingerprint and tokenizer); others, and unreadable ones, are
//!   skipped with a log line and left alone.
//!
//! Exactness (greedy output with the cache equals without): a position's KV
//! rows depend on how the engine batched it. One token (decode) and batches
//! of up to [`INT_BATCH`] tokens compute with 8-bit activations, longer
//! prefills with the GEMMs (a position's result independent of its batch)
//! or, on CPUs without them, f32 tiles that group [`TILE`] positions from
//! the start of the prefill (a partial last group takes other kernels);
//! `tests/engine.rs` checks a split prefill against a whole one. So only rows
//! written by a prompt prefill are cached (not generated tokens), a reused
//! prefix is cut to a multiple of [`TILE`] (its positions sat in whole
//! groups, as in a prefill from position 0), and at least `INT_BATCH + 1`
//! prompt tokens are prefilled again (the rest takes the f32 tiles, grouped
//! as in a full prefill). A cached context is kept cut to its prompt; its
//! stored logits are then those of the longer context and are never used
//! (a run always prefills after restoring, which replaces them).

use super::metrics::Metrics;
use crate::engine::{snapshot, Engine, KvRows, State};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Fewer shared tokens than this are not worth a restore.
const MIN_REUSE: usize = 4;

/// Positions the engine's f32 prefill tiles group, from a prefill's start.
const TILE: usize = 4;

/// Largest batch the engine computes with 8-bit activations (as decoding).
const INT_BATCH: usize = 4;

/// Most prompt tokens a cached context may supply for a prompt of `n`
/// tokens whose common prefix with it is `common`: see the module notes.
fn reusable(common: usize, n: usize) -> usize {
    let limit = n.saturating_sub(INT_BATCH + 1);
    common.min(limit) / TILE * TILE
}
/// Snapshots waiting for the disk writer before new ones are dropped.
const WRITE_QUEUE: usize = 4;

struct MemEntry {
    state: Arc<State>,
    bytes: u64,
    used: u64,
}

struct DiskEntry {
    path: PathBuf,
    tokens: Vec<u32>,
    bytes: u64,
    used: u64,
}

struct Disk {
    dir: PathBuf,
    budget: u64,
    entries: Mutex<Vec<DiskEntry>>,
    writer: Mutex<Option<SyncSender<Arc<State>>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Both tiers.
pub struct PrefixCache {
    ram_budget: u64,
    mem: Mutex<Vec<MemEntry>>,
    disk: Option<Arc<Disk>>,
    /// Reads and writes snapshot files (a fork of the loaded engine).
    io: Arc<Mutex<Engine>>,
    n_layer: usize,
    clock: AtomicU64,
    metrics: Arc<Metrics>,
}

/// Bytes a state holds in memory.
fn state_bytes(s: &State) -> u64 {
    let kv = match &s.kv {
        KvRows::F32 { k, v } => (k.len() + v.len()) * 4,
        KvRows::F16 { k, v } => (k.len() + v.len()) * 2,
    };
    (kv + s.tokens.len() * 4 + s.last_logits.len() * 4) as u64
}

/// How many leading tokens `a` and `b` share.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// `state` cut to its first `k` tokens. The logits stay those of the
/// whole state: they are stale, and the caller runs at least one token
/// before sampling, which replaces them.
fn truncated(state: &State, k: usize, n_layer: usize) -> Option<State> {
    let n = state.tokens.len();
    if k > n || n == 0 || n_layer == 0 {
        return None;
    }
    let per_layer = state.kv.len() / n_layer;
    if per_layer * n_layer != state.kv.len() || !per_layer.is_multiple_of(n) {
        return None;
    }
    let keep = k * (per_layer / n);
    fn cut<T: Copy>(v: &[T], n_layer: usize, per_layer: usize, keep: usize) -> Vec<T> {
        (0..n_layer)
            .flat_map(|l| &v[l * per_layer..l * per_layer + keep])
            .copied()
            .collect()
    }
    let kv = match &state.kv {
        KvRows::F32 { k, v } => KvRows::F32 {
            k: cut(k, n_layer, per_layer, keep),
            v: cut(v, n_layer, per_layer, keep),
        },
        KvRows::F16 { k, v } => KvRows::F16 {
            k: cut(k, n_layer, per_layer, keep),
            v: cut(v, n_layer, per_layer, keep),
        },
    };
    Some(State {
        tokens: state.tokens[..k].to_vec(),
        kv,
        last_logits: state.last_logits.clone(),
        rng: state.rng,
        sampler: state.sampler.clone(),
        created: state.created,
        // A cached prompt prefix is restored before a new prompt, which
        // starts any grammar afresh.
        grammar: None,
    })
}

/// A file's modification time in nanoseconds (its last use).
fn mtime_nanos(path: &Path) -> u64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Whether `file` is a cache entry's name: `p` then hex digits, `.zt`.
fn is_entry_name(file: &str) -> bool {
    file.strip_prefix('p')
        .and_then(|f| f.strip_suffix(".zt"))
        .is_some_and(|id| {
            !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

/// `.p<id>.zt.tmp-<pid>-<n>`: the atomic writer's temporary file.
fn is_stale_temp(file: &str) -> bool {
    file.strip_prefix('.')
        .and_then(|f| f.split_once(".zt.tmp-"))
        .is_some_and(|(name, _)| is_entry_name(&format!("{name}.zt")))
}

impl Disk {
    /// Lists the usable entries of `dir`; `io` checks them.
    fn open(dir: &Path, budget: u64, io: &Engine) -> crate::Result<Disk> {
        std::fs::create_dir_all(dir)
            .map_err(|e| crate::Error::io(format!("creating {}", dir.display()), e))?;
        let list = std::fs::read_dir(dir)
            .map_err(|e| crate::Error::io(format!("listing {}", dir.display()), e))?;
        let mut entries = Vec::new();
        for item in list.flatten() {
            let path = item.path();
            let file = item.file_name().to_string_lossy().into_owned();
            if is_stale_temp(&file) {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if !is_entry_name(&file) {
                continue;
            }
            match read_tokens(&path, io) {
                Ok(tokens) => entries.push(DiskEntry {
                    bytes: item.metadata().map_or(0, |m| m.len()),
                    used: mtime_nanos(&path),
                    path,
                    tokens,
                }),
                Err(e) => eprintln!("zt serve: prefix cache: skipping {}: {e}", path.display()),
            }
        }
        Ok(Disk {
            dir: dir.to_path_buf(),
            budget,
            entries: Mutex::new(entries),
            writer: Mutex::new(None),
            thread: Mutex::new(None),
        })
    }

    /// Removes least recently used entries until `incoming` more bytes fit.
    fn make_room(&self, incoming: u64) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        while total + incoming > self.budget && !entries.is_empty() {
            let (i, _) = entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.used)
                .unwrap_or((0, &entries[0]));
            let e = entries.swap_remove(i);
            let _ = std::fs::remove_file(&e.path);
            total -= e.bytes;
        }
    }
}

/// The tokens of a cache snapshot, after checking it belongs to `io`'s
/// model.
fn read_tokens(path: &Path, io: &Engine) -> crate::Result<Vec<u32>> {
    let reader = snapshot::open(path)?;
    let info = snapshot::read_info(&reader)?;
    snapshot::check_info(io, &info)?;
    let tokens = reader
        .read_dense("tokens")?
        .to_vec::<u32>()
        .map_err(|e| crate::Error::usage(format!("tokens: {e}")))?;
    if tokens.len() != info.tokens_count {
        return Err(crate::Error::usage(format!(
            "{} tokens stored, {} described",
            tokens.len(),
            info.tokens_count
        )));
    }
    Ok(tokens)
}

impl PrefixCache {
    /// A cache of `ram_budget` bytes in memory and, with `dir`, `disk_budget`
    /// bytes on disk. `io` (a fork of the served engine) reads and writes
    /// the files.
    pub fn open(
        ram_budget: u64,
        dir: Option<&Path>,
        disk_budget: u64,
        io: Engine,
        metrics: Arc<Metrics>,
    ) -> crate::Result<PrefixCache> {
        let n_layer = io.config().n_layer;
        let disk = match dir {
            Some(d) => Some(Arc::new(Disk::open(d, disk_budget, &io)?)),
            None => None,
        };
        let io = Arc::new(Mutex::new(io));
        if let Some(disk) = &disk {
            let (tx, rx) = mpsc::sync_channel::<Arc<State>>(WRITE_QUEUE);
            let (d, io) = (disk.clone(), io.clone());
            let handle = std::thread::Builder::new()
                .name("zt-cache-writer".into())
                .spawn(move || {
                    for state in rx {
                        write_entry(&d, &io, &state);
                    }
                })
                .map_err(|e| crate::Error::usage(format!("starting the cache writer: {e}")))?;
            if let Ok(mut w) = disk.writer.lock() {
                *w = Some(tx);
            }
            if let Ok(mut t) = disk.thread.lock() {
                *t = Some(handle);
            }
        }
        Ok(PrefixCache {
            ram_budget,
            mem: Mutex::new(Vec::new()),
            disk,
            io,
            n_layer,
            clock: AtomicU64::new(1),
            metrics,
        })
    }

    /// Whether anything is cached at all.
    pub fn enabled(&self) -> bool {
        self.ram_budget > 0 || self.disk.is_some()
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// Sets `engine` up to run `prompt`: restores the longest cached prefix
    /// of it (see [`reusable`]) or empties the context.
    /// Returns how many prompt tokens are already in the context.
    pub fn prepare(&self, engine: &mut Engine, prompt: &[u32]) -> usize {
        engine.reset();
        if !self.enabled() || reusable(prompt.len(), prompt.len()) < MIN_REUSE {
            return 0;
        }
        // Best in memory.
        let mut best: Option<(usize, Arc<State>)> = None;
        if let Ok(mut mem) = self.mem.lock() {
            let now = self.tick();
            let mut pick: Option<usize> = None;
            let mut len = 0;
            for (i, e) in mem.iter().enumerate() {
                let k = reusable(common_prefix(&e.state.tokens, prompt), prompt.len());
                if k > len {
                    (len, pick) = (k, Some(i));
                }
            }
            if let Some(i) = pick {
                mem[i].used = now;
                best = Some((len, mem[i].state.clone()));
            }
        }
        // A longer one on disk?
        let mem_len = best.as_ref().map_or(0, |b| b.0);
        if let Some(disk) = &self.disk {
            let found = disk.entries.lock().ok().and_then(|mut entries| {
                let mut pick: Option<(usize, usize)> = None;
                for (i, e) in entries.iter().enumerate() {
                    let k = reusable(common_prefix(&e.tokens, prompt), prompt.len());
                    if k > mem_len && pick.is_none_or(|p| k > p.1) {
                        pick = Some((i, k));
                    }
                }
                pick.map(|(i, k)| {
                    entries[i].used = now_nanos();
                    (entries[i].path.clone(), k)
                })
            });
            if let Some((path, k)) = found {
                match self.load(&path) {
                    Ok(state) => {
                        let state = Arc::new(state);
                        let _ = std::fs::File::open(&path)
                            .and_then(|f| f.set_modified(SystemTime::now()));
                        self.remember(state.clone());
                        best = Some((k, state));
                    }
                    Err(e) => {
                        eprintln!("zt serve: prefix cache: skipping {}: {e}", path.display());
                        if let Ok(mut entries) = disk.entries.lock() {
                            entries.retain(|e| e.path != path);
                        }
                    }
                }
            }
        }
        let reused = match best {
            Some((k, state)) if k >= MIN_REUSE => {
                let restored = if k == state.tokens.len() {
                    engine.restore_state(&state)
                } else {
                    match truncated(&state, k, self.n_layer) {
                        Some(t) => engine.restore_state(&t),
                        None => Err(crate::Error::usage("cached state has a bad KV layout")),
                    }
                };
                match restored {
                    Ok(()) => k,
                    Err(e) => {
                        eprintln!("zt serve: prefix cache: restore failed: {e}");
                        engine.reset();
                        0
                    }
                }
            }
            _ => 0,
        };
        if reused > 0 {
            self.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
            self.metrics
                .cache_tokens_reused
                .fetch_add(reused as u64, Ordering::Relaxed);
        } else {
            self.metrics.cache_misses.fetch_add(1, Ordering::Relaxed);
        }
        reused
    }

    fn load(&self, path: &Path) -> crate::Result<State> {
        let io = self
            .io
            .lock()
            .map_err(|_| crate::Error::usage("cache lock poisoned"))?;
        let reader = snapshot::open(path)?;
        io.read_state(&reader)
    }

    /// Keeps `state` in memory (evicting the least recently used beyond
    /// the budget). Returns false when it is not kept.
    fn remember(&self, state: Arc<State>) -> bool {
        let bytes = state_bytes(&state);
        if bytes > self.ram_budget {
            return false;
        }
        let Ok(mut mem) = self.mem.lock() else {
            return false;
        };
        // A state that is a prefix of a kept one adds nothing, and one a
        // kept state is a prefix of replaces it.
        if mem
            .iter()
            .any(|e| e.state.tokens.starts_with(&state.tokens))
        {
            return false;
        }
        mem.retain(|e| !state.tokens.starts_with(&e.state.tokens));
        let mut total: u64 = mem.iter().map(|e| e.bytes).sum();
        while total + bytes > self.ram_budget && !mem.is_empty() {
            let (i, _) = mem
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.used)
                .unwrap_or((0, &mem[0]));
            total -= mem.swap_remove(i).bytes;
        }
        let used = self.tick();
        mem.push(MemEntry { state, bytes, used });
        true
    }

    /// Keeps the first `prefilled` tokens of the context `engine` holds
    /// after a run (those a prefill of two or more tokens wrote), in memory
    /// and (in the background) on disk.
    pub fn store(&self, engine: &Engine, prefilled: usize) {
        let n = prefilled.min(engine.tokens().len());
        // A prompt of up to INT_BATCH tokens was prefilled with 8-bit
        // activations: its rows differ from a longer prefill's.
        if !self.enabled() || n < MIN_REUSE || n <= INT_BATCH {
            return;
        }
        let full = match engine.capture() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("zt serve: prefix cache: capture failed: {e}");
                return;
            }
        };
        let state = if n == full.tokens.len() {
            Arc::new(full)
        } else {
            match truncated(&full, n, self.n_layer) {
                Some(t) => Arc::new(t),
                None => return,
            }
        };
        if self.ram_budget > 0 {
            self.remember(state.clone());
        }
        if let Some(disk) = &self.disk {
            let known = disk
                .entries
                .lock()
                .is_ok_and(|e| e.iter().any(|e| e.tokens.starts_with(&state.tokens)));
            if !known {
                if let Ok(w) = disk.writer.lock() {
                    if let Some(tx) = w.as_ref() {
                        // A full queue drops the write: the cache is a hint.
                        let _ = tx.try_send(state);
                    }
                }
            }
        }
    }

    /// Entries in memory and on disk.
    pub fn counts(&self) -> (usize, usize) {
        let mem = self.mem.lock().map_or(0, |m| m.len());
        let disk = self
            .disk
            .as_ref()
            .map_or(0, |d| d.entries.lock().map_or(0, |e| e.len()));
        (mem, disk)
    }

    /// Finishes pending disk writes.
    pub fn shutdown(&self) {
        if let Some(disk) = &self.disk {
            if let Ok(mut w) = disk.writer.lock() {
                w.take();
            }
            if let Some(h) = disk.thread.lock().ok().and_then(|mut t| t.take()) {
                let _ = h.join();
            }
        }
    }
}

/// Writes one entry (atomically), within the budget.
fn write_entry(disk: &Disk, io: &Mutex<Engine>, state: &State) {
    static N: AtomicU64 = AtomicU64::new(0);
    let estimate = state_bytes(state) + 4096;
    if estimate > disk.budget {
        return;
    }
    disk.make_room(estimate);
    let id =
        now_nanos() ^ (u64::from(std::process::id()) << 48) ^ N.fetch_add(1, Ordering::Relaxed);
    let path = disk.dir.join(format!("p{id:016x}.zt"));
    let written = match io.lock() {
        Ok(io) => io.write_state(state, &path, false),
        Err(_) => return,
    };
    if let Err(e) = written {
        eprintln!("zt serve: prefix cache: writing {}: {e}", path.display());
        let _ = std::fs::remove_file(&path);
        return;
    }
    let bytes = std::fs::metadata(&path).map_or(estimate, |m| m.len());
    if let Ok(mut entries) = disk.entries.lock() {
        // Entries this one extends are no longer needed.
        entries.retain(|e| {
            let gone = state.tokens.starts_with(&e.tokens);
            if gone {
                let _ = std::fs::remove_file(&e.path);
            }
            !gone
        });
        entries.push(DiskEntry {
            path,
            tokens: state.tokens.clone(),
            bytes,
            used: now_nanos(),
        });
    }
    disk.make_room(0);
}

#[cfg(test)]
mod tests {

    #[test]
    fn reuse_is_cut_to_whole_tiles_and_leaves_an_f32_prefill() {
        // 14-token prompt: at most 14 - 5 = 9 tokens, cut to 8.
        assert_eq!(reusable(14, 14), 8);
        assert_eq!(reusable(7, 14), 4);
        assert_eq!(reusable(3, 14), 0);
        // The rest (6 tokens) is longer than the integer batch.
        assert!(14 - reusable(14, 14) > INT_BATCH);
        assert_eq!(reusable(100, 9), 4);
        assert_eq!(reusable(100, 8), 0);
        assert_eq!(reusable(0, 0), 0);
    }

    use super::*;

    #[test]
    fn names() {
        assert!(is_entry_name("p0123abcd.zt"));
        assert!(!is_entry_name("p.zt"));
        assert!(!is_entry_name("state.zt"));
        assert!(!is_entry_name("p12.zt.tmp"));
        assert!(is_stale_temp(".p12.zt.tmp-3-0"));
        assert!(!is_stale_temp(".a.zt.tmp-3-0"));
    }

    #[test]
    fn truncation_keeps_the_first_rows_of_every_layer() {
        // 2 layers, 3 tokens, kv_dim 2: values name (layer, pos, i).
        let vals: Vec<f32> = (0..2)
            .flat_map(|l| {
                (0..3).flat_map(move |p| (0..2).map(move |i| (l * 100 + p * 10 + i) as f32))
            })
            .collect();
        let s = State {
            tokens: vec![1, 2, 3],
            kv: KvRows::F32 {
                k: vals.clone(),
                v: vals,
            },
            last_logits: vec![0.0; 4],
            rng: [0; 4],
            sampler: Default::default(),
            created: 0,
            grammar: None,
        };
        let t = truncated(&s, 2, 2).unwrap();
        assert_eq!(t.tokens, vec![1, 2]);
        let KvRows::F32 { k, .. } = &t.kv else {
            panic!()
        };
        assert_eq!(k, &vec![0.0, 1.0, 10.0, 11.0, 100.0, 101.0, 110.0, 111.0]);
        assert!(truncated(&s, 4, 2).is_none());
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4]), 2);
    }
}
