//! A strict codec for RFC 8949 core deterministic CBOR, the manifest encoding.
//!
//! The decoder accepts only what the encoder can produce: definite lengths,
//! shortest heads, map keys in bytewise order of their encodings with no
//! duplicates, shortest-form floats with the single NaN `f9 7e00`, no tags,
//! only the simple values false/true/null, and at most [`MAX_DEPTH`] levels
//! of nesting below the root. Every count is bounded by the bytes left, so
//! a hostile header cannot make it allocate more than the input's size.

use crate::error::{Error, Result, Rule};
use half::f16;
use std::cmp::Ordering;

/// Deepest nesting allowed; the root value is at depth 0.
pub const MAX_DEPTH: u32 = 32;

/// A decoded CBOR value. Maps keep their (deterministic) encoded order.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Uint(u64),
    /// A negative integer `-1 - n`, stored as `n` so all of CBOR's range fits.
    Nint(u64),
    Bytes(Vec<u8>),
    Text(String),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Bool(bool),
    Null,
    Float(f64),
}

impl Value {
    /// Builds a map, sorting the entries into deterministic order.
    /// Fails on duplicate keys.
    pub fn map(entries: Vec<(Value, Value)>) -> Result<Value> {
        let mut keyed: Vec<(Vec<u8>, (Value, Value))> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            keyed.push((encode(&k)?, (k, v)));
        }
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        for w in keyed.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(Error::usage(format!("duplicate map key {:?}", w[0].1 .0)));
            }
        }
        Ok(Value::Map(keyed.into_iter().map(|(_, e)| e).collect()))
    }

    /// Builds a map from text keys.
    pub fn text_map<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Result<Value> {
        Value::map(
            entries
                .into_iter()
                .map(|(k, v)| (Value::Text(k.to_string()), v))
                .collect(),
        )
    }

    pub fn text(s: impl Into<String>) -> Value {
        Value::Text(s.into())
    }

    /// Integer value as i128 if this is an integer.
    pub fn as_int(&self) -> Option<i128> {
        match self {
            Value::Uint(u) => Some(*u as i128),
            Value::Nint(n) => Some(-1 - *n as i128),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Uint(u) => Some(*u),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// Looks up a text key in a map.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// A short name of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Uint(_) | Value::Nint(_) => "integer",
            Value::Bytes(_) => "byte string",
            Value::Text(_) => "text",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
            Value::Bool(_) => "bool",
            Value::Null => "null",
            Value::Float(_) => "float",
        }
    }

    /// Nesting depth of this value (a scalar has depth 0).
    pub fn depth(&self) -> u32 {
        match self {
            Value::Array(items) => 1 + items.iter().map(Value::depth).max().unwrap_or(0),
            Value::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.depth().max(v.depth()))
                    .max()
                    .unwrap_or(0)
            }
            _ => 0,
        }
    }
}

// ----------------------------------------------------------------------------
// Encoding
// ----------------------------------------------------------------------------

/// Encodes a value deterministically. Map entries are re-sorted, so a map
/// built by hand in any order still encodes canonically; duplicate keys and
/// nesting deeper than [`MAX_DEPTH`] are refused.
pub fn encode(value: &Value) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_into(value, &mut out, 0)?;
    Ok(out)
}

fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if n <= u8::MAX as u64 {
        out.extend_from_slice(&[m | 24, n as u8]);
    } else if n <= u16::MAX as u64 {
        out.push(m | 25);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= u32::MAX as u64 {
        out.push(m | 26);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn encode_into(value: &Value, out: &mut Vec<u8>, depth: u32) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::usage(format!(
            "CBOR value nests deeper than {MAX_DEPTH} levels"
        )));
    }
    match value {
        Value::Uint(n) => head(out, 0, *n),
        Value::Nint(n) => head(out, 1, *n),
        Value::Bytes(b) => {
            head(out, 2, b.len() as u64);
            out.extend_from_slice(b);
        }
        Value::Text(s) => {
            head(out, 3, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Array(items) => {
            head(out, 4, items.len() as u64);
            for item in items {
                encode_into(item, out, depth + 1)?;
            }
        }
        Value::Map(entries) => {
            let mut encoded: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                let mut kb = Vec::new();
                encode_into(k, &mut kb, depth + 1)?;
                let mut vb = Vec::new();
                encode_into(v, &mut vb, depth + 1)?;
                encoded.push((kb, vb));
            }
            encoded.sort_by(|a, b| a.0.cmp(&b.0));
            if encoded.windows(2).any(|w| w[0].0 == w[1].0) {
                return Err(Error::usage("duplicate key in CBOR map"));
            }
            head(out, 5, encoded.len() as u64);
            for (k, v) in encoded {
                out.extend_from_slice(&k);
                out.extend_from_slice(&v);
            }
        }
        Value::Bool(false) => out.push(0xf4),
        Value::Bool(true) => out.push(0xf5),
        Value::Null => out.push(0xf6),
        Value::Float(x) => encode_float(*x, out),
    }
    Ok(())
}

/// Shortest float encoding that keeps the value exactly; NaN is `f9 7e00`.
fn encode_float(x: f64, out: &mut Vec<u8>) {
    if x.is_nan() {
        out.extend_from_slice(&[0xf9, 0x7e, 0x00]);
        return;
    }
    let h = f16::from_f64(x);
    if h.to_f64().to_bits() == x.to_bits() {
        out.push(0xf9);
        out.extend_from_slice(&h.to_bits().to_be_bytes());
        return;
    }
    let s = x as f32;
    if (s as f64).to_bits() == x.to_bits() {
        out.push(0xfa);
        out.extend_from_slice(&s.to_bits().to_be_bytes());
        return;
    }
    out.push(0xfb);
    out.extend_from_slice(&x.to_bits().to_be_bytes());
}

// ----------------------------------------------------------------------------
// Decoding
// ----------------------------------------------------------------------------

/// Decodes exactly one deterministic CBOR item filling all of `bytes`.
/// Error offsets are relative to the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Value> {
    decode_at(bytes, 0)
}

/// Like [`decode`], but error offsets are reported as `base + position`.
pub fn decode_at(bytes: &[u8], base: u64) -> Result<Value> {
    let mut d = Decoder {
        buf: bytes,
        pos: 0,
        base,
    };
    let v = d.value(0)?;
    if d.pos != bytes.len() {
        return Err(d.err(
            Rule::CborTrailingBytes,
            format!(
                "{} bytes after the manifest's CBOR item",
                bytes.len() - d.pos
            ),
        ));
    }
    Ok(v)
}

pub(crate) struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    base: u64,
}

/// A map key: text keys are borrowed, others decoded.
pub(crate) enum Key<'a> {
    Text(&'a str),
    Other(Value),
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(buf: &'a [u8], base: u64) -> Decoder<'a> {
        Decoder { buf, pos: 0, base }
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(&self) -> Result<()> {
        if self.pos != self.buf.len() {
            return Err(self.err(
                Rule::CborTrailingBytes,
                format!(
                    "{} bytes after the manifest's CBOR item",
                    self.buf.len() - self.pos
                ),
            ));
        }
        Ok(())
    }

    fn kind_at(&self) -> &'static str {
        match self.buf.get(self.pos).map(|b| b >> 5) {
            Some(0 | 1) => "integer",
            Some(2) => "byte string",
            Some(3) => "text",
            Some(4) => "array",
            Some(5) => "map",
            Some(6) => "tag",
            Some(_) => "simple value or float",
            None => "nothing",
        }
    }

    fn expect(&mut self, major: u8, what: &str, ctx: &dyn std::fmt::Display) -> Result<u8> {
        match self.buf.get(self.pos) {
            Some(b) if b >> 5 == major => {
                self.pos += 1;
                Ok(b & 0x1f)
            }
            Some(_) => {
                // Report malformed CBOR (a tag, an indefinite length, ...)
                // as such before calling it the wrong type.
                let kind = self.kind_at();
                self.value(0)?;
                Err(Error::corrupt(
                    Rule::SchemaType,
                    format!("{ctx} must be {what}, found {kind}"),
                ))
            }
            None => Err(self.err(Rule::CborSyntax, "unexpected end of the manifest")),
        }
    }

    /// Reads a map head (entry count), or a schema error naming `ctx`.
    pub(crate) fn map_head(&mut self, depth: u32, ctx: &dyn std::fmt::Display) -> Result<usize> {
        if depth > MAX_DEPTH {
            return Err(self.err(
                Rule::CborDepth,
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        let info = self.expect(5, "a map", ctx)?;
        self.length(info, 2)
    }

    pub(crate) fn array_head(&mut self, depth: u32, ctx: &dyn std::fmt::Display) -> Result<usize> {
        if depth > MAX_DEPTH {
            return Err(self.err(
                Rule::CborDepth,
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        let info = self.expect(4, "an array", ctx)?;
        self.length(info, 1)
    }

    pub(crate) fn text_item(&mut self, ctx: &dyn std::fmt::Display) -> Result<&'a str> {
        let info = self.expect(3, "text", ctx)?;
        let n = self.length(info, 1)?;
        let at = self.pos;
        let raw = self.take(n)?;
        std::str::from_utf8(raw).map_err(|_| {
            Error::corrupt_at(
                Rule::CborSyntax,
                self.base.saturating_add(at as u64),
                "text string is not valid UTF-8",
            )
        })
    }

    pub(crate) fn uint_item(&mut self, ctx: &dyn std::fmt::Display) -> Result<u64> {
        let info = self.expect(0, "an unsigned integer", ctx)?;
        self.argument(info)
    }

    /// Reads a map key at `depth`, checking it sorts after `prev`.
    pub(crate) fn map_key(&mut self, prev: &mut Option<&'a [u8]>, depth: u32) -> Result<Key<'a>> {
        let start = self.pos;
        let is_text = self.buf.get(start).is_some_and(|b| b >> 5 == 3);
        let key = if is_text {
            Key::Text(self.text_item(&"a map key")?)
        } else {
            Key::Other(self.value(depth)?)
        };
        let bytes = &self.buf[start..self.pos];
        if let Some(p) = *prev {
            match p.cmp(bytes) {
                Ordering::Less => {}
                Ordering::Equal => {
                    return Err(Error::corrupt_at(
                        Rule::CborDuplicateKey,
                        self.base.saturating_add(start as u64),
                        format!("duplicate map key {}", key_name(&key)),
                    ))
                }
                Ordering::Greater => {
                    return Err(Error::corrupt_at(
                        Rule::CborUnsortedKeys,
                        self.base.saturating_add(start as u64),
                        format!("map key {} is out of deterministic order", key_name(&key)),
                    ))
                }
            }
        }
        *prev = Some(bytes);
        Ok(key)
    }

    fn err(&self, rule: Rule, detail: impl Into<String>) -> Error {
        Error::corrupt_at(
            rule,
            self.base.saturating_add(self.pos as u64),
            detail.into(),
        )
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(
                Rule::CborSyntax,
                format!("item needs {n} bytes, {} remain", self.remaining()),
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    /// Reads the argument of a head whose additional info is `info`,
    /// refusing non-shortest forms and indefinite lengths.
    fn argument(&mut self, info: u8) -> Result<u64> {
        let (n, min) = match info {
            0..=23 => return Ok(info as u64),
            24 => (self.byte()? as u64, 24),
            25 => {
                let b = self.take(2)?;
                (u16::from_be_bytes([b[0], b[1]]) as u64, 0x100)
            }
            26 => {
                let b = self.take(4)?;
                (
                    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64,
                    0x1_0000,
                )
            }
            27 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                (u64::from_be_bytes(a), 0x1_0000_0000)
            }
            31 => {
                return Err(self.err(Rule::CborIndefinite, "indefinite-length item"));
            }
            _ => {
                return Err(self.err(
                    Rule::CborSyntax,
                    format!("reserved additional information {info}"),
                ))
            }
        };
        if n < min {
            return Err(self.err(
                Rule::CborNonShortest,
                format!("argument {n} is not encoded in its shortest form"),
            ));
        }
        Ok(n)
    }

    /// A length argument, bounded by what is left of the input.
    fn length(&mut self, info: u8, min_item: usize) -> Result<usize> {
        let n = self.argument(info)?;
        let bound = (self.remaining() / min_item) as u64;
        if n > bound {
            return Err(self.err(
                Rule::CborSyntax,
                format!(
                    "declared length {n} exceeds the {} bytes left",
                    self.remaining()
                ),
            ));
        }
        Ok(n as usize)
    }

    pub(crate) fn value(&mut self, depth: u32) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(self.err(
                Rule::CborDepth,
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        let initial = self.byte()?;
        let major = initial >> 5;
        let info = initial & 0x1f;
        match major {
            0 => Ok(Value::Uint(self.argument(info)?)),
            1 => Ok(Value::Nint(self.argument(info)?)),
            2 => {
                let n = self.length(info, 1)?;
                Ok(Value::Bytes(self.take(n)?.to_vec()))
            }
            3 => {
                let n = self.length(info, 1)?;
                let at = self.pos;
                let raw = self.take(n)?;
                match std::str::from_utf8(raw) {
                    Ok(s) => Ok(Value::Text(s.to_string())),
                    Err(_) => Err(Error::corrupt_at(
                        Rule::CborSyntax,
                        self.base.saturating_add(at as u64),
                        "text string is not valid UTF-8",
                    )),
                }
            }
            4 => {
                let n = self.length(info, 1)?;
                let mut items = Vec::new();
                items
                    .try_reserve_exact(n)
                    .map_err(|_| self.err(Rule::CborSyntax, "array too large to allocate"))?;
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Ok(Value::Array(items))
            }
            5 => {
                let n = self.length(info, 2)?;
                let mut entries = Vec::new();
                entries
                    .try_reserve_exact(n)
                    .map_err(|_| self.err(Rule::CborSyntax, "map too large to allocate"))?;
                let mut prev_key: Option<&'a [u8]> = None;
                for _ in 0..n {
                    let key = match self.map_key(&mut prev_key, depth + 1)? {
                        Key::Text(t) => Value::Text(t.to_string()),
                        Key::Other(v) => v,
                    };
                    let val = self.value(depth + 1)?;
                    entries.push((key, val));
                }
                Ok(Value::Map(entries))
            }
            6 => Err(self.err(Rule::CborTag, "CBOR tags are not allowed")),
            _ => self.simple(info),
        }
    }

    fn simple(&mut self, info: u8) -> Result<Value> {
        match info {
            20 => Ok(Value::Bool(false)),
            21 => Ok(Value::Bool(true)),
            22 => Ok(Value::Null),
            25 => {
                let b = self.take(2)?;
                let bits = u16::from_be_bytes([b[0], b[1]]);
                let x = f16::from_bits(bits);
                if x.is_nan() && bits != 0x7e00 {
                    return Err(self.err(Rule::CborFloat, "NaN must be encoded as f9 7e00"));
                }
                Ok(Value::Float(x.to_f64()))
            }
            26 => {
                let b = self.take(4)?;
                let x = f32::from_bits(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                let h = f16::from_f32(x);
                if x.is_nan() || h.to_f32().to_bits() == x.to_bits() {
                    return Err(self.err(
                        Rule::CborFloat,
                        "single-precision float that has a shorter exact form",
                    ));
                }
                Ok(Value::Float(x as f64))
            }
            27 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                let x = f64::from_bits(u64::from_be_bytes(a));
                if x.is_nan() || ((x as f32) as f64).to_bits() == x.to_bits() {
                    return Err(self.err(
                        Rule::CborFloat,
                        "double-precision float that has a shorter exact form",
                    ));
                }
                Ok(Value::Float(x))
            }
            24 => {
                let v = self.byte()?;
                Err(self.err(Rule::CborSyntax, format!("simple value {v} is not allowed")))
            }
            31 => Err(self.err(Rule::CborIndefinite, "break outside an indefinite item")),
            _ => Err(self.err(
                Rule::CborSyntax,
                format!("simple value {info} is not allowed"),
            )),
        }
    }
}

fn key_name(key: &Key<'_>) -> String {
    match key {
        Key::Text(s) => format!("{s:?}"),
        Key::Other(v) => describe_key(v),
    }
}

fn describe_key(key: &Value) -> String {
    match key {
        Value::Text(s) => format!("{s:?}"),
        other => format!("<{}>", other.kind()),
    }
}

/// JSON-like rendering (CBOR diagnostic notation for byte strings).
impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Uint(n) => write!(f, "{n}"),
            Value::Nint(n) => write!(f, "{}", -1 - *n as i128),
            Value::Bytes(b) => {
                f.write_str("h'")?;
                for x in b.iter().take(64) {
                    write!(f, "{x:02x}")?;
                }
                if b.len() > 64 {
                    write!(f, "…({} bytes)", b.len())?;
                }
                f.write_str("'")
            }
            Value::Text(s) => write!(f, "{s:?}"),
            Value::Array(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Value::Map(entries) => {
                f.write_str("{")?;
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
            Value::Bool(b) => write!(f, "{b}"),
            Value::Null => f.write_str("null"),
            Value::Float(x) if x.is_nan() => f.write_str("NaN"),
            Value::Float(x) if x.is_infinite() => {
                f.write_str(if *x > 0.0 { "Infinity" } else { "-Infinity" })
            }
            Value::Float(x) => write!(f, "{x:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_of(bytes: &[u8]) -> Rule {
        decode(bytes).unwrap_err().rule().unwrap()
    }

    #[test]
    fn integers_round_trip_in_shortest_form() {
        for n in [
            0u64,
            23,
            24,
            255,
            256,
            65535,
            65536,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let enc = encode(&Value::Uint(n)).unwrap();
            assert_eq!(decode(&enc).unwrap(), Value::Uint(n));
            let enc = encode(&Value::Nint(n)).unwrap();
            assert_eq!(decode(&enc).unwrap(), Value::Nint(n));
        }
        assert_eq!(encode(&Value::Uint(24)).unwrap(), vec![0x18, 24]);
        assert_eq!(encode(&Value::Uint(65536)).unwrap(), vec![0x1a, 0, 1, 0, 0]);
    }

    #[test]
    fn non_shortest_heads_are_rejected() {
        assert_eq!(rule_of(&[0x18, 5]), Rule::CborNonShortest);
        assert_eq!(rule_of(&[0x19, 0, 200]), Rule::CborNonShortest);
        assert_eq!(rule_of(&[0x1a, 0, 0, 255, 255]), Rule::CborNonShortest);
        assert_eq!(
            rule_of(&[0x1b, 0, 0, 0, 0, 255, 255, 255, 255]),
            Rule::CborNonShortest
        );
        assert_eq!(rule_of(&[0x78, 1, b'a']), Rule::CborNonShortest);
    }

    #[test]
    fn structural_violations_have_their_own_rules() {
        assert_eq!(rule_of(&[0x9f, 0xff]), Rule::CborIndefinite);
        assert_eq!(rule_of(&[0x5f, 0xff]), Rule::CborIndefinite);
        assert_eq!(rule_of(&[0xc1, 0x00]), Rule::CborTag);
        assert_eq!(rule_of(&[0x00, 0x00]), Rule::CborTrailingBytes);
        assert_eq!(rule_of(&[0x1c]), Rule::CborSyntax);
        assert_eq!(rule_of(&[0xf7]), Rule::CborSyntax); // undefined
        assert_eq!(rule_of(&[0xf8, 0x20]), Rule::CborSyntax);
        assert_eq!(rule_of(&[0x62, 0xff, 0xfe]), Rule::CborSyntax); // bad UTF-8
        assert_eq!(rule_of(&[]), Rule::CborSyntax);
    }

    #[test]
    fn map_keys_must_be_sorted_and_unique() {
        // {"b": 1, "a": 2}
        assert_eq!(
            rule_of(&[0xa2, 0x61, b'b', 1, 0x61, b'a', 2]),
            Rule::CborUnsortedKeys
        );
        // {"a": 1, "a": 2}
        assert_eq!(
            rule_of(&[0xa2, 0x61, b'a', 1, 0x61, b'a', 2]),
            Rule::CborDuplicateKey
        );
        // shorter keys first: {"z": 0, "aa": 0} is canonical
        assert!(decode(&[0xa2, 0x61, b'z', 0, 0x62, b'a', b'a', 0]).is_ok());
        assert_eq!(
            rule_of(&[0xa2, 0x62, b'a', b'a', 0, 0x61, b'z', 0]),
            Rule::CborUnsortedKeys
        );
    }

    #[test]
    fn encoder_sorts_maps_by_encoded_key() {
        let m = Value::Map(vec![
            (Value::text("layout"), Value::Uint(1)),
            (Value::text("parts"), Value::Uint(2)),
            (Value::text("shape"), Value::Uint(3)),
        ]);
        let enc = encode(&m).unwrap();
        let back = decode(&enc).unwrap();
        let keys: Vec<_> = match back {
            Value::Map(e) => e.into_iter().map(|(k, _)| k).collect(),
            _ => unreachable!(),
        };
        assert_eq!(
            keys,
            vec![
                Value::text("parts"),
                Value::text("shape"),
                Value::text("layout")
            ]
        );
        let dup = Value::Map(vec![
            (Value::text("a"), Value::Null),
            (Value::text("a"), Value::Null),
        ]);
        assert!(encode(&dup).is_err());
    }

    #[test]
    fn floats_use_the_shortest_exact_form() {
        assert_eq!(encode(&Value::Float(1.5)).unwrap(), vec![0xf9, 0x3e, 0x00]);
        assert_eq!(
            encode(&Value::Float(f64::NAN)).unwrap(),
            vec![0xf9, 0x7e, 0x00]
        );
        assert_eq!(
            encode(&Value::Float(f64::INFINITY)).unwrap(),
            vec![0xf9, 0x7c, 0x00]
        );
        assert_eq!(encode(&Value::Float(0.1f32 as f64)).unwrap()[0], 0xfa);
        assert_eq!(encode(&Value::Float(0.1)).unwrap()[0], 0xfb);
        for x in [
            0.0,
            -0.0,
            1.5,
            0.1,
            1e300,
            -2.5e-8,
            f64::NEG_INFINITY,
            65504.0,
        ] {
            let back = decode(&encode(&Value::Float(x)).unwrap()).unwrap();
            assert_eq!(back, Value::Float(x));
        }
        assert_eq!(rule_of(&[0xf9, 0x7e, 0x01]), Rule::CborFloat);
        assert_eq!(rule_of(&[0xf9, 0xfe, 0x00]), Rule::CborFloat);
        assert_eq!(rule_of(&[0xfa, 0x3f, 0xc0, 0, 0]), Rule::CborFloat); // 1.5 as f32
        assert_eq!(rule_of(&[0xfa, 0x7f, 0xc0, 0, 0]), Rule::CborFloat); // NaN as f32
        assert_eq!(
            rule_of(&[0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]),
            Rule::CborFloat
        );
    }

    #[test]
    fn depth_is_bounded_exactly() {
        let nest = |depth: usize| {
            let mut v = vec![0x81u8; depth];
            v.push(0x00);
            v
        };
        assert!(decode(&nest(MAX_DEPTH as usize)).is_ok());
        assert_eq!(rule_of(&nest(MAX_DEPTH as usize + 1)), Rule::CborDepth);
        assert_eq!(rule_of(&nest(100_000)), Rule::CborDepth);
    }

    #[test]
    fn lying_lengths_do_not_allocate() {
        // array of 2^64-1 items in 9 bytes
        let bytes = [0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(rule_of(&bytes), Rule::CborSyntax);
        let bytes = [0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(rule_of(&bytes), Rule::CborSyntax);
        let bytes = [0x5a, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(rule_of(&bytes), Rule::CborSyntax);
    }

    #[test]
    fn all_value_kinds_round_trip() {
        let v = Value::text_map([
            ("i", Value::Nint(41)),
            ("b", Value::Bytes(vec![1, 2, 3])),
            ("t", Value::text("héllo")),
            (
                "a",
                Value::Array(vec![Value::Bool(true), Value::Null, Value::Float(2.25)]),
            ),
            ("m", Value::text_map([("x", Value::Uint(1))]).unwrap()),
        ])
        .unwrap();
        let enc = encode(&v).unwrap();
        assert_eq!(decode(&enc).unwrap(), v);
        assert_eq!(encode(&decode(&enc).unwrap()).unwrap(), enc);
    }
}
