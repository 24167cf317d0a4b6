//! What a generation is made of: its settings ([`GenerateParams`]), the
//! tokens it yields ([`Token`]), why it ends ([`StopReason`]), how another
//! thread stops it ([`CancelHandle`]) and its running state
//! ([`Generation`]). The engine drives it (`Engine::start`,
//! `Engine::next_token`).

use super::{batcher, tokenizer, GrammarSpec, SamplerConfig};
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
    /// The model's end-of-sequence token: yielded as the last token of a
    /// generation that ends there, with empty text, and not added to the
    /// context.
    pub is_eos: bool,
    /// Set on the last token of a generation that ends at a token (EOS, a
    /// stop string, `max_tokens` or a full context); an interrupted
    /// generation ends between tokens, see [`Generation::stop_reason`].
    pub stop_reason: Option<StopReason>,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// The model produced its end-of-sequence token.
    Eos,
    /// The text reached one of the stop strings (it is cut before it).
    Stop,
    /// `max_tokens` were produced or the context is full.
    Length,
    /// Cancelled through a [`CancelHandle`] (or stopped by the caller).
    Interrupted,
    /// The grammar of the generation allowed no token (EOS included): the
    /// output ends here rather than continue unconstrained.
    Grammar,
}

impl StopReason {
    /// `"eos"`, `"stop"`, `"length"`, `"interrupted"` or `"grammar"`.
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::Stop => "stop",
            StopReason::Length => "length",
            StopReason::Interrupted => "interrupted",
            StopReason::Grammar => "grammar",
        }
    }

    /// True when the generation ran to its natural end (everything but
    /// [`StopReason::Interrupted`] and [`StopReason::Grammar`]): only then
    /// is a new state stored.
    pub fn is_success(self) -> bool {
        !matches!(self, StopReason::Interrupted | StopReason::Grammar)
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Stops a [`Generation`] from another thread: the generation ends before
/// its next token with [`StopReason::Interrupted`].
#[derive(Debug, Clone, Default)]
pub struct CancelHandle(pub(super) Arc<AtomicBool>);

impl CancelHandle {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// A handle over an existing flag (say a server's per-request flag),
    /// so that setting the flag stops the generation, prefill included.
    pub fn from_flag(flag: Arc<AtomicBool>) -> CancelHandle {
        CancelHandle(flag)
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    pub stop: Vec<String>,
    /// Reseed the RNG first (otherwise the live RNG continues).
    pub seed: Option<u64>,
    /// Constrain the output to this grammar (GBNF or a JSON Schema). A
    /// generation with a prompt starts the grammar afresh; one with an
    /// empty prompt under the same grammar as the live one (say after a
    /// restore) continues where it stood. `None` with an empty prompt also
    /// continues under the live grammar, if there is one (a snapshot taken
    /// mid-way through constrained output goes on constrained); `None` with
    /// a prompt, or [`Engine::clear_grammar`] first, generates freely.
    pub grammar: Option<GrammarSpec>,
}

impl GenerateParams {
    /// Checks the sampler settings ([`SamplerConfig::validate`]) and that
    /// no stop string is empty (it would match before any text).
    pub fn validate(&self) -> Result<()> {
        self.sampler.validate()?;
        if self.stop.iter().any(String::is_empty) {
            return Err(Error::Usage(
                "stop: an empty stop string would end every generation at once".into(),
            ));
        }
        Ok(())
    }
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 128,
            sampler: SamplerConfig::default(),
            stop: Vec::new(),
            seed: None,
            grammar: None,
        }
    }
}

/// The length of the longest proper prefix of `stop` that `tail` ends
/// with (0 if none).
pub(super) fn stop_prefix_len(tail: &str, stop: &str) -> usize {
    (1..stop.len().min(tail.len() + 1))
        .rev()
        .find(|&k| stop.is_char_boundary(k) && tail.ends_with(&stop[..k]))
        .unwrap_or(0)
}

/// The state of one generation (see [`Engine::start`]).
#[derive(Debug, Default)]
pub struct Generation {
    /// Text generated so far.
    pub text: String,
    /// Tokens produced so far (an EOS token included).
    pub produced: usize,
    /// Bytes of `text` given out with tokens (a tail that may begin a stop
    /// string is held back until it is known not to).
    pub(super) yielded: usize,
    pub(super) done: bool,
    pub(super) stop_reason: Option<StopReason>,
    pub(super) cancel: CancelHandle,
    pub(super) stream: tokenizer::Utf8Stream,
    pub(super) bytes: Vec<u8>,
    /// Its place at the engine's batcher while it decodes.
    pub(super) seat: Option<batcher::Seat>,
}

impl Generation {
    /// Ends the generation for `reason` (the first reason sticks) and
    /// returns the text still held back by the UTF-8 stream, which is also
    /// appended to `text`.
    pub fn end(&mut self, reason: StopReason) -> String {
        if self.done {
            return String::new();
        }
        self.done = true;
        // The other sequences need not wait for this one any more.
        self.seat = None;
        self.stop_reason = Some(reason);
        let rest = self.stream.finish();
        self.text.push_str(&rest);
        rest
    }

    /// The text not given out yet.
    pub(super) fn take_rest(&mut self) -> String {
        let start = self.yielded.min(self.text.len());
        self.yielded = self.text.len();
        self.text[start..].to_string()
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Why the generation ended (`None` while it runs).
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop_reason
    }

    /// A handle that stops this generation from another thread.
    pub fn cancel_handle(&self) -> CancelHandle {
        self.cancel.clone()
    }
}
