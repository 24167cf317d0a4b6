//! Gathers the steps of sequences running on different threads (a
//! server's `--parallel N` workers, each with its own fork) — one-token
//! decode steps and prompt prefills alike — into batched forward passes
//! (see `batch`), as llama-server's slots do: prompts arriving together
//! share one pass over the weights, and a new prompt joins the running
//! decode steps instead of competing with them for the thread pool.
//!
//! A generation started on an engine with a [`Batcher`] attached holds a
//! [`Seat`] from its prefill to its end. Each step hands the sequence's KV
//! cache (moved out of the engine, not shared), tokens and position to the
//! batcher and waits. The step that completes the set — every seated
//! sequence waiting — or that has waited long enough for the others runs
//! one batched forward over everything submitted, then hands every cache
//! and its logits back. Long enough is as long as a batched pass takes
//! (recent average; waiting longer for a straggler costs more than giving
//! it a pass of its own), at most [`GATHER`]. Steps submitted while a batch runs form the next
//! batch. Every row gets the bits it gets running alone where `batch::Mul`
//! says so: always for a prefill, on the integer path for a decode row.
//!
//! A generation that ends (EOS, stop, length, cancel, grammar) gives its
//! seat up at once, so the others stop waiting for it; a panic in the
//! batched forward fails the steps of that batch with an error (their
//! caches are returned) and leaves the batcher working.

use super::arch::{Model, Scratch};
use super::batch::BatchRow;
use super::kv::KvCache;
use super::matmul::vectors_independent_from;
use super::Engine;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The longest a submitted step waits for the other seated sequences
/// before the batch runs without them (a sequence busy elsewhere — a first
/// grammar mask, a slow client — must not hold the others back longer).
pub const GATHER: Duration = Duration::from_millis(3);

/// Batches the decode steps of forks of one engine (cheap to clone: all
/// clones are one batcher).
#[derive(Clone)]
pub struct Batcher {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.shared.lock();
        f.debug_struct("Batcher")
            .field("seats", &s.seats)
            .field("steps", &s.stats.steps)
            .finish()
    }
}

/// Batched steps run so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Batched forward passes.
    pub steps: u64,
    /// Sequence steps they ran, decode rows and prompt chunks (`rows /
    /// steps` is the mean batch size).
    pub rows: u64,
    /// Of `rows`, the prompt chunks (prefills).
    pub prefills: u64,
    /// The largest batch.
    pub max_rows: usize,
}

struct Shared {
    /// The longest wait for stragglers.
    gather: Duration,
    /// Wait no longer than a recent batched pass took.
    adaptive: bool,
    model: Arc<Model>,
    pool: Arc<rayon::ThreadPool>,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// Live seats: sequences that will submit a step soon.
    seats: usize,
    /// Submitted, not yet taken by a batch.
    queue: Vec<Job>,
    /// When the oldest queued step was submitted.
    first_at: Option<Instant>,
    /// Finished steps by ticket.
    done: HashMap<u64, Job>,
    /// A batch is running (one at a time: they share the scratch).
    running: bool,
    next_ticket: u64,
    scratch: Scratch,
    logits: Vec<f32>,
    stats: BatchStats,
    /// Moving average of the batched passes' time (`None` before one).
    pass_time: Option<Duration>,
}

impl State {
    /// How long a queued step may wait for the other seated sequences.
    /// A prompt never waits longer than [`GATHER`]: a seated sequence may
    /// be busy elsewhere between its prefill and its first decode step.
    fn patience(&self, sh: &Shared) -> Duration {
        let p = match (sh.adaptive, self.pass_time) {
            (true, Some(t)) => t.min(sh.gather),
            _ => sh.gather,
        };
        if self.queue.iter().any(|j| j.prefill) {
            p.min(GATHER)
        } else {
            p
        }
    }
}

/// One sequence's step, carrying its cache there and back.
struct Job {
    ticket: u64,
    cache: KvCache,
    /// One token (a decode step) or a prompt chunk (a prefill).
    tokens: Vec<u32>,
    prefill: bool,
    pos: usize,
    logits: Vec<f32>,
    result: Result<()>,
}

impl Shared {
    /// The state, even after a panic elsewhere while it was held (every
    /// update under the lock is a plain move, so it stays consistent).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Batcher {
    /// A batcher for forks of `engine` (same model and thread pool).
    pub fn new(engine: &Engine) -> Batcher {
        Batcher::make(engine, GATHER, true)
    }

    /// [`Batcher::new`] waiting exactly up to `gather` for every seated
    /// sequence to submit its step (not adapting to the pass time; a test
    /// that needs full batches uses a long one).
    pub fn with_gather(engine: &Engine, gather: Duration) -> Batcher {
        Batcher::make(engine, gather, false)
    }

    fn make(engine: &Engine, gather: Duration, adaptive: bool) -> Batcher {
        Batcher {
            shared: Arc::new(Shared {
                gather,
                adaptive,
                model: engine.model.clone(),
                pool: engine.pool.clone(),
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
            }),
        }
    }

    /// A seat for one decoding sequence (given up when dropped).
    pub(crate) fn seat(&self) -> Seat {
        self.shared.lock().seats += 1;
        Seat {
            shared: self.shared.clone(),
        }
    }

    pub fn stats(&self) -> BatchStats {
        self.shared.lock().stats
    }

    fn serves(&self, model: &Arc<Model>) -> bool {
        Arc::ptr_eq(&self.shared.model, model)
    }
}

/// A decoding sequence's place at a [`Batcher`].
pub(crate) struct Seat {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Seat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seat")
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.seats = s.seats.saturating_sub(1);
        drop(s);
        // A batch may now be complete without this sequence.
        self.shared.wake.notify_all();
    }
}

impl Seat {
    /// Runs `tokens` (a decode step's one token, or a prompt chunk:
    /// `prefill`) at `pos..` of `cache` in the next batch, leaving the
    /// logits after the last in `logits`. `cache` is moved to the batch and
    /// back; it is back when this returns, error or not.
    pub(crate) fn step(
        &self,
        cache: &mut KvCache,
        (tokens, prefill): (&[u32], bool),
        pos: usize,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let sh = &*self.shared;
        let mut s = sh.lock();
        let ticket = s.next_ticket;
        s.next_ticket += 1;
        s.queue.push(Job {
            ticket,
            cache: std::mem::take(cache),
            tokens: tokens.to_vec(),
            prefill,
            pos,
            logits: std::mem::take(logits),
            result: Ok(()),
        });
        s.first_at.get_or_insert_with(Instant::now);
        sh.wake.notify_all();
        loop {
            if let Some(job) = s.done.remove(&ticket) {
                *cache = job.cache;
                *logits = job.logits;
                return job.result;
            }
            let waited = s.first_at.map_or(Duration::ZERO, |t| t.elapsed());
            let patience = s.patience(sh);
            if !s.running && !s.queue.is_empty() {
                if s.queue.len() >= s.seats || waited >= patience {
                    s = lead(sh, s);
                    continue;
                }
                s = sh
                    .wake
                    .wait_timeout(s, patience - waited)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            } else {
                s = sh.wake.wait(s).unwrap_or_else(|e| e.into_inner());
            }
        }
    }
}

/// Takes every queued step, runs them as one batch with the lock released,
/// files the results and wakes the waiters; returns the lock.
fn lead<'a>(sh: &'a Shared, mut s: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
    let mut jobs = std::mem::take(&mut s.queue);
    s.first_at = None;
    s.running = true;
    let mut scratch = std::mem::take(&mut s.scratch);
    let mut logits = std::mem::take(&mut s.logits);
    drop(s);
    let t0 = Instant::now();
    run(sh, &mut jobs, &mut scratch, &mut logits);
    let took = t0.elapsed();
    let mut s = sh.lock();
    s.pass_time = Some(match s.pass_time {
        None => took,
        Some(t) => (t * 3 + took) / 4,
    });
    s.scratch = scratch;
    s.logits = logits;
    s.running = false;
    s.stats.steps += 1;
    s.stats.rows += jobs.len() as u64;
    s.stats.prefills += jobs.iter().filter(|j| j.prefill).count() as u64;
    s.stats.max_rows = s.stats.max_rows.max(jobs.len());
    for j in jobs {
        s.done.insert(j.ticket, j);
    }
    // Steps queued while this batch ran wait from now for the sequences
    // just served: otherwise two halves of the set would alternate.
    if !s.queue.is_empty() {
        s.first_at = Some(Instant::now());
    }
    sh.wake.notify_all();
    s
}

/// The batched forward over `jobs`: a step that cannot run (say its
/// context is full) fails alone; an error or panic of the pass fails the
/// steps in it.
fn run(sh: &Shared, jobs: &mut [Job], scratch: &mut Scratch, logits: &mut Vec<f32>) {
    for j in jobs.iter_mut() {
        j.result = sh.model.check_row(&j.cache, &j.tokens, j.pos);
    }
    // One-token rows first, then the prompts that each take the GEMM: one
    // run of the first is one segment of the batched pass, and so is one
    // run of the second (see `batch::Mul`).
    jobs.sort_by_key(|j| match j.tokens.len() {
        1 => 0,
        n if vectors_independent_from(n) => 2,
        _ => 1,
    });
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut rows: Vec<BatchRow<'_>> = jobs
            .iter_mut()
            .filter(|j| j.result.is_ok())
            .map(|j| BatchRow {
                cache: &mut j.cache,
                tokens: &j.tokens,
                pos: j.pos,
            })
            .collect();
        sh.pool
            .install(|| sh.model.forward_batch(&mut rows, scratch, logits))
    }));
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("batched decode failed: {e}")),
        Err(_) => Some("batched decode panicked".to_string()),
    };
    let v = sh.model.config.n_vocab;
    for (i, j) in jobs.iter_mut().filter(|j| j.result.is_ok()).enumerate() {
        match &failure {
            Some(msg) => j.result = Err(Error::usage(msg.clone())),
            None => {
                j.logits.clear();
                j.logits.extend_from_slice(&logits[i * v..(i + 1) * v]);
            }
        }
    }
}

impl Engine {
    /// Sends this engine's one-token decode steps through `batcher` (whose
    /// engine this must be a fork of), or back to running alone (`None`).
    /// Generations started from now on hold a seat while they decode.
    pub fn attach_batcher(&mut self, batcher: Option<Batcher>) -> Result<()> {
        if let Some(b) = &batcher {
            if !b.serves(&self.model) {
                return Err(Error::usage(
                    "the batcher serves another model: attach it to forks of its engine",
                ));
            }
        }
        self.batcher = batcher;
        Ok(())
    }

    /// A seat at the attached batcher, if any (for a new generation).
    pub(super) fn take_seat(&self) -> Option<Seat> {
        self.batcher.as_ref().map(Batcher::seat)
    }

    /// Appends `tokens` (a generated token, or a prompt chunk: `prefill`):
    /// through the batcher when the generation holds a seat, else alone.
    pub(super) fn step_tokens(
        &mut self,
        seat: Option<&Seat>,
        tokens: &[u32],
        prefill: bool,
    ) -> Result<()> {
        let Some(seat) = seat else {
            return self.run(tokens);
        };
        if tokens.is_empty() {
            return Ok(());
        }
        let pos = self.tokens.len();
        seat.step(
            &mut self.cache,
            (tokens, prefill),
            pos,
            &mut self.last_logits,
        )?;
        self.tokens.extend_from_slice(tokens);
        Ok(())
    }
}
