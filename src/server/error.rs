//! Errors as OpenAI-style JSON bodies: `{"error": {message, type, code, param}}`,
//! also for the refusals axum makes itself ([`json_errors`]).

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    /// The field at fault: a name or a path such as `messages[1].content`.
    pub param: Option<String>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    /// 400: a field of the request breaks a rule.
    pub fn bad(param: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            param: Some(param.into()),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        }
    }

    /// The same error naming `to` where it named `from` (a chat request's
    /// prompt is its `messages`).
    pub fn param_renamed(mut self, from: &str, to: &str) -> ApiError {
        if self.param.as_deref() == Some(from) {
            self.param = Some(to.to_string());
        }
        self
    }

    /// 400 with no particular field.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found_error", message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid or missing API key",
        )
    }

    pub fn loading() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable_error",
            "Loading model",
        )
    }

    /// 503 with `Retry-After`: every sequence is busy and the queue is full.
    pub fn busy() -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable_error",
                "the server is busy: every sequence is running and the queue is full",
            )
        }
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.status.as_u16(),
        }})
    }
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> ApiError {
        match &e {
            crate::Error::Usage(_) | crate::Error::Limit { .. } | crate::Error::Invalid { .. } => {
                ApiError::invalid(e.to_string())
            }
            crate::Error::NotFound { .. } => ApiError::not_found(e.to_string()),
            crate::Error::Snapshot { .. } => {
                ApiError::new(StatusCode::CONFLICT, "invalid_request_error", e.to_string())
            }
            _ => ApiError::internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

/// Bytes of a non-JSON error body read to rewrite it.
const MAX_FOREIGN_ERROR: usize = 64 << 10;

/// OpenAI's error type for a status.
fn kind_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        503 => "unavailable_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

/// Middleware for every route but the Connect ones (which have their own
/// error shape): an error answer that is not JSON (a wrong method's empty
/// 405, a text rejection of axum's) becomes an OpenAI-style error with
/// the same status and headers.
pub async fn json_errors(req: Request, next: Next) -> Response {
    if req.uri().path().starts_with(super::routes::connect::PREFIX) {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let r = next.run(req).await;
    let status = r.status();
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return r;
    }
    let (parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, MAX_FOREIGN_ERROR)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if status == StatusCode::METHOD_NOT_ALLOWED {
        // axum adds the `Allow` header after this layer.
        format!("method {method} is not allowed on {path} (the Allow header lists those that are)")
    } else if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string()
    } else {
        text
    };
    let mut out = ApiError::new(status, kind_of(status), message).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER, header::ACCEPT_ENCODING] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}
