//! Property tests for the grammar module: the incremental recogniser agrees
//! with an independent backtracking matcher on every prefix of random bytes
//! for random grammars; token masks never allow a token that leads to
//! rejection (and allow every one that does not); JSON-Schema grammars
//! accept serialisations of random valid instances and reject invalid ones.
#![cfg(feature = "engine")]

use proptest::prelude::*;
use serde_json::{json, Value};
use std::sync::Arc;
use ztensor::engine::grammar::{Grammar, GrammarError, Recognizer, TokenMask, MAX_INT_DIGITS};

// ---------- random grammars as an AST, printed as GBNF ----------

#[derive(Debug, Clone)]
enum Node {
    Lit(Vec<char>),
    Class(bool, Vec<(char, char)>),
    Any,
    Ref(usize),
    Seq(Vec<Node>),
    Alt(Vec<Node>),
    Rep(Box<Node>, u32, Option<u32>),
}

const ALPHABET: &[char] = &['a', 'b', 'c', 'd', 'é', 'ß', '€', '😀'];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn ch(&mut self) -> char {
        ALPHABET[self.below(ALPHABET.len())]
    }
}

fn gen_node(rng: &mut Rng, rule: usize, n_rules: usize, depth: usize) -> Node {
    let leaf = depth >= 3;
    match rng.below(if leaf { 4 } else { 9 }) {
        0 => Node::Lit((0..1 + rng.below(3)).map(|_| rng.ch()).collect()),
        1 => {
            let mut items = Vec::new();
            for _ in 0..1 + rng.below(2) {
                let (a, b) = (rng.ch(), rng.ch());
                items.push(if a <= b { (a, b) } else { (b, a) });
            }
            Node::Class(rng.below(4) == 0, items)
        }
        2 => {
            if rng.below(4) == 0 {
                Node::Any
            } else {
                Node::Lit(vec![rng.ch()])
            }
        }
        3 => {
            // Forward references are free; backward ones (recursion) are
            // guarded by a character first, so there is no left recursion.
            let target = rng.below(n_rules);
            if target > rule {
                Node::Ref(target)
            } else {
                Node::Seq(vec![Node::Lit(vec![rng.ch()]), Node::Ref(target)])
            }
        }
        4 | 5 => Node::Seq(
            (0..2 + rng.below(2))
                .map(|_| gen_node(rng, rule, n_rules, depth + 1))
                .collect(),
        ),
        6 | 7 => {
            let mut alts: Vec<Node> = (0..2 + rng.below(2))
                .map(|_| gen_node(rng, rule, n_rules, depth + 1))
                .collect();
            if rng.below(4) == 0 {
                alts.push(Node::Seq(Vec::new()));
            }
            Node::Alt(alts)
        }
        _ => {
            let lo = rng.below(3) as u32;
            let hi = match rng.below(3) {
                0 => None,
                _ => Some(lo + rng.below(3) as u32),
            };
            // An unbounded body must consume a character each time.
            let body = if hi.is_none() {
                Node::Seq(vec![
                    Node::Lit(vec![rng.ch()]),
                    gen_node(rng, rule, n_rules, depth + 1),
                ])
            } else {
                gen_node(rng, rule, n_rules, depth + 1)
            };
            Node::Rep(Box::new(body), lo, hi)
        }
    }
}

fn esc(c: char) -> String {
    match c {
        '"' | '\\' | '[' | ']' => format!("\\{c}"),
        c if c.is_ascii() => c.to_string(),
        c if (c as u32) < 0x1_0000 && (c as u32).is_multiple_of(2) => {
            format!("\\u{:04X}", c as u32)
        }
        c if (c as u32).is_multiple_of(3) => format!("\\U{:08X}", c as u32),
        c => c.to_string(),
    }
}

fn print(n: &Node) -> String {
    match n {
        Node::Lit(cs) => format!("\"{}\"", cs.iter().map(|&c| esc(c)).collect::<String>()),
        Node::Class(neg, items) => {
            let body: String = items
                .iter()
                .map(|&(a, b)| {
                    if a == b {
                        esc(a)
                    } else {
                        format!("{}-{}", esc(a), esc(b))
                    }
                })
                .collect();
            format!("[{}{body}]", if *neg { "^" } else { "" })
        }
        Node::Any => ".".into(),
        Node::Ref(r) => name(*r),
        Node::Seq(items) if items.is_empty() => "(\n)".into(),
        Node::Seq(items) => format!(
            "({})",
            items.iter().map(print).collect::<Vec<_>>().join(" ")
        ),
        Node::Alt(alts) => format!(
            "( # alternatives\n {} )",
            alts.iter().map(print).collect::<Vec<_>>().join(" |\n ")
        ),
        Node::Rep(b, lo, hi) => {
            let op = match (lo, hi) {
                (0, None) => "*".to_string(),
                (1, None) => "+".to_string(),
                (0, Some(1)) => "?".to_string(),
                (l, None) => format!("{{{l},}}"),
                (l, Some(h)) if l == h => format!("{{{l}}}"),
                (l, Some(h)) => format!("{{ {l} , {h} }}"),
            };
            match **b {
                // `x{0}{1}` has nothing left to repeat (as in llama.cpp).
                Node::Rep(..) => format!("({}){op}", print(b)),
                _ => format!("{}{op}", print(b)),
            }
        }
    }
}

fn name(r: usize) -> String {
    if r == 0 {
        "root".into()
    } else {
        format!("r-{r}_x")
    }
}

fn gen_grammar(seed: u64) -> (Vec<Node>, String) {
    let mut rng = Rng(seed | 1);
    let n = 1 + rng.below(4);
    let rules: Vec<Node> = (0..n).map(|i| gen_node(&mut rng, i, n, 0)).collect();
    let text = rules
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{} ::= {}  # rule {i}\n", name(i), print(r)))
        .collect();
    (rules, text)
}

// ---------- the independent backtracking matcher ----------

#[derive(Debug, Clone)]
enum Tok {
    Char(u32),
    /// An unfinished UTF-8 sequence: the code points it may complete to.
    Partial(Vec<(u32, u32)>),
}

/// Smallest / largest valid completion of a UTF-8 prefix, by search.
fn completion(prefix: &[u8], need: usize, smallest: bool) -> Option<u32> {
    if need == 0 {
        return std::str::from_utf8(prefix)
            .ok()
            .and_then(|s| s.chars().next())
            .map(u32::from);
    }
    let order: Vec<u8> = if smallest {
        (0x80..=0xBF).collect()
    } else {
        (0x80..=0xBF).rev().collect()
    };
    for b in order {
        let mut p = prefix.to_vec();
        p.push(b);
        if let Err(e) = std::str::from_utf8(&p) {
            if e.error_len().is_some() {
                continue;
            }
        }
        if let Some(c) = completion(&p, need - 1, smallest) {
            return Some(c);
        }
    }
    None
}

/// Decode bytes for the matcher; None if they can never be valid UTF-8.
fn tokens(bytes: &[u8]) -> Option<Vec<Tok>> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Some(s.chars().map(|c| Tok::Char(c as u32)).collect()),
        Err(e) if e.error_len().is_none() => {
            let ok = e.valid_up_to();
            let head = std::str::from_utf8(&bytes[..ok]).ok()?;
            let mut out: Vec<Tok> = head.chars().map(|c| Tok::Char(c as u32)).collect();
            let tail = &bytes[ok..];
            let len = match tail[0] {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            let need = len - tail.len();
            let lo = completion(tail, need, true)?;
            let hi = completion(tail, need, false)?;
            let mut ranges = Vec::new();
            for (a, b) in [(lo, hi.min(0xD7FF)), (lo.max(0xE000), hi)] {
                if a <= b {
                    ranges.push((a, b));
                }
            }
            out.push(Tok::Partial(ranges));
            Some(out)
        }
        Err(_) => None,
    }
}

fn in_items(items: &[(char, char)], c: u32) -> bool {
    items.iter().any(|&(a, b)| a as u32 <= c && c <= b as u32)
}

/// Does the class admit the token (for a partial: some completion)?
fn class_admits(neg: bool, items: &[(char, char)], t: &Tok) -> bool {
    match t {
        Tok::Char(c) => in_items(items, *c) != neg,
        Tok::Partial(ranges) => ranges.iter().any(|&(lo, hi)| {
            let mut cands = vec![lo, hi];
            for &(a, b) in items {
                cands.extend([
                    a as u32,
                    b as u32,
                    b as u32 + 1,
                    (a as u32).saturating_sub(1),
                ]);
            }
            cands
                .into_iter()
                .any(|p| lo <= p && p <= hi && in_items(items, p) != neg)
        }),
    }
}

struct Matcher<'a> {
    rules: &'a [Node],
    input: &'a [Tok],
    /// Running out of input in the middle counts as success (prefix mode).
    prefix: bool,
}

impl Matcher<'_> {
    fn term(
        &self,
        pos: usize,
        ok: impl Fn(&Tok) -> bool,
        k: &mut dyn FnMut(usize) -> bool,
    ) -> bool {
        match self.input.get(pos) {
            None => self.prefix,
            Some(t) => ok(t) && (matches!(t, Tok::Char(_)) || self.prefix) && k(pos + 1),
        }
    }

    fn m(&self, n: &Node, pos: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
        match n {
            Node::Lit(cs) => self.seq_lit(cs, pos, k),
            Node::Class(neg, items) => self.term(pos, |t| class_admits(*neg, items, t), k),
            Node::Any => self.term(pos, |t| class_admits(true, &[], t), k),
            Node::Ref(r) => self.m(&self.rules[*r], pos, k),
            Node::Seq(items) => self.seq(items, pos, k),
            Node::Alt(alts) => alts.iter().any(|a| self.m(a, pos, k)),
            Node::Rep(b, lo, hi) => self.rep(b, *lo, *hi, 0, pos, k),
        }
    }

    fn seq_lit(&self, cs: &[char], pos: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
        match cs.split_first() {
            None => k(pos),
            Some((&c, rest)) => self.term(pos, |t| class_admits(false, &[(c, c)], t), &mut |p| {
                self.seq_lit(rest, p, k)
            }),
        }
    }

    fn seq(&self, items: &[Node], pos: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
        match items.split_first() {
            None => k(pos),
            Some((first, rest)) => self.m(first, pos, &mut |p| self.seq(rest, p, k)),
        }
    }

    fn rep(
        &self,
        b: &Node,
        lo: u32,
        hi: Option<u32>,
        count: u32,
        pos: usize,
        k: &mut dyn FnMut(usize) -> bool,
    ) -> bool {
        if count >= lo && k(pos) {
            return true;
        }
        if hi.is_some_and(|h| count >= h) {
            return false;
        }
        if hi.is_none() && pos >= self.input.len() {
            // An unbounded body consumes input; none is left.
            return self.prefix;
        }
        self.m(b, pos, &mut |p| self.rep(b, lo, hi, count + 1, p, k))
    }
}

/// (is a viable prefix, is a complete sentence) by the reference matcher.
fn reference(rules: &[Node], bytes: &[u8]) -> (bool, bool) {
    let Some(toks) = tokens(bytes) else {
        return (false, false);
    };
    let n = toks.len();
    let run = |prefix: bool| {
        let m = Matcher {
            rules,
            input: &toks,
            prefix,
        };
        m.m(&rules[0], 0, &mut |p| p == n)
    };
    let complete = !matches!(toks.last(), Some(Tok::Partial(_))) && run(false);
    (run(true), complete)
}

fn gen_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut out = Vec::new();
    while out.len() < len {
        if rng.below(10) == 0 {
            out.push(rng.next() as u8);
        } else {
            let mut buf = [0u8; 4];
            out.extend_from_slice(rng.ch().encode_utf8(&mut buf).as_bytes());
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn recogniser_agrees_with_backtracking_on_every_prefix(gseed in any::<u64>(), iseed in any::<u64>(), len in 0usize..14) {
        let (rules, text) = gen_grammar(gseed);
        let g = Arc::new(Grammar::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?);
        // Also walk a sentence-shaped input: bytes the grammar likes first.
        let bytes = gen_bytes(iseed, len);
        // A generated grammar may need more expansions than the limits
        // allow before its first character: a typed error, not a bug.
        let r = Recognizer::new(g.clone());
        prop_assume!(!matches!(r, Err(GrammarError::AdvanceTooLong { .. } | GrammarError::TooManyStacks { .. } | GrammarError::StackTooDeep { .. })));
        let mut r = r.expect("recogniser");
        let (_, empty_ok) = reference(&rules, &[]);
        prop_assert_eq!(r.can_end(), empty_ok, "empty input\n{}", text);
        for i in 0..bytes.len() {
            let (viable, complete) = reference(&rules, &bytes[..=i]);
            let accepted = r.accept_bytes(&bytes[i..=i]).is_ok();
            prop_assert_eq!(accepted, viable, "prefix {:?}\n{}", &bytes[..=i], text);
            if !accepted {
                break;
            }
            prop_assert_eq!(r.can_end(), complete, "end after {:?}\n{}", &bytes[..=i], text);
            // The serialised state restores to the same behaviour.
            let back = Recognizer::from_arrays(g.clone(), &r.to_arrays()).expect("round trip");
            prop_assert_eq!(back.state(), r.state());
        }
    }

    #[test]
    fn masks_allow_exactly_the_tokens_that_keep_a_valid_prefix(gseed in any::<u64>(), vseed in any::<u64>(), wseed in any::<u64>()) {
        let (_, text) = gen_grammar(gseed);
        let g = Arc::new(Grammar::parse(&text).expect("compiles"));
        // Vocabulary: whole chars, char pairs, and split UTF-8 pieces.
        let mut rng = Rng(vseed | 1);
        let mut vocab: Vec<Vec<u8>> = vec![b"<eos>".to_vec()];
        for _ in 0..60 {
            let mut t = gen_bytes(rng.next(), 1 + rng.below(3));
            if rng.below(3) == 0 && t.len() > 1 {
                let cut = 1 + rng.below(t.len() - 1);
                t = if rng.below(2) == 0 { t[..cut].to_vec() } else { t[cut..].to_vec() };
            }
            vocab.push(t);
        }
        let mut mask = TokenMask::new(g.clone(), &vocab, &[0]).expect("mask");
        // A generated grammar may need more expansions than the limits
        // allow before its first character: a typed error, not a bug.
        let r = Recognizer::new(g);
        prop_assume!(!matches!(r, Err(GrammarError::AdvanceTooLong { .. } | GrammarError::TooManyStacks { .. } | GrammarError::StackTooDeep { .. })));
        let mut r = r.expect("recogniser");
        let mut walk = Rng(wseed | 1);
        for _ in 0..8 {
            let st = r.snapshot();
            let allowed = match mask.allowed_tokens(&st) {
                Ok(a) => a,
                Err(_) => {
                    // Fail closed only when truly nothing fits.
                    for (t, bytes) in vocab.iter().enumerate().skip(1) {
                        prop_assert!(r.state_after(bytes).is_err(), "token {} was possible", t);
                    }
                    prop_assert!(!r.can_end());
                    break;
                }
            };
            for (t, bytes) in vocab.iter().enumerate() {
                let expect = if t == 0 { r.can_end() } else { !bytes.is_empty() && r.state_after(bytes).is_ok() };
                prop_assert_eq!(allowed.contains(&(t as u32)), expect, "token {} {:?}", t, bytes);
                prop_assert_eq!(mask.allowed(&st, t as u32), expect);
            }
            // Greedy under random logits picks the best allowed token.
            let logits: Vec<f32> = (0..vocab.len()).map(|_| (walk.next() % 1000) as f32).collect();
            let best = mask.greedy(&st, &logits).expect("something allowed");
            prop_assert!(allowed.contains(&best));
            prop_assert!(allowed.iter().all(|&t| logits[t as usize] <= logits[best as usize]));
            let pick = allowed[walk.below(allowed.len())];
            if pick == 0 {
                break;
            }
            r.accept_bytes(&vocab[pick as usize]).expect("an allowed token is accepted");
        }
    }
}

// ---------- JSON Schema ----------

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 8},
            "age": {"type": "integer", "minimum": -5, "maximum": 130},
            "tags": {"type": "array", "items": {"enum": ["a", "b", "c d"]}, "maxItems": 3},
            "kind": {"anyOf": [{"type": "null"}, {"type": "boolean"}, {"const": {"x": 1}}]},
            "when": {"type": "string", "format": "date"},
            "id": {"type": "string", "format": "uuid"},
            "score": {"type": "number"},
            "child": {"$ref": "#/$defs/node"}
        },
        "required": ["name", "age"],
        "additionalProperties": false,
        "$defs": {"node": {"type": "object", "properties": {
            "v": {"type": "integer"},
            "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}
        }, "required": ["v"]}}
    })
}

/// Integers the generated grammars produce: at most `MAX_INT_DIGITS`
/// digits (longer ones are valid JSON the grammar never emits).
fn capped_int() -> impl Strategy<Value = i64> {
    let most = 10i64.pow(MAX_INT_DIGITS) - 1;
    prop_oneof![-most..=most, -1000i64..1000]
}

/// Does serde_json's text of `f` keep within the digit caps (integral part,
/// fraction and exponent each at most 16 digits)?
fn number_within_caps(f: f64) -> bool {
    let text = serde_json::to_string(&f).expect("finite");
    let body = text.trim_start_matches('-');
    let (mantissa, exp) = body.split_once(['e', 'E']).unwrap_or((body, "0"));
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, "0"));
    int.len() <= 16 && frac.len() <= 16 && exp.trim_start_matches(['-', '+']).len() <= 16
}

fn node_strategy() -> impl Strategy<Value = Value> {
    let leaf = (capped_int(), any::<bool>()).prop_map(|(v, n)| {
        if n {
            json!({"v": v, "next": null})
        } else {
            json!({"v": v})
        }
    });
    leaf.prop_recursive(3, 8, 1, |inner| {
        (capped_int(), inner).prop_map(|(v, next)| json!({"v": v, "next": next}))
    })
}

fn instance_strategy() -> impl Strategy<Value = Value> {
    (
        "[^\u{0}-\u{1f}]{1,8}",
        -5i64..=130,
        proptest::option::of(proptest::collection::vec(
            prop_oneof![Just("a"), Just("b"), Just("c d")],
            0..=3,
        )),
        proptest::option::of(prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            Just(json!({"x": 1}))
        ]),
        proptest::option::of((1000u32..9999, 1u32..=12, 1u32..=28)),
        proptest::option::of(any::<u128>()),
        proptest::option::of(any::<f64>().prop_filter("finite, within the caps", |f| {
            f.is_finite() && number_within_caps(*f)
        })),
        proptest::option::of(node_strategy()),
    )
        .prop_map(|(name, age, tags, kind, when, id, score, child)| {
            let s = schema();
            let mut obj = serde_json::Map::new();
            // Insert in the schema's property order.
            for key in s["properties"].as_object().expect("props").keys() {
                let v = match key.as_str() {
                    "name" => Some(json!(name)),
                    "age" => Some(json!(age)),
                    "tags" => tags.clone().map(|t| json!(t)),
                    "kind" => kind.clone(),
                    "when" => when.map(|(y, m, d)| json!(format!("{y:04}-{m:02}-{d:02}"))),
                    "id" => id.map(|u| {
                        let h = format!("{u:032x}");
                        json!(format!(
                            "{}-{}-{}-{}-{}",
                            &h[..8],
                            &h[8..12],
                            &h[12..16],
                            &h[16..20],
                            &h[20..]
                        ))
                    }),
                    "score" => score.map(|f| json!(f)),
                    "child" => child.clone(),
                    _ => None,
                };
                if let Some(v) = v {
                    obj.insert(key.clone(), v);
                }
            }
            Value::Object(obj)
        })
}

fn full_match(g: &Arc<Grammar>, text: &str) -> bool {
    let mut r = Recognizer::new(g.clone()).expect("recogniser");
    r.accept_bytes(text.as_bytes()).is_ok() && r.can_end()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn schema_grammar_accepts_valid_and_rejects_invalid(inst in instance_strategy(), which in 0usize..8, bad_age in prop_oneof![i64::MIN..-5, 131i64..=i64::MAX]) {
        let g = Arc::new(Grammar::from_json_schema(&schema()).expect("compiles"));
        let text = serde_json::to_string(&inst).expect("serialises");
        prop_assert!(full_match(&g, &text), "valid instance rejected: {}", text);
        let pretty = serde_json::to_string_pretty(&inst).expect("serialises");
        if !inst["kind"].is_object() && pretty.lines().all(|l| l.len() - l.trim_start().len() <= 20) {
            prop_assert!(full_match(&g, &pretty), "pretty instance rejected: {}", pretty);
        }
        let mut bad = inst.clone();
        let o = bad.as_object_mut().expect("object");
        match which {
            0 => { o.insert("age".into(), json!(bad_age)); }
            1 => { o.remove("name"); }
            2 => { o.insert("name".into(), json!("")); }
            3 => { o.insert("tags".into(), json!(["a", "a", "b", "c d"])); }
            4 => { o.insert("zzz".into(), json!(1)); }
            5 => { o.insert("when".into(), json!("2024-00-10")); }
            6 => { o.insert("id".into(), json!("not-a-uuid")); }
            _ => { o.insert("age".into(), json!(1.5)); }
        }
        // Keep schema order for keys that exist in the schema.
        let bad_text = serde_json::to_string(&bad).expect("serialises");
        prop_assert!(!full_match(&g, &bad_text), "invalid instance accepted: {}", bad_text);
    }

    #[test]
    fn integer_ranges_are_exact(lo in proptest::option::of(-100_000i64..100_000), span in proptest::option::of(0i64..200_000), x in prop_oneof![-300_000i64..300_000, any::<i64>()]) {
        let hi = span.map(|s| lo.unwrap_or(0) + s);
        let mut s = json!({"type": "integer"});
        if let Some(l) = lo { s["minimum"] = json!(l); }
        if let Some(h) = hi { s["maximum"] = json!(h); }
        let g = Arc::new(Grammar::from_json_schema(&s).expect("compiles"));
        // An open side stops at MAX_INT_DIGITS digits.
        let inside = lo.is_none_or(|l| x >= l)
            && hi.is_none_or(|h| x <= h)
            && x.unsigned_abs() < 10u64.pow(MAX_INT_DIGITS);
        prop_assert_eq!(full_match(&g, &x.to_string()), inside, "{} in {:?}..={:?}", x, lo, hi);
    }
}
