//! A CPU inference engine for Llama / Mistral / Qwen2 models stored in
//! `.zt` (converted from GGUF) or read from GGUF through the same reader.
//! Weights are used in place from the memory map; quantized blocks are
//! computed straight from their stored bytes.
//!
//! Laid out by concept, data flowing one way: `arch` (one file per model
//! family) → `attention`, `matmul`, `ops` → `kernels` (SIMD with scalar
//! twins, one table chosen at start-up) and `quant` (block formats and
//! scalar decoders) → `kv` (the cache). `weights` binds each tensor to its
//! bytes at load; `sampler`, `snapshot` and `tokenizer` serve the
//! [`Engine`] below.

pub mod arch;
mod attention;
mod batch;
mod batcher;
pub mod chat;
mod constrained;
mod generation;
pub mod grammar;
pub(crate) mod kernels;
pub mod kv;
mod matmul;
pub mod ops;
pub mod profile;
pub mod quant;
pub mod sampler;
pub mod snapshot;
mod snapshot_grammar;
mod states;
pub mod tokenizer;
pub mod weights;

use crate::error::{Error, Result};
use crate::reader::Reader;
pub use arch::{Config, Model};
pub use batcher::{BatchStats, Batcher, GATHER};
pub use constrained::{GrammarSpec, SavedGrammar};
use generation::stop_prefix_len;
pub use generation::{CancelHandle, GenerateParams, Generation, StopReason, Token};
pub use kernels::kernel_name;
pub use kv::{KvCache, KvRows, KvType};
pub use matmul::dequant_row;
pub use quant::WeightType;
pub use sampler::{Rng, SamplerConfig};
pub use snapshot::{SnapshotInfo, State};
pub use states::{valid_state_name, MAX_STATE_NAME};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
pub use tokenizer::Tokenizer;

/// Most worker threads an engine's pool may have (`EngineOptions::n_threads`);
/// more is a usage error instead of a pool that exhausts the process.
pub const MAX_THREADS: usize = 1024;

/// How to set an engine up.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Context length (0: the model's training context, at most 4096).
    pub n_ctx: usize,
    /// Worker threads (0: all cores).
    pub n_threads: usize,
    pub kv_type: KvType,
    pub seed: u64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            n_ctx: 0,
            n_threads: 0,
            kv_type: KvType::F16,
            seed: 0,
        }
    }
}

/// The most prompt tokens run in one forward pass. A longer prompt is
/// prefilled in chunks of this size (as llama.cpp's `n_batch`), which
/// bounds the scratch memory and lets a cancel stop a long prefill.
pub const PREFILL_CHUNK: usize = 512;

/// A model with its context: tokens, KV cache, last logits and RNG.
///
/// Its state is private: the tokens and the KV rows only change together,
/// through [`Engine::eval`], generation, restore and reset.
pub struct Engine {
    /// Shared (read-only) with the engine's forks.
    model: Arc<Model>,
    tokenizer: Arc<Tokenizer>,
    cache: KvCache,
    scratch: arch::Scratch,
    /// Shared with the engine's forks.
    pool: Arc<rayon::ThreadPool>,
    /// Every token in the context, in order.
    tokens: Vec<u32>,
    /// Logits after the last token (empty before the first eval).
    last_logits: Vec<f32>,
    rng: Rng,
    /// The sampler settings of the last generation (kept in snapshots).
    sampler: SamplerConfig,
    n_threads: usize,
    /// Tokens that end a generation: EOS and the chat end-of-turn marker
    /// of the vocabulary (Gemma's `<end_of_turn>`), as llama.cpp's
    /// end-of-generation set.
    eog: Vec<u32>,
    /// Named immutable states (see [`Engine::save_state`]).
    states: BTreeMap<String, Arc<State>>,
    work: sampler::SampleScratch,
    /// Token masks by grammar, shared with forks.
    masks: constrained::MaskCache,
    /// The grammar of the current generation, if any.
    grammar: Option<constrained::ActiveGrammar>,
    /// Where decode steps go when several sequences decode together.
    batcher: Option<Batcher>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("arch", &self.model.config.arch)
            .field("n_ctx", &self.cache.n_ctx)
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl Engine {
    /// Opens a `.zt` or GGUF model.
    /// The path is resolved (absolute, symlinks followed) first, so that
    /// snapshots record where the model really is.
    pub fn open(path: impl AsRef<Path>, options: EngineOptions) -> Result<Engine> {
        Engine::from_reader(Reader::open(resolve_path(path.as_ref()))?, options)
    }

    pub fn from_reader(reader: Reader, options: EngineOptions) -> Result<Engine> {
        let model = Arc::new(Model::load(reader)?);
        let attrs = model
            .reader
            .attributes()
            .ok_or_else(|| Error::Unsupported("the file has no model metadata".into()))?;
        let tokenizer = Arc::new(Tokenizer::from_attributes(attrs)?);
        let c = &model.config;
        if tokenizer.n_vocab() != c.n_vocab {
            return Err(Error::Unsupported(format!(
                "tokenizer has {} tokens, the model {}",
                tokenizer.n_vocab(),
                c.n_vocab
            )));
        }
        Engine::with_parts(model, tokenizer, &options, None)
    }

    /// An engine with an empty context over a loaded model and tokenizer
    /// (shared, not copied), on `pool` when given (a fork shares its
    /// parent's) or on a new pool of `options.n_threads`.
    fn with_parts(
        model: Arc<Model>,
        tokenizer: Arc<Tokenizer>,
        options: &EngineOptions,
        pool: Option<Arc<rayon::ThreadPool>>,
    ) -> Result<Engine> {
        let c = &model.config;
        let n_ctx = match options.n_ctx {
            0 => c.n_ctx_train.min(4096),
            n => n,
        };
        let cache = KvCache::new(c.n_layer, n_ctx, c.kv_dim(), options.kv_type)?;
        let n_threads = match options.n_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n if n > MAX_THREADS => {
                return Err(Error::usage(format!(
                    "n_threads {n} is over the limit of {MAX_THREADS} worker threads"
                )))
            }
            n => n,
        };
        let pool = match pool {
            Some(p) => p,
            None => Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n_threads)
                    .build()
                    .map_err(|e| Error::usage(format!("thread pool: {e}")))?,
            ),
        };
        let eog = tokenizer.end_of_generation();
        Ok(Engine {
            eog,
            model,
            tokenizer,
            cache,
            scratch: arch::Scratch::default(),
            pool,
            tokens: Vec::new(),
            last_logits: Vec::new(),
            rng: Rng::seed(options.seed),
            sampler: SamplerConfig::default(),
            n_threads,
            states: BTreeMap::new(),
            work: sampler::SampleScratch::default(),
            masks: constrained::MaskCache::default(),
            grammar: None,
            batcher: None,
        })
    }

    /// The options this engine was made with (its seed is not kept: the
    /// RNG's live state is).
    pub fn options(&self) -> EngineOptions {
        EngineOptions {
            n_ctx: self.cache.n_ctx,
            n_threads: self.n_threads,
            kv_type: self.cache.kind(),
            seed: 0,
        }
    }

    /// The context as an immutable state: used KV rows, tokens, last
    /// logits, sampler settings and the RNG's live state.
    pub fn capture(&self) -> Result<State> {
        Ok(State {
            tokens: self.tokens.clone(),
            kv: self.cache.export(self.tokens.len())?,
            last_logits: self.last_logits.clone(),
            rng: self.rng.state,
            sampler: self.sampler.clone(),
            created: snapshot::unix_now(),
            grammar: self.grammar.as_ref().map(constrained::SavedGrammar::of),
        })
    }

    /// Replaces the context with `state`, after checking it fits this
    /// engine (on any error the engine is unchanged). A state saved under a
    /// grammar brings it back with its parser state: a generation with an
    /// empty prompt under the same grammar continues it.
    pub fn restore_state(&mut self, state: &State) -> Result<()> {
        snapshot::check_state(self, state)?;
        let grammar = match &state.grammar {
            None => None,
            Some(saved) => Some(constrained::ActiveGrammar::resume(
                &self.masks,
                saved,
                &self.tokenizer,
                self.model.config.n_vocab,
                &self.eog,
            )?),
        };
        self.cache.import(&state.kv, state.tokens.len())?;
        self.tokens.clone_from(&state.tokens);
        self.last_logits.clone_from(&state.last_logits);
        self.rng.state = state.rng;
        self.sampler = state.sampler.clone();
        self.grammar = grammar;
        Ok(())
    }

    /// A new, independent engine continuing from state `name` (or from the
    /// current context when `None`). It shares this engine's mapped
    /// weights, tokenizer and thread pool, has its own KV cache, and
    /// starts with the same stored states.
    pub fn fork(&self, name: Option<&str>) -> Result<Engine> {
        let st = match name {
            Some(n) => self.state(n)?,
            None => Arc::new(self.capture()?),
        };
        let mut e = Engine::with_parts(
            self.model.clone(),
            self.tokenizer.clone(),
            &self.options(),
            Some(self.pool.clone()),
        )?;
        e.states = self.states.clone();
        e.masks = self.masks.clone();
        // The state carries the grammar and its parser state: the fork
        // continues from a copy of its own.
        e.restore_state(&st)?;
        Ok(e)
    }

    pub fn n_ctx(&self) -> usize {
        self.cache.n_ctx
    }

    /// The loaded model (shared with forks).
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn config(&self) -> &Config {
        &self.model.config
    }

    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    /// Every token in the context, in order.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Logits after the last token (empty before the first eval).
    pub fn last_logits(&self) -> &[f32] {
        &self.last_logits
    }

    /// Element type of the KV cache.
    pub fn kv_type(&self) -> KvType {
        self.cache.kind()
    }

    /// Worker threads of the engine's pool.
    pub fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// The RNG's live state (kept in snapshots).
    pub fn rng_state(&self) -> [u64; 4] {
        self.rng.state
    }

    /// The sampler settings of the last generation.
    pub fn sampler(&self) -> &SamplerConfig {
        &self.sampler
    }

    /// Tokenizes; `add_bos: None` follows the model's own setting.
    /// `parse_special` lets control tokens written in `text` (`<|im_end|>`)
    /// become those tokens — use it for template text, never for what a
    /// user typed (see [`Tokenizer::encode_pieces`] for mixing the two).
    pub fn tokenize(&self, text: &str, add_bos: Option<bool>, parse_special: bool) -> Vec<u32> {
        let mut ids = self.tokenizer.encode(text, false, parse_special);
        if add_bos.unwrap_or(self.tokenizer.add_bos) {
            if let Some(b) = self.tokenizer.bos {
                ids.insert(0, b);
            }
        }
        ids
    }

    pub fn detokenize(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, false)
    }

    /// Appends `tokens` to the context and returns the logits of every new
    /// position (`tokens.len() × n_vocab`, row-major).
    pub fn eval(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let mut logits = Vec::new();
        self.forward(tokens, true, &mut logits)?;
        let v = self.model.config.n_vocab;
        if let Some(last) = logits.len().checked_sub(v) {
            self.last_logits.clear();
            self.last_logits.extend_from_slice(&logits[last..]);
        }
        Ok(logits)
    }

    /// Switches the per-op profile on or off (see [`profile`]); either way
    /// its totals start again. Off by default.
    pub fn set_profiling(&mut self, on: bool) {
        self.scratch.prof.set(on);
    }

    /// The time per op of this engine's own forward passes and sampling
    /// since [`Engine::set_profiling`] (batched decode steps run through the
    /// batcher and are not counted).
    pub fn profile(&self) -> Vec<profile::OpTime> {
        self.scratch.prof.totals()
    }

    /// Appends `tokens` to the context computing only the last position's
    /// logits (left in `last_logits`): a prompt's prefill, without the LM
    /// head for every position.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<()> {
        self.run(tokens)
    }

    /// Runs `tokens`, leaving the last position's logits in `last_logits`.
    fn run(&mut self, tokens: &[u32]) -> Result<()> {
        let mut last = std::mem::take(&mut self.last_logits);
        let result = self.forward(tokens, false, &mut last);
        self.last_logits = last;
        result
    }

    /// Runs `tokens` at the end of the context, writing the logits of the
    /// last (or every) new position to `out`; empty `tokens` change nothing.
    fn forward(&mut self, tokens: &[u32], all: bool, out: &mut Vec<f32>) -> Result<()> {
        if tokens.is_empty() {
            return Ok(());
        }
        let pos0 = self.tokens.len();
        let Engine {
            model,
            cache,
            scratch,
            pool,
            ..
        } = self;
        pool.install(|| model.forward(cache, scratch, tokens, pos0, all, out))?;
        self.tokens.extend_from_slice(tokens);
        Ok(())
    }

    /// The GBNF source of the live grammar (the last constrained
    /// generation's, or a restored snapshot's), if any. A generation with
    /// an empty prompt and no grammar of its own continues under it.
    pub fn grammar_source(&self) -> Option<&str> {
        self.grammar
            .as_ref()
            .map(constrained::ActiveGrammar::source)
    }

    /// Drops the live grammar: the next generation with an empty prompt and
    /// no grammar continues the context unconstrained.
    pub fn clear_grammar(&mut self) {
        self.grammar = None;
    }

    /// Forgets the context (the RNG continues).
    pub fn reset(&mut self) {
        self.tokens.clear();
        self.last_logits.clear();
        self.grammar = None;
    }

    /// Starts a generation: reseeds the RNG if asked, then appends
    /// `prompt` to the context (with BOS when the context is empty and the
    /// model adds one; an empty prompt just continues).
    pub fn start(&mut self, prompt: &str, params: &GenerateParams) -> Result<Generation> {
        self.start_with(prompt, params, CancelHandle::default())
    }

    /// [`Engine::start`] stopped by `cancel` (see [`Engine::start_tokens_with`]).
    pub fn start_with(
        &mut self,
        prompt: &str,
        params: &GenerateParams,
        cancel: CancelHandle,
    ) -> Result<Generation> {
        let add_bos = if self.tokens.is_empty() {
            None
        } else {
            Some(false)
        };
        let ids = self.tokenize(prompt, add_bos, true);
        self.start_tokens_with(&ids, params, cancel)
    }

    /// [`Engine::start`] with a prompt already tokenized (chat turns built
    /// from pieces, a server's request): `ids` are appended as given (no
    /// BOS added), then the generation starts.
    pub fn start_tokens(&mut self, ids: &[u32], params: &GenerateParams) -> Result<Generation> {
        self.start_tokens_with(ids, params, CancelHandle::default())
    }

    /// [`Engine::start_tokens`] stopped by `cancel`, which is watched from
    /// the prefill on: between prefill chunks of [`PREFILL_CHUNK`] tokens,
    /// then between tokens. A prefill cancelled part-way keeps the chunks it
    /// finished in the context and returns a generation that ends at once
    /// with [`StopReason::Interrupted`].
    pub fn start_tokens_with(
        &mut self,
        ids: &[u32],
        params: &GenerateParams,
        cancel: CancelHandle,
    ) -> Result<Generation> {
        params.validate()?;
        if let Some(seed) = params.seed {
            self.rng = Rng::seed(seed);
        }
        self.sampler = params.sampler.clone();
        // The seat is held from the prefill on: the prompt's chunks join
        // the batched steps of the other sequences. It is given up while a
        // grammar's mask is built (the others must not wait for that).
        let mut seat = self.take_seat();
        for chunk in ids.chunks(PREFILL_CHUNK) {
            if cancel.is_cancelled() {
                return Ok(Generation {
                    cancel,
                    ..Generation::default()
                });
            }
            self.step_tokens(seat.as_ref(), chunk, true)?;
        }
        if self.last_logits.is_empty() {
            return Err(Error::usage(
                "nothing to continue: the context is empty and the prompt gave no tokens",
            ));
        }
        if params.grammar.is_some() {
            seat = None;
        }
        match &params.grammar {
            // A continuation (no new prompt) keeps the live grammar: output
            // cut off under a grammar (by max_tokens, a snapshot) goes on
            // under it unless the caller cleared it.
            None if ids.is_empty() => {}
            None => self.grammar = None,
            Some(spec) => {
                let source = spec.to_gbnf()?;
                let same = self.grammar.as_ref().is_some_and(|a| a.source() == source);
                if !(same && ids.is_empty()) {
                    let mask = self.masks.get(
                        &source,
                        &self.tokenizer,
                        self.last_logits.len(),
                        &self.eog,
                    )?;
                    self.grammar = Some(constrained::ActiveGrammar::new(mask)?);
                }
            }
        }
        Ok(Generation {
            cancel,
            seat: seat.or_else(|| self.take_seat()),
            ..Generation::default()
        })
    }

    /// Produces the next token of a generation, or `None` when it has
    /// ended. The last token carries the [`StopReason`]: EOS is yielded
    /// (empty text, not added to the context); the token completing a stop
    /// string is yielded with its text cut before the stop string (and
    /// `Generation::text` is cut there too); the `max_tokens`-th token, or
    /// the one filling the context, ends with `Length`. A cancelled
    /// generation ends before its next token with `Interrupted`.
    pub fn next_token(
        &mut self,
        g: &mut Generation,
        params: &GenerateParams,
    ) -> Result<Option<Token>> {
        if g.done {
            return Ok(None);
        }
        if g.cancel.is_cancelled() {
            g.end(StopReason::Interrupted);
            return Ok(None);
        }
        if g.produced >= params.max_tokens || self.tokens.len() >= self.cache.n_ctx {
            g.end(StopReason::Length);
            return Ok(None);
        }
        let t_sample = self.scratch.prof.start();
        let id = match &mut self.grammar {
            None => sampler::sample(
                &params.sampler,
                &self.last_logits,
                &self.tokens,
                &mut self.rng,
                &mut self.work,
            ),
            Some(a) => {
                let mut mask = a
                    .mask
                    .lock()
                    .map_err(|_| Error::usage("grammar mask poisoned"))?;
                match sampler::sample_masked(
                    &params.sampler,
                    &self.last_logits,
                    &self.tokens,
                    &mut self.rng,
                    &mut self.work,
                    &mut mask,
                    a.rec.state(),
                ) {
                    Ok(id) => id,
                    Err(grammar::GrammarError::NoTokenAllowed) => {
                        g.end(StopReason::Grammar);
                        return Ok(None);
                    }
                    Err(e) => return Err(Error::usage(format!("grammar: {e}"))),
                }
            }
        };
        let logprob = sampler::logprob(&self.last_logits, id as usize);
        self.scratch.prof.stop(profile::Op::Sample, t_sample);
        let position = self.tokens.len();
        let is_special = self.tokenizer.is_control(id);
        if self.eog.contains(&id) {
            g.produced += 1;
            g.end(StopReason::Eos);
            let text = g.take_rest();
            return Ok(Some(Token {
                id,
                text,
                position,
                logprob,
                is_special,
                is_eos: true,
                stop_reason: Some(StopReason::Eos),
            }));
        }
        g.bytes.clear();
        self.tokenizer.token_bytes(id, false, &mut g.bytes);
        if let Some(a) = &mut self.grammar {
            a.rec
                .accept_bytes(&g.bytes)
                .map_err(|e| Error::usage(format!("grammar: {e}")))?;
        }
        let piece = g.stream.push(&g.bytes);
        self.step_tokens(g.seat.as_ref(), &[id], false)?;
        g.produced += 1;
        g.text.push_str(&piece);
        let mut stop_reason = None;
        let text = if let Some(cut) = params
            .stop
            .iter()
            .filter_map(|s| g.text.find(s.as_str()))
            .min()
        {
            // The text from where a stop string could begin was held back,
            // so the cut is never before what was already given out.
            g.text.truncate(cut.max(g.yielded));
            g.done = true;
            g.seat = None;
            g.stop_reason = Some(StopReason::Stop);
            stop_reason = g.stop_reason;
            g.take_rest()
        } else if g.produced >= params.max_tokens || self.tokens.len() >= self.cache.n_ctx {
            g.end(StopReason::Length);
            stop_reason = g.stop_reason;
            g.take_rest()
        } else {
            // Hold back a tail that may be the start of a stop string.
            let tail = &g.text[g.yielded..];
            let hold = params
                .stop
                .iter()
                .map(|s| stop_prefix_len(tail, s))
                .max()
                .unwrap_or(0);
            let end = g.text.len() - hold;
            let out = g.text[g.yielded..end].to_string();
            g.yielded = end;
            out
        };
        Ok(Some(Token {
            id,
            text,
            position,
            logprob,
            is_special,
            is_eos: false,
            stop_reason,
        }))
    }

    /// Runs a whole generation, calling `on_token` for each token (return
    /// `false` to stop early). Returns the generated text.
    pub fn generate(
        &mut self,
        prompt: &str,
        params: &GenerateParams,
        on_token: impl FnMut(&Token) -> bool,
    ) -> Result<String> {
        Ok(self.run_generation(prompt, params, on_token)?.text)
    }

    /// `generate`, returning the finished [`Generation`] (text, token
    /// count, stop reason). `on_token` returning `false` ends it as
    /// `Interrupted`.
    pub fn run_generation(
        &mut self,
        prompt: &str,
        params: &GenerateParams,
        mut on_token: impl FnMut(&Token) -> bool,
    ) -> Result<Generation> {
        let mut g = self.start(prompt, params)?;
        while let Some(t) = self.next_token(&mut g, params)? {
            if !on_token(&t) {
                g.end(StopReason::Interrupted);
                break;
            }
        }
        Ok(g)
    }
}

/// `path` made absolute and resolved (symlinks followed) when it exists,
/// else made absolute against the working directory, else as given.
pub(crate) fn resolve_path(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}
