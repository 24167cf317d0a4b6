//! What `zt serve` is told on the command line.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Settings of one server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// A `.zt` or GGUF model.
    pub model: PathBuf,
    /// Where to listen (loopback unless told otherwise).
    pub bind: SocketAddr,
    /// Accepted keys; empty: no authentication.
    pub api_keys: Vec<String>,
    /// Sequences decoded at once (one engine fork each).
    pub parallel: usize,
    /// Requests waiting beyond the running ones before new ones are refused.
    pub queue: usize,
    /// Context length per sequence (0: the model's, at most 4096).
    pub n_ctx: usize,
    /// Threads of the engine's pool, shared by every sequence: the batched
    /// decode steps and each prefill run on it (0: all cores).
    pub threads: usize,
    /// Where named states live as `.zt` snapshots (none: in memory only).
    pub state_dir: Option<PathBuf>,
    /// Where the prefix cache keeps its snapshots (none: no disk cache).
    pub cache_dir: Option<PathBuf>,
    /// Disk budget of the prefix cache in bytes.
    pub cache_bytes: u64,
    /// Memory budget of the prefix cache in bytes (0: no memory tier).
    pub cache_ram: u64,
    /// Largest accepted request body in bytes.
    pub body_limit: usize,
}

impl ServeConfig {
    /// Defaults for `model`: 127.0.0.1:8080, no key, one sequence.
    pub fn new(model: impl Into<PathBuf>) -> ServeConfig {
        ServeConfig {
            model: model.into(),
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_keys: Vec::new(),
            parallel: 1,
            queue: 16,
            n_ctx: 0,
            threads: 0,
            state_dir: None,
            cache_dir: None,
            cache_bytes: 1 << 30,
            cache_ram: 512 << 20,
            body_limit: 4 << 20,
        }
    }

    /// Threads of the pool the sequences share (the engine's forks share
    /// their parent's pool, so dividing the cores among the sequences
    /// would leave a batched step on a fraction of them).
    pub fn pool_threads(&self) -> usize {
        if self.threads > 0 {
            return self.threads;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// The keys of an `--api-key-file`: one per line, blank lines and lines
/// starting with `#` ignored.
pub fn read_key_file(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}
