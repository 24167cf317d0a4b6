//! The grammar part of an engine snapshot (spec §20): the GBNF source of a
//! constrained generation and its recogniser's live state, so a restored
//! engine continues the generation token for token.
//!
//! Objects (u8 / u32, dense, digested like every part of a snapshot):
//! `grammar.source` `[source_bytes]` (UTF-8 GBNF), `grammar.header` `[7]`,
//! `grammar.offsets` `[n_stacks + 1]`, `grammar.entries` `[n_entries]` (see
//! [`StateArrays`]). The snapshot's description gains `grammar: {kind:
//! "gbnf", layout, source_bytes, n_stacks, n_entries}` and its version
//! becomes [`VERSION_WITH_GRAMMAR`], so a reader that does not know grammar
//! state refuses the file instead of continuing unconstrained. A snapshot
//! without a grammar keeps version 1 and no grammar objects.

use super::constrained::SavedGrammar;
use super::grammar::{Limits, StateArrays, STATE_LAYOUT_VERSION};
use super::snapshot::{malformed, wrap, ATTRIBUTE};
use crate::cbor::Value;
use crate::error::{Error, Result};
use crate::reader::Reader;
use crate::writer::Writer;

/// Snapshot version of a file that carries grammar state.
pub const VERSION_WITH_GRAMMAR: u64 = 2;
/// The `kind` of the grammar description (the only one).
pub const KIND: &str = "gbnf";
const HEADER_LEN: u64 = 7;

/// Bounds a reader enforces (and the writer checks first).
fn limits() -> (usize, usize, usize) {
    let l = Limits::default();
    (
        l.max_source_bytes,
        l.max_stacks,
        l.max_stacks.saturating_mul(l.max_stack_depth),
    )
}

/// The grammar description for the snapshot's attribute, after checking
/// the saved grammar is within the limits a reader enforces.
pub(crate) fn describe(saved: &SavedGrammar) -> Result<Value> {
    let (max_source, max_stacks, max_entries) = limits();
    let a = &saved.state;
    let n_stacks = a.offsets.len().saturating_sub(1);
    let checks = [
        ("source_bytes", saved.source.len(), 1, max_source),
        ("n_stacks", n_stacks, 1, max_stacks),
        ("n_entries", a.entries.len(), 0, max_entries),
    ];
    for (what, v, lo, hi) in checks {
        if v < lo || v > hi {
            return Err(Error::usage(format!(
                "grammar state: {what} {v} is outside {lo}..={hi}"
            )));
        }
    }
    if a.header.len() as u64 != HEADER_LEN {
        return Err(Error::usage("grammar state: header is not 7 values"));
    }
    Value::text_map([
        ("kind", Value::text(KIND)),
        ("layout", Value::Uint(u64::from(STATE_LAYOUT_VERSION))),
        ("source_bytes", Value::Uint(saved.source.len() as u64)),
        ("n_stacks", Value::Uint(n_stacks as u64)),
        ("n_entries", Value::Uint(a.entries.len() as u64)),
    ])
}

/// Adds the grammar objects to a snapshot being written.
pub(crate) fn write(w: &mut Writer, saved: &SavedGrammar) -> Result<()> {
    let a = &saved.state;
    let src = saved.source.as_bytes();
    w.add::<u8>("grammar.source", &[src.len() as u64], src)?;
    w.add::<u32>("grammar.header", &[a.header.len() as u64], &a.header)?;
    w.add::<u32>("grammar.offsets", &[a.offsets.len() as u64], &a.offsets)?;
    w.add::<u32>("grammar.entries", &[a.entries.len() as u64], &a.entries)?;
    Ok(())
}

fn count(g: &Value, key: &str, lo: u64, hi: usize) -> Result<u64> {
    let v = g
        .get(key)
        .ok_or_else(|| malformed(format!("{ATTRIBUTE}.grammar.{key} is missing")))?
        .as_u64()
        .ok_or_else(|| {
            malformed(format!(
                "{ATTRIBUTE}.grammar.{key} is not an unsigned integer"
            ))
        })?;
    if v < lo || v > hi as u64 {
        return Err(malformed(format!(
            "{ATTRIBUTE}.grammar.{key} = {v} is outside {lo}..={hi}"
        )));
    }
    Ok(v)
}

/// Reads object `name` of element type `T` after checking its shape is
/// `[len]` (so nothing larger than the checked count is allocated).
fn read_1d<T: crate::element::Element>(reader: &Reader, name: &str, len: u64) -> Result<Vec<T>> {
    let shape = &reader.object(name).map_err(wrap)?.shape;
    if shape.as_slice() != [len] {
        return Err(malformed(format!(
            "{name} has shape {shape:?}, [{len}] expected"
        )));
    }
    let t = reader.read_dense(name).map_err(wrap)?;
    t.to_vec::<T>()
        .map_err(|e| malformed(format!("{name}: {e}")))
}

/// The saved grammar of a snapshot of `version` whose description is
/// `desc`: `None` for a snapshot without one. Every count is checked
/// against the limits before any object is read, and the state against the
/// compiled grammar (stack entries, offsets, pending UTF-8) before it is
/// returned.
pub(crate) fn read(reader: &Reader, desc: &Value, version: u64) -> Result<Option<SavedGrammar>> {
    let g = match (desc.get("grammar"), version) {
        (None, VERSION_WITH_GRAMMAR) => {
            return Err(malformed(format!(
                "version {VERSION_WITH_GRAMMAR} without {ATTRIBUTE}.grammar"
            )))
        }
        (None, _) => {
            if reader.object("grammar.source").is_ok() {
                return Err(malformed(format!(
                    "grammar objects without {ATTRIBUTE}.grammar"
                )));
            }
            return Ok(None);
        }
        (Some(_), v) if v != VERSION_WITH_GRAMMAR => {
            return Err(malformed(format!(
                "{ATTRIBUTE}.grammar in a version {v} snapshot (grammar state needs version {VERSION_WITH_GRAMMAR})"
            )))
        }
        (Some(g), _) => g,
    };
    match g.get("kind").and_then(Value::as_str) {
        Some(KIND) => {}
        other => {
            return Err(malformed(format!(
                "{ATTRIBUTE}.grammar.kind is {other:?}, not {KIND:?}"
            )))
        }
    }
    let layout = u64::from(STATE_LAYOUT_VERSION);
    count(g, "layout", layout, layout as usize)?;
    let (max_source, max_stacks, max_entries) = limits();
    let source_bytes = count(g, "source_bytes", 1, max_source)?;
    let n_stacks = count(g, "n_stacks", 1, max_stacks)?;
    let n_entries = count(g, "n_entries", 0, max_entries)?;
    let source = read_1d::<u8>(reader, "grammar.source", source_bytes)?;
    let source = String::from_utf8(source)
        .map_err(|e| malformed(format!("grammar.source is not UTF-8: {e}")))?;
    let state = StateArrays {
        header: read_1d::<u32>(reader, "grammar.header", HEADER_LEN)?,
        offsets: read_1d::<u32>(reader, "grammar.offsets", n_stacks + 1)?,
        entries: read_1d::<u32>(reader, "grammar.entries", n_entries)?,
    };
    let saved = SavedGrammar { source, state };
    saved
        .recognizer()
        .map_err(|e| malformed(format!("grammar: {e}")))?;
    Ok(Some(saved))
}
