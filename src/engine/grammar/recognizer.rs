//! Incremental recogniser over bytes: llama.cpp-style pushdown stacks over
//! code points, plus the pending part of a UTF-8 sequence.
//!
//! A stack is a list of element indices into [`Grammar`]'s compiled array,
//! bottom first; its top always points at the start of a character class.
//! An empty stack means the text so far is a complete sentence. A byte is
//! accepted when at least one stack survives it; otherwise the state is left
//! as it was and the byte is reported as rejected.

use super::gbnf::{Elem, Grammar};
use super::{GrammarError, Result};
use std::sync::Arc;

/// Version of the [`StateArrays`] layout.
pub const STATE_LAYOUT_VERSION: u32 = 1;
const HEADER_LEN: usize = 7;

/// Live recogniser state: the pushdown stacks and a pending UTF-8 sequence.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GrammarState {
    pub(crate) fingerprint: u64,
    pub(crate) stacks: Vec<Vec<u32>>,
    /// Bits of the pending UTF-8 sequence so far.
    pub(crate) partial_value: u32,
    /// Continuation bytes still needed (0: none pending).
    pub(crate) partial_remain: u8,
    /// Total byte length of the pending sequence (0: none pending).
    pub(crate) partial_len: u8,
}

/// A [`GrammarState`] as plain `u32` arrays, for storing as tensors.
///
/// * `header` = `[layout version, fingerprint low 32 bits, fingerprint high
///   32 bits, partial UTF-8 value, continuation bytes still needed, length of
///   the pending sequence, number of stacks]`
/// * `offsets`: `n_stacks + 1` non-decreasing offsets into `entries`
///   (first 0, last `entries.len()`)
/// * `entries`: element indices of every stack, bottom first
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateArrays {
    pub header: Vec<u32>,
    pub offsets: Vec<u32>,
    pub entries: Vec<u32>,
}

/// Code points a pending UTF-8 sequence can still complete to, without
/// surrogates: up to two inclusive intervals (empty if none).
pub(crate) fn completions(value: u32, remain: u8, len: u8) -> Vec<(u32, u32)> {
    let shift = 6 * u32::from(remain);
    let lo = value << shift;
    let hi = lo | ((1u32 << shift) - 1);
    let (min, max) = match len {
        2 => (0x80, 0x7FF),
        3 => (0x800, 0xFFFF),
        _ => (0x1_0000, 0x10_FFFF),
    };
    let (lo, hi) = (lo.max(min), hi.min(max));
    let mut out = Vec::with_capacity(2);
    for (a, b) in [(lo, hi.min(0xD7FF)), (lo.max(0xE000), hi)] {
        if a <= b {
            out.push((a, b));
        }
    }
    out
}

/// Does the class starting at `pos` match `c`? Also returns the index just
/// past the class.
fn match_char(g: &Grammar, mut pos: usize, c: u32) -> (bool, usize) {
    let positive = !matches!(g.elems[pos], Elem::CharNot(_));
    let mut found = false;
    loop {
        match (g.elems[pos], g.elems.get(pos + 1)) {
            (Elem::Any, _) => {
                found = true;
                pos += 1;
            }
            (Elem::Char(lo) | Elem::CharNot(lo) | Elem::CharAlt(lo), Some(Elem::RngUpper(hi))) => {
                found |= lo <= c && c <= *hi;
                pos += 2;
            }
            (Elem::Char(v) | Elem::CharNot(v) | Elem::CharAlt(v), _) => {
                found |= v == c;
                pos += 1;
            }
            _ => pos += 1,
        }
        if !matches!(g.elems.get(pos), Some(Elem::CharAlt(_))) {
            break;
        }
    }
    (found == positive, pos)
}

/// Does the class starting at `pos` match some code point in `[lo, hi]`?
fn class_meets(g: &Grammar, pos: usize, lo: u32, hi: u32) -> bool {
    let positive = !matches!(g.elems[pos], Elem::CharNot(_));
    let mut items: Vec<(u32, u32)> = Vec::new();
    let mut p = pos;
    loop {
        match (g.elems[p], g.elems.get(p + 1)) {
            (Elem::Any, _) => return true,
            (Elem::Char(a) | Elem::CharNot(a) | Elem::CharAlt(a), Some(Elem::RngUpper(b))) => {
                items.push((a, *b));
                p += 2;
            }
            (Elem::Char(a) | Elem::CharNot(a) | Elem::CharAlt(a), _) => {
                items.push((a, a));
                p += 1;
            }
            _ => p += 1,
        }
        if !matches!(g.elems.get(p), Some(Elem::CharAlt(_))) {
            break;
        }
    }
    if positive {
        return items.iter().any(|&(a, b)| a <= hi && lo <= b);
    }
    // Negated: some point of [lo, hi] is outside every item.
    items.sort_unstable();
    let mut next = lo; // smallest point not yet known to be covered
    for (a, b) in items {
        if a > next {
            break;
        }
        if b >= next {
            if b >= hi {
                return false;
            }
            next = b + 1;
        }
    }
    next <= hi
}

/// Expand `stack` until every resulting stack is empty or has a character
/// class on top; append new ones to `out` (deduplicated).
fn advance(g: &Grammar, stack: Vec<u32>, out: &mut Vec<Vec<u32>>) -> Result<()> {
    let lim = g.limits;
    let mut work = vec![stack];
    let mut steps = 0usize;
    while let Some(st) = work.pop() {
        steps += 1;
        if steps > lim.max_advance_steps {
            return Err(GrammarError::AdvanceTooLong {
                limit: lim.max_advance_steps,
            });
        }
        let Some(&top) = st.last() else {
            if !out.contains(&st) {
                out.push(st);
            }
            continue;
        };
        match g.elems[top as usize] {
            Elem::RuleRef(r) => {
                let base = st.len() - 1;
                let follow = !g.elems[top as usize + 1].is_end_of_seq();
                let alts: Vec<u32> = g.alternatives(r).collect();
                // Reverse so alternatives are explored in source order.
                for &a in alts.iter().rev() {
                    let mut ns = Vec::with_capacity(base + 2);
                    ns.extend_from_slice(&st[..base]);
                    if follow {
                        ns.push(top + 1);
                    }
                    if !g.elems[a as usize].is_end_of_seq() {
                        ns.push(a);
                    }
                    if ns.len() > lim.max_stack_depth {
                        return Err(GrammarError::StackTooDeep {
                            limit: lim.max_stack_depth,
                        });
                    }
                    work.push(ns);
                }
            }
            _ => {
                if !out.contains(&st) {
                    out.push(st);
                    if out.len() > lim.max_stacks {
                        return Err(GrammarError::TooManyStacks {
                            limit: lim.max_stacks,
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

impl GrammarState {
    /// The state before any output.
    pub(crate) fn initial(g: &Grammar) -> Result<GrammarState> {
        let mut stacks = Vec::new();
        for a in g.alternatives(g.root) {
            let st = if g.elems[a as usize].is_end_of_seq() {
                Vec::new()
            } else {
                vec![a]
            };
            advance(g, st, &mut stacks)?;
        }
        Ok(GrammarState {
            fingerprint: g.fingerprint(),
            stacks,
            partial_value: 0,
            partial_remain: 0,
            partial_len: 0,
        })
    }

    /// True when the text so far is a complete sentence of the grammar.
    pub fn can_end(&self) -> bool {
        self.partial_len == 0 && self.stacks.iter().any(Vec::is_empty)
    }

    fn accept_char(&self, g: &Grammar, c: u32) -> Result<Option<GrammarState>> {
        let mut out = Vec::new();
        for st in &self.stacks {
            let Some(&top) = st.last() else { continue };
            let (ok, next) = match_char(g, top as usize, c);
            if ok {
                let mut ns = st[..st.len() - 1].to_vec();
                if !g.elems[next].is_end_of_seq() {
                    ns.push(next as u32);
                }
                advance(g, ns, &mut out)?;
            }
        }
        if out.is_empty() {
            return Ok(None);
        }
        Ok(Some(GrammarState {
            fingerprint: self.fingerprint,
            stacks: out,
            partial_value: 0,
            partial_remain: 0,
            partial_len: 0,
        }))
    }

    fn pending_viable(&self, g: &Grammar, value: u32, remain: u8, len: u8) -> bool {
        let ranges = completions(value, remain, len);
        self.stacks.iter().any(|st| match st.last() {
            Some(&top) => ranges
                .iter()
                .any(|&(lo, hi)| class_meets(g, top as usize, lo, hi)),
            None => false,
        })
    }

    /// The state after one more byte: `Ok(None)` if the grammar rejects it,
    /// an error if a limit is hit.
    pub(crate) fn step(&self, g: &Grammar, b: u8) -> Result<Option<GrammarState>> {
        let (value, remain, len) = if self.partial_len > 0 {
            if b & 0xC0 != 0x80 {
                return Ok(None);
            }
            (
                (self.partial_value << 6) | u32::from(b & 0x3F),
                self.partial_remain - 1,
                self.partial_len,
            )
        } else {
            match b {
                0x00..=0x7F => return self.accept_char(g, u32::from(b)),
                0xC2..=0xDF => (u32::from(b & 0x1F), 1, 2),
                0xE0..=0xEF => (u32::from(b & 0x0F), 2, 3),
                0xF0..=0xF4 => (u32::from(b & 0x07), 3, 4),
                _ => return Ok(None),
            }
        };
        if remain == 0 {
            if completions(value, 0, len).is_empty() {
                return Ok(None); // overlong, surrogate or beyond U+10FFFF
            }
            return self.accept_char(g, value);
        }
        if !self.pending_viable(g, value, remain, len) {
            return Ok(None);
        }
        Ok(Some(GrammarState {
            fingerprint: self.fingerprint,
            stacks: self.stacks.clone(),
            partial_value: value,
            partial_remain: remain,
            partial_len: len,
        }))
    }

    /// Serialise to plain integer arrays.
    pub fn to_arrays(&self) -> StateArrays {
        let mut offsets = Vec::with_capacity(self.stacks.len() + 1);
        let mut entries = Vec::new();
        offsets.push(0);
        for st in &self.stacks {
            entries.extend_from_slice(st);
            offsets.push(entries.len() as u32);
        }
        StateArrays {
            header: vec![
                STATE_LAYOUT_VERSION,
                self.fingerprint as u32,
                (self.fingerprint >> 32) as u32,
                self.partial_value,
                u32::from(self.partial_remain),
                u32::from(self.partial_len),
                self.stacks.len() as u32,
            ],
            offsets,
            entries,
        }
    }

    /// Rebuild a state from arrays, checking every field against `g`.
    pub fn from_arrays(g: &Grammar, a: &StateArrays) -> Result<GrammarState> {
        let bad = |field: &'static str, detail: String| GrammarError::BadState { field, detail };
        if a.header.len() != HEADER_LEN {
            return Err(bad(
                "header",
                format!("{} values, expected {HEADER_LEN}", a.header.len()),
            ));
        }
        let h = &a.header;
        if h[0] != STATE_LAYOUT_VERSION {
            return Err(bad(
                "header.version",
                format!("{} is not {STATE_LAYOUT_VERSION}", h[0]),
            ));
        }
        let fp = u64::from(h[1]) | (u64::from(h[2]) << 32);
        if fp != g.fingerprint() {
            return Err(bad(
                "header.fingerprint",
                format!("{fp:#018x} is not this grammar's {:#018x}", g.fingerprint()),
            ));
        }
        let (value, remain, len) = (h[3], h[4], h[5]);
        let partial_ok = match len {
            0 => remain == 0 && value == 0,
            2..=4 => {
                remain >= 1
                    && remain < len
                    && value < (1 << (6 * (len - 1 - remain) + 7 - len))
                    && !completions(value, remain as u8, len as u8).is_empty()
            }
            _ => false,
        };
        if !partial_ok {
            return Err(bad(
                "header.partial",
                format!("value {value}, remaining {remain}, length {len} is not a UTF-8 prefix"),
            ));
        }
        let n = h[6] as usize;
        if n == 0 || n > g.limits.max_stacks {
            return Err(bad(
                "header.n_stacks",
                format!("{n} is outside 1..={}", g.limits.max_stacks),
            ));
        }
        if a.offsets.len() != n + 1 || a.offsets[0] != 0 {
            return Err(bad(
                "offsets",
                format!(
                    "{} offsets for {n} stacks (need {} starting at 0)",
                    a.offsets.len(),
                    n + 1
                ),
            ));
        }
        if a.offsets[n] as usize != a.entries.len() {
            return Err(bad(
                "offsets",
                format!(
                    "last offset {} but {} entries",
                    a.offsets[n],
                    a.entries.len()
                ),
            ));
        }
        let mut stacks: Vec<Vec<u32>> = Vec::with_capacity(n);
        for w in a.offsets.windows(2) {
            let (s, e) = (w[0] as usize, w[1] as usize);
            if e < s {
                return Err(bad(
                    "offsets",
                    format!("{e} follows {s}: not non-decreasing"),
                ));
            }
            if e - s > g.limits.max_stack_depth {
                return Err(bad(
                    "entries",
                    format!(
                        "a stack of {} exceeds depth {}",
                        e - s,
                        g.limits.max_stack_depth
                    ),
                ));
            }
            let st = &a.entries[s..e];
            for (i, &p) in st.iter().enumerate() {
                let Some(&el) = g.elems.get(p as usize) else {
                    return Err(bad(
                        "entries",
                        format!("index {p} beyond {} elements", g.elems.len()),
                    ));
                };
                let is_top = i + 1 == st.len();
                let ok = if is_top {
                    el.is_class_start()
                } else {
                    // Below the top sit continuations after a rule reference.
                    p > 0
                        && matches!(g.elems[p as usize - 1], Elem::RuleRef(_))
                        && !el.is_end_of_seq()
                };
                if !ok {
                    return Err(bad(
                        "entries",
                        format!("index {p} is not a valid stack entry"),
                    ));
                }
            }
            if stacks.iter().any(|x| x == st) {
                return Err(bad("entries", "duplicate stack".to_string()));
            }
            stacks.push(st.to_vec());
        }
        let state = GrammarState {
            fingerprint: fp,
            stacks,
            partial_value: value,
            partial_remain: remain as u8,
            partial_len: len as u8,
        };
        if len > 0 && !state.pending_viable(g, value, remain as u8, len as u8) {
            return Err(bad(
                "header.partial",
                "no stack can take the pending UTF-8 sequence".to_string(),
            ));
        }
        Ok(state)
    }
}

/// Incremental recogniser: a grammar and a live state.
#[derive(Debug, Clone)]
pub struct Recognizer {
    grammar: Arc<Grammar>,
    state: GrammarState,
}

impl Recognizer {
    /// A recogniser at the start of the grammar.
    pub fn new(grammar: Arc<Grammar>) -> Result<Recognizer> {
        let state = GrammarState::initial(&grammar)?;
        Ok(Recognizer { grammar, state })
    }

    /// The grammar.
    pub fn grammar(&self) -> &Arc<Grammar> {
        &self.grammar
    }

    /// Consume `bytes`. All or nothing: on error the state is unchanged.
    /// [`GrammarError::Rejected`] names the first byte that cannot continue.
    pub fn accept_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let st = self.state_after(bytes)?;
        self.state = st;
        Ok(())
    }

    /// The state after `bytes`, leaving this recogniser unchanged.
    pub fn state_after(&self, bytes: &[u8]) -> Result<GrammarState> {
        let mut st = self.state.clone();
        for (i, &b) in bytes.iter().enumerate() {
            st = st
                .step(&self.grammar, b)?
                .ok_or(GrammarError::Rejected { offset: i })?;
        }
        Ok(st)
    }

    /// True when the text so far is a complete sentence of the grammar.
    pub fn can_end(&self) -> bool {
        self.state.can_end()
    }

    /// The live state.
    pub fn state(&self) -> &GrammarState {
        &self.state
    }

    /// A copy of the live state (cheap to restore with [`Recognizer::restore`]).
    pub fn snapshot(&self) -> GrammarState {
        self.state.clone()
    }

    /// Go back to a state taken from a recogniser of the same grammar.
    pub fn restore(&mut self, state: GrammarState) -> Result<()> {
        if state.fingerprint != self.grammar.fingerprint() {
            return Err(GrammarError::BadState {
                field: "fingerprint",
                detail: "the state belongs to another grammar".into(),
            });
        }
        self.state = state;
        Ok(())
    }

    /// The live state as plain integer arrays.
    pub fn to_arrays(&self) -> StateArrays {
        self.state.to_arrays()
    }

    /// A recogniser of `grammar` in a state read back from arrays (checked).
    pub fn from_arrays(grammar: Arc<Grammar>, arrays: &StateArrays) -> Result<Recognizer> {
        let state = GrammarState::from_arrays(&grammar, arrays)?;
        Ok(Recognizer { grammar, state })
    }
}
