//! `GenerateStream`: Connect server streaming of a generation's tokens,
//! enveloped one message per released piece of text, with the call's
//! deadline as a timer that cancels the run.

use super::super::openai::{chat_tokens, message_pairs};
use super::super::sampling::{add_chat_stops, StreamRequest};
use super::super::{blocking, submit, usage};
use super::{envelope, message, ConnectError, ConnectResult, FLAG_END};
use crate::server::error::ApiError;
use crate::server::generate::{self, Finish, Piece};
use crate::server::{sse, App};
use axum::body::Bytes;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Stops a deadline timer when dropped (its call ended first).
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

fn piece_message(p: &Piece, position: &mut usize) -> Value {
    let n = p.tokens.len();
    let tokens: Vec<Value> = p
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let at = *position;
            *position += 1;
            // The released text goes with the last token that released it.
            let text = if i + 1 == n { p.text.as_str() } else { "" };
            json!({"id": t.id, "text": text, "logprob": t.logprob, "position": at})
        })
        .collect();
    json!({"text": p.text, "tokens": tokens})
}

/// The end message of a call whose `Connect-Timeout-Ms` passed.
fn deadline_end(d: Duration) -> Bytes {
    let e = ConnectError::new(
        "deadline_exceeded",
        format!("the {}-ms deadline passed", d.as_millis()),
    );
    envelope(
        FLAG_END,
        &json!({"error": {"code": e.code, "message": e.message}}),
        false,
    )
}

/// Where a `GenerateStream` job is, for its deadline timer.
const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const EXPIRED: u8 = 2;

/// `GenerateStream`: tokens as they are released, on a fresh context.
/// With a deadline (`due`: when, and the `Connect-Timeout-Ms` given) the
/// generation is cancelled when it passes and the stream ends with a
/// `deadline_exceeded` error after the tokens already sent (also when the
/// call was still waiting for a sequence).
pub(super) async fn generate_stream(
    app: Arc<App>,
    body: &[u8],
    zstd: bool,
    due: Option<(tokio::time::Instant, Duration)>,
) -> ConnectResult<Response> {
    app.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let req: StreamRequest = message(body)?;
    let loaded = app.ready()?;
    let (prompt, chat) = match (req.prompt, req.messages) {
        (Some(text), None) => {
            let tok = loaded.tokenizer.clone();
            let ids = blocking(move || {
                let mut ids = tok.encode(&text, false, true);
                if tok.add_bos {
                    ids.splice(0..0, tok.bos);
                }
                ids
            })
            .await?;
            (ids, false)
        }
        (None, Some(msgs)) => (
            chat_tokens(&loaded, message_pairs(&msgs)?, true).await?,
            true,
        ),
        _ => {
            return Err(ConnectError::new(
                "invalid_argument",
                "give either prompt or messages",
            ))
        }
    };
    let mut sampling = req
        .sampling
        .into_sampling(loaded.n_ctx, 0, prompt.len(), Some(0))
        .await
        .map_err(|e| e.param_renamed("prompt", if chat { "messages" } else { "prompt" }))?;
    if chat {
        add_chat_stops(&mut sampling, &loaded);
    }
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let metrics = app.metrics.clone();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let phase = Arc::new(AtomicU8::new(QUEUED));
    let timed_out = Arc::new(AtomicBool::new(false));
    let timer = due.map(|(at, d)| {
        let (phase, timed_out, cancel) = (phase.clone(), timed_out.clone(), cancel.clone());
        // Weak: the timer must not keep the stream open.
        let weak = tx.downgrade();
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            timed_out.store(true, Ordering::SeqCst);
            let never_ran = phase
                .compare_exchange(QUEUED, EXPIRED, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
            cancel.store(true, Ordering::SeqCst);
            if never_ran {
                // The queued job will be skipped: the answer is ours.
                if let Some(tx) = weak.upgrade() {
                    let _ = tx.send(deadline_end(d)).await;
                }
            }
        })
    });
    let stop_timer = timer.as_ref().map(|t| t.abort_handle());
    let stop_on_refusal = stop_timer.clone();
    let deadline = due.map(|(_, d)| d);
    let submitted = submit(&app, &loaded, cancel.clone(), move |e| {
        let _stop = AbortOnDrop(stop_timer);
        let started = phase
            .compare_exchange(QUEUED, RUNNING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if !started || tx.is_closed() {
            return;
        }
        e.reset();
        let mut position = prompt.len();
        let mut emit = |p: Piece| {
            let m = piece_message(&p, &mut position);
            tx.blocking_send(envelope(0, &m, zstd)).is_ok()
        };
        let end = match generate::run(e, &prompt, &sampling, &flag, &mut emit) {
            Ok(o) => {
                metrics.record_run(&o);
                if o.finish == Finish::Cancelled {
                    if let Some(d) = deadline.filter(|_| timed_out.load(Ordering::SeqCst)) {
                        let _ = tx.blocking_send(deadline_end(d));
                    }
                    return;
                }
                let summary = json!({
                    "finish_reason": o.finish.reason(),
                    "usage": usage(o.prompt_tokens, o.completion_tokens),
                });
                let _ = tx.blocking_send(envelope(0, &summary, zstd));
                json!({})
            }
            Err(err) => {
                let c = ConnectError::from(ApiError::from(err));
                json!({"error": {"code": c.code, "message": c.message}})
            }
        };
        let _ = tx.blocking_send(envelope(FLAG_END, &end, false));
    });
    if let Err(e) = submitted {
        drop(AbortOnDrop(stop_on_refusal));
        return Err(ConnectError::from(e));
    }
    let mut r = sse::response(rx, cancel);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/connect+json"),
    );
    if zstd {
        h.insert("connect-content-encoding", HeaderValue::from_static("zstd"));
    }
    Ok(r)
}
