//! SentencePiece-style merging as llama.cpp runs it: chars in a linked
//! list, adjacent pairs whose concatenation is a token in a priority queue
//! ordered by (token score, leftmost first), O(n log n). A pair is looked up
//! by hashing the borrowed slice of the text (no string is built), and every
//! merged symbol is a token, so a lookup hashes at most two tokens' bytes.

use super::hash::FastMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A key that sorts scores from the highest down (f32 total order,
/// inverted).
fn score_key(score: f32) -> u32 {
    let bits = score.to_bits();
    let ordered = if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    };
    !ordered
}

/// Merges `text` (spaces already escaped as `▁`); calls `emit(Ok(id))` per
/// token and `emit(Err(range))` for a symbol that is not a token (a single
/// char: its bytes fall back to byte tokens).
pub fn merge(
    text: &str,
    ids: &FastMap<String, u32>,
    scores: &[f32],
    mut emit: impl FnMut(Result<u32, (usize, usize)>),
) {
    merge_dyn(text, ids, scores, &mut emit);
}

fn merge_dyn(
    text: &str,
    ids: &FastMap<String, u32>,
    scores: &[f32],
    emit: &mut dyn FnMut(Result<u32, (usize, usize)>),
) {
    if text.len() > super::bpe::MAX_SYMBOLS {
        // Heap keys hold a 32-bit position: a text over 4 GiB (beyond any
        // context) is merged in pieces cut at char boundaries.
        let mut cut = super::bpe::MAX_SYMBOLS;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        merge_dyn(&text[..cut], ids, scores, emit);
        merge_dyn(&text[cut..], ids, scores, &mut |r| {
            emit(r.map_err(|(s, e)| (s + cut, e + cut)))
        });
        return;
    }
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
    // Min-heap of (score key << 32 | left): the highest score, then the
    // leftmost pair. An entry is checked when popped: it stands if the pair
    // now at `left` is a token of that same score (then any twin entry for
    // that pair has the same key, so taking it now keeps the order) —
    // eight bytes an entry keeps a long text's heap in cache.
    let key = |sym: &[(usize, usize)], l: usize, r: usize| -> Option<u64> {
        let (s, e) = (sym[l].0, sym[r].1);
        ids.get(&text[s..e])
            .and_then(|&id| scores.get(id as usize))
            .map(|&score| (u64::from(score_key(score)) << 32) | l as u64)
    };
    let mut heap: BinaryHeap<Reverse<u64>> = (1..n)
        .filter_map(|i| key(&sym, i - 1, i).map(Reverse))
        .collect::<Vec<_>>()
        .into();
    while let Some(Reverse(k)) = heap.pop() {
        let l = (k & 0xFFFF_FFFF) as usize;
        if !alive[l] || next[l] >= n {
            continue;
        }
        let r = next[l];
        if key(&sym, l, r) != Some(k) {
            continue;
        }
        sym[l].1 = sym[r].1;
        alive[r] = false;
        next[l] = next[r];
        if next[r] < n {
            prev[next[r]] = l;
        }
        if prev[l] < n {
            heap.extend(key(&sym, prev[l], l).map(Reverse));
        }
        if next[l] < n {
            heap.extend(key(&sym, l, next[l]).map(Reverse));
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
