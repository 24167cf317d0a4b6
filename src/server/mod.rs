//! `zt serve`: an OpenAI-compatible HTTP server over the engine, with
//! named immutable states (seed 001's model) kept as `.zt` snapshots.
//!
//! - `config`: the settings; `auth`: token check on every route but
//!   `/health`; `error`: OpenAI-style JSON errors;
//! - `cache`: the prefix cache (memory and `.zt` files on disk);
//! - `scheduler`: `--parallel` sequences on engine forks and a bounded queue;
//! - `generate`: one generation (stop strings, log-probabilities,
//!   cancellation); `chat`: chat messages; `constraint`: grammars and
//!   `response_format`;
//! - `states`: the durable state store; `sse`: event-stream framing;
//!   `metrics`: Prometheus counters; `routes`: the HTTP routes.
//!
//! The server listens before the model is loaded: `/health` answers 503
//! until it is, every other route too.

pub mod auth;
pub mod cache;
pub mod chat;
pub mod config;
pub mod constraint;
pub mod error;
pub mod generate;
pub mod metrics;
pub mod routes;
pub mod scheduler;
pub mod sse;
pub mod states;

pub use config::ServeConfig;

use crate::engine::{Engine, EngineOptions, Tokenizer};
use crate::{Error, Result};
use error::{ApiError, ApiResult};
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};

/// What exists once the model is loaded.
pub struct Loaded {
    pub tokenizer: Arc<Tokenizer>,
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub chat: chat::ChatFormat,
    pub scheduler: scheduler::Scheduler,
    pub states: Arc<states::StateStore>,
    pub cache: Arc<cache::PrefixCache>,
    /// Running executions by `exec_id`, with their cancel flags.
    pub executions: Mutex<HashMap<String, Arc<AtomicBool>>>,
}

/// The server's shared state.
pub struct App {
    pub config: ServeConfig,
    pub keys: auth::Keys,
    /// The model's name in `/v1/models` (its file stem).
    pub model_id: String,
    pub loaded: OnceLock<Arc<Loaded>>,
    pub metrics: Arc<metrics::Metrics>,
}

impl App {
    pub fn new(config: ServeConfig) -> App {
        let model_id = config
            .model
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("model")
            .to_string();
        App {
            keys: auth::Keys::new(&config.api_keys),
            config,
            model_id,
            loaded: OnceLock::new(),
            metrics: Arc::default(),
        }
    }

    /// The loaded model, or 503 while it loads.
    pub fn ready(&self) -> ApiResult<Arc<Loaded>> {
        self.loaded.get().cloned().ok_or_else(ApiError::loading)
    }

    /// Loads the model, starts the sequences and opens the state store.
    pub fn load(&self) -> Result<Loaded> {
        let c = &self.config;
        let options = EngineOptions {
            n_ctx: c.n_ctx,
            n_threads: c.pool_threads(),
            ..EngineOptions::default()
        };
        let base = Engine::open(&c.model, options)?;
        let scheduler = scheduler::Scheduler::start(&base, c.parallel, c.queue)?;
        let mut checker = base.fork(None)?;
        checker.reset();
        let mut cache_io = base.fork(None)?;
        cache_io.reset();
        let cache = cache::PrefixCache::open(
            c.cache_ram,
            c.cache_dir.as_deref(),
            c.cache_bytes,
            cache_io,
            self.metrics.clone(),
        )?;
        let loaded = Loaded {
            tokenizer: base.tokenizer().clone(),
            n_ctx: base.n_ctx(),
            n_vocab: base.config().n_vocab,
            chat: chat::ChatFormat::detect(&base),
            scheduler,
            states: Arc::new(states::StateStore::open(c.state_dir.as_deref(), checker)?),
            cache: Arc::new(cache),
            executions: Mutex::new(HashMap::new()),
        };
        Ok(loaded)
    }
}

/// Runs the server until Ctrl-C / SIGTERM. The bound address is printed
/// on stdout as `listening on http://ADDR` once the socket is open.
pub fn serve(config: ServeConfig) -> Result<()> {
    if config.parallel == 0 || config.parallel > 256 {
        return Err(Error::usage(format!(
            "--parallel must be 1-256, not {}",
            config.parallel
        )));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    runtime.block_on(serve_async(config))
}

async fn serve_async(config: ServeConfig) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|e| Error::io(format!("binding {}", config.bind), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the bound address", e))?;
    println!("listening on http://{addr}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let app = Arc::new(App::new(config));
    let (fail_tx, mut fail_rx) = tokio::sync::mpsc::channel::<Error>(1);
    let loader = app.clone();
    tokio::task::spawn_blocking(move || match loader.load() {
        Ok(l) => {
            let _ = loader.loaded.set(Arc::new(l));
            eprintln!("zt serve: model loaded");
        }
        Err(e) => {
            let _ = fail_tx.blocking_send(e);
        }
    });
    let router = routes::router(app.clone());
    let failure = Arc::new(Mutex::new(None));
    let failed = failure.clone();
    let shutdown = async move {
        // The loader drops its sender on success: only an error stops.
        let load_failed = async {
            match fail_rx.recv().await {
                Some(e) => e,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            e = load_failed => {
                if let Ok(mut f) = failed.lock() {
                    *f = Some(e);
                }
            }
            _ = shutdown_signal() => {}
        }
    };
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::io("serving", e))?;
    if let Some(l) = app.loaded.get() {
        l.scheduler.shutdown();
        l.cache.shutdown();
    }
    let failed = failure.lock().ok().and_then(|mut f| f.take());
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
