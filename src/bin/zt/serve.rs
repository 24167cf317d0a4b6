//! `zt serve`: the HTTP server (see `ztensor::server`).

use std::net::SocketAddr;
use std::path::PathBuf;
use ztensor::server::{self, ServeConfig};
use ztensor::{Error, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// A .zt or GGUF model.
    pub model: PathBuf,
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Require this key (Authorization: Bearer, X-API-Key or ?token=).
    #[arg(long, conflicts_with = "api_key_file")]
    pub api_key: Option<String>,
    /// Require one of the keys in this file (one per line).
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Sequences served at once (each has its own KV cache).
    #[arg(long, default_value_t = 1)]
    pub parallel: usize,
    /// Requests that may wait for a sequence before new ones get 503.
    #[arg(long, default_value_t = 16)]
    pub queue: usize,
    /// Context length per sequence (0: the model's, at most 4096).
    #[arg(long, default_value_t = 0)]
    pub ctx: usize,
    /// Threads of the pool all sequences share (0: all cores).
    #[arg(long, short = 't', default_value_t = 0)]
    pub threads: usize,
    /// Directory of the named states (.zt snapshots); in memory without it.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Directory of the on-disk prefix cache.
    #[arg(long, value_name = "DIR", requires = "cache_bytes")]
    pub cache_dir: Option<PathBuf>,
    /// Disk budget of the prefix cache in bytes (least recently used
    /// entries are removed beyond it).
    #[arg(long, value_name = "N", requires = "cache_dir")]
    pub cache_bytes: Option<u64>,
    /// Memory budget of the prefix cache in bytes (0: no memory tier; with
    /// no --cache-dir either, the prefix cache is off).
    #[arg(long, value_name = "N", default_value_t = 512 << 20)]
    pub cache_ram: u64,
    /// Largest request body in bytes.
    #[arg(long, value_name = "N", default_value_t = 4 << 20)]
    pub body_limit: usize,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let mut keys = Vec::new();
    if let Some(k) = args.api_key {
        if k.is_empty() {
            return Err(Error::Usage("--api-key is empty".into()));
        }
        keys.push(k);
    }
    if let Some(f) = &args.api_key_file {
        let text = std::fs::read_to_string(f)
            .map_err(|e| Error::io(format!("reading {}", f.display()), e))?;
        keys = server::config::read_key_file(&text);
        if keys.is_empty() {
            return Err(Error::Usage(format!("{} holds no key", f.display())));
        }
    }
    // Refused before the model loads or anything listens.
    for (flag, dir) in [
        ("--state-dir", &args.state_dir),
        ("--cache-dir", &args.cache_dir),
    ] {
        if let Some(d) = dir {
            if d.exists() && !d.is_dir() {
                return Err(Error::Usage(format!(
                    "{flag} {}: exists and is not a directory",
                    d.display()
                )));
            }
        }
    }
    let mut config = ServeConfig::new(args.model);
    config.bind = args.bind;
    config.api_keys = keys;
    config.parallel = args.parallel;
    config.queue = args.queue;
    config.n_ctx = args.ctx;
    config.threads = args.threads;
    config.state_dir = args.state_dir;
    config.cache_dir = args.cache_dir;
    if let Some(b) = args.cache_bytes {
        config.cache_bytes = b;
    }
    config.cache_ram = args.cache_ram;
    config.body_limit = args.body_limit;
    if !config.bind.ip().is_loopback() && config.api_keys.is_empty() {
        eprintln!(
            "zt serve: warning: listening on {} without --api-key",
            config.bind
        );
    }
    server::serve(config)
}
