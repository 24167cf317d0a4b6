//! Which top-level fields a request takes, and what happens to the others.
//!
//! A request type's fields are the names its derived `Deserialize` passes
//! to `deserialize_struct` (read once by [`struct_fields`]) plus those of
//! the parts read from the same object ([`FromJson::known_fields`]).
//!
//! - Our own APIs (the state routes, the Connect routes) refuse any field
//!   they do not take ([`FromJson::STRICT`]).
//! - The OpenAI and llama-server routes ignore fields they do not know, as
//!   llama-server does, so clients that send newer or unsupported OpenAI
//!   fields (`user`, `store`, `metadata`, ...) keep working; but a field
//!   that is a misspelling of one they take (one edit away, or its
//!   lowerCamelCase) is refused, since ignoring `max_token` would silently
//!   drop the length limit.

use super::body::FromJson;
use crate::server::error::{ApiError, ApiResult};
use serde::de::{DeserializeOwned, Visitor};
use serde_json::Value;

/// Reads the field list a derived struct hands to the deserializer, then
/// stops it.
struct Grab<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> serde::Deserializer<'de> for Grab<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(serde::de::Error::custom("fields read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// The fields of a derived struct `T`; `None` for any other type (a
/// `Value` takes every field).
pub fn struct_fields<T: DeserializeOwned>() -> Option<Vec<&'static str>> {
    let mut out = None;
    let _ = T::deserialize(Grab(&mut out));
    out.map(<[_]>::to_vec)
}

/// `T`'s own fields and those of the part `P` read from the same object.
pub fn with_part<T: DeserializeOwned, P: FromJson>() -> Option<Vec<&'static str>> {
    let mut own = struct_fields::<T>()?;
    own.extend(P::known_fields()?);
    Some(own)
}

/// Whether the edit distance of `a` and `b` is at most `max`.
fn within(a: &str, b: &str, max: usize) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > max {
        return false;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()] <= max
}

/// `key` in snake_case (`maxTokens` → `max_tokens`).
pub fn snake(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The field `key` most likely meant, if any.
fn meant<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let s = snake(key);
    known
        .iter()
        .find(|k| **k == s || (key.len() >= 4 && within(key, k, 1)))
        .copied()
}

/// Checks the top-level fields of the object `whole` against `T`'s (see
/// the module): an error naming the first refused field.
pub fn check<T: FromJson>(whole: &Value, strict: bool) -> ApiResult<()> {
    let (Some(known), Value::Object(obj)) = (T::known_fields(), whole) else {
        return Ok(());
    };
    for key in obj.keys() {
        if known.contains(&key.as_str()) {
            continue;
        }
        let shown: String = key.chars().take(64).collect();
        let hint = meant(key, &known);
        if let Some(k) = hint {
            return Err(ApiError::bad(
                shown.clone(),
                format!("unknown field `{shown}`; did you mean `{k}`?"),
            ));
        }
        if strict {
            let mut all = known.clone();
            all.sort_unstable();
            return Err(ApiError::bad(
                shown.clone(),
                format!("unknown field `{shown}`; the fields are {}", all.join(", ")),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)] // read only through serde's field list
    struct Part {
        #[serde(default)]
        max_tokens: Option<u64>,
    }
    impl FromJson for Part {}

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)] // read only through serde's field list
    struct Req {
        prompt: String,
        #[serde(skip)]
        part: Option<Part>,
        #[serde(rename = "type", default)]
        kind: Option<String>,
    }
    impl FromJson for Req {
        fn known_fields() -> Option<Vec<&'static str>> {
            with_part::<Self, Part>()
        }
    }

    #[test]
    fn fields_include_the_parts_and_not_skipped_ones() {
        let _ = (Req {
            prompt: String::new(),
            part: None,
            kind: None,
        })
        .part
        .is_none();
        assert_eq!(
            Req::known_fields(),
            Some(vec!["prompt", "type", "max_tokens"])
        );
        assert_eq!(<Value as FromJson>::known_fields(), None);
    }

    #[test]
    fn misspellings_are_refused_and_unknown_fields_only_when_strict() {
        let ok = serde_json::json!({"prompt": "x", "max_tokens": 1, "user": "u", "store": true});
        assert!(check::<Req>(&ok, false).is_ok());
        let e = check::<Req>(&ok, true).unwrap_err();
        assert!(e.message.contains("unknown field `user`"), "{}", e.message);
        for bad in ["max_token", "maxTokens", "max-tokens", "promt"] {
            let v = serde_json::json!({"prompt": "x", bad: 1});
            let e = check::<Req>(&v, false).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(bad));
            assert!(e.message.contains("did you mean"), "{}", e.message);
        }
        assert!(within("stop", "store", 2) && !within("stop", "store", 1));
    }
}
