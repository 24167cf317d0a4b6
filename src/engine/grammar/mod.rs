//! Constrained generation: GBNF grammars (llama.cpp's format), JSON Schema
//! converted to GBNF, an incremental byte-level recogniser and a token mask
//! over a vocabulary.
//!
//! * [`Grammar::parse`] compiles GBNF text; errors carry line and column;
//!   undefined rules and left recursion are rejected here, not at sampling.
//! * [`json_schema_to_gbnf`] / [`Grammar::from_json_schema`] turn a JSON
//!   Schema into GBNF; an unsupported keyword is an error naming it and its
//!   JSON pointer.
//! * [`Recognizer`] consumes output bytes (UTF-8 may be split anywhere) and
//!   keeps llama.cpp-style pushdown stacks; the number of live stacks and
//!   their depth are capped ([`Limits`]). Its live state serialises to plain
//!   `u32` arrays ([`StateArrays`]) and back, checked.
//! * [`TokenMask`] precomputes a byte trie of the vocabulary once per
//!   (vocabulary, grammar) and answers "may this token come next" lazily in
//!   logit order, memoised per parser state. EOS is allowed only where the
//!   grammar can end; when nothing is allowed the answer is
//!   [`GrammarError::NoTokenAllowed`] (fail closed).

mod gbnf;
mod int_range;
mod json_schema;
mod mask;
mod one_of;
mod recognizer;

pub use gbnf::Grammar;
pub use json_schema::{json_schema_to_gbnf, MAX_INT_DIGITS};
pub use mask::TokenMask;
pub use recognizer::{GrammarState, Recognizer, StateArrays, STATE_LAYOUT_VERSION};

use std::fmt;

/// Bounds on grammars and on the recogniser (hostile input is normal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest GBNF source accepted, in bytes.
    pub max_source_bytes: usize,
    /// Most compiled elements (after repetitions are expanded).
    pub max_elements: usize,
    /// Most rules (named and generated).
    pub max_rules: usize,
    /// Deepest nesting of parentheses in the source.
    pub max_nesting: usize,
    /// Largest count in `{m,n}`.
    pub max_repeat: u32,
    /// Most live pushdown stacks the recogniser keeps.
    pub max_stacks: usize,
    /// Deepest pushdown stack.
    pub max_stack_depth: usize,
    /// Most stack expansions while advancing over one code point.
    pub max_advance_steps: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_source_bytes: 1 << 20,
            max_elements: 1 << 20,
            max_rules: 1 << 16,
            max_nesting: 64,
            max_repeat: 4096,
            max_stacks: 1024,
            max_stack_depth: 1024,
            max_advance_steps: 1 << 16,
        }
    }
}

/// Why a grammar, schema, state or token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrammarError {
    /// The GBNF text is malformed at `line`:`column` (both 1-based, the
    /// column counts characters).
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// A rule is referenced but never defined.
    UndefinedRule {
        name: String,
        line: usize,
        column: usize,
    },
    /// A rule can reach itself without consuming a character.
    LeftRecursion { rule: String },
    /// A grammar limit was exceeded while compiling.
    TooLarge {
        what: &'static str,
        value: usize,
        limit: usize,
    },
    /// A JSON Schema keyword or value we do not translate, at `pointer`.
    UnsupportedSchema {
        keyword: String,
        pointer: String,
        detail: String,
    },
    /// The bytes at `offset` of the input cannot continue the text.
    Rejected { offset: usize },
    /// The recogniser would need more than `limit` live stacks.
    TooManyStacks { limit: usize },
    /// A pushdown stack would grow past `limit` entries.
    StackTooDeep { limit: usize },
    /// Advancing over one character took more than `limit` expansions.
    AdvanceTooLong { limit: usize },
    /// Serialised state does not fit this grammar.
    BadState { field: &'static str, detail: String },
    /// A vocabulary or token id is unusable.
    BadVocab { detail: String },
    /// No token of the vocabulary (EOS included) may come next: generation
    /// must stop with this as its finish reason, never continue unconstrained.
    NoTokenAllowed,
}

impl fmt::Display for GrammarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use GrammarError::*;
        match self {
            Syntax {
                line,
                column,
                message,
            } => write!(
                f,
                "grammar syntax error at line {line}, column {column}: {message}"
            ),
            UndefinedRule { name, line, column } => write!(
                f,
                "undefined rule '{name}' referenced at line {line}, column {column}"
            ),
            LeftRecursion { rule } => write!(f, "left recursion through rule '{rule}'"),
            TooLarge { what, value, limit } => {
                write!(
                    f,
                    "grammar too large: {what} {value} exceeds the limit {limit}"
                )
            }
            UnsupportedSchema {
                keyword,
                pointer,
                detail,
            } if keyword.is_empty() => write!(f, "JSON Schema at '{pointer}': {detail}"),
            UnsupportedSchema {
                keyword,
                pointer,
                detail,
            } => write!(f, "JSON Schema '{keyword}' at '{pointer}': {detail}"),
            Rejected { offset } => write!(f, "grammar rejects the byte at offset {offset}"),
            TooManyStacks { limit } => {
                write!(f, "grammar recogniser needs more than {limit} live stacks")
            }
            StackTooDeep { limit } => {
                write!(f, "grammar recogniser stack deeper than {limit}")
            }
            AdvanceTooLong { limit } => {
                write!(
                    f,
                    "grammar recogniser exceeded {limit} expansions for one character"
                )
            }
            BadState { field, detail } => write!(f, "bad grammar state: {field}: {detail}"),
            BadVocab { detail } => write!(f, "bad vocabulary for grammar: {detail}"),
            NoTokenAllowed => write!(f, "the grammar allows no token here"),
        }
    }
}

impl std::error::Error for GrammarError {}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, GrammarError>;
