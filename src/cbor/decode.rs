//! Strict decoding: only what the encoder can produce is accepted, and
//! every count is bounded by the bytes left.

use super::{Value, MAX_DEPTH};
use crate::error::{Error, Result, Rule};
use half::f16;
use std::cmp::Ordering;

/// Decodes exactly one deterministic CBOR item filling all of `bytes`.
/// Error offsets are relative to the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Value> {
    decode_at(bytes, 0)
}

/// Like [`decode`], but error offsets are reported as `base + position`.
pub fn decode_at(bytes: &[u8], base: u64) -> Result<Value> {
    let mut d = Decoder::new(bytes, base);
    let v = d.value(0)?;
    d.finish()?;
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
