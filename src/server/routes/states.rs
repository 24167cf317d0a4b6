//! Seed 001's state routes: `POST /execute` continues a named state and,
//! on success only, stores the result as a new immutable state;
//! `GET /states`, `GET|DELETE /states/{name}`, `POST /reset`,
//! `POST /interrupt`.
//!
//! A run that starts answers 200 with `error` set when it fails or is
//! interrupted (seed 001's shape); a request refused before running
//! (bad field, unknown state, existing new name) gets an HTTP error.

use super::body::from_value;
use super::openai::message_pairs;
use super::sampling::add_chat_stops;
use super::{blocking, submit, usage, FromJson, JsonBody, SamplingFields};
use crate::server::chat::Message;
use crate::server::error::{ApiError, ApiResult};
use crate::server::generate::{self, Finish, Outcome, Piece, Sampling};
use crate::server::scheduler::CancelOnDrop;
use crate::server::states::{check_name, Reservation, RESET_DURING_RUN};
use crate::server::{sse, App, Loaded};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, serde::Deserialize)]
pub struct ExecuteRequest {
    pub exec_id: String,
    pub state_name: String,
    #[serde(default)]
    pub new_state_name: Option<String>,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub messages: Option<Vec<Message>>,
    /// `max_tokens`, `temperature`, `top_p`, `seed`, `stop` and the
    /// grammar fields, read from the same object.
    #[serde(skip)]
    pub sampling: SamplingFields,
    #[serde(default)]
    pub stream: Option<bool>,
}

impl FromJson for ExecuteRequest {
    const STRICT: bool = true;
    fn read_parts(&mut self, whole: &Value) -> ApiResult<()> {
        self.sampling = from_value(whole)?;
        Ok(())
    }
    fn known_fields() -> Option<Vec<&'static str>> {
        super::fields::with_part::<Self, SamplingFields>()
    }
}

/// Execution ids: 1-128 of `A-Z a-z 0-9 _ - . :`.
fn check_exec_id(id: &str) -> ApiResult<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(
            "exec_id",
            "exec_id must be 1-128 characters of A-Z a-z 0-9 _ - . :",
        ))
    }
}

/// Removes an execution from the running list when dropped (finished,
/// refused, or skipped in the queue).
struct Registered {
    loaded: Arc<Loaded>,
    id: String,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut m) = self.loaded.executions.lock() {
            m.remove(&self.id);
        }
    }
}

fn result(
    exec_id: &str,
    out: Option<&Outcome>,
    state: Option<&str>,
    error: Option<Value>,
) -> Value {
    json!({
        "exec_id": exec_id,
        "output": out.map_or("", |o| o.text.as_str()),
        "state_name": state,
        "error": error,
        "finish_reason": out.map(|o| match o.finish {
            Finish::Grammar => "grammar",
            f => f.reason(),
        }),
        "usage": out.map_or(usage(0, 0), |o| usage(o.prompt_tokens, o.completion_tokens)),
    })
}

fn fault(ename: &str, evalue: impl Into<String>) -> Value {
    json!({"ename": ename, "evalue": evalue.into()})
}

/// What an execution runs once it has a sequence.
struct ExecJob {
    state_name: String,
    new_name: String,
    reservation: Reservation,
    prompt: Vec<u32>,
    sampling: Sampling,
}

/// The job's side: restore, generate, store on success.
fn execute_on(
    e: &mut crate::engine::Engine,
    loaded: &Loaded,
    job: ExecJob,
    cancel: &Arc<AtomicBool>,
    emit: &mut dyn FnMut(Piece) -> bool,
) -> (Option<Outcome>, Option<String>, Option<Value>) {
    let ExecJob {
        state_name,
        new_name,
        reservation,
        prompt,
        sampling,
    } = job;
    let (state_name, new_name, prompt, s) =
        (state_name.as_str(), new_name.as_str(), &prompt, &sampling);
    if cancel.load(Ordering::Relaxed) {
        // Interrupted (or overtaken by a reset) while it waited.
        let why = if reservation.is_stale() {
            RESET_DURING_RUN
        } else {
            "the execution was interrupted before it started; nothing was stored"
        };
        let out = Outcome::cancelled(prompt.len());
        return (Some(out), None, Some(fault("Interrupted", why)));
    }
    let state = match loaded.states.get(state_name) {
        Ok(s) => s,
        Err(err) => return (None, None, Some(fault("StateNotFound", err.message))),
    };
    if let Err(err) = e.restore_state(&state) {
        return (None, None, Some(fault("StateError", err.to_string())));
    }
    let out = match generate::run(e, prompt, s, cancel, emit) {
        Ok(o) => o,
        Err(err) => return (None, None, Some(fault("EngineError", err.to_string()))),
    };
    // `Engine::commit_state`'s rule: only a run that reached its natural
    // end (EOS, a stop, the length limit) makes a state.
    let success = out.stop.is_some_and(|r| r.is_success());
    if !success && out.finish == Finish::Grammar {
        // Not a success (the engine's `StopReason::is_success`): no state.
        return (
            Some(out),
            None,
            Some(fault(
                "GrammarStop",
                "the grammar allowed no next token; the output is incomplete and no state was stored",
            )),
        );
    }
    if !success {
        let why = if reservation.is_stale() {
            RESET_DURING_RUN
        } else {
            "the execution was interrupted; nothing was stored"
        };
        return (Some(out), None, Some(fault("Interrupted", why)));
    }
    let stale = reservation.is_stale();
    let stored = e
        .capture()
        .map_err(ApiError::from)
        .and_then(|st| reservation.commit(e, st));
    match stored {
        Ok(()) => (Some(out), Some(new_name.to_string()), None),
        Err(err) if stale || err.message == RESET_DURING_RUN => {
            (Some(out), None, Some(fault("StateReset", err.message)))
        }
        Err(err) => (Some(out), None, Some(fault("StateWriteError", err.message))),
    }
}

pub async fn execute(
    State(app): State<Arc<App>>,
    JsonBody(req): JsonBody<ExecuteRequest>,
) -> ApiResult<Response> {
    app.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let loaded = app.ready()?;
    check_exec_id(&req.exec_id)?;
    check_name("state_name", &req.state_name)?;
    let new_name = match req.new_state_name {
        Some(n) => {
            check_name("new_state_name", &n)?;
            n
        }
        None => format!("s{:016x}", generate::random_seed()),
    };
    let info = loaded.states.info(&req.state_name)?;
    let bos = info.tokens_count == 0;
    let (prompt, chat) = match (req.prompt, &req.messages) {
        (Some(text), None) => {
            let tok = loaded.tokenizer.clone();
            let ids = blocking(move || {
                let mut ids = tok.encode(&text, false, true);
                if bos && tok.add_bos {
                    ids.splice(0..0, tok.bos);
                }
                ids
            })
            .await?;
            (ids, false)
        }
        (None, Some(msgs)) => {
            // Rendered as the chat format renders the whole conversation:
            // the state's last turn closed first if it is not.
            let pairs = message_pairs(msgs)?;
            let (l, name) = (loaded.clone(), req.state_name.clone());
            let ids = blocking(move || {
                let context = l.states.get(&name)?;
                Ok::<_, ApiError>(l.chat.continuation(&l.tokenizer, &context.tokens, &pairs))
            })
            .await??;
            (ids, true)
        }
        _ => return Err(ApiError::invalid("give either prompt or messages")),
    };
    let mut sampling = req
        .sampling
        .into_sampling(loaded.n_ctx, info.tokens_count, prompt.len(), None)
        .await
        .map_err(|e| e.param_renamed("prompt", if chat { "messages" } else { "prompt" }))?;
    if chat {
        add_chat_stops(&mut sampling, &loaded);
    }
    // Seed 001's continuation: with no seed the restored state's RNG goes
    // on, so `a` (seed s, n tokens) then `a -> b` (no seed, m tokens)
    // samples what one run of n + m tokens from seed s does.
    sampling.continue_rng = true;
    let prompt_len = prompt.len();
    let cancel = Arc::new(AtomicBool::new(false));
    // Reserved and registered under the executions lock, which `reset`
    // holds while it interrupts the running executions and resets the
    // store: an execution is either interrupted by a reset or starts after
    // it, never slips between.
    let reservation = {
        let mut running = loaded
            .executions
            .lock()
            .map_err(|_| ApiError::internal("executions lock poisoned"))?;
        if running.contains_key(&req.exec_id) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "invalid_request_error",
                format!("execution {:?} is already running", req.exec_id),
            ));
        }
        let reservation = loaded.states.reserve(&new_name)?;
        running.insert(req.exec_id.clone(), cancel.clone());
        reservation
    };
    let registered = Registered {
        loaded: loaded.clone(),
        id: req.exec_id.clone(),
    };
    let exec_id = req.exec_id;
    let job = ExecJob {
        state_name: req.state_name,
        new_name,
        reservation,
        prompt,
        sampling,
    };
    let metrics = app.metrics.clone();
    let flag = cancel.clone();
    let l = loaded.clone();
    if !req.stream.unwrap_or(false) {
        let id = exec_id.clone();
        let rx = submit(&app, &loaded, cancel.clone(), move |e| {
            let _registered = registered;
            let r = execute_on(e, &l, job, &flag, &mut |_| true);
            if let Some(o) = &r.0 {
                metrics.record_run(o);
            }
            result(&id, r.0.as_ref(), r.1.as_deref(), r.2)
        })?;
        let _guard = CancelOnDrop(cancel.clone());
        return match rx.await {
            Ok(v) => Ok(Json(v).into_response()),
            // Skipped in the queue: interrupted before it started.
            Err(_) if cancel.load(Ordering::Relaxed) => Ok(Json(result(
                &exec_id,
                Some(&Outcome::cancelled(prompt_len)),
                None,
                Some(fault(
                    "Interrupted",
                    "the execution was interrupted (POST /interrupt or /reset) while it waited \
                     for a sequence, before it started; nothing was stored",
                )),
            ))
            .into_response()),
            Err(_) => Err(ApiError::internal(
                "the sequence running the request stopped",
            )),
        };
    }
    // Streaming: the job is skipped only when the client is gone; an
    // interrupt that lands before it starts still answers with the result.
    let gone = Arc::new(AtomicBool::new(false));
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    submit(&app, &loaded, gone.clone(), move |e| {
        let _registered = registered;
        let mut emit = |p: Piece| {
            tx.blocking_send(sse::event(&json!({"exec_id": exec_id, "output": p.text})))
                .is_ok()
        };
        let r = execute_on(e, &l, job, &flag, &mut emit);
        if let Some(o) = &r.0 {
            metrics.record_run(o);
        }
        let _ = tx.blocking_send(sse::event(&result(
            &exec_id,
            r.0.as_ref(),
            r.1.as_deref(),
            r.2,
        )));
        let _ = tx.blocking_send(sse::DONE.into());
    })?;
    Ok(sse::response(rx, gone))
}

pub async fn list(State(app): State<Arc<App>>) -> ApiResult<Json<Value>> {
    app.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let loaded = app.ready()?;
    Ok(Json(json!({"states": loaded.states.list()?})))
}

/// Tokens of the text tail in `GET /states/{name}`.
const TAIL_TOKENS: usize = 64;

/// The `{name}` of `/states/{name}`; one that is not UTF-8 once decoded
/// is a 400 naming `name` (axum's own rejection is plain text).
pub struct StateName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for StateName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(name)) => Ok(StateName(name)),
            Err(e) => Err(ApiError::bad("name", e.body_text())),
        }
    }
}

pub async fn get(
    State(app): State<Arc<App>>,
    StateName(name): StateName,
) -> ApiResult<Json<Value>> {
    app.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let loaded = app.ready()?;
    check_name("name", &name)?;
    let info = loaded.states.info(&name)?;
    let l = loaded.clone();
    let tail = blocking(move || {
        let st = l.states.get(&name)?;
        let from = st.tokens.len().saturating_sub(TAIL_TOKENS);
        Ok::<_, ApiError>(l.tokenizer.decode(&st.tokens[from..], false))
    })
    .await??;
    Ok(Json(json!({
        "name": info.name,
        "tokens_count": info.tokens_count,
        "created": info.created,
        "text_tail": tail,
    })))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    StateName(name): StateName,
) -> ApiResult<Json<Value>> {
    app.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let loaded = app.ready()?;
    check_name("name", &name)?;
    let l = loaded.clone();
    let n = name.clone();
    blocking(move || l.states.delete(&n)).await??;
    Ok(Json(json!({"deleted": name})))
}

/// Interrupts every running or queued execution (they store nothing:
/// their reservations predate the reset) and deletes every state but
/// `initial`.
pub async fn reset(State(app): State<Arc<App>>) -> ApiResult<Json<Value>> {
    app.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let loaded = app.ready()?;
    let l = loaded.clone();
    let (deleted, interrupted) = blocking(move || {
        let running = l
            .executions
            .lock()
            .map_err(|_| ApiError::internal("executions lock poisoned"))?;
        for flag in running.values() {
            flag.store(true, Ordering::Relaxed);
        }
        Ok::<_, ApiError>((l.states.reset()?, running.len()))
    })
    .await??;
    Ok(Json(
        json!({"status": "ok", "deleted": deleted, "interrupted": interrupted}),
    ))
}

#[derive(Debug, serde::Deserialize)]
pub struct InterruptRequest {
    pub exec_id: String,
}

impl FromJson for InterruptRequest {
    const STRICT: bool = true;
}

pub async fn interrupt(
    State(app): State<Arc<App>>,
    JsonBody(req): JsonBody<InterruptRequest>,
) -> ApiResult<Json<Value>> {
    app.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let loaded = app.ready()?;
    check_exec_id(&req.exec_id)?;
    let found = loaded
        .executions
        .lock()
        .map_err(|_| ApiError::internal("executions lock poisoned"))?
        .get(&req.exec_id)
        .map(|c| c.store(true, Ordering::Relaxed))
        .is_some();
    Ok(Json(json!({"interrupted": found})))
}
