//! Connect-protocol routes (`POST /ztensor.v1.Engine/{Method}`) for RPC
//! clients such as `ztensor.client.Client`: the same engine and states as
//! the OpenAI and state routes, reached through their handlers.
//!
//! - Unary methods with the JSON codec: `Generate`, `Tokenize`,
//!   `Detokenize`, `Execute`, `ListStates`, `GetState`, `DeleteState`,
//!   `Interrupt`. Request `Content-Type: application/json`; errors are
//!   `{"code", "message"}` with Connect's HTTP status for the code.
//! - `GenerateStream`, server streaming (`application/connect+json`):
//!   enveloped messages, one per piece of released text with its tokens
//!   (ids, log-probabilities, positions), then a summary message and the
//!   end-of-stream message.
//! - Bodies may be zstd-compressed (`Content-Encoding: zstd`, decompressed
//!   size bounded by the body limit); answers are compressed when the
//!   request's `Accept-Encoding` allows zstd. `Connect-Timeout-Ms` is a
//!   deadline (on `GenerateStream` too: the stream ends with a
//!   `deadline_exceeded` error after the tokens sent so far). Auth is the
//!   server's key check; its refusals (and any other non-Connect error on
//!   these paths) are rewritten as Connect errors.

use super::misc::{self, DetokenizeRequest, TokenizeRequest};
use super::openai::{self, ChatRequest, CompletionRequest};
use super::states::{self as state_routes, ExecuteRequest, InterruptRequest, StateName};
use super::{FromJson, JsonBody};
use crate::server::error::{ApiError, ApiResult};
use crate::server::App;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

/// The service's path prefix.
pub const PREFIX: &str = "/ztensor.v1.Engine/";

/// The longest `Connect-Timeout-Ms` (Connect allows at most 10 digits).
const MAX_TIMEOUT_DIGITS: usize = 10;

/// Bytes of a non-Connect error body read to rewrite it.
const MAX_FOREIGN_ERROR: usize = 64 << 10;

/// Marks answers made here, so [`rewrite_errors`] leaves them alone.
#[derive(Clone, Copy)]
struct Own;

/// A Connect error: a code from Connect's list and a message.
#[derive(Debug)]
pub struct ConnectError {
    pub code: &'static str,
    pub message: String,
    retry_after: Option<u32>,
    accept_encoding: bool,
    /// An HTTP status other than the code's (415 for a content type).
    http: Option<StatusCode>,
}

impl ConnectError {
    pub fn new(code: &'static str, message: impl Into<String>) -> ConnectError {
        ConnectError {
            code,
            message: message.into(),
            retry_after: None,
            accept_encoding: false,
            http: None,
        }
    }

    /// The HTTP status Connect gives the code.
    pub fn status(&self) -> StatusCode {
        self.http.unwrap_or_else(|| status_of(self.code))
    }
}

/// Connect's HTTP status of each error code.
pub fn status_of(code: &str) -> StatusCode {
    match code {
        "canceled" => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        "invalid_argument" | "failed_precondition" | "out_of_range" => StatusCode::BAD_REQUEST,
        "deadline_exceeded" => StatusCode::GATEWAY_TIMEOUT,
        "not_found" => StatusCode::NOT_FOUND,
        "already_exists" | "aborted" => StatusCode::CONFLICT,
        "permission_denied" => StatusCode::FORBIDDEN,
        "resource_exhausted" => StatusCode::TOO_MANY_REQUESTS,
        "unimplemented" => StatusCode::NOT_IMPLEMENTED,
        "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "unauthenticated" => StatusCode::UNAUTHORIZED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The Connect code of an HTTP error status (and, for 409, its message:
/// an existing state or running execution is `already_exists`, a state
/// of another model `failed_precondition`).
pub fn code_of(status: StatusCode, message: &str) -> &'static str {
    match status.as_u16() {
        400 => "invalid_argument",
        401 => "unauthenticated",
        403 => "permission_denied",
        404 => "not_found",
        405 | 415 | 501 => "unimplemented",
        408 | 504 => "deadline_exceeded",
        409 if message.contains("already") => "already_exists",
        409 => "failed_precondition",
        413 | 429 => "resource_exhausted",
        499 => "canceled",
        503 => "unavailable",
        500 => "internal",
        _ => "unknown",
    }
}

impl From<ApiError> for ConnectError {
    fn from(e: ApiError) -> ConnectError {
        ConnectError {
            code: code_of(e.status, &e.message),
            retry_after: e.retry_after,
            message: e.message,
            accept_encoding: false,
            http: None,
        }
    }
}

impl IntoResponse for ConnectError {
    fn into_response(self) -> Response {
        let body = json!({"code": self.code, "message": self.message}).to_string();
        let mut r = (
            self.status(),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.accept_encoding {
            r.headers_mut()
                .insert(header::ACCEPT_ENCODING, HeaderValue::from_static("zstd"));
        }
        r.extensions_mut().insert(Own);
        r
    }
}

type ConnectResult<T> = Result<T, ConnectError>;

/// Middleware for the Connect paths: an error answered by something other
/// than these handlers (the key check, a wrong HTTP method) becomes a
/// Connect error with the same meaning.
pub async fn rewrite_errors(req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with(PREFIX) {
        return next.run(req).await;
    }
    let r = next.run(req).await;
    if r.status().is_success() || r.extensions().get::<Own>().is_some() {
        return r;
    }
    let status = r.status();
    let retry_after = r.headers().get(header::RETRY_AFTER).cloned();
    let bytes = axum::body::to_bytes(r.into_body(), MAX_FOREIGN_ERROR)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("request refused")
                .to_string()
        });
    let mut out = ConnectError::new(code_of(status, &message), message).into_response();
    if let Some(v) = retry_after {
        out.headers_mut().insert(header::RETRY_AFTER, v);
    }
    out
}

/// How the request's body is encoded and the answer may be.
struct Codec {
    zstd_in: bool,
    zstd_out: bool,
}

fn header_str(h: &HeaderMap, name: impl header::AsHeaderName) -> ConnectResult<&str> {
    match h.get(name) {
        None => Ok(""),
        Some(v) => v
            .to_str()
            .map_err(|_| ConnectError::new("invalid_argument", "a header is not visible ASCII")),
    }
}

/// Whether an `Accept-Encoding` value allows zstd (`zstd;q=0` refuses it).
fn accepts_zstd(value: &str) -> bool {
    value.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        (name.eq_ignore_ascii_case("zstd") || name == "*") && !refused
    })
}

/// Checks the request headers: JSON content (`application/connect+json`
/// for streaming), a supported encoding, protocol version 1.
fn negotiate(h: &HeaderMap, streaming: bool) -> ConnectResult<Codec> {
    let ct = header_str(h, header::CONTENT_TYPE)?;
    let mime = ct.split(';').next().unwrap_or("").trim();
    let want = if streaming {
        "application/connect+json"
    } else {
        "application/json"
    };
    if !mime.eq_ignore_ascii_case(want) {
        let mut e = ConnectError::new(
            "unimplemented",
            format!("Content-Type {ct:?} is not supported here; use {want}"),
        );
        // Connect answers an unsupported content type with 415.
        e.http = Some(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        return Err(e);
    }
    if let Some(v) = h.get("connect-protocol-version") {
        if v.as_bytes() != b"1" {
            return Err(ConnectError::new(
                "invalid_argument",
                "Connect-Protocol-Version must be 1",
            ));
        }
    }
    let (enc_name, accept_name) = if streaming {
        ("connect-content-encoding", "connect-accept-encoding")
    } else {
        ("content-encoding", "accept-encoding")
    };
    let enc = header_str(h, enc_name)?.trim();
    let zstd_in = match enc.to_ascii_lowercase().as_str() {
        "" | "identity" => false,
        "zstd" => true,
        other => {
            let mut e = ConnectError::new(
                "unimplemented",
                format!("content encoding {other:?} is not supported; use zstd or identity"),
            );
            e.accept_encoding = true;
            return Err(e);
        }
    };
    Ok(Codec {
        zstd_in,
        zstd_out: accepts_zstd(header_str(h, accept_name)?),
    })
}

/// Decompresses a zstd body of at most `limit` bytes once decompressed;
/// stops reading as soon as it passes the bound.
pub fn unzstd(data: &[u8], limit: usize) -> ConnectResult<Vec<u8>> {
    let decoder = zstd::stream::read::Decoder::new(data)
        .map_err(|e| ConnectError::new("internal", format!("zstd decoder: {e}")))?;
    let mut out = Vec::new();
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            ConnectError::new(
                "invalid_argument",
                format!("the body is not valid zstd: {e}"),
            )
        })?;
    if out.len() > limit {
        return Err(ConnectError::new(
            "resource_exhausted",
            format!("the decompressed body is larger than the {limit}-byte limit"),
        ));
    }
    Ok(out)
}

/// Reads the body within the limit, decompressing it if needed; a
/// streaming request's body is one enveloped message.
async fn read_body(
    app: &App,
    body: Body,
    codec: &Codec,
    enveloped: bool,
) -> ConnectResult<Vec<u8>> {
    let limit = app.config.body_limit;
    let raw = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ConnectError::new(
            "resource_exhausted",
            format!("the request body is larger than the {limit}-byte limit (or was cut off)"),
        )
    })?;
    if enveloped {
        return unenvelope(&raw, codec.zstd_in, limit);
    }
    if codec.zstd_in {
        unzstd(&raw, limit)
    } else {
        Ok(raw.to_vec())
    }
}

/// The message of a body holding exactly one envelope (flags, 4-byte
/// big-endian length, data); the compressed flag needs a negotiated zstd.
fn unenvelope(raw: &[u8], zstd_in: bool, limit: usize) -> ConnectResult<Vec<u8>> {
    let bad = |m: String| ConnectError::new("invalid_argument", m);
    let (head, data) = match raw.split_first_chunk::<5>() {
        Some(x) => x,
        None => {
            return Err(bad(format!(
                "a streaming request is one enveloped message; the body has {} bytes, \
                 less than the 5-byte envelope prefix",
                raw.len()
            )))
        }
    };
    let flags = head[0];
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if flags & !FLAG_COMPRESSED != 0 {
        return Err(bad(format!(
            "envelope flags = {flags:#04x}: only 0 or 1 is allowed in a request"
        )));
    }
    if len != data.len() {
        return Err(bad(format!(
            "envelope length = {len} but {} bytes follow the prefix (one message expected)",
            data.len()
        )));
    }
    if flags & FLAG_COMPRESSED == 0 {
        return Ok(data.to_vec());
    }
    if !zstd_in {
        return Err(bad(
            "a compressed envelope needs Connect-Content-Encoding: zstd".to_string(),
        ));
    }
    unzstd(data, limit)
}

/// The `Connect-Timeout-Ms` deadline, if any.
fn deadline(h: &HeaderMap) -> ConnectResult<Option<Duration>> {
    let v = header_str(h, "connect-timeout-ms")?;
    if v.is_empty() {
        return Ok(None);
    }
    if v.len() > MAX_TIMEOUT_DIGITS || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConnectError::new(
            "invalid_argument",
            format!("Connect-Timeout-Ms = {v:?}: expected 1-10 digits"),
        ));
    }
    Ok(v.parse::<u64>().ok().map(Duration::from_millis))
}

/// A request message (a bad field named as on the OpenAI routes); an
/// empty body is the empty message. Field names may be written as in the
/// schema (`max_tokens`) or in lowerCamelCase (`maxTokens`), as protobuf's
/// JSON mapping has parsers accept (see [`snake_case_fields`]).
fn message<T: FromJson>(body: &[u8]) -> ConnectResult<T> {
    let body = if body.is_empty() { b"{}" } else { body };
    let invalid = |e: ApiError| {
        let m = e.message.replacen("request body", "request message", 1);
        ConnectError::new("invalid_argument", m)
    };
    let mut v: Value = super::body::parse(body).map_err(invalid)?;
    snake_case_fields(&mut v)?;
    super::fields::check::<T>(&v, true).map_err(invalid)?;
    super::body::from_value(&v).map_err(invalid)
}

/// Renames the lowerCamelCase field names of a request message (its top
/// level and its `response_format`) to the schema's snake_case. Values
/// below them (a JSON schema's properties, message texts) are the
/// caller's data and stay as they are. Both spellings of one field are
/// an error.
fn snake_case_fields(v: &mut Value) -> ConnectResult<()> {
    fn rename(obj: &mut serde_json::Map<String, Value>) -> ConnectResult<()> {
        let camel: Vec<String> = obj
            .keys()
            .filter(|k| k.bytes().any(|b| b.is_ascii_uppercase()))
            .cloned()
            .collect();
        for key in camel {
            let snake = super::fields::snake(&key);
            if obj.contains_key(&snake) {
                return Err(ConnectError::new(
                    "invalid_argument",
                    format!("request message: both {key:?} and {snake:?} are given"),
                ));
            }
            if let Some(x) = obj.remove(&key) {
                obj.insert(snake, x);
            }
        }
        Ok(())
    }
    let Value::Object(top) = v else {
        return Ok(());
    };
    rename(top)?;
    if let Some(Value::Object(rf)) = top.get_mut("response_format") {
        rename(rf)?;
    }
    Ok(())
}

/// The JSON body of a handler's answer.
async fn answer_json(r: ApiResult<Response>) -> ConnectResult<Value> {
    let r = r.map_err(ConnectError::from)?;
    let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .map_err(|e| ConnectError::new("internal", format!("reading the answer: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ConnectError::new("internal", format!("the answer is not JSON: {e}")))
}

fn json_of<T: serde::Serialize>(r: ApiResult<axum::Json<T>>) -> ConnectResult<Value> {
    let axum::Json(v) = r.map_err(ConnectError::from)?;
    serde_json::to_value(v).map_err(|e| ConnectError::new("internal", e.to_string()))
}

#[derive(serde::Deserialize)]
struct NameRequest {
    name: String,
}
impl FromJson for NameRequest {}

/// `Generate`: an OpenAI completion (`prompt`) or chat completion
/// (`messages`) request, never streamed → `{id, text, finish_reason,
/// usage, logprobs}`.
async fn generate_unary(app: Arc<App>, body: &[u8]) -> ConnectResult<Value> {
    let v: Value = message(body)?;
    let chat = v.get("messages").is_some();
    let full = if chat {
        let mut req: ChatRequest = message(body)?;
        req.common.stream = Some(false);
        answer_json(openai::chat_completions(State(app), JsonBody(req)).await).await?
    } else {
        let mut req: CompletionRequest = message(body)?;
        req.common.stream = Some(false);
        answer_json(openai::completions(State(app), JsonBody(req)).await).await?
    };
    let choice = &full["choices"][0];
    let text = if chat {
        choice["message"]["content"].clone()
    } else {
        choice["text"].clone()
    };
    Ok(json!({
        "id": full["id"],
        "text": text,
        "finish_reason": choice["finish_reason"],
        "usage": full["usage"],
        "logprobs": choice["logprobs"],
    }))
}

async fn dispatch(app: Arc<App>, method: &str, body: &[u8]) -> ConnectResult<Value> {
    match method {
        "Generate" => generate_unary(app, body).await,
        "Tokenize" => {
            let req: TokenizeRequest = message(body)?;
            json_of(misc::tokenize(State(app), JsonBody(req)).await)
        }
        "Detokenize" => {
            let req: DetokenizeRequest = message(body)?;
            json_of(misc::detokenize(State(app), JsonBody(req)).await)
        }
        "Execute" => {
            let mut req: ExecuteRequest = message(body)?;
            req.stream = None;
            answer_json(state_routes::execute(State(app), JsonBody(req)).await).await
        }
        "ListStates" => json_of(state_routes::list(State(app)).await),
        "GetState" => {
            let req: NameRequest = message(body)?;
            json_of(state_routes::get(State(app), StateName(req.name)).await)
        }
        "DeleteState" => {
            let req: NameRequest = message(body)?;
            json_of(state_routes::delete(State(app), StateName(req.name)).await)
        }
        "Interrupt" => {
            let req: InterruptRequest = message(body)?;
            json_of(state_routes::interrupt(State(app), JsonBody(req)).await)
        }
        _ => Err(ConnectError::new(
            "unimplemented",
            format!("ztensor.v1.Engine has no method {method:?}"),
        )),
    }
}

/// zstd level of compressed answers.
const LEVEL: i32 = 3;

/// `POST /ztensor.v1.Engine/{method}`.
pub async fn call(
    State(app): State<Arc<App>>,
    Path(method): Path<String>,
    req: Request,
) -> Response {
    match call_inner(app, &method, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn call_inner(app: Arc<App>, method: &str, req: Request) -> ConnectResult<Response> {
    let streaming = method == "GenerateStream";
    let (parts, body) = req.into_parts();
    let codec = negotiate(&parts.headers, streaming)?;
    let limit = deadline(&parts.headers)?;
    if streaming {
        let due = limit.map(|d| (tokio::time::Instant::now() + d, d));
        // A stream's errors travel in its end message, under HTTP 200.
        let started = match read_body(&app, body, &codec, true).await {
            Ok(message) => generate_stream(app, &message, codec.zstd_out, due).await,
            Err(e) => Err(e),
        };
        let mut r = match started {
            Ok(r) => r,
            Err(e) => {
                let end = json!({"error": {"code": e.code, "message": e.message}});
                let mut r = Response::new(Body::from(envelope(FLAG_END, &end, false)));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/connect+json"),
                );
                r
            }
        };
        r.extensions_mut().insert(Own);
        return Ok(r);
    }
    let body = read_body(&app, body, &codec, false).await?;
    let work = dispatch(app, method, &body);
    let value = match limit {
        // Dropping the call on the deadline cancels its job.
        Some(d) => tokio::time::timeout(d, work).await.map_err(|_| {
            ConnectError::new(
                "deadline_exceeded",
                format!("the {}-ms deadline passed", d.as_millis()),
            )
        })??,
        None => work.await?,
    };
    let bytes = value.to_string().into_bytes();
    let mut r = if codec.zstd_out {
        let packed = zstd::bulk::compress(&bytes, LEVEL)
            .map_err(|e| ConnectError::new("internal", format!("zstd: {e}")))?;
        let mut r = Response::new(Body::from(packed));
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
        r
    } else {
        Response::new(Body::from(bytes))
    };
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.extensions_mut().insert(Own);
    Ok(r)
}

/// Envelope flags of Connect streaming.
pub(super) const FLAG_COMPRESSED: u8 = 1;
pub(super) const FLAG_END: u8 = 2;

/// One enveloped message: flags, big-endian length, JSON (zstd when
/// `zstd`).
pub(super) fn envelope(flags: u8, value: &Value, zstd: bool) -> Bytes {
    let raw = value.to_string().into_bytes();
    let (flags, data) = match zstd.then(|| zstd::bulk::compress(&raw, LEVEL)) {
        Some(Ok(packed)) => (flags | FLAG_COMPRESSED, packed),
        _ => (flags, raw),
    };
    let mut out = Vec::with_capacity(5 + data.len());
    out.push(flags);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(&data);
    Bytes::from(out)
}

mod stream;
use stream::generate_stream;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_statuses() {
        for code in [
            "invalid_argument",
            "unauthenticated",
            "not_found",
            "permission_denied",
            "resource_exhausted",
            "unimplemented",
            "unavailable",
            "internal",
            "deadline_exceeded",
            "canceled",
        ] {
            assert_eq!(code_of(status_of(code), ""), code);
        }
        assert_eq!(
            code_of(StatusCode::CONFLICT, "state \"a\" already exists"),
            "already_exists"
        );
        assert_eq!(
            code_of(StatusCode::CONFLICT, "made by another model"),
            "failed_precondition"
        );
    }

    #[test]
    fn accept_encoding_lists() {
        assert!(accepts_zstd("zstd"));
        assert!(accepts_zstd("gzip, ZSTD;q=0.5"));
        assert!(accepts_zstd("*"));
        assert!(!accepts_zstd("gzip"));
        assert!(!accepts_zstd("zstd;q=0"));
        assert!(!accepts_zstd(""));
    }

    #[test]
    fn zstd_bodies_are_bounded() {
        let big = vec![b'a'; 1 << 20];
        let packed = zstd::bulk::compress(&big, 3).unwrap();
        assert!(packed.len() < 1024);
        assert_eq!(unzstd(&packed, 1 << 20).unwrap(), big);
        let e = unzstd(&packed, (1 << 20) - 1).unwrap_err();
        assert_eq!(e.code, "resource_exhausted");
        assert_eq!(
            unzstd(b"not zstd", 100).unwrap_err().code,
            "invalid_argument"
        );
    }

    #[test]
    fn request_envelopes_are_checked() {
        let one = envelope(0, &json!({"prompt": "x"}), false);
        assert_eq!(unenvelope(&one, false, 100).unwrap(), br#"{"prompt":"x"}"#);
        let z = envelope(0, &json!({"prompt": "x"}), true);
        assert_eq!(unenvelope(&z, true, 100).unwrap(), br#"{"prompt":"x"}"#);
        assert!(unenvelope(&z, false, 100).is_err());
        assert!(unenvelope(&one[..one.len() - 1], false, 100).is_err());
        assert!(unenvelope(&[&one[..], &one[..]].concat(), false, 100).is_err());
        assert!(unenvelope(b"\x04\0\0\0\0", false, 100).is_err());
        assert!(unenvelope(b"\0\0", false, 100).is_err());
    }

    #[test]
    fn envelopes_carry_flags_and_lengths() {
        let e = envelope(FLAG_END, &json!({}), false);
        assert_eq!(&e[..], b"\x02\x00\x00\x00\x02{}");
        let z = envelope(0, &json!({"a": "b".repeat(100)}), true);
        assert_eq!(z[0], FLAG_COMPRESSED);
        let len = u32::from_be_bytes([z[1], z[2], z[3], z[4]]) as usize;
        assert_eq!(len, z.len() - 5);
    }
}
