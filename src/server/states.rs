//! Named immutable engine states (seed 001's model), durable as `.zt`
//! snapshots in `--state-dir`: `<dir>/<name>.zt`, each written atomically
//! (a crash mid-write leaves the earlier files as they were). At start
//! every snapshot in the directory is listed again after checking it was
//! made by this model (fingerprint and tokenizer); others are skipped
//! with a warning and left alone. States are read lazily.
//!
//! `initial` (the empty context) always exists and cannot be deleted.

use super::error::{ApiError, ApiResult};
use crate::engine::{snapshot, Engine, State};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub const INITIAL: &str = "initial";
/// Longest state name (the engine's rule).
pub const MAX_NAME: usize = crate::engine::MAX_STATE_NAME;

/// Whether `name` is a valid state name: 1-128 of `A-Z a-z 0-9 _ -`
/// (no dots or slashes, so it can never leave the state directory), the
/// engine's rule for its named states ([`crate::engine::valid_state_name`]).
pub fn check_name(field: &'static str, name: &str) -> ApiResult<()> {
    if crate::engine::valid_state_name(name) {
        Ok(())
    } else {
        let shown: String = name.chars().take(MAX_NAME + 1).collect();
        Err(ApiError::bad(
            field,
            format!(
                "{field} {shown:?} is not a valid state name (1-{MAX_NAME} characters of A-Z a-z 0-9 _ -)"
            ),
        ))
    }
}

/// `.<name>.zt.tmp-<pid>-<n>`: the atomic writer's temporary file of a state.
fn is_stale_temp(file: &str) -> bool {
    file.strip_prefix('.')
        .and_then(|f| f.split_once(".zt.tmp-"))
        .is_some_and(|(name, _)| check_name("state_name", name).is_ok())
}

struct Entry {
    tokens_count: usize,
    created: u64,
    /// Loaded on first use.
    state: Option<Arc<State>>,
}

/// A state's description.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StateInfo {
    pub name: String,
    pub tokens_count: usize,
    pub created: u64,
}

pub struct StateStore {
    dir: Option<PathBuf>,
    entries: Mutex<BTreeMap<String, Entry>>,
    /// Names being created by running executions.
    reserved: Mutex<HashSet<String>>,
    /// Reads and checks snapshot files (a fork of the loaded engine).
    checker: Mutex<Engine>,
    /// How many times the store was reset; changed only under the
    /// `entries` lock. A reservation made before a reset cannot commit.
    epoch: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> ApiResult<std::sync::MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| ApiError::internal("state store lock poisoned"))
}

impl StateStore {
    /// Opens the store, listing the snapshots in `dir` made by this model.
    pub fn open(dir: Option<&Path>, checker: Engine) -> crate::Result<StateStore> {
        let initial = Arc::new(checker.capture()?);
        let mut entries = BTreeMap::new();
        entries.insert(
            INITIAL.to_string(),
            Entry {
                tokens_count: 0,
                created: initial.created,
                state: Some(initial),
            },
        );
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| crate::Error::io(format!("creating {}", dir.display()), e))?;
            let list = std::fs::read_dir(dir)
                .map_err(|e| crate::Error::io(format!("listing {}", dir.display()), e))?;
            for item in list.flatten() {
                let path = item.path();
                if is_stale_temp(&item.file_name().to_string_lossy()) {
                    // A write cut short by a crash (the atomic writer's
                    // temporary file, never renamed into place).
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                let Some(name) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".zt"))
                else {
                    continue;
                };
                if check_name("state_name", name).is_err() || name == INITIAL {
                    continue;
                }
                let info = snapshot::open(&path)
                    .and_then(|r| snapshot::read_info(&r))
                    .and_then(|info| snapshot::check_info(&checker, &info).map(|_| info));
                match info {
                    Ok(info) => {
                        entries.insert(
                            name.to_string(),
                            Entry {
                                tokens_count: info.tokens_count,
                                created: info.created,
                                state: None,
                            },
                        );
                    }
                    Err(e) => eprintln!("zt serve: skipping state {}: {e}", path.display()),
                }
            }
        }
        Ok(StateStore {
            dir: dir.map(Path::to_path_buf),
            entries: Mutex::new(entries),
            reserved: Mutex::new(HashSet::new()),
            checker: Mutex::new(checker),
            epoch: AtomicU64::new(0),
        })
    }

    fn path(&self, name: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{name}.zt")))
    }

    pub fn list(&self) -> ApiResult<Vec<String>> {
        Ok(lock(&self.entries)?.keys().cloned().collect())
    }

    pub fn info(&self, name: &str) -> ApiResult<StateInfo> {
        let entries = lock(&self.entries)?;
        let e = entries
            .get(name)
            .ok_or_else(|| ApiError::not_found(format!("state {name:?} does not exist")))?;
        Ok(StateInfo {
            name: name.to_string(),
            tokens_count: e.tokens_count,
            created: e.created,
        })
    }

    /// The state `name`, read from its file on first use.
    pub fn get(&self, name: &str) -> ApiResult<Arc<State>> {
        {
            let entries = lock(&self.entries)?;
            let e = entries
                .get(name)
                .ok_or_else(|| ApiError::not_found(format!("state {name:?} does not exist")))?;
            if let Some(s) = &e.state {
                return Ok(s.clone());
            }
        }
        let path = self
            .path(name)
            .ok_or_else(|| ApiError::internal("state without a file"))?;
        let state = {
            let checker = lock(&self.checker)?;
            let reader = snapshot::open(&path).map_err(ApiError::from)?;
            Arc::new(checker.read_state(&reader).map_err(ApiError::from)?)
        };
        let mut entries = lock(&self.entries)?;
        match entries.get_mut(name) {
            Some(e) => {
                e.state = Some(state.clone());
                Ok(state)
            }
            None => Err(ApiError::not_found(format!("state {name:?} was deleted"))),
        }
    }

    /// Claims `name` for a state an execution will create; refuses a name
    /// that exists or is being created.
    pub fn reserve(self: &Arc<Self>, name: &str) -> ApiResult<Reservation> {
        let entries = lock(&self.entries)?;
        let mut reserved = lock(&self.reserved)?;
        if entries.contains_key(name) || !reserved.insert(name.to_string()) {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "invalid_request_error",
                format!("state {name:?} already exists (states are immutable)"),
            ));
        }
        // A file skipped at start-up (another model's state, a damaged
        // file) keeps its name: it is left on disk, never overwritten.
        if let Some(path) = self.path(name) {
            if path.exists() {
                reserved.remove(name);
                return Err(ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    "invalid_request_error",
                    format!(
                        "state {name:?} has a file in the state directory that is not one of \
                         this model's states ({}); it is left untouched",
                        path.display()
                    ),
                ));
            }
        }
        Ok(Reservation {
            store: self.clone(),
            name: name.to_string(),
            epoch: self.epoch.load(Ordering::SeqCst),
        })
    }

    /// Deletes a state and its file.
    pub fn delete(&self, name: &str) -> ApiResult<()> {
        if name == INITIAL {
            return Err(ApiError::bad("name", "the initial state cannot be deleted"));
        }
        let mut entries = lock(&self.entries)?;
        if !entries.contains_key(name) {
            return Err(ApiError::not_found(format!(
                "state {name:?} does not exist"
            )));
        }
        if let Some(p) = self.path(name) {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ApiError::internal(format!("removing {}: {e}", p.display()))),
            }
        }
        entries.remove(name);
        Ok(())
    }

    /// Back to the single empty `initial` state. Names reserved before
    /// the reset can no longer be committed ([`Reservation::commit`]), so
    /// a run still going when it happens leaves nothing behind.
    pub fn reset(&self) -> ApiResult<usize> {
        let mut entries = lock(&self.entries)?;
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let names: Vec<String> = entries.keys().filter(|n| *n != INITIAL).cloned().collect();
        for n in &names {
            if let Some(p) = self.path(n) {
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(ApiError::internal(format!("removing {}: {e}", p.display())))
                    }
                }
            }
            entries.remove(n);
        }
        Ok(names.len())
    }
}

/// A name claimed for a new state; released when dropped.
pub struct Reservation {
    store: Arc<StateStore>,
    name: String,
    /// The store's reset count when the name was reserved.
    epoch: u64,
}

/// The evalue of a run that a `POST /reset` overtook.
pub const RESET_DURING_RUN: &str =
    "POST /reset ran while the execution was running; nothing was stored";

impl Reservation {
    /// Whether the store was reset since the name was reserved.
    pub fn is_stale(&self) -> bool {
        self.store.epoch.load(Ordering::SeqCst) != self.epoch
    }

    /// Stores `state` under the reserved name: the file first (atomic),
    /// then the listing. `engine` describes the model in the file. A
    /// reservation older than the store's last reset is refused (409), its
    /// file removed if it was written meanwhile.
    pub fn commit(self, engine: &Engine, state: State) -> ApiResult<()> {
        let stale = || {
            ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "invalid_request_error",
                RESET_DURING_RUN,
            )
        };
        if self.is_stale() {
            return Err(stale());
        }
        let path = self.store.path(&self.name);
        if let Some(path) = &path {
            engine
                .write_state(&state, path, false)
                .map_err(ApiError::from)?;
        }
        let mut entries = lock(&self.store.entries)?;
        if self.is_stale() {
            if let Some(path) = &path {
                let _ = std::fs::remove_file(path);
            }
            return Err(stale());
        }
        entries.insert(
            self.name.clone(),
            Entry {
                tokens_count: state.tokens.len(),
                created: state.created,
                state: Some(Arc::new(state)),
            },
        );
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Ok(mut r) = self.store.reserved.lock() {
            r.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reservation made before a reset cannot commit (a run that
    /// finishes after `POST /reset` leaves nothing), one made after can.
    #[test]
    fn a_reset_refuses_older_reservations() {
        let model = std::env::var_os("ZT_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
            .join("gguf/llama-tiny-q8_0.gguf");
        let dir = std::env::temp_dir().join(format!("zt-states-reset-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let engine = Engine::open(&model, crate::engine::EngineOptions::default()).unwrap();
        let store = Arc::new(StateStore::open(Some(&dir), engine.fork(None).unwrap()).unwrap());
        let before = store.reserve("before").unwrap();
        let kept = store.reserve("kept").unwrap();
        kept.commit(&engine, engine.capture().unwrap()).unwrap();
        assert_eq!(store.reset().unwrap(), 1);
        assert!(before.is_stale());
        let e = before
            .commit(&engine, engine.capture().unwrap())
            .unwrap_err();
        assert_eq!(e.message, RESET_DURING_RUN);
        assert_eq!(store.list().unwrap(), vec![INITIAL]);
        assert!(!dir.join("before.zt").exists() && !dir.join("kept.zt").exists());
        let after = store.reserve("after").unwrap();
        assert!(!after.is_stale());
        after.commit(&engine, engine.capture().unwrap()).unwrap();
        assert!(dir.join("after.zt").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_state_temp_files_are_stale() {
        assert!(is_stale_temp(".a.zt.tmp-12-0"));
        assert!(!is_stale_temp("a.zt"));
        assert!(!is_stale_temp(".a.zt"));
        assert!(!is_stale_temp(".bad name.zt.tmp-1-0"));
        assert!(!is_stale_temp(".other.tmp-1"));
    }

    #[test]
    fn names_are_strict() {
        for good in ["a", "initial", "chat-1_b", &"x".repeat(128)] {
            assert!(check_name("n", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "../etc",
            "a/b",
            "a.zt",
            "..",
            "a b",
            "é",
            "a\0",
            &"x".repeat(129),
        ] {
            assert!(check_name("n", bad).is_err(), "{bad:?}");
        }
    }
}
