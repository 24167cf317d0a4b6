//! Token authentication: `Authorization: Bearer KEY`, `X-API-Key: KEY` or
//! a `token=KEY` query parameter, on every route but `/health`. Every
//! credential a request presents must be a key: none, or any wrong one,
//! is 401 (the answer does not depend on their order). Keys are compared
//! as BLAKE3 digests in constant time, against every key.

use super::error::ApiError;
use super::App;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The accepted keys, kept only as digests.
#[derive(Debug, Default)]
pub struct Keys {
    digests: Vec<[u8; 32]>,
}

impl Keys {
    pub fn new(keys: &[String]) -> Keys {
        Keys {
            digests: keys
                .iter()
                .map(|k| *blake3::hash(k.as_bytes()).as_bytes())
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `given` is one of the keys (every key is compared, so the
    /// time does not tell which one matched or how much of it).
    pub fn accepts(&self, given: &str) -> bool {
        let d = blake3::hash(given.as_bytes());
        let mut ok = subtle::Choice::from(0u8);
        for k in &self.digests {
            ok |= k.ct_eq(d.as_bytes());
        }
        ok.into()
    }
}

/// Every credential a request presents: each `Authorization` header
/// (`Bearer KEY`; another scheme or an unreadable value presents a key
/// that never matches), each `X-API-Key` header and each `token` query
/// parameter (a malformed one never matches), in no particular order.
fn presented(req: &Request) -> Vec<Option<String>> {
    let h = req.headers();
    let mut out = Vec::new();
    for v in h.get_all(axum::http::header::AUTHORIZATION) {
        out.push(v.to_str().ok().and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_string())
        }));
    }
    for v in h.get_all("x-api-key") {
        out.push(v.to_str().ok().map(|s| s.trim().to_string()));
    }
    for pair in req.uri().query().unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "token" {
            out.push(percent_decode(v));
        }
    }
    out
}

/// The rule: at least one credential, and every credential presented is
/// a key (one wrong credential refuses the request, whatever its place).
/// Each is compared in constant time, and all of them are compared.
fn all_accepted(keys: &Keys, presented: &[Option<String>]) -> bool {
    let mut ok = subtle::Choice::from(u8::from(!presented.is_empty()));
    for p in presented {
        let good = match p {
            Some(k) => keys.accepts(k),
            None => false,
        };
        ok &= subtle::Choice::from(u8::from(good));
    }
    ok.into()
}

/// `%XX` and `+` decoding of a query value (`None` when malformed).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Whether a path is open without a key.
pub fn is_public(path: &str) -> bool {
    matches!(path, "/health" | "/v1/health")
}

/// The middleware: 401 without detail unless the key is right.
pub async fn require_key(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if app.keys.is_empty() || is_public(req.uri().path()) {
        return next.run(req).await;
    }
    if all_accepted(&app.keys, &presented(&req)) {
        next.run(req).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_whole_values() {
        let keys = Keys::new(&["s3cret".to_string(), "other".to_string()]);
        assert!(keys.accepts("s3cret"));
        assert!(keys.accepts("other"));
        assert!(!keys.accepts("s3cre"));
        assert!(!keys.accepts("s3cret "));
        assert!(!keys.accepts(""));
        assert!(Keys::new(&[]).is_empty());
    }

    #[test]
    fn every_presented_credential_must_be_a_key() {
        let keys = Keys::new(&["s3cret".to_string()]);
        let good = || Some("s3cret".to_string());
        let bad = || Some("wrong".to_string());
        assert!(all_accepted(&keys, &[good()]));
        assert!(all_accepted(&keys, &[good(), good()]));
        assert!(!all_accepted(&keys, &[]));
        assert!(!all_accepted(&keys, &[good(), bad()]));
        assert!(!all_accepted(&keys, &[bad(), good()]));
        assert!(!all_accepted(&keys, &[good(), None]));
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decode("a%2Fb+c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }
}
