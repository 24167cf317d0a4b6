//! Byte-level BPE merging in O(n log n) per word: symbols in a linked list,
//! a priority queue of adjacent pairs ordered by (merge rank, position), and
//! merges looked up by (symbol id, symbol id) — no strings are built while
//! merging. The order of merges is llama.cpp's: the lowest rank first, the
//! leftmost pair among equal ranks.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// No symbol: a byte whose char is neither a token nor part of a merge.
const NONE: u32 = u32::MAX;

/// The merge table with every string interned: ids below `n_vocab` are
/// vocabulary ids; strings that appear in merges but not in the vocabulary
/// get ids from `n_vocab` up, so merging through them works as with
/// strings.
#[derive(Debug, Clone)]
pub struct Merges {
    /// (left, right) → (rank, merged).
    pairs: HashMap<(u32, u32), (u32, u32)>,
    /// The symbol of each byte's GPT-2 char.
    byte_sym: [u32; 256],
    n_vocab: u32,
}

impl Merges {
    /// `merges` are (left, right) in rank order, first occurrence kept;
    /// `ids` maps vocabulary strings to ids; `byte_char` is GPT-2's table.
    pub fn new(
        merges: &[(String, String)],
        ids: &HashMap<String, u32>,
        n_vocab: usize,
        byte_char: &[char; 256],
    ) -> Merges {
        let mut extra: HashMap<String, u32> = HashMap::new();
        let mut next = n_vocab as u32;
        let mut intern = |s: &str| -> u32 {
            if let Some(&id) = ids.get(s) {
                return id;
            }
            if let Some(&id) = extra.get(s) {
                return id;
            }
            let id = next;
            next = next.saturating_add(1);
            extra.insert(s.to_string(), id);
            id
        };
        let mut pairs = HashMap::with_capacity(merges.len());
        for (rank, (a, b)) in merges.iter().enumerate() {
            let (l, r) = (intern(a), intern(b));
            let m = intern(&format!("{a}{b}"));
            pairs.entry((l, r)).or_insert((rank as u32, m));
        }
        let mut byte_sym = [NONE; 256];
        let mut buf = [0u8; 4];
        for (b, c) in byte_char.iter().enumerate() {
            let s: &str = c.encode_utf8(&mut buf);
            byte_sym[b] = ids
                .get(s)
                .copied()
                .or_else(|| extra.get(s).copied())
                .unwrap_or(NONE);
        }
        Merges {
            pairs,
            byte_sym,
            n_vocab: n_vocab as u32,
        }
    }

    /// Merges the bytes of one word; calls `emit(Ok(id))` for each final
    /// vocabulary token and `emit(Err(range))` for a final symbol that is
    /// not one (its bytes fall back to byte tokens).
    pub fn merge(&self, word: &[u8], mut emit: impl FnMut(Result<u32, (usize, usize)>)) {
        let n = word.len();
        if n == 0 {
            return;
        }
        let mut sym: Vec<u32> = word.iter().map(|&b| self.byte_sym[b as usize]).collect();
        let mut end: Vec<usize> = (1..=n).collect();
        let mut next: Vec<usize> = (1..=n).collect(); // n = none
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect(); // MAX = none
        let mut alive = vec![true; n];
        // (rank, left, right, left symbol, right symbol), smallest first.
        let mut heap: BinaryHeap<Reverse<(u32, usize, usize, u32, u32)>> = BinaryHeap::new();
        let pair = |sym: &[u32], l: usize, r: usize| -> Option<Reverse<(u32, usize, usize, u32, u32)>> {
            let (a, b) = (sym[l], sym[r]);
            if a == NONE || b == NONE {
                return None;
            }
            self.pairs
                .get(&(a, b))
                .map(|&(rank, _)| Reverse((rank, l, r, a, b)))
        };
        for i in 1..n {
            heap.extend(pair(&sym, i - 1, i));
        }
        while let Some(Reverse((_, l, r, a, b))) = heap.pop() {
            if !alive[l] || !alive[r] || sym[l] != a || sym[r] != b || next[l] != r {
                continue;
            }
            let Some(&(_, m)) = self.pairs.get(&(a, b)) else {
                continue;
            };
            sym[l] = m;
            end[l] = end[r];
            alive[r] = false;
            next[l] = next[r];
            if next[r] < n {
                prev[next[r]] = l;
            }
            if prev[l] < n {
                heap.extend(pair(&sym, prev[l], l));
            }
            if next[l] < n {
                heap.extend(pair(&sym, l, next[l]));
            }
        }
        let mut i = 0usize;
        while i < n {
            let s = sym[i];
            if s < self.n_vocab {
                emit(Ok(s));
            } else {
                emit(Err((i, end[i])));
            }
            i = next[i];
        }
    }
}

/// The merging as it was before (quadratic: rescan every pair after each
/// merge, strings compared), kept as the twin the fast path is tested
/// against.
#[cfg(test)]
pub fn reference_merge(ranks: &HashMap<(String, String), usize>, mapped: &str) -> Vec<String> {
    let mut syms: Vec<String> = mapped.chars().map(String::from).collect();
    loop {
        let best = syms
            .windows(2)
            .enumerate()
            .filter_map(|(i, w)| ranks.get(&(w[0].clone(), w[1].clone())).map(|r| (*r, i)))
            .min();
        let Some((_, i)) = best else { break };
        let right = syms.remove(i + 1);
        syms[i].push_str(&right);
    }
    syms
}
