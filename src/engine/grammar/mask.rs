//! Which tokens may come next under a grammar.
//!
//! Built once per (vocabulary, grammar): a byte trie of every token's text.
//! Candidates are checked lazily in logit order (greedy and top-k stop as
//! soon as enough pass); a full mask walks the trie so shared prefixes are
//! stepped once. Answers are memoised per parser state.
//!
//! Fail closed: EOS is allowed only where the grammar can end, an empty
//! non-EOS token is never allowed, a token whose check hits a recogniser
//! limit is refused, and when nothing at all is allowed the caller gets
//! [`GrammarError::NoTokenAllowed`].

use super::gbnf::Grammar;
use super::recognizer::GrammarState;
use super::{GrammarError, Result};
use std::collections::HashMap;
use std::sync::Arc;

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;

/// How many parser states keep their memo before the memo is reset.
const MEMO_STATES: usize = 64;
/// Candidates tested lazily (in logit order) before a full mask is built.
const LAZY_BUDGET: usize = 256;

#[derive(Debug, Clone, Default)]
struct Trie {
    /// Sorted (byte, child) edges of each node; node 0 is the root.
    edges: Vec<Vec<(u8, u32)>>,
    /// Tokens whose text ends at each node.
    ends: Vec<Vec<u32>>,
}

impl Trie {
    fn build(vocab: &[Vec<u8>], skip: &[bool]) -> Trie {
        let mut t = Trie {
            edges: vec![Vec::new()],
            ends: vec![Vec::new()],
        };
        for (id, bytes) in vocab.iter().enumerate() {
            if skip[id] || bytes.is_empty() {
                continue;
            }
            let mut node = 0usize;
            for &b in bytes {
                node = match t.edges[node].binary_search_by_key(&b, |e| e.0) {
                    Ok(i) => t.edges[node][i].1 as usize,
                    Err(i) => {
                        let child = t.edges.len();
                        t.edges.push(Vec::new());
                        t.ends.push(Vec::new());
                        t.edges[node].insert(i, (b, child as u32));
                        child
                    }
                };
            }
            t.ends[node].push(id as u32);
        }
        t
    }
}

/// Interned parser states and the byte transitions seen between them, so a
/// state reached again (typical inside strings) is stepped by a lookup.
#[derive(Debug, Clone, Default)]
struct Transitions {
    ids: HashMap<GrammarState, u32>,
    states: Vec<GrammarState>,
    next: HashMap<(u32, u8), u32>,
    /// Stack entries held by `states` (each is stored twice).
    entries: usize,
}

const DEAD: u32 = u32::MAX;
/// Interned states, and stack entries in them, kept before the transition
/// cache is reset (bounds its memory whatever the grammar).
const MAX_INTERNED: usize = 1 << 16;
const MAX_INTERNED_ENTRIES: usize = 1 << 22;

fn entries(s: &GrammarState) -> usize {
    s.stacks.iter().map(|x| x.len() + 1).sum()
}

impl Transitions {
    fn intern(&mut self, s: GrammarState) -> u32 {
        if let Some(&id) = self.ids.get(&s) {
            return id;
        }
        let id = self.states.len() as u32;
        self.entries += entries(&s);
        self.ids.insert(s.clone(), id);
        self.states.push(s);
        id
    }

    /// Make room before a query; ids stay valid until the next call.
    fn reserve(&mut self) {
        if self.states.len() > MAX_INTERNED || self.entries > MAX_INTERNED_ENTRIES {
            *self = Transitions::default();
        }
    }

    /// Step interned state `id` by byte `b`: `Ok(None)` when rejected or a
    /// recogniser limit is hit, `Err(())` when the cache is full mid-query
    /// (the caller then steps without it).
    fn step(&mut self, g: &Grammar, id: u32, b: u8) -> std::result::Result<Option<u32>, ()> {
        if let Some(&t) = self.next.get(&(id, b)) {
            return Ok((t != DEAD).then_some(t));
        }
        if self.states.len() > MAX_INTERNED || self.entries > MAX_INTERNED_ENTRIES {
            return Err(());
        }
        let t = match self.states[id as usize].step(g, b) {
            Ok(Some(s)) => self.intern(s),
            _ => DEAD,
        };
        self.next.insert((id, b), t);
        Ok((t != DEAD).then_some(t))
    }
}

/// Step without the cache (used when it overflows).
fn step_plain(g: &Grammar, s: &GrammarState, bytes: &[u8]) -> bool {
    let mut st = s.clone();
    for &b in bytes {
        st = match st.step(g, b) {
            Ok(Some(n)) => n,
            _ => return false,
        };
    }
    true
}

#[derive(Debug, Clone)]
struct Memo {
    known: Vec<u8>,
    /// Every allowed token, once a full mask was computed.
    full: Option<Arc<Vec<u32>>>,
}

/// Token-level view of a grammar for one vocabulary.
#[derive(Debug, Clone)]
pub struct TokenMask {
    grammar: Arc<Grammar>,
    vocab: Vec<Vec<u8>>,
    is_eos: Vec<bool>,
    trie: Trie,
    /// Memo slot of each parser state seen lately (see [`MEMO_STATES`]).
    memo_keys: HashMap<GrammarState, usize>,
    memos: Vec<Memo>,
    trans: Transitions,
}

/// Token checks against one parser state. The state is resolved once (its
/// memo slot and its interned id in the transition cache); each check is
/// then a memo read or a walk of the token's bytes through the cache. It
/// borrows the mask, so nothing else can reset the caches meanwhile.
pub struct StateQuery<'a> {
    mask: &'a mut TokenMask,
    state: &'a GrammarState,
    /// `None`: the state belongs to another grammar (nothing is allowed).
    slot: Option<usize>,
    /// The state's interned id, once a check needed it.
    root: Option<u32>,
}

impl StateQuery<'_> {
    /// May `token` come next? (Unknown ids: no.)
    pub fn allowed(&mut self, token: u32) -> bool {
        let Some(slot) = self.slot else {
            return false;
        };
        let t = token as usize;
        match self.mask.memos[slot].known.get(t) {
            None => return false,
            Some(&YES) => return true,
            Some(&NO) => return false,
            Some(_) => {}
        }
        let ok = self.check(t);
        self.mask.memos[slot].known[t] = if ok { YES } else { NO };
        ok
    }

    /// Vocabulary size.
    pub fn n_vocab(&self) -> usize {
        self.mask.vocab.len()
    }

    fn check(&mut self, t: usize) -> bool {
        let m = &mut *self.mask;
        if m.is_eos[t] {
            return self.state.can_end();
        }
        let bytes = &m.vocab[t];
        if bytes.is_empty() {
            return false;
        }
        let mut id = match self.root {
            Some(r) => r,
            None => {
                // Once per query: the ids stay valid until the next reserve.
                m.trans.reserve();
                let r = m.trans.intern(self.state.clone());
                self.root = Some(r);
                r
            }
        };
        for &b in bytes {
            match m.trans.step(&m.grammar, id, b) {
                Ok(Some(next)) => id = next,
                Ok(None) => return false,
                Err(()) => return step_plain(&m.grammar, self.state, bytes),
            }
        }
        true
    }
}

impl TokenMask {
    /// Precompute the trie for `vocab` (each token's output bytes; id = index)
    /// with `eos` the end-of-generation token ids.
    pub fn new(grammar: Arc<Grammar>, vocab: &[Vec<u8>], eos: &[u32]) -> Result<TokenMask> {
        if vocab.is_empty() || vocab.len() > u32::MAX as usize {
            return Err(GrammarError::BadVocab {
                detail: format!("{} tokens", vocab.len()),
            });
        }
        let mut is_eos = vec![false; vocab.len()];
        for &e in eos {
            match is_eos.get_mut(e as usize) {
                Some(x) => *x = true,
                None => {
                    return Err(GrammarError::BadVocab {
                        detail: format!("eos id {e} beyond {} tokens", vocab.len()),
                    })
                }
            }
        }
        let trie = Trie::build(vocab, &is_eos);
        Ok(TokenMask {
            grammar,
            vocab: vocab.to_vec(),
            is_eos,
            trie,
            memo_keys: HashMap::new(),
            memos: Vec::new(),
            trans: Transitions::default(),
        })
    }

    /// Vocabulary size.
    pub fn n_vocab(&self) -> usize {
        self.vocab.len()
    }

    /// The grammar.
    pub fn grammar(&self) -> &Arc<Grammar> {
        &self.grammar
    }

    /// Forget the per-state answers (the byte-transition cache stays).
    pub fn clear_memo(&mut self) {
        self.memo_keys.clear();
        self.memos.clear();
    }

    /// Forget every cached answer and transition (to measure cold cost).
    pub fn clear_all(&mut self) {
        self.clear_memo();
        self.trans = Transitions::default();
    }

    /// Number of trie nodes (for diagnostics).
    pub fn trie_nodes(&self) -> usize {
        self.trie.edges.len()
    }

    /// The memo slot of `state`, made if new (which may forget the others).
    fn memo_slot(&mut self, state: &GrammarState) -> usize {
        if let Some(&i) = self.memo_keys.get(state) {
            return i;
        }
        // A huge state (pathological grammar) is memoised alone.
        let huge = entries(state) > MAX_INTERNED_ENTRIES / MEMO_STATES;
        if self.memos.len() >= MEMO_STATES || huge {
            self.clear_memo();
        }
        self.memos.push(Memo {
            known: vec![UNKNOWN; self.vocab.len()],
            full: None,
        });
        self.memo_keys.insert(state.clone(), self.memos.len() - 1);
        self.memos.len() - 1
    }

    /// Checks of tokens against `state` (see [`StateQuery`]).
    pub fn query<'a>(&'a mut self, state: &'a GrammarState) -> StateQuery<'a> {
        let slot = (state.fingerprint == self.grammar.fingerprint()).then(|| self.memo_slot(state));
        StateQuery {
            mask: self,
            state,
            slot,
            root: None,
        }
    }

    /// May `token` come next in `state`? (Unknown ids and states of another
    /// grammar: no.)
    pub fn allowed(&mut self, state: &GrammarState, token: u32) -> bool {
        self.query(state).allowed(token)
    }

    /// The first of `candidates` (in the order given) that is allowed.
    pub fn first_allowed(
        &mut self,
        state: &GrammarState,
        candidates: impl IntoIterator<Item = u32>,
    ) -> Result<u32> {
        let mut q = self.query(state);
        for t in candidates {
            if q.allowed(t) {
                return Ok(t);
            }
        }
        Err(GrammarError::NoTokenAllowed)
    }

    /// Tokens whose bytes the grammar accepts from `state`, walking the trie
    /// through the transition cache (None if the cache overflowed).
    fn trie_walk_cached(&mut self, state: &GrammarState) -> Option<Vec<bool>> {
        let mut yes = vec![false; self.vocab.len()];
        self.trans.reserve();
        let root = self.trans.intern(state.clone());
        // Depth-first; each frame: node, interned state there, next edge.
        let mut frames: Vec<(usize, u32, usize)> = vec![(0, root, 0)];
        while let Some(frame) = frames.last_mut() {
            let (node, sid, i) = *frame;
            let Some(&(b, child)) = self.trie.edges[node].get(i) else {
                frames.pop();
                continue;
            };
            frame.2 += 1;
            if let Some(next) = self.trans.step(&self.grammar, sid, b).ok()? {
                for &t in &self.trie.ends[child as usize] {
                    yes[t as usize] = true;
                }
                frames.push((child as usize, next, 0));
            }
        }
        Some(yes)
    }

    /// The same walk holding states in the frames (memory: trie depth).
    fn trie_walk_plain(&self, state: &GrammarState) -> Vec<bool> {
        let mut yes = vec![false; self.vocab.len()];
        let mut frames: Vec<(usize, GrammarState, usize)> = vec![(0, state.clone(), 0)];
        while let Some(frame) = frames.last_mut() {
            let (node, i) = (frame.0, frame.2);
            let Some(&(b, child)) = self.trie.edges[node].get(i) else {
                frames.pop();
                continue;
            };
            frame.2 += 1;
            if let Ok(Some(next)) = frame.1.step(&self.grammar, b) {
                for &t in &self.trie.ends[child as usize] {
                    yes[t as usize] = true;
                }
                frames.push((child as usize, next, 0));
            }
        }
        yes
    }

    /// Every allowed token id, ascending (memoised per state).
    pub fn allowed_tokens(&mut self, state: &GrammarState) -> Result<Arc<Vec<u32>>> {
        if state.fingerprint != self.grammar.fingerprint() {
            return Err(GrammarError::BadState {
                field: "fingerprint",
                detail: "the state belongs to another grammar".into(),
            });
        }
        if let Some(full) = self
            .memo_keys
            .get(state)
            .and_then(|&i| self.memos[i].full.clone())
        {
            return Ok(full);
        }
        let yes = match self.trie_walk_cached(state) {
            Some(yes) => yes,
            None => {
                self.trans = Transitions::default();
                self.trie_walk_plain(state)
            }
        };
        let mut yes = yes;
        let can_end = state.can_end();
        for (t, e) in self.is_eos.iter().enumerate() {
            if *e {
                yes[t] = can_end;
            }
        }
        let full: Vec<u32> = (0..self.vocab.len() as u32)
            .filter(|&t| yes[t as usize])
            .collect();
        if full.is_empty() {
            return Err(GrammarError::NoTokenAllowed);
        }
        let full = Arc::new(full);
        let slot = self.memo_slot(state);
        let m = &mut self.memos[slot];
        for (k, y) in m.known.iter_mut().zip(&yes) {
            *k = if *y { YES } else { NO };
        }
        m.full = Some(full.clone());
        Ok(full)
    }

    /// Set the logit of every token the grammar refuses to `-inf`; returns
    /// how many remain. For temperature / top-p / min-p sampling.
    pub fn apply(&mut self, state: &GrammarState, logits: &mut [f32]) -> Result<usize> {
        if logits.len() != self.vocab.len() {
            return Err(GrammarError::BadVocab {
                detail: format!("{} logits for {} tokens", logits.len(), self.vocab.len()),
            });
        }
        let full = self.allowed_tokens(state)?;
        let mut keep = vec![false; logits.len()];
        for &t in full.iter() {
            keep[t as usize] = true;
        }
        for (l, k) in logits.iter_mut().zip(keep) {
            if !k {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(full.len())
    }

    /// The allowed token with the highest logit (ties: lowest id). Checks
    /// candidates lazily in logit order.
    pub fn greedy(&mut self, state: &GrammarState, logits: &[f32]) -> Result<u32> {
        let top = self.top_k(state, logits, 1)?;
        top.first().copied().ok_or(GrammarError::NoTokenAllowed)
    }

    /// Up to `k` allowed tokens with the highest logits, best first (NaN
    /// logits are never chosen). Candidates are sorted and tested lazily; only
    /// if the first few hundred all fail is the full mask computed.
    pub fn top_k(&mut self, state: &GrammarState, logits: &[f32], k: usize) -> Result<Vec<u32>> {
        if logits.len() != self.vocab.len() {
            return Err(GrammarError::BadVocab {
                detail: format!("{} logits for {} tokens", logits.len(), self.vocab.len()),
            });
        }
        let k = k.max(1);
        let better = |a: &u32, b: &u32| {
            let (x, y) = (logits[*a as usize], logits[*b as usize]);
            y.total_cmp(&x).then(a.cmp(b))
        };
        // Fast path: the arg-max alone.
        if k == 1 {
            let (mut best, mut best_v) = (usize::MAX, f32::NEG_INFINITY);
            for (i, &l) in logits.iter().enumerate() {
                if l > best_v {
                    best = i;
                    best_v = l;
                }
            }
            if best != usize::MAX && self.query(state).allowed(best as u32) {
                return Ok(vec![best as u32]);
            }
        }
        let mut ids: Vec<u32> = (0..logits.len() as u32)
            .filter(|&i| !logits[i as usize].is_nan())
            .collect();
        let budget = LAZY_BUDGET.max(4 * k).min(ids.len());
        if budget > 0 && budget < ids.len() {
            ids.select_nth_unstable_by(budget - 1, better);
        }
        ids[..budget].sort_unstable_by(better);
        let mut out = Vec::with_capacity(k);
        let mut q = self.query(state);
        for &t in &ids[..budget] {
            if q.allowed(t) {
                out.push(t);
                if out.len() == k {
                    return Ok(out);
                }
            }
        }
        // Rare: fall back on the full mask.
        let full = self.allowed_tokens(state)?;
        let mut rest: Vec<u32> = full
            .iter()
            .copied()
            .filter(|&t| !logits[t as usize].is_nan())
            .collect();
        rest.sort_unstable_by(better);
        rest.truncate(k);
        if rest.is_empty() {
            return Err(GrammarError::NoTokenAllowed);
        }
        Ok(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::grammar::Recognizer;

    #[test]
    fn cached_and_plain_trie_walks_agree() {
        let g = Arc::new(
            Grammar::parse("root ::= \"{\" ( [a-z] | \"é\" | \"\\\\\" [nt] )* \"}\" [ ]?")
                .expect("compiles"),
        );
        let vocab: Vec<Vec<u8>> = ["{", "a", "ab", "é", "\\", "\\n", "}", "} ", "x}", "{a"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .chain([vec![0xC3], vec![0xA9, b'}']])
            .collect();
        let mut m = TokenMask::new(g.clone(), &vocab, &[]).expect("mask");
        let mut r = Recognizer::new(g).expect("recogniser");
        for piece in [&b"{"[..], b"a", b"\\", b"n", &[0xC3], &[0xA9], b"}"] {
            let st = r.snapshot();
            let cached = m.trie_walk_cached(&st).expect("fits");
            assert_eq!(cached, m.trie_walk_plain(&st));
            for (t, bytes) in vocab.iter().enumerate() {
                assert_eq!(cached[t], step_plain(&m.grammar, &st, bytes), "{t}");
            }
            r.accept_bytes(piece).expect("piece");
        }
        // A full cache makes a step give up (Err), not answer wrongly, and
        // token checks then fall back on plain stepping.
        let mut r = Recognizer::new(m.grammar.clone()).expect("recogniser");
        r.accept_bytes(b"{").expect("brace");
        m.clear_all();
        let id = m.trans.intern(r.snapshot());
        m.trans.entries = MAX_INTERNED_ENTRIES + 1;
        assert_eq!(m.trans.step(&m.grammar.clone(), id, b'a'), Err(()));
        let st = r.snapshot();
        let mut q = m.query(&st);
        assert!(q.check(1)); // interns the state (the cache is empty again)
        q.mask.trans.entries = MAX_INTERNED_ENTRIES + 1;
        assert!(q.check(2) && !q.check(0) && !q.check(9));
    }
}
