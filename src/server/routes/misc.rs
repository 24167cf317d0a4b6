//! `/health`, `/metrics`, `/v1/models`, `/tokenize`, `/detokenize`.

use super::{blocking, FromJson, JsonBody};
use crate::server::error::{ApiError, ApiResult};
use crate::server::App;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// 200 `{"status":"ok"}` once loaded, 503 before (no key needed).
pub async fn health(State(app): State<Arc<App>>) -> Response {
    match app.ready() {
        Ok(_) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /metrics` (its scrapes are not counted in `zt_requests_total`).
pub async fn metrics(State(app): State<Arc<App>>) -> ApiResult<Response> {
    let (queued, running, parallel, batch) = match app.loaded.get() {
        Some(l) => (
            l.scheduler.queued.load(Ordering::Relaxed),
            l.scheduler.running.load(Ordering::Relaxed),
            l.scheduler.parallel,
            l.scheduler.batch_stats(),
        ),
        None => (0, 0, app.config.parallel, Default::default()),
    };
    let text = app.metrics.render(queued, running, parallel, batch);
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response())
}

pub async fn models(State(app): State<Arc<App>>) -> ApiResult<Json<Value>> {
    app.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let loaded = app.ready()?;
    Ok(Json(json!({
        "object": "list",
        "data": [{
            "id": app.model_id,
            "object": "model",
            "created": 0,
            "owned_by": "ztensor",
            "meta": {"n_ctx": loaded.n_ctx, "n_vocab": loaded.n_vocab},
        }],
    })))
}

#[derive(serde::Deserialize)]
pub struct TokenizeRequest {
    content: String,
    #[serde(default)]
    add_special: bool,
    #[serde(default = "yes")]
    parse_special: bool,
    #[serde(default)]
    with_pieces: bool,
}

impl FromJson for TokenizeRequest {}

fn yes() -> bool {
    true
}

/// llama-server's `/tokenize`: `{content, add_special=false,
/// parse_special=true, with_pieces=false}` → `{tokens}`.
pub async fn tokenize(
    State(app): State<Arc<App>>,
    JsonBody(req): JsonBody<TokenizeRequest>,
) -> ApiResult<Json<Value>> {
    app.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let tok = app.ready()?.tokenizer.clone();
    let out = blocking(move || {
        let mut ids = tok.encode(&req.content, false, req.parse_special);
        if req.add_special && tok.add_bos {
            if let Some(b) = tok.bos {
                ids.insert(0, b);
            }
        }
        if !req.with_pieces {
            return json!({"tokens": ids});
        }
        let pieces: Vec<Value> = ids
            .iter()
            .map(|&id| {
                let mut bytes = Vec::new();
                tok.token_bytes(id, true, &mut bytes);
                let piece = match String::from_utf8(bytes) {
                    Ok(s) => json!(s),
                    Err(e) => json!(e.into_bytes()),
                };
                json!({"id": id, "piece": piece})
            })
            .collect();
        json!({"tokens": pieces})
    })
    .await?;
    Ok(Json(out))
}

#[derive(serde::Deserialize)]
pub struct DetokenizeRequest {
    tokens: Vec<u64>,
}

impl FromJson for DetokenizeRequest {}

/// `/detokenize`: `{tokens}` → `{content}`; ids outside the vocabulary: 400.
pub async fn detokenize(
    State(app): State<Arc<App>>,
    JsonBody(req): JsonBody<DetokenizeRequest>,
) -> ApiResult<Json<Value>> {
    app.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let loaded = app.ready()?;
    let ids = check_ids(&req.tokens, loaded.n_vocab, "tokens")?;
    let tok = loaded.tokenizer.clone();
    let content = blocking(move || tok.decode(&ids, false)).await?;
    Ok(Json(json!({"content": content})))
}

/// Token ids checked against the vocabulary.
pub fn check_ids(ids: &[u64], n_vocab: usize, field: &'static str) -> ApiResult<Vec<u32>> {
    ids.iter()
        .enumerate()
        .map(|(i, &id)| {
            if id < n_vocab as u64 {
                Ok(id as u32)
            } else {
                Err(ApiError::bad(
                    format!("{field}[{i}]"),
                    format!("{field}[{i}] = {id} is outside the vocabulary of {n_vocab} tokens"),
                ))
            }
        })
        .collect()
}
