//! The full-content fingerprint of a file's tensors: BLAKE3 over every
//! part's decoded bytes, in a fixed order, so two files holding the same
//! tensors (a GGUF and its `.zt` conversion, raw or compressed) share it.
//!
//! ```text
//! fingerprint = BLAKE3( "ztensor-fingerprint/1\n"
//!     ‖ for each (object name, part role), sorted by name then role:
//!         u64le(len name) ‖ name ‖ u64le(len role) ‖ role
//!         ‖ u64le(decoded length) ‖ BLAKE3(decoded bytes) )
//! ```
//!
//! Written `blake3:<64 hex digits>`. Parts are hashed in parallel; a
//! converted model caches the value in its attributes under
//! [`FINGERPRINT_KEY`] (computed while the bytes stream through convert).

use crate::error::Result;
use crate::reader::Reader;
use rayon::prelude::*;

/// The attribute a converted model caches its fingerprint under.
pub const FINGERPRINT_KEY: &str = "ztensor.fingerprint";

const DOMAIN: &[u8] = b"ztensor-fingerprint/1\n";

/// Combines per-part digests (in any order; they are sorted here).
pub fn combine(mut parts: Vec<(String, String, u64, [u8; 32])>) -> String {
    parts.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let mut h = blake3::Hasher::new();
    h.update(DOMAIN);
    for (name, role, len, digest) in &parts {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(&(role.len() as u64).to_le_bytes());
        h.update(role.as_bytes());
        h.update(&len.to_le_bytes());
        h.update(digest);
    }
    format!("blake3:{}", h.finalize().to_hex())
}

/// Computes the fingerprint of every part `reader` holds (ignores any
/// cached value).
pub fn compute(reader: &Reader) -> Result<String> {
    let roles: Vec<(String, String)> = reader
        .manifest()
        .objects
        .iter()
        .flat_map(|(n, o)| o.parts.keys().map(move |r| (n.clone(), r.clone())))
        .collect();
    let parts = roles
        .into_par_iter()
        .map(|(name, role)| {
            let bytes = reader.part_bytes(&name, &role)?;
            let digest = *blake3::hash(&bytes).as_bytes();
            Ok((name, role, bytes.len() as u64, digest))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(combine(parts))
}

/// The cached fingerprint in a file's attributes, if it has one that is
/// well formed.
pub fn cached(reader: &Reader) -> Option<String> {
    let v = reader.attributes()?.get(FINGERPRINT_KEY)?.as_str()?;
    let hex = v.strip_prefix("blake3:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| v.to_string())
}

/// The cached fingerprint, or a freshly computed one.
pub fn of(reader: &Reader) -> Result<String> {
    match cached(reader) {
        Some(v) => Ok(v),
        None => compute(reader),
    }
}
