//! Cutting special tokens out of text before the tokenizer proper, as
//! llama.cpp's `tokenizer_st_partition` does: special tokens are tried one
//! at a time, longest first; each cuts every remaining text fragment at its
//! leftmost non-overlapping occurrences. User-defined tokens are always cut;
//! control and unknown tokens only where the caller allows it.
//!
//! One Aho-Corasick pass first finds which special tokens occur at all, so
//! a vocabulary with thousands of them costs one scan plus one `memmem`
//! scan per token that occurs, instead of a scan per token.

use aho_corasick::{AhoCorasick, MatchKind};
use memchr::memmem;

/// A fragment of partitioned text: a byte range of the text, or a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frag {
    Text(usize, usize),
    Token(u32),
}

#[derive(Debug, Clone)]
pub struct Specials {
    /// (text, id, needs parse_special), longest first.
    list: Vec<(String, u32, bool)>,
    ac: Option<AhoCorasick>,
}

impl Specials {
    /// `list` holds (text, id, is control or unknown); empty texts are
    /// dropped.
    pub fn new(mut list: Vec<(String, u32, bool)>) -> Specials {
        list.retain(|(t, _, _)| !t.is_empty());
        list.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let ac = if list.is_empty() {
            None
        } else {
            AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .build(list.iter().map(|(t, _, _)| t.as_bytes()))
                .ok()
        };
        Specials { list, ac }
    }

    /// Partitions `text`. A control/unknown token is cut only where it lies
    /// wholly inside a range of `allowed` (byte ranges, sorted).
    pub fn partition(&self, text: &str, allowed: &[(usize, usize)]) -> Vec<Frag> {
        let mut frags = Vec::new();
        if text.is_empty() {
            return frags;
        }
        frags.push(Frag::Text(0, text.len()));
        let Some(ac) = &self.ac else {
            return frags;
        };
        let bytes = text.as_bytes();
        let mut present = vec![false; self.list.len()];
        let mut n_present = 0usize;
        for m in ac.find_overlapping_iter(bytes) {
            let k = m.pattern().as_usize();
            if !present[k] && (!self.list[k].2 || inside(allowed, m.start(), m.end())) {
                present[k] = true;
                n_present += 1;
                if n_present == self.list.len() {
                    break;
                }
            }
        }
        for (k, (tok, id, control)) in self.list.iter().enumerate() {
            if !present[k] {
                continue;
            }
            let finder = memmem::Finder::new(tok.as_bytes());
            let mut out = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Frag::Text(a, b) = f else {
                    out.push(f);
                    continue;
                };
                let (mut cur, mut pos) = (a, a);
                while let Some(off) = finder.find(&bytes[pos..b]) {
                    let m = pos + off;
                    let e = m + tok.len();
                    if *control && !inside(allowed, m, e) {
                        pos = m + 1;
                        continue;
                    }
                    if m > cur {
                        out.push(Frag::Text(cur, m));
                    }
                    out.push(Frag::Token(*id));
                    cur = e;
                    pos = e;
                }
                if cur < b {
                    out.push(Frag::Text(cur, b));
                }
            }
            frags = out;
        }
        frags
    }
}

fn inside(allowed: &[(usize, usize)], s: usize, e: usize) -> bool {
    let i = allowed.partition_point(|&(_, end)| end < e);
    allowed.get(i).is_some_and(|&(a, b)| a <= s && e <= b)
}
