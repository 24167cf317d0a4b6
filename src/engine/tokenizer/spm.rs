//! SentencePiece-style merging as llama.cpp runs it: chars in a linked
//! list, adjacent pairs whose concatenation is a token in a priority queue
//! ordered by (token score, leftmost first), O(n log n). A pair is looked up
//! by hashing the borrowed slice of the text (no string is built), and every
//! merged symbol is a token, so a lookup hashes at most two tokens' bytes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

#[derive(Debug, Clone, Copy, PartialEq)]
struct OrdF32(f32);
impl Eq for OrdF32 {}
impl PartialOrd for OrdF32 {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for OrdF32 {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

/// Merges `text` (spaces already escaped as `▁`); calls `emit(Ok(id))` per
/// token and `emit(Err(range))` for a symbol that is not a token (a single
/// char: its bytes fall back to byte tokens).
pub fn merge(
    text: &str,
    ids: &HashMap<String, u32>,
    scores: &[f32],
    mut emit: impl FnMut(Result<u32, (usize, usize)>),
) {
    let mut sym: Vec<(usize, usize)> = text
        .char_indices()
        .map(|(i, c)| (i, i + c.len_utf8()))
        .collect();
    let n = sym.len();
    if n == 0 {
        return;
    }
    let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect(); // MAX = none
    let mut next: Vec<usize> = (1..=n).collect(); // n = none
    let mut alive = vec![true; n];
    // (score, leftmost first, right, byte size): the largest pops first.
    let mut heap: BinaryHeap<(OrdF32, Reverse<usize>, usize, usize)> = BinaryHeap::new();
    let pair = |sym: &[(usize, usize)], l: usize, r: usize| {
        let (s, e) = (sym[l].0, sym[r].1);
        ids.get(&text[s..e]).and_then(|&id| {
            scores
                .get(id as usize)
                .map(|&score| (OrdF32(score), Reverse(l), r, e - s))
        })
    };
    for i in 1..n {
        heap.extend(pair(&sym, i - 1, i));
    }
    while let Some((_, Reverse(l), r, size)) = heap.pop() {
        if !alive[l] || !alive[r] || next[l] != r || sym[r].1 - sym[l].0 != size {
            continue;
        }
        sym[l].1 = sym[r].1;
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
        let (s, e) = sym[i];
        match ids.get(&text[s..e]) {
            Some(&id) => emit(Ok(id)),
            None => emit(Err((s, e))),
        }
        i = next[i];
    }
}
