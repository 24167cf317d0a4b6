//! Byte-level BPE merging in O(n log n) per word: symbols in a linked list,
//! a priority queue of adjacent pairs ordered by (merge rank, position), and
//! merges looked up by (symbol id, symbol id) — no strings are built while
//! merging. The order of merges is llama.cpp's: the lowest rank first, the
//! leftmost pair among equal ranks.

use super::hash::FastMap;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// The most symbols one merge handles (positions are 32-bit in heap keys).
pub(crate) const MAX_SYMBOLS: usize = u32::MAX as usize;

/// No symbol: a byte whose char is neither a token nor part of a merge.
const NONE: u32 = u32::MAX;

/// The merge table with every string interned: ids below `n_vocab` are
/// vocabulary ids; strings that appear in merges but not in the vocabulary
/// get ids from `n_vocab` up, so merging through them works as with
/// strings.
#[derive(Debug, Clone)]
pub struct Merges {
    /// (left, right) → (rank, merged).
    pairs: FastMap<(u32, u32), (u32, u32)>,
    /// The symbol of each byte's GPT-2 char.
    byte_sym: [u32; 256],
    n_vocab: u32,
}

impl Merges {
    /// `merges` are (left, right) in rank order, first occurrence kept;
    /// `ids` maps vocabulary strings to ids; `byte_char` is GPT-2's table.
    pub fn new(
        merges: &[(String, String)],
        ids: &FastMap<String, u32>,
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
        let mut pairs = FastMap::with_capacity_and_hasher(merges.len(), Default::default());
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
    /// not one (its bytes fall back to byte tokens). `work` is reused
    /// between words.
    pub fn merge(
        &self,
        word: &[u8],
        work: &mut Work,
        mut emit: impl FnMut(Result<u32, (usize, usize)>),
    ) {
        self.merge_dyn(word, work, &mut emit);
    }

    fn merge_dyn(
        &self,
        word: &[u8],
        work: &mut Work,
        emit: &mut dyn FnMut(Result<u32, (usize, usize)>),
    ) {
        let n = word.len();
        if n == 0 {
            return;
        }
        if n > MAX_SYMBOLS {
            // Heap keys hold a 32-bit position: a word over 4 GiB (beyond
            // any context) is merged in 4 GiB pieces.
            for (k, piece) in word.chunks(MAX_SYMBOLS).enumerate() {
                let base = k * MAX_SYMBOLS;
                self.merge_dyn(piece, work, &mut |r| {
                    emit(r.map_err(|(s, e)| (s + base, e + base)))
                });
            }
            return;
        }
        if n == 1 {
            let s = self.byte_sym[word[0] as usize];
            emit(if s < self.n_vocab { Ok(s) } else { Err((0, 1)) });
            return;
        }
        let Work {
            sym,
            end,
            next,
            prev,
            alive,
            heap,
        } = work;
        sym.clear();
        sym.extend(word.iter().map(|&b| self.byte_sym[b as usize]));
        end.clear();
        end.extend(1..=n);
        next.clear();
        next.extend(1..=n); // n = none
        prev.clear();
        prev.extend((0..n).map(|i| i.wrapping_sub(1))); // MAX = none
        alive.clear();
        alive.resize(n, true);
        // Min-heap of (rank << 32 | left): the lowest rank, then the
        // leftmost pair. An entry is checked when popped: it stands if the
        // pair now at `left` merges with that same rank (ranks are unique
        // per pair, so it is the same pair, and any twin entry has the same
        // key) — eight bytes an entry keeps a long word's heap in cache.
        let key = |sym: &[u32], l: usize, r: usize| -> Option<Reverse<u64>> {
            let (a, b) = (sym[l], sym[r]);
            if a == NONE || b == NONE {
                return None;
            }
            self.pairs
                .get(&(a, b))
                .map(|&(rank, _)| Reverse((u64::from(rank) << 32) | l as u64))
        };
        let mut items = std::mem::take(heap).into_vec();
        items.clear();
        items.extend((1..n).filter_map(|i| key(sym, i - 1, i)));
        let mut queue = BinaryHeap::from(items);
        while let Some(Reverse(k)) = queue.pop() {
            let (rank, l) = ((k >> 32) as u32, (k & 0xFFFF_FFFF) as usize);
            if !alive[l] || next[l] >= n {
                continue;
            }
            let r = next[l];
            let (a, b) = (sym[l], sym[r]);
            if a == NONE || b == NONE {
                continue;
            }
            let Some(&(now, m)) = self.pairs.get(&(a, b)) else {
                continue;
            };
            if now != rank {
                continue;
            }
            sym[l] = m;
            end[l] = end[r];
            alive[r] = false;
            next[l] = next[r];
            if next[r] < n {
                prev[next[r]] = l;
            }
            if prev[l] < n {
                queue.extend(key(sym, prev[l], l));
            }
            if next[l] < n {
                queue.extend(key(sym, l, next[l]));
            }
        }
        *heap = queue;
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

/// Buffers one merge reuses for the next.
#[derive(Debug, Default)]
pub struct Work {
    sym: Vec<u32>,
    end: Vec<usize>,
    next: Vec<usize>,
    prev: Vec<usize>,
    alive: Vec<bool>,
    heap: BinaryHeap<Reverse<u64>>,
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
