//! A CPU inference engine for Llama / Mistral / Qwen2 models stored in
//! `.zt` (converted from GGUF) or read from GGUF through the same reader.
//! Weights are used in place from the memory map; quantized blocks are
//! computed straight from their stored bytes.

pub mod forward;
pub mod int8;
pub mod model;
pub mod quant;
pub mod sampler;
pub mod simd;
pub mod simd_dequant;
pub mod simd_dot;
pub mod snapshot;
pub mod tokenizer;

use crate::error::{Error, Result};
use crate::reader::Reader;
pub use forward::{KvCache, KvRows, KvType};
pub use model::{Config, Model};
pub use sampler::{Rng, SamplerConfig};
pub use snapshot::{SnapshotInfo, State};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
pub use tokenizer::Tokenizer;

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

/// One generated token.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub id: u32,
    /// The text this token completes (UTF-8 split across tokens appears
    /// with the token that finishes the character).
    pub text: String,
    /// Position in the context.
    pub position: usize,
    /// Log-probability under the model (softmax of the raw logits).
    pub logprob: f32,
    pub is_special: bool,
    pub is_eos: bool,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    pub stop: Vec<String>,
    /// Reseed the RNG first (otherwise the live RNG continues).
    pub seed: Option<u64>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 128,
            sampler: SamplerConfig::default(),
            stop: Vec::new(),
            seed: None,
        }
    }
}

/// A model with its context: tokens, KV cache, last logits and RNG.
pub struct Engine {
    /// Shared (read-only) with the engine's forks.
    pub model: Arc<Model>,
    pub tokenizer: Arc<Tokenizer>,
    pub cache: KvCache,
    scratch: forward::Scratch,
    pool: rayon::ThreadPool,
    /// Every token in the context, in order.
    pub tokens: Vec<u32>,
    /// Logits after the last token (empty before the first eval).
    pub last_logits: Vec<f32>,
    pub rng: Rng,
    /// The sampler settings of the last generation (kept in snapshots).
    pub sampler: SamplerConfig,
    pub n_threads: usize,
    /// Named immutable states (see [`Engine::save_state`]).
    states: BTreeMap<String, Arc<State>>,
    work: sampler::SampleScratch,
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
    pub fn open(path: impl AsRef<Path>, options: EngineOptions) -> Result<Engine> {
        Engine::from_reader(Reader::open(path)?, options)
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
        Engine::with_parts(model, tokenizer, &options)
    }

    /// An engine with an empty context over a loaded model and tokenizer
    /// (shared, not copied).
    fn with_parts(
        model: Arc<Model>,
        tokenizer: Arc<Tokenizer>,
        options: &EngineOptions,
    ) -> Result<Engine> {
        let c = &model.config;
        let n_ctx = match options.n_ctx {
            0 => c.n_ctx_train.min(4096),
            n => n,
        };
        let cache = KvCache::new(c.n_layer, n_ctx, c.kv_dim(), options.kv_type)?;
        let n_threads = match options.n_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n_threads)
            .build()
            .map_err(|e| Error::usage(format!("thread pool: {e}")))?;
        Ok(Engine {
            model,
            tokenizer,
            cache,
            scratch: forward::Scratch::default(),
            pool,
            tokens: Vec::new(),
            last_logits: Vec::new(),
            rng: Rng::seed(options.seed),
            sampler: SamplerConfig::default(),
            n_threads,
            states: BTreeMap::new(),
            work: sampler::SampleScratch::default(),
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
        })
    }

    /// Replaces the context with `state`, after checking it fits this
    /// engine (on any error the engine is unchanged).
    pub fn restore_state(&mut self, state: &State) -> Result<()> {
        snapshot::check_state(self, state)?;
        self.cache.import(&state.kv, state.tokens.len())?;
        self.tokens.clone_from(&state.tokens);
        self.last_logits.clone_from(&state.last_logits);
        self.rng.state = state.rng;
        self.sampler = state.sampler.clone();
        Ok(())
    }

    /// Stores the current context under `name` (replacing one of that name).
    pub fn save_state(&mut self, name: &str) -> Result<Arc<State>> {
        let st = Arc::new(self.capture()?);
        self.states.insert(name.to_string(), st.clone());
        Ok(st)
    }

    /// Adds a state made elsewhere (read from a file, another engine).
    pub fn put_state(&mut self, name: &str, state: Arc<State>) -> Result<()> {
        snapshot::check_state(self, &state)?;
        self.states.insert(name.to_string(), state);
        Ok(())
    }

    pub fn state(&self, name: &str) -> Result<Arc<State>> {
        self.states
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                kind: "state",
                name: name.to_string(),
            })
    }

    pub fn states(&self) -> impl Iterator<Item = (&str, &Arc<State>)> {
        self.states.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn delete_state(&mut self, name: &str) -> Result<()> {
        self.states
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| Error::NotFound {
                kind: "state",
                name: name.to_string(),
            })
    }

    /// Continues from a stored state (the current context is replaced).
    pub fn use_state(&mut self, name: &str) -> Result<()> {
        let st = self.state(name)?;
        self.restore_state(&st)
    }

    /// A new, independent engine continuing from state `name` (or from the
    /// current context when `None`). It shares this engine's mapped
    /// weights and tokenizer, has its own KV cache and thread pool, and
    /// starts with the same stored states.
    pub fn fork(&self, name: Option<&str>) -> Result<Engine> {
        let st = match name {
            Some(n) => self.state(n)?,
            None => Arc::new(self.capture()?),
        };
        let mut e =
            Engine::with_parts(self.model.clone(), self.tokenizer.clone(), &self.options())?;
        e.states = self.states.clone();
        e.restore_state(&st)?;
        Ok(e)
    }

    pub fn n_ctx(&self) -> usize {
        self.cache.n_ctx
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
        pool.install(|| forward::forward(model, cache, scratch, tokens, pos0, all, out))?;
        self.tokens.extend_from_slice(tokens);
        Ok(())
    }

    /// Forgets the context (the RNG continues).
    pub fn reset(&mut self) {
        self.tokens.clear();
        self.last_logits.clear();
    }

    /// Starts a generation: reseeds the RNG if asked, then appends
    /// `prompt` to the context (with BOS when the context is empty and the
    /// model adds one; an empty prompt just continues).
    pub fn start(&mut self, prompt: &str, params: &GenerateParams) -> Result<Generation> {
        if let Some(seed) = params.seed {
            self.rng = Rng::seed(seed);
        }
        self.sampler = params.sampler.clone();
        let add_bos = if self.tokens.is_empty() {
            None
        } else {
            Some(false)
        };
        let ids = self.tokenize(prompt, add_bos, true);
        self.run(&ids)?;
        if self.last_logits.is_empty() {
            return Err(Error::usage(
                "nothing to continue: the context is empty and the prompt gave no tokens",
            ));
        }
        Ok(Generation::default())
    }

    /// Produces the next token of a generation, or `None` when it ended
    /// (max tokens, EOS, a stop string, or a full context). The token that
    /// completes a stop string is not returned; `Generation::text` is cut
    /// before the stop string.
    pub fn next_token(
        &mut self,
        g: &mut Generation,
        params: &GenerateParams,
    ) -> Result<Option<Token>> {
        if g.done || g.produced >= params.max_tokens || self.tokens.len() >= self.cache.n_ctx {
            g.finish();
            return Ok(None);
        }
        let id = sampler::sample(
            &params.sampler,
            &self.last_logits,
            &self.tokens,
            &mut self.rng,
            &mut self.work,
        );
        let logprob = sampler::logprob(&self.last_logits, id as usize);
        let is_eos = Some(id) == self.tokenizer.eos;
        if is_eos {
            g.finish();
            return Ok(None);
        }
        g.bytes.clear();
        self.tokenizer.token_bytes(id, false, &mut g.bytes);
        let piece = g.stream.push(&g.bytes);
        let position = self.tokens.len();
        self.run(&[id])?;
        g.produced += 1;
        g.text.push_str(&piece);
        if let Some(cut) = params
            .stop
            .iter()
            .filter_map(|s| g.text.find(s.as_str()))
            .min()
        {
            g.text.truncate(cut);
            g.done = true;
            return Ok(None);
        }
        Ok(Some(Token {
            id,
            text: piece,
            position,
            logprob,
            is_special: self.tokenizer.is_control(id),
            is_eos,
        }))
    }

    /// Runs a whole generation, calling `on_token` for each token (return
    /// `false` to stop early). Returns the generated text.
    pub fn generate(
        &mut self,
        prompt: &str,
        params: &GenerateParams,
        mut on_token: impl FnMut(&Token) -> bool,
    ) -> Result<String> {
        let mut g = self.start(prompt, params)?;
        while let Some(t) = self.next_token(&mut g, params)? {
            if !on_token(&t) {
                break;
            }
        }
        g.finish();
        Ok(g.text)
    }
}

/// The state of one generation (see [`Engine::start`]).
#[derive(Debug, Default)]
pub struct Generation {
    /// Text generated so far.
    pub text: String,
    /// Tokens produced so far.
    pub produced: usize,
    done: bool,
    stream: tokenizer::Utf8Stream,
    bytes: Vec<u8>,
}

impl Generation {
    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            let rest = self.stream.finish();
            self.text.push_str(&rest);
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }
}
