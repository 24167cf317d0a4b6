//! `POST /v1/completions` and `POST /v1/chat/completions`, non-streaming
//! JSON or `stream: true` Server-Sent Events ending in `data: [DONE]`.

use super::body::from_value;
use super::fields::with_part;
use super::misc::check_ids;
use super::sampling::add_chat_stops;
use super::{blocking, now, request_id, submit, usage, wait, FromJson, JsonBody, SamplingFields};
use crate::engine::Engine;
use crate::server::cache::PrefixCache;
use crate::server::chat::{ChatFormat, Message};
use crate::server::error::{ApiError, ApiResult};
use crate::server::generate::{self, Finish, Outcome, Piece, Sampling, TokenInfo};
use crate::server::{sse, App, Loaded};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Fields shared by both routes (OpenAI names; unknown fields are ignored
/// as OpenAI clients send many).
#[derive(Debug, Default, serde::Deserialize)]
pub struct Common {
    /// `max_tokens`, `temperature`, `top_p`, `seed`, `stop` and the
    /// grammar fields, read from the same object.
    #[serde(skip)]
    pub sampling: SamplingFields,
    /// OpenAI's newer name for `max_tokens`; wins when both are given.
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub n: Option<u64>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// A completions prompt: text, token ids, or a list of one text.
#[derive(Debug, serde::Deserialize)]
#[serde(
    untagged,
    expecting = "a string, a list of token ids, or a list of one string"
)]
pub enum PromptInput {
    Text(String),
    Tokens(Vec<u64>),
    Texts(Vec<String>),
}

impl FromJson for Common {
    fn read_parts(&mut self, whole: &Value) -> ApiResult<()> {
        self.sampling = from_value(whole)?;
        Ok(())
    }
    fn known_fields() -> Option<Vec<&'static str>> {
        with_part::<Self, SamplingFields>()
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct CompletionRequest {
    pub prompt: PromptInput,
    /// Read from the same object.
    #[serde(skip)]
    pub common: Common,
    #[serde(default)]
    pub logprobs: Option<u64>,
}

#[derive(Debug, serde::Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    /// Read from the same object.
    #[serde(skip)]
    pub common: Common,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<u64>,
}

impl FromJson for CompletionRequest {
    fn read_parts(&mut self, whole: &Value) -> ApiResult<()> {
        self.common = from_value(whole)?;
        Ok(())
    }
    fn known_fields() -> Option<Vec<&'static str>> {
        with_part::<Self, Common>()
    }
}

impl FromJson for ChatRequest {
    fn read_parts(&mut self, whole: &Value) -> ApiResult<()> {
        self.common = from_value(whole)?;
        Ok(())
    }
    fn known_fields() -> Option<Vec<&'static str>> {
        with_part::<Self, Common>()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Completion,
    Chat,
}

/// Builds the JSON of answers and chunks.
struct Format {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    /// Text offset of the next completion token (completions' logprobs),
    /// in characters of the text completed so far.
    offset: usize,
    /// Bytes of a character the tokens so far have begun but not ended.
    partial: Vec<u8>,
}

impl Format {
    fn logprobs(&mut self, tokens: &[TokenInfo]) -> Value {
        match self.kind {
            Kind::Completion => {
                // Where each token's text starts in `text`, in characters
                // as OpenAI counts string positions.
                let bytes: Vec<&[u8]> = tokens.iter().map(|t| t.bytes.as_slice()).collect();
                let (rel, done) = generate::token_offsets(&mut self.partial, &bytes);
                let offsets: Vec<usize> = rel.iter().map(|o| self.offset + o).collect();
                self.offset += done;
                json!({
                    "tokens": tokens.iter().map(|t| &t.text).collect::<Vec<_>>(),
                    "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
                    "top_logprobs": tokens.iter().map(|t| {
                        // Best first (the map keeps insertion order). Texts
                        // can repeat (several ids decode alike): keep the
                        // first of each. As OpenAI's legacy API, the
                        // sampled token is always there: up to k + 1
                        // entries, and `logprobs: 0` gives just it.
                        let mut m = serde_json::Map::new();
                        for (s, l) in &t.top {
                            m.entry(s.clone()).or_insert(json!(l));
                        }
                        m.entry(t.text.clone()).or_insert(json!(t.logprob));
                        m
                    }).collect::<Vec<_>>(),
                    "text_offset": offsets,
                })
            }
            Kind::Chat => json!({"content": tokens.iter().map(|t| json!({
                "token": t.text,
                "logprob": t.logprob,
                "bytes": t.bytes,
                "top_logprobs": t.top.iter().map(|(s, l)| json!({
                    "token": s, "logprob": l, "bytes": s.as_bytes(),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>()}),
        }
    }

    fn choice(
        &mut self,
        text: &str,
        tokens: Option<&[TokenInfo]>,
        finish: Option<Finish>,
        delta: bool,
    ) -> Value {
        let logprobs = tokens.map_or(Value::Null, |t| self.logprobs(t));
        let finish = finish.map(|f| f.reason());
        match (self.kind, delta) {
            (Kind::Completion, _) => json!({
                "index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish,
            }),
            (Kind::Chat, false) => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": logprobs,
                "finish_reason": finish,
            }),
            (Kind::Chat, true) => {
                let delta = if finish.is_some() && text.is_empty() {
                    json!({})
                } else {
                    json!({"content": text})
                };
                json!({"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
            }
        }
    }

    fn object(&self, choices: Vec<Value>, usage: Option<Value>, chunk: bool) -> Value {
        let object = match (self.kind, chunk) {
            (Kind::Completion, _) => "text_completion",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
        };
        let mut v = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": choices,
        });
        if let Some(u) = usage {
            v["usage"] = u;
        }
        v
    }

    fn full(&mut self, out: &Outcome, want_logprobs: bool) -> Value {
        let tokens = want_logprobs.then_some(out.tokens.as_slice());
        let choice = self.choice(&out.text, tokens, Some(out.finish), false);
        self.object(vec![choice], Some(cached_usage(out)), false)
    }

    fn chunk(&mut self, p: &Piece, want_logprobs: bool) -> Value {
        let tokens = want_logprobs.then_some(p.tokens.as_slice());
        let choice = self.choice(&p.text, tokens, None, true);
        self.object(vec![choice], None, true)
    }
}

/// What both routes do once the prompt is tokens.
struct Plan {
    kind: Kind,
    prompt: Vec<u32>,
    sampling: Sampling,
    stream: bool,
    include_usage: bool,
}

impl Plan {
    /// Checks the shared fields (`n`, then the sampling fields) and plans
    /// the run of `prompt`; a chat prompt also stops at the chat format's
    /// end markers.
    async fn new(
        kind: Kind,
        loaded: &Loaded,
        common: Common,
        prompt: Vec<u32>,
        logprobs: Option<usize>,
    ) -> ApiResult<Plan> {
        if common.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad("n", "only n = 1 is supported"));
        }
        let mut fields = common.sampling;
        fields.max_tokens = common.max_completion_tokens.or(fields.max_tokens);
        let prompt_field = if kind == Kind::Chat {
            "messages"
        } else {
            "prompt"
        };
        let mut sampling = fields
            .into_sampling(loaded.n_ctx, 0, prompt.len(), logprobs)
            .await
            .map_err(|e| e.param_renamed("prompt", prompt_field))?;
        if kind == Kind::Chat {
            add_chat_stops(&mut sampling, loaded);
        }
        Ok(Plan {
            kind,
            prompt,
            sampling,
            stream: common.stream.unwrap_or(false),
            include_usage: common.stream_options.is_some_and(|o| o.include_usage),
        })
    }
}

pub async fn completions(
    State(app): State<Arc<App>>,
    JsonBody(req): JsonBody<CompletionRequest>,
) -> ApiResult<Response> {
    app.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let loaded = app.ready()?;
    let logprobs = match req.logprobs {
        Some(n) if n > 5 => {
            return Err(ApiError::bad(
                "logprobs",
                format!("logprobs = {n} exceeds 5"),
            ))
        }
        n => n.map(|n| n as usize),
    };
    let prompt = match req.prompt {
        PromptInput::Tokens(ids) => check_ids(&ids, loaded.n_vocab, "prompt")?,
        PromptInput::Text(text) => tokenize_prompt(&loaded, text).await?,
        PromptInput::Texts(mut v) if v.len() == 1 => tokenize_prompt(&loaded, v.remove(0)).await?,
        PromptInput::Texts(v) => {
            return Err(ApiError::bad(
                "prompt",
                format!("a list of {} prompts; one is supported", v.len()),
            ))
        }
    };
    let plan = Plan::new(Kind::Completion, &loaded, req.common, prompt, logprobs).await?;
    run(app, loaded, plan).await
}

async fn tokenize_prompt(loaded: &Loaded, text: String) -> ApiResult<Vec<u32>> {
    let tok = loaded.tokenizer.clone();
    blocking(move || {
        let mut ids = tok.encode(&text, false, true);
        if tok.add_bos {
            if let Some(b) = tok.bos {
                ids.insert(0, b);
            }
        }
        ids
    })
    .await
}

/// Messages as (role, text) pairs, roles checked.
pub fn message_pairs(messages: &[Message]) -> ApiResult<Vec<(String, String)>> {
    if messages.is_empty() {
        return Err(ApiError::bad("messages", "messages is empty"));
    }
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if !matches!(
                m.role.as_str(),
                "system" | "developer" | "user" | "assistant"
            ) {
                return Err(ApiError::bad(
                    format!("messages[{i}].role"),
                    format!(
                        "messages[{i}].role = {:?}: expected system, developer, user or assistant",
                        m.role
                    ),
                ));
            }
            let role = if m.role == "developer" {
                "system"
            } else {
                m.role.as_str()
            };
            let text = m.content.text().map_err(|(at, e)| {
                let param = format!("messages[{i}].content{at}");
                ApiError::bad(param.clone(), format!("{param}: {e}"))
            })?;
            Ok((role.to_string(), text))
        })
        .collect()
}

/// Chat prompt tokens, off the async threads.
pub async fn chat_tokens(
    loaded: &Loaded,
    pairs: Vec<(String, String)>,
    bos: bool,
) -> ApiResult<Vec<u32>> {
    let tok = loaded.tokenizer.clone();
    let format: ChatFormat = loaded.chat;
    blocking(move || format.tokens(&tok, &pairs, bos)).await
}

pub async fn chat_completions(
    State(app): State<Arc<App>>,
    JsonBody(req): JsonBody<ChatRequest>,
) -> ApiResult<Response> {
    app.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let loaded = app.ready()?;
    let pairs = message_pairs(&req.messages)?;
    let logprobs = match (req.logprobs.unwrap_or(false), req.top_logprobs) {
        (_, Some(n)) if n > 20 => {
            return Err(ApiError::bad(
                "top_logprobs",
                format!("top_logprobs = {n} exceeds 20"),
            ))
        }
        (true, n) => Some(n.unwrap_or(0) as usize),
        (false, Some(_)) => {
            return Err(ApiError::bad(
                "top_logprobs",
                "top_logprobs needs logprobs: true",
            ))
        }
        (false, None) => None,
    };
    let prompt = chat_tokens(&loaded, pairs, true).await?;
    let plan = Plan::new(Kind::Chat, &loaded, req.common, prompt, logprobs).await?;
    run(app, loaded, plan).await
}

/// `usage` with OpenAI's `prompt_tokens_details.cached_tokens`.
fn cached_usage(o: &Outcome) -> Value {
    let mut u = usage(o.prompt_tokens, o.completion_tokens);
    u["prompt_tokens_details"] = json!({"cached_tokens": o.cached_tokens});
    u
}

/// Runs a plan's generation on a sequence from the longest cached prefix
/// of its prompt, and caches the context it leaves (unless cancelled).
fn run_cached(
    cache: &PrefixCache,
    e: &mut Engine,
    plan: &Plan,
    cancel: &Arc<AtomicBool>,
    emit: &mut dyn FnMut(Piece) -> bool,
) -> crate::Result<Outcome> {
    let reused = cache.prepare(e, &plan.prompt);
    let mut out = generate::run(e, &plan.prompt[reused..], &plan.sampling, cancel, emit)?;
    out.prompt_tokens += reused;
    out.cached_tokens = reused;
    // The prompt's rows came from a prefill of two or more tokens (one
    // token is computed the way decoding is: not cached, see `cache`).
    if out.finish != Finish::Cancelled && plan.prompt.len() - reused >= 2 {
        cache.store(e, plan.prompt.len());
    }
    Ok(out)
}

/// Runs a plan on a fresh context of a sequence.
async fn run(app: Arc<App>, loaded: Arc<Loaded>, plan: Plan) -> ApiResult<Response> {
    let mut format = Format {
        kind: plan.kind,
        id: request_id(if plan.kind == Kind::Chat {
            "chatcmpl"
        } else {
            "cmpl"
        }),
        created: now(),
        model: app.model_id.clone(),
        offset: 0,
        partial: Vec::new(),
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let metrics = app.metrics.clone();
    let want_logprobs = plan.sampling.logprobs.is_some();
    if !plan.stream {
        let flag = cancel.clone();
        let cache = loaded.cache.clone();
        let rx = submit(&app, &loaded, cancel.clone(), move |e| {
            let out = run_cached(&cache, e, &plan, &flag, &mut |_| true);
            if let Ok(o) = &out {
                metrics.record_run(o);
            }
            out
        })?;
        let out = wait(cancel, rx).await?.map_err(ApiError::from)?;
        return Ok(Json(format.full(&out, want_logprobs)).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let flag = cancel.clone();
    let cache = loaded.cache.clone();
    submit(&app, &loaded, cancel.clone(), move |e| {
        if tx.is_closed() {
            return;
        }
        if format.kind == Kind::Chat {
            let first = format.object(
                vec![json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null})],
                None,
                true,
            );
            if tx.blocking_send(sse::event(&first)).is_err() {
                return;
            }
        }
        let mut emit = |p: Piece| {
            tx.blocking_send(sse::event(&format.chunk(&p, want_logprobs)))
                .is_ok()
        };
        let out = run_cached(&cache, e, &plan, &flag, &mut emit);
        match out {
            Ok(o) => {
                metrics.record_run(&o);
                if o.finish == Finish::Cancelled {
                    return;
                }
                let last = format.choice("", None, Some(o.finish), true);
                let _ = tx.blocking_send(sse::event(&format.object(vec![last], None, true)));
                if plan.include_usage {
                    let u = format.object(Vec::new(), Some(cached_usage(&o)), true);
                    let _ = tx.blocking_send(sse::event(&u));
                }
                let _ = tx.blocking_send(sse::DONE.into());
            }
            Err(err) => {
                let _ = tx.blocking_send(sse::event(&ApiError::from(err).body()));
            }
        }
    })?;
    Ok(sse::response(rx, cancel))
}
