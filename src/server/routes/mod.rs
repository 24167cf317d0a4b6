//! The HTTP routes and what they share: a JSON body extractor with
//! OpenAI-style errors (400 naming the field, 413; [`body`]), tokenizing off the async threads, the
//! context budget, the sampling fields ([`sampling`]) and running work on
//! a sequence.

pub mod body;
pub mod connect;
pub mod fields;
pub mod misc;
pub mod openai;
pub mod sampling;
pub mod states;

pub use body::{FromJson, JsonBody};
pub use sampling::SamplingFields;

use super::error::{ApiError, ApiResult};
use super::scheduler::CancelOnDrop;
use super::{App, Loaded};
use crate::engine::Engine;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::sync::oneshot;

/// All routes, behind the key check and the body limit.
pub fn router(app: Arc<App>) -> Router {
    let limit = app.config.body_limit;
    Router::new()
        .route("/health", get(misc::health))
        .route("/v1/health", get(misc::health))
        .route("/metrics", get(misc::metrics))
        .route("/v1/models", get(misc::models))
        .route("/models", get(misc::models))
        .route("/tokenize", post(misc::tokenize))
        .route("/detokenize", post(misc::detokenize))
        .route("/v1/completions", post(openai::completions))
        .route("/completions", post(openai::completions))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/chat/completions", post(openai::chat_completions))
        .route("/execute", post(states::execute))
        .route("/states", get(states::list))
        .route("/states/{name}", get(states::get).delete(states::delete))
        .route("/reset", post(states::reset))
        .route("/interrupt", post(states::interrupt))
        .route("/ztensor.v1.Engine/{method}", post(connect::call))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::from_fn(body::plain_bodies_only))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            super::auth::require_key,
        ))
        .layer(axum::middleware::from_fn(connect::rewrite_errors))
        .layer(axum::middleware::from_fn(super::error::json_errors))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}

/// Runs `f` off the async threads (tokenizing long texts is CPU work).
pub async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> ApiResult<R> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("worker task failed: {e}")))
}

/// How many tokens may be generated after `used` context tokens and a
/// `prompt_len`-token prompt: `max_tokens` if it fits, all that is left
/// when absent, 400 when it does not fit or nothing is left.
pub fn budget(
    n_ctx: usize,
    used: usize,
    prompt_len: usize,
    max_tokens: Option<u64>,
) -> ApiResult<usize> {
    let total = used + prompt_len;
    if total == 0 {
        return Err(ApiError::bad(
            "prompt",
            "the prompt gave no tokens and the context is empty",
        ));
    }
    if total >= n_ctx {
        return Err(ApiError::bad(
            "prompt",
            format!("{total} context tokens ({used} before, {prompt_len} in the prompt) leave no room in the {n_ctx}-token context"),
        ));
    }
    let room = n_ctx - total;
    match max_tokens {
        None => Ok(room),
        Some(m) if m > room as u64 => Err(ApiError::bad(
            "max_tokens",
            format!("max_tokens = {m} exceeds the {room} tokens left in the {n_ctx}-token context after {total} tokens"),
        )),
        Some(m) => Ok(m as usize),
    }
}

/// Queues `f` on a sequence; its result arrives on the receiver. The job
/// is skipped if `cancel` is set before it starts.
pub fn submit<R: Send + 'static>(
    app: &App,
    loaded: &Loaded,
    cancel: Arc<AtomicBool>,
    f: impl FnOnce(&mut Engine) -> R + Send + 'static,
) -> ApiResult<oneshot::Receiver<R>> {
    let (tx, rx) = oneshot::channel();
    let work = Box::new(move |e: &mut Engine| {
        let _ = tx.send(f(e));
    });
    loaded.scheduler.submit(cancel, work).inspect_err(|e| {
        if e.status == StatusCode::SERVICE_UNAVAILABLE {
            app.metrics
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    })?;
    Ok(rx)
}

/// Waits for a submitted job; dropping this future (the client went away)
/// cancels the job.
pub async fn wait<R>(cancel: Arc<AtomicBool>, rx: oneshot::Receiver<R>) -> ApiResult<R> {
    let _guard = CancelOnDrop(cancel);
    rx.await
        .map_err(|_| ApiError::internal("the sequence running the request stopped"))
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fresh request id with `prefix`.
pub fn request_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", super::generate::random_seed())
}

pub fn usage(prompt: usize, completion: usize) -> serde_json::Value {
    serde_json::json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}
