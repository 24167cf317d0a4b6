//! GBNF text → compiled grammar, following llama.cpp's `grammars/README.md`
//! and its parser's rewrite of repetitions into generated rules.
//!
//! Compiled form: every rule is a run of [`Elem`]s, alternatives separated by
//! `Alt` and closed by `End`; all rules live in one array so a pushdown-stack
//! entry is just an index into it.

use super::{GrammarError, Limits, Result};
use std::collections::HashMap;

/// One compiled grammar element (llama.cpp's `llama_gretype` set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Elem {
    /// End of a rule's last alternative.
    End,
    /// End of an alternative, another follows.
    Alt,
    /// A reference to rule `id`.
    RuleRef(u32),
    /// Start of a positive character class; matches this code point.
    Char(u32),
    /// Start of a negated character class.
    CharNot(u32),
    /// Another code point of the class started before.
    CharAlt(u32),
    /// Upper bound of a range whose lower bound is the previous element.
    RngUpper(u32),
    /// `.`: any code point.
    Any,
}

impl Elem {
    pub(crate) fn is_end_of_seq(self) -> bool {
        matches!(self, Elem::End | Elem::Alt)
    }
    pub(crate) fn is_class_start(self) -> bool {
        matches!(self, Elem::Char(_) | Elem::CharNot(_) | Elem::Any)
    }
}

/// A compiled GBNF grammar.
#[derive(Debug, Clone)]
pub struct Grammar {
    pub(crate) elems: Vec<Elem>,
    /// Index in `elems` where each rule starts.
    pub(crate) rule_start: Vec<u32>,
    names: Vec<String>,
    pub(crate) root: u32,
    source: String,
    fingerprint: u64,
    pub(crate) limits: Limits,
}

impl Grammar {
    /// Compile GBNF text with the default [`Limits`].
    pub fn parse(source: &str) -> Result<Grammar> {
        Grammar::parse_with(source, Limits::default())
    }

    /// Compile GBNF text with explicit limits.
    pub fn parse_with(source: &str, limits: Limits) -> Result<Grammar> {
        if source.len() > limits.max_source_bytes {
            return Err(GrammarError::TooLarge {
                what: "source bytes",
                value: source.len(),
                limit: limits.max_source_bytes,
            });
        }
        let mut p = Parser {
            src: source.as_bytes(),
            text: source,
            pos: 0,
            ids: HashMap::new(),
            names: Vec::new(),
            rules: Vec::new(),
            first_use: Vec::new(),
            n_elems: 0,
            limits,
            depth: 0,
        };
        p.parse_all()?;
        let root = *p.ids.get("root").ok_or_else(|| GrammarError::Syntax {
            line: 1,
            column: 1,
            message: "the grammar has no 'root' rule".into(),
        })?;
        let mut elems = Vec::with_capacity(p.n_elems);
        let mut rule_start = Vec::with_capacity(p.rules.len());
        for (id, rule) in p.rules.iter().enumerate() {
            match rule {
                Some(r) => {
                    rule_start.push(elems.len() as u32);
                    elems.extend_from_slice(r);
                }
                None => {
                    let (line, column) = p.first_use[id]
                        .map(|o| line_col(source, o))
                        .unwrap_or((1, 1));
                    return Err(GrammarError::UndefinedRule {
                        name: p.names[id].clone(),
                        line,
                        column,
                    });
                }
            }
        }
        let mut g = Grammar {
            elems,
            rule_start,
            names: p.names,
            root,
            source: source.to_string(),
            fingerprint: 0,
            limits,
        };
        g.check_left_recursion()?;
        g.fingerprint = g.compute_fingerprint();
        Ok(g)
    }

    /// The GBNF text this grammar was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Number of rules (named and generated).
    pub fn n_rules(&self) -> usize {
        self.rule_start.len()
    }

    /// A 64-bit FNV-1a digest of the compiled form; serialised states carry
    /// it so they cannot be restored against another grammar.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The limits this grammar was compiled with (the recogniser uses them).
    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub(crate) fn rule_name(&self, id: u32) -> &str {
        self.names
            .get(id as usize)
            .map(String::as_str)
            .unwrap_or("?")
    }

    /// Start positions of each alternative of rule `id`.
    pub(crate) fn alternatives(&self, id: u32) -> impl Iterator<Item = u32> + '_ {
        let mut pos = self.rule_start[id as usize] as usize;
        let mut done = false;
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            let start = pos;
            while !self.elems[pos].is_end_of_seq() {
                pos += 1;
            }
            if self.elems[pos] == Elem::End {
                done = true;
            } else {
                pos += 1;
            }
            Some(start as u32)
        })
    }

    fn compute_fingerprint(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |v: u32| {
            for b in v.to_le_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        eat(self.root);
        eat(self.rule_start.len() as u32);
        for &s in &self.rule_start {
            eat(s);
        }
        for e in &self.elems {
            let (t, v) = match *e {
                Elem::End => (0, 0),
                Elem::Alt => (1, 0),
                Elem::RuleRef(v) => (2, v),
                Elem::Char(v) => (3, v),
                Elem::CharNot(v) => (4, v),
                Elem::CharAlt(v) => (5, v),
                Elem::RngUpper(v) => (6, v),
                Elem::Any => (7, 0),
            };
            eat(t);
            eat(v);
        }
        h
    }

    /// Reject rules that can reach themselves before consuming a character
    /// (they would make the pushdown expansion loop forever).
    fn check_left_recursion(&self) -> Result<()> {
        let n = self.rule_start.len();
        // Nullable rules, by fixpoint.
        let mut nullable = vec![false; n];
        loop {
            let mut changed = false;
            for r in 0..n as u32 {
                if nullable[r as usize] {
                    continue;
                }
                let any_empty = self.alternatives(r).any(|a| {
                    let mut p = a as usize;
                    loop {
                        match self.elems[p] {
                            Elem::End | Elem::Alt => return true,
                            Elem::RuleRef(x) if nullable[x as usize] => p += 1,
                            _ => return false,
                        }
                    }
                });
                if any_empty {
                    nullable[r as usize] = true;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        // Edges r -> x when x can be the leftmost thing r expands to.
        let mut edges: Vec<Vec<u32>> = vec![Vec::new(); n];
        for r in 0..n as u32 {
            for a in self.alternatives(r) {
                let mut p = a as usize;
                while let Elem::RuleRef(x) = self.elems[p] {
                    edges[r as usize].push(x);
                    if !nullable[x as usize] {
                        break;
                    }
                    p += 1;
                }
            }
        }
        // Iterative DFS cycle search (0 new, 1 on path, 2 done).
        let mut color = vec![0u8; n];
        for start in 0..n {
            if color[start] != 0 {
                continue;
            }
            let mut path: Vec<(usize, usize)> = vec![(start, 0)];
            color[start] = 1;
            while let Some(&mut (r, ref mut i)) = path.last_mut() {
                if let Some(&x) = edges[r].get(*i) {
                    *i += 1;
                    match color[x as usize] {
                        0 => {
                            color[x as usize] = 1;
                            path.push((x as usize, 0));
                        }
                        1 => {
                            return Err(GrammarError::LeftRecursion {
                                rule: self.rule_name(x).to_string(),
                            })
                        }
                        _ => {}
                    }
                } else {
                    color[r] = 2;
                    path.pop();
                }
            }
        }
        Ok(())
    }
}

/// 1-based line and character column of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before
        .get(line_start..)
        .map(|s| s.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

struct Parser<'a> {
    src: &'a [u8],
    text: &'a str,
    pos: usize,
    ids: HashMap<String, u32>,
    names: Vec<String>,
    rules: Vec<Option<Vec<Elem>>>,
    first_use: Vec<Option<usize>>,
    n_elems: usize,
    limits: Limits,
    depth: usize,
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

impl<'a> Parser<'a> {
    fn peek(&self) -> u8 {
        self.src.get(self.pos).copied().unwrap_or(0)
    }
    fn peek_at(&self, k: usize) -> u8 {
        self.src.get(self.pos + k).copied().unwrap_or(0)
    }
    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn err<T>(&self, at: usize, message: impl Into<String>) -> Result<T> {
        let (line, column) = line_col(self.text, at);
        Err(GrammarError::Syntax {
            line,
            column,
            message: message.into(),
        })
    }

    fn skip_space(&mut self, newline_ok: bool) {
        while !self.at_end() {
            match self.peek() {
                b' ' | b'\t' => self.pos += 1,
                b'#' => {
                    while !self.at_end() && !matches!(self.peek(), b'\r' | b'\n') {
                        self.pos += 1;
                    }
                }
                b'\r' | b'\n' if newline_ok => self.pos += 1,
                _ => break,
            }
        }
    }

    fn symbol(&mut self, name: &str) -> Result<u32> {
        if let Some(&id) = self.ids.get(name) {
            return Ok(id);
        }
        self.new_symbol(name.to_string())
    }

    fn new_symbol(&mut self, name: String) -> Result<u32> {
        if self.names.len() >= self.limits.max_rules {
            return Err(GrammarError::TooLarge {
                what: "rules",
                value: self.names.len() + 1,
                limit: self.limits.max_rules,
            });
        }
        let id = self.names.len() as u32;
        self.ids.insert(name.clone(), id);
        self.names.push(name);
        self.rules.push(None);
        self.first_use.push(None);
        Ok(id)
    }

    fn generated(&mut self, base: &str) -> Result<u32> {
        let name = format!("{base}_{}", self.names.len());
        self.new_symbol(name)
    }

    fn add_rule(&mut self, id: u32, rule: Vec<Elem>) -> Result<()> {
        self.count(rule.len())?;
        self.rules[id as usize] = Some(rule);
        Ok(())
    }

    fn count(&mut self, n: usize) -> Result<()> {
        self.n_elems += n;
        if self.n_elems > self.limits.max_elements {
            return Err(GrammarError::TooLarge {
                what: "compiled elements",
                value: self.n_elems,
                limit: self.limits.max_elements,
            });
        }
        Ok(())
    }

    fn parse_all(&mut self) -> Result<()> {
        self.skip_space(true);
        while !self.at_end() {
            self.parse_rule()?;
        }
        Ok(())
    }

    fn name(&mut self) -> Result<&'a str> {
        let start = self.pos;
        while is_word(self.peek()) {
            self.pos += 1;
        }
        if self.pos == start {
            return self.err(start, "expecting a rule name");
        }
        Ok(&self.text[start..self.pos])
    }

    fn parse_rule(&mut self) -> Result<()> {
        let name_at = self.pos;
        let name = self.name()?;
        self.skip_space(false);
        if !self.src[self.pos..].starts_with(b"::=") {
            return self.err(self.pos, "expecting '::='");
        }
        self.pos += 3;
        self.skip_space(true);
        let id = self.symbol(name)?;
        if self.rules[id as usize].is_some() {
            return self.err(name_at, format!("rule '{name}' is defined twice"));
        }
        // Mark as being defined so a self-reference is not "undefined".
        self.rules[id as usize] = Some(Vec::new());
        self.parse_alternates(name, id, false)?;
        match self.peek() {
            b'\r' => {
                self.pos += if self.peek_at(1) == b'\n' { 2 } else { 1 };
            }
            b'\n' => self.pos += 1,
            _ if self.at_end() => {}
            _ => return self.err(self.pos, "expecting newline or end of input"),
        }
        self.skip_space(true);
        Ok(())
    }

    fn parse_alternates(&mut self, name: &str, id: u32, nested: bool) -> Result<()> {
        self.depth += 1;
        if self.depth > self.limits.max_nesting {
            return self.err(
                self.pos,
                format!("nesting deeper than {}", self.limits.max_nesting),
            );
        }
        let mut rule = Vec::new();
        self.parse_sequence(name, &mut rule, nested)?;
        while self.peek() == b'|' {
            rule.push(Elem::Alt);
            self.pos += 1;
            self.skip_space(true);
            self.parse_sequence(name, &mut rule, nested)?;
        }
        rule.push(Elem::End);
        self.add_rule(id, rule)?;
        self.depth -= 1;
        Ok(())
    }

    /// One character of a literal or class: an escape or a UTF-8 char.
    fn parse_char(&mut self) -> Result<u32> {
        let at = self.pos;
        if self.at_end() {
            return self.err(at, "unexpected end of input");
        }
        if self.peek() == b'\\' {
            let kind = self.peek_at(1);
            self.pos += 2;
            let n = match kind {
                b'x' => 2,
                b'u' => 4,
                b'U' => 8,
                b't' => return Ok(9),
                b'r' => return Ok(13),
                b'n' => return Ok(10),
                b'\\' | b'"' | b'[' | b']' => return Ok(u32::from(kind)),
                0 => return self.err(at, "unexpected end of input after '\\'"),
                _ => return self.err(at, "unknown escape"),
            };
            let mut v: u32 = 0;
            for _ in 0..n {
                let d = match (self.peek() as char).to_digit(16) {
                    Some(d) => d,
                    None => return self.err(self.pos, format!("expecting {n} hex digits")),
                };
                v = (v << 4) | d;
                self.pos += 1;
            }
            if v > 0x10_FFFF {
                return self.err(at, format!("code point {v:#x} is beyond U+10FFFF"));
            }
            return Ok(v);
        }
        // The source is a &str, so a char boundary is here.
        let c = self.text[self.pos..].chars().next().unwrap_or('\0');
        self.pos += c.len_utf8();
        Ok(u32::from(c))
    }

    fn parse_int(&mut self) -> Result<u32> {
        let start = self.pos;
        let mut v: u64 = 0;
        while self.peek().is_ascii_digit() {
            v = v * 10 + u64::from(self.peek() - b'0');
            if v > u64::from(self.limits.max_repeat) {
                return self.err(
                    start,
                    format!(
                        "repetition count above the limit {}",
                        self.limits.max_repeat
                    ),
                );
            }
            self.pos += 1;
        }
        if self.pos == start {
            return self.err(start, "expecting an integer");
        }
        Ok(v as u32)
    }

    fn parse_sequence(&mut self, name: &str, rule: &mut Vec<Elem>, nested: bool) -> Result<()> {
        let mut last_start = rule.len();
        while !self.at_end() {
            let at = self.pos;
            match self.peek() {
                b'"' => {
                    self.pos += 1;
                    last_start = rule.len();
                    while self.peek() != b'"' {
                        if self.at_end() {
                            return self.err(at, "unterminated string literal");
                        }
                        rule.push(Elem::Char(self.parse_char()?));
                    }
                    self.pos += 1;
                    self.skip_space(nested);
                }
                b'[' => {
                    self.pos += 1;
                    let negated = self.peek() == b'^';
                    if negated {
                        self.pos += 1;
                    }
                    last_start = rule.len();
                    while self.peek() != b']' {
                        if self.at_end() {
                            return self.err(at, "unterminated character class");
                        }
                        let c = self.parse_char()?;
                        rule.push(if rule.len() > last_start {
                            Elem::CharAlt(c)
                        } else if negated {
                            Elem::CharNot(c)
                        } else {
                            Elem::Char(c)
                        });
                        if self.peek() == b'-' && self.peek_at(1) != b']' {
                            self.pos += 1;
                            let range_at = self.pos;
                            let hi = self.parse_char()?;
                            if hi < c {
                                return self.err(range_at, "character range end below its start");
                            }
                            rule.push(Elem::RngUpper(hi));
                        }
                    }
                    if rule.len() == last_start {
                        return self.err(at, "empty character class");
                    }
                    self.pos += 1;
                    self.skip_space(nested);
                }
                b'(' => {
                    self.pos += 1;
                    self.skip_space(true);
                    let sub = self.generated(name)?;
                    self.parse_alternates(name, sub, true)?;
                    last_start = rule.len();
                    rule.push(Elem::RuleRef(sub));
                    if self.peek() != b')' {
                        return self.err(self.pos, "expecting ')'");
                    }
                    self.pos += 1;
                    self.skip_space(nested);
                }
                b'.' => {
                    last_start = rule.len();
                    rule.push(Elem::Any);
                    self.pos += 1;
                    self.skip_space(nested);
                }
                b'*' | b'+' | b'?' => {
                    let (lo, hi) = match self.peek() {
                        b'*' => (0, None),
                        b'+' => (1, None),
                        _ => (0, Some(1)),
                    };
                    self.pos += 1;
                    self.skip_space(nested);
                    self.repeat(name, rule, last_start, lo, hi, at)?;
                }
                b'{' => {
                    self.pos += 1;
                    self.skip_space(nested);
                    let lo = self.parse_int()?;
                    self.skip_space(nested);
                    let hi = match self.peek() {
                        b'}' => Some(lo),
                        b',' => {
                            self.pos += 1;
                            self.skip_space(nested);
                            if self.peek().is_ascii_digit() {
                                let h = self.parse_int()?;
                                self.skip_space(nested);
                                Some(h)
                            } else {
                                None
                            }
                        }
                        _ => return self.err(self.pos, "expecting ',' or '}'"),
                    };
                    if self.peek() != b'}' {
                        return self.err(self.pos, "expecting '}'");
                    }
                    self.pos += 1;
                    self.skip_space(nested);
                    if let Some(h) = hi {
                        if h < lo {
                            return self.err(at, format!("repetition {{{lo},{h}}}: max below min"));
                        }
                    }
                    self.repeat(name, rule, last_start, lo, hi, at)?;
                }
                b'<' | b'!' => {
                    return self.err(at, "token references (<...>) are not supported");
                }
                b if is_word(b) => {
                    let ref_name = self.name()?;
                    let id = self.symbol(ref_name)?;
                    if self.first_use[id as usize].is_none() {
                        self.first_use[id as usize] = Some(at);
                    }
                    self.skip_space(nested);
                    last_start = rule.len();
                    rule.push(Elem::RuleRef(id));
                }
                _ => break,
            }
            if rule.len() > self.limits.max_elements {
                return Err(GrammarError::TooLarge {
                    what: "elements in one rule",
                    value: rule.len(),
                    limit: self.limits.max_elements,
                });
            }
        }
        Ok(())
    }

    /// Rewrite the last symbol `S` (elements from `last_start`) into
    /// `S{lo,hi}` the way llama.cpp does: `lo` copies, then either one
    /// generated `S' ::= S S' |` (unbounded) or a chain of `hi-lo` optional
    /// rules `S'(k) ::= S S'(k-1) |`.
    fn repeat(
        &mut self,
        name: &str,
        rule: &mut Vec<Elem>,
        last_start: usize,
        lo: u32,
        hi: Option<u32>,
        at: usize,
    ) -> Result<()> {
        if last_start >= rule.len() {
            return self.err(at, "repetition operator without a preceding item");
        }
        let prev: Vec<Elem> = rule[last_start..].to_vec();
        let extra = prev.len().saturating_mul((lo as usize).saturating_sub(1));
        if rule.len().saturating_add(extra) > self.limits.max_elements {
            return Err(GrammarError::TooLarge {
                what: "compiled elements",
                value: rule.len().saturating_add(extra),
                limit: self.limits.max_elements,
            });
        }
        if lo == 0 {
            rule.truncate(last_start);
        } else {
            for _ in 1..lo {
                rule.extend_from_slice(&prev);
            }
        }
        let n_opt = match hi {
            None => 1,
            Some(h) => h - lo,
        };
        let mut last_rec = 0u32;
        for i in 0..n_opt {
            let rec = self.generated(name)?;
            let mut r = prev.clone();
            if hi.is_none() {
                r.push(Elem::RuleRef(rec));
            } else if i > 0 {
                r.push(Elem::RuleRef(last_rec));
            }
            r.push(Elem::Alt);
            r.push(Elem::End);
            self.add_rule(rec, r)?;
            last_rec = rec;
        }
        if n_opt > 0 {
            rule.push(Elem::RuleRef(last_rec));
        }
        Ok(())
    }
}
