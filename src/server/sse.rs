//! Server-Sent Events framing: every event is `data: <json>\n\n`, the
//! stream ends with `data: [DONE]\n\n` (OpenAI's convention).

use super::scheduler::CancelOnDrop;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use std::convert::Infallible;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

/// The closing event.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// One event holding `value` (serde_json never writes a raw newline, so
/// one `data:` line is enough).
pub fn event(value: &serde_json::Value) -> Bytes {
    let mut s = Vec::with_capacity(64);
    s.extend_from_slice(b"data: ");
    s.extend_from_slice(value.to_string().as_bytes());
    s.extend_from_slice(b"\n\n");
    Bytes::from(s)
}

/// A `text/event-stream` response sending what arrives on `rx`; when the
/// client goes away the stream (and `rx`) is dropped, which the sender
/// sees as a closed channel.
/// `cancel` is set when the response body is dropped.
pub fn response(rx: mpsc::Receiver<Bytes>, cancel: Arc<AtomicBool>) -> Response {
    let guard = CancelOnDrop(cancel);
    let stream = ReceiverStream::new(rx).map(move |b| {
        let _ = &guard;
        Ok::<Bytes, Infallible>(b)
    });
    let mut r = Response::new(Body::from_stream(stream));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_single_data_lines() {
        let e = event(&serde_json::json!({"text": "a\nb"}));
        assert_eq!(&e[..], b"data: {\"text\":\"a\\nb\"}\n\n");
    }
}
