//! The real models `scripts/fetch_models.py` caches, for the tests that
//! run on them and skip (saying so) when they are absent.

use std::path::PathBuf;

/// `$ZT_MODEL_CACHE`, else `~/.cache/ztensor-models`.
pub fn model_cache() -> PathBuf {
    std::env::var_os("ZT_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/ztensor-models")
        })
}

/// The cached model `file`, or `None` after printing that the test is
/// skipped.
pub fn cached_model(file: &str) -> Option<PathBuf> {
    let p = model_cache().join(file);
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "skipped: {} is not there (run scripts/fetch_models.py)",
            p.display()
        );
        None
    }
}
