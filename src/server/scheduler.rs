//! `--parallel N` sequences: N worker threads, each owning a fork of the
//! loaded engine (the mapped weights are shared, each fork has its own KV
//! cache), fed from one bounded queue. A full queue refuses new work at
//! once (503 with `Retry-After`) instead of letting requests pile up.
//!
//! With N > 1 the workers' engines share one [`Batcher`]: while several
//! sequences decode, their next tokens go through one batched forward
//! (the weights read once per step for all of them); each prefill runs on
//! its own worker as before.

use super::error::{ApiError, ApiResult};
use crate::engine::{BatchStats, Batcher, Engine};
use crate::Result;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// Work for one sequence, run on a worker thread with its engine.
pub type Work = Box<dyn FnOnce(&mut Engine) + Send>;

/// A job and the flag that cancels it (set when the client disconnects or
/// the run is interrupted); a cancelled job still queued is skipped.
struct Job {
    work: Work,
    cancel: Arc<AtomicBool>,
}

/// Queue and workers.
pub struct Scheduler {
    tx: Mutex<Option<SyncSender<Job>>>,
    /// Jobs waiting for a sequence.
    pub queued: Arc<AtomicUsize>,
    /// Jobs running.
    pub running: Arc<AtomicUsize>,
    pub parallel: usize,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// The workers' shared batcher (`None` with one sequence).
    batcher: Option<Batcher>,
}

/// Sets a cancel flag when dropped (a handler's future dropped because its
/// client went away cancels the job it started).
pub struct CancelOnDrop(pub Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Scheduler {
    /// Starts `parallel` workers on forks of `base`, with room for `queue`
    /// waiting jobs.
    pub fn start(base: &Engine, parallel: usize, queue: usize) -> Result<Scheduler> {
        let (tx, rx) = mpsc::sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let queued = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        let batcher = (parallel > 1).then(|| Batcher::new(base));
        for i in 0..parallel.max(1) {
            let mut engine = base.fork(None)?;
            engine.reset();
            engine.attach_batcher(batcher.clone())?;
            let rx = rx.clone();
            let (queued, running) = (queued.clone(), running.clone());
            let handle = std::thread::Builder::new()
                .name(format!("zt-seq-{i}"))
                .spawn(move || loop {
                    let job = {
                        let Ok(guard) = rx.lock() else { return };
                        match guard.recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        }
                    };
                    queued.fetch_sub(1, Ordering::Relaxed);
                    if job.cancel.load(Ordering::Relaxed) {
                        continue;
                    }
                    running.fetch_add(1, Ordering::Relaxed);
                    let work = job.work;
                    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| work(&mut engine)));
                    if outcome.is_err() {
                        // The job's reply channel was dropped with it; the
                        // context may be half-written, so forget it.
                        engine.reset();
                    }
                    running.fetch_sub(1, Ordering::Relaxed);
                })
                .map_err(|e| crate::Error::usage(format!("starting a worker thread: {e}")))?;
            workers.push(handle);
        }
        Ok(Scheduler {
            tx: Mutex::new(Some(tx)),
            queued,
            running,
            parallel: parallel.max(1),
            workers: Mutex::new(workers),
            batcher,
        })
    }

    /// What the batcher has run (zeros with one sequence).
    pub fn batch_stats(&self) -> BatchStats {
        self.batcher
            .as_ref()
            .map_or_else(BatchStats::default, Batcher::stats)
    }

    /// Queues `work`; refuses at once when the queue is full.
    pub fn submit(&self, cancel: Arc<AtomicBool>, work: Work) -> ApiResult<()> {
        let guard = self
            .tx
            .lock()
            .map_err(|_| ApiError::internal("scheduler lock poisoned"))?;
        let tx = guard
            .as_ref()
            .ok_or_else(|| ApiError::internal("the server is shutting down"))?;
        self.queued.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(Job { work, cancel }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                Err(ApiError::busy())
            }
            Err(TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                Err(ApiError::internal("the workers have stopped"))
            }
        }
    }

    /// Stops taking work and waits for the workers to finish theirs.
    pub fn shutdown(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Ok(mut w) = self.workers.lock() {
            for h in w.drain(..) {
                let _ = h.join();
            }
        }
    }
}
