//! A strict codec for RFC 8949 core deterministic CBOR, the manifest encoding.
//!
//! The decoder accepts only what the encoder can produce: definite lengths,
//! shortest heads, map keys in bytewise order of their encodings with no
//! duplicates, shortest-form floats with the single NaN `f9 7e00`, no tags,
//! only the simple values false/true/null, and at most [`MAX_DEPTH`] levels
//! of nesting below the root. Every count is bounded by the bytes left, so
//! a hostile header cannot make it allocate more than the input's size.
//!
//! [`Value`] and its rendering live here, the encoder in `encode.rs` and
//! the strict decoder in `decode.rs`.

mod decode;
mod encode;
#[cfg(test)]
mod tests;

pub use decode::{decode, decode_at};
pub(crate) use decode::{Decoder, Key};
pub use encode::encode;

use crate::error::{Error, Result};

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
