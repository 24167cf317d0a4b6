//! Request bodies: the JSON extractor of the OpenAI and state routes
//! (also the Connect routes' message parser) and the check that refuses
//! a `Content-Encoding` these routes do not decode.
//!
//! A body is parsed in two steps, both tracking where they are with
//! `serde_path_to_error`: to a JSON value (syntax, depth, a repeated key),
//! then to the request's type. A field that breaks a rule of either step
//! is a 400 whose `param` is its path (`max_tokens`,
//! `messages[1].content`). The sampling fields every generation route
//! shares are read from the same object by [`FromJson::read_parts`]
//! rather than with `#[serde(flatten)]`, through which no path can be
//! tracked.

use crate::server::error::{ApiError, ApiResult};
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A request type read from a JSON object.
pub trait FromJson: DeserializeOwned {
    /// Whether a field the request does not take is refused (our own
    /// APIs), rather than ignored unless it looks like a misspelling (the
    /// OpenAI and llama-server routes; see `fields`).
    const STRICT: bool = false;

    /// Reads the parts of the request that share the object's top level
    /// (a struct of fields several requests take), from the whole object.
    fn read_parts(&mut self, _whole: &Value) -> ApiResult<()> {
        Ok(())
    }

    /// The top-level fields the request takes, its parts' included
    /// (`None`: any). A type with parts adds theirs with
    /// [`super::fields::with_part`].
    fn known_fields() -> Option<Vec<&'static str>> {
        super::fields::struct_fields::<Self>()
    }
}

impl FromJson for Value {}

/// Path segments kept in a `param` (a too-deep value's path is cut).
const MAX_SEGMENTS: usize = 8;
/// Bytes of one object key kept in a `param`.
const MAX_KEY: usize = 64;

/// A path as `a.b[2].c`, cut to [`MAX_SEGMENTS`] segments; empty for the
/// top level.
fn path_text(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for (i, seg) in path.iter().enumerate() {
        if i == MAX_SEGMENTS {
            out.push_str("...");
            break;
        }
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                let mut end = key.len().min(MAX_KEY);
                while !key.is_char_boundary(end) {
                    end -= 1;
                }
                out.push_str(&key[..end]);
            }
            // A key not read yet (the body broke before it).
            Segment::Unknown => {}
        }
    }
    out
}

/// A 400 naming the field at `path` (for a missing field, the field).
fn located(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let at = path_text(e.path());
    let inner = e.into_inner();
    let msg = inner.to_string();
    let missing = ["missing field `", "duplicate field `"]
        .iter()
        .find_map(|p| msg.strip_prefix(p))
        .and_then(|m| m.split('`').next())
        .map(|f| {
            if at.is_empty() {
                f.to_string()
            } else {
                format!("{at}.{f}")
            }
        });
    match missing.or((!at.is_empty()).then(|| at.clone())) {
        Some(param) if at.is_empty() => ApiError::bad(param, format!("request body: {msg}")),
        Some(param) => ApiError::bad(param, format!("request body: {at}: {msg}")),
        None => ApiError::invalid(format!("request body: {msg}")),
    }
}

/// A request of type `T` from the JSON object `whole`.
pub fn from_value<T: FromJson>(whole: &Value) -> ApiResult<T> {
    let mut t: T = serde_path_to_error::deserialize(whole).map_err(located)?;
    t.read_parts(whole)?;
    Ok(t)
}

/// A JSON value whose objects have no repeated key (a struct refuses a
/// repeated field; read through a value, the last one would win).
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                let shown: String = key.chars().take(MAX_KEY).collect();
                return Err(serde::de::Error::custom(format!(
                    "duplicate field `{shown}`"
                )));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// A request of type `T` from JSON text.
pub fn parse<T: FromJson>(bytes: &[u8]) -> ApiResult<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let Strict(whole) = serde_path_to_error::deserialize(&mut de).map_err(located)?;
    de.end()
        .map_err(|e| ApiError::invalid(format!("request body: {e}")))?;
    super::fields::check::<T>(&whole, T::STRICT)?;
    from_value(&whole)
}

/// A JSON request body; too large: 413, unreadable or not matching the
/// request's fields: 400 naming what is wrong.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: FromJson> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request_error",
                    "the request body is larger than the server accepts",
                )
            } else {
                ApiError::invalid(format!("reading the request body: {}", e.body_text()))
            }
        })?;
        parse(&bytes).map(JsonBody)
    }
}

/// Middleware for the OpenAI and state routes: a body with a
/// `Content-Encoding` other than `identity` is refused with 415 and
/// `Accept-Encoding: identity` (RFC 9110 §15.5.16, RFC 7694) rather than
/// read as if it were plain. (The Connect routes decode zstd and answer
/// any other encoding with Connect's `unimplemented`, HTTP 501.)
pub async fn plain_bodies_only(req: Request, next: Next) -> Response {
    if req.uri().path().starts_with(super::connect::PREFIX) {
        return next.run(req).await;
    }
    let mut refused = None;
    for v in req.headers().get_all(header::CONTENT_ENCODING) {
        let name = v.to_str().unwrap_or("?").trim();
        if !name.eq_ignore_ascii_case("identity") && !name.is_empty() {
            refused = Some(name.to_string());
        }
    }
    match refused {
        None => next.run(req).await,
        Some(name) => {
            let shown: String = name.chars().take(64).collect();
            let mut r = ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request_error",
                format!(
                    "Content-Encoding {shown:?} is not supported here; send the body unencoded"
                ),
            )
            .into_response();
            r.headers_mut().insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Inner {
        #[serde(default)]
        max_tokens: Option<u64>,
    }
    impl FromJson for Inner {}

    #[derive(Debug, serde::Deserialize)]
    struct Outer {
        id: String,
        #[serde(default)]
        list: Vec<Inner>,
        #[serde(skip, default = "no_inner")]
        inner: Option<Inner>,
    }
    fn no_inner() -> Option<Inner> {
        None
    }
    impl FromJson for Outer {
        fn read_parts(&mut self, whole: &Value) -> ApiResult<()> {
            self.inner = Some(from_value(whole)?);
            Ok(())
        }
    }

    fn param(body: &str) -> Option<String> {
        parse::<Outer>(body.as_bytes()).unwrap_err().param
    }

    #[test]
    fn errors_name_the_field() {
        let ok = parse::<Outer>(br#"{"id": "a", "max_tokens": 3, "list": [{}]}"#).unwrap();
        assert_eq!(ok.id, "a");
        assert_eq!(ok.list.len(), 1);
        assert_eq!(ok.inner.unwrap().max_tokens, Some(3));
        assert_eq!(
            param(r#"{"id": "a", "max_tokens": -1}"#).as_deref(),
            Some("max_tokens")
        );
        assert_eq!(
            param(r#"{"id": "a", "max_tokens": 5.0}"#).as_deref(),
            Some("max_tokens")
        );
        assert_eq!(param(r#"{"id": 1}"#).as_deref(), Some("id"));
        assert_eq!(param(r#"{}"#).as_deref(), Some("id"));
        assert_eq!(
            param(r#"{"id": "a", "list": [{}, {"max_tokens": "x"}]}"#).as_deref(),
            Some("list[1].max_tokens")
        );
        let deep = format!(
            r#"{{"id": "a", "x": {}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let p = param(&deep).unwrap();
        assert!(p.starts_with("x[0][0]") && p.ends_with("..."), "{p}");
        assert_eq!(
            param(r#"{"id": "a", "list": [{"max_tokens": 1, "max_tokens": 2}]}"#).as_deref(),
            Some("list[0].max_tokens")
        );
        assert_eq!(
            param(r#"{"id": "a", "max_tokens": 1, "max_tokens": 2}"#).as_deref(),
            Some("max_tokens")
        );
        // Syntax errors have no field.
        assert_eq!(param("{"), None);
        assert_eq!(param(r#"{"id": "a"} x"#), None);
    }
}
