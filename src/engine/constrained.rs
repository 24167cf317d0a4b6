//! Generation under a grammar: what a caller asks for ([`GrammarSpec`]),
//! the per-engine cache of token masks (one byte trie of the vocabulary per
//! grammar, built once and shared by forks) and the live recogniser of a
//! generation.
//!
//! Sampler order under a grammar (see [`super::sampler::sample_masked`]):
//! penalties → grammar mask → temperature → top-k → top-p → min-p. Greedy,
//! top-k, top-p and min-p test candidates lazily in logit order until the
//! kept tokens are certain and then draw the very token the full mask
//! would; pure temperature sampling draws by rejection (the same
//! distribution). When no token (EOS included) is allowed the generation
//! ends with [`super::StopReason::Grammar`], never
//! with unconstrained text.

use super::grammar::{Grammar, GrammarError, Recognizer, StateArrays, TokenMask};
use super::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Most grammars whose masks an engine (with its forks) keeps.
const MAX_CACHED_MASKS: usize = 16;

/// A grammar a generation must follow.
#[derive(Debug, Clone, PartialEq)]
pub enum GrammarSpec {
    /// GBNF text (llama.cpp's grammar format), `root` as start.
    Gbnf(String),
    /// A JSON Schema, converted to GBNF.
    JsonSchema(serde_json::Value),
}

impl GrammarSpec {
    /// The GBNF source this spec stands for.
    pub fn to_gbnf(&self) -> Result<String> {
        match self {
            GrammarSpec::Gbnf(s) => Ok(s.clone()),
            GrammarSpec::JsonSchema(v) => {
                super::grammar::json_schema_to_gbnf(v).map_err(|e| Error::usage(e.to_string()))
            }
        }
    }
}

/// Masks by GBNF source, shared by an engine and its forks.
#[derive(Debug, Clone, Default)]
pub(crate) struct MaskCache(Arc<Mutex<HashMap<String, Arc<Mutex<TokenMask>>>>>);

impl MaskCache {
    /// The mask of `source` over `tokenizer`'s bytes for `n_vocab` logits,
    /// built on first use. `eog` are the tokens allowed where the grammar
    /// can end.
    pub(crate) fn get(
        &self,
        source: &str,
        tokenizer: &Tokenizer,
        n_vocab: usize,
        eog: &[u32],
    ) -> Result<Arc<Mutex<TokenMask>>> {
        let mut map = self
            .0
            .lock()
            .map_err(|_| Error::usage("grammar mask cache poisoned"))?;
        if let Some(m) = map.get(source) {
            return Ok(m.clone());
        }
        let grammar = Grammar::parse(source).map_err(|e| Error::usage(format!("grammar: {e}")))?;
        let vocab: Vec<Vec<u8>> = (0..n_vocab as u32)
            .map(|id| {
                let mut b = Vec::new();
                tokenizer.token_bytes(id, false, &mut b);
                b
            })
            .collect();
        let mask = TokenMask::new(Arc::new(grammar), &vocab, eog)
            .map_err(|e| Error::usage(format!("grammar: {e}")))?;
        if map.len() >= MAX_CACHED_MASKS {
            map.clear();
        }
        let mask = Arc::new(Mutex::new(mask));
        map.insert(source.to_string(), mask.clone());
        Ok(mask)
    }
}

/// The grammar of a running generation: its mask and its recogniser.
#[derive(Debug, Clone)]
pub(crate) struct ActiveGrammar {
    pub(crate) mask: Arc<Mutex<TokenMask>>,
    pub(crate) rec: Recognizer,
}

impl ActiveGrammar {
    pub(crate) fn new(mask: Arc<Mutex<TokenMask>>) -> Result<ActiveGrammar> {
        let g = mask
            .lock()
            .map_err(|_| Error::usage("grammar mask poisoned"))?
            .grammar()
            .clone();
        let rec = Recognizer::new(g).map_err(|e| Error::usage(format!("grammar: {e}")))?;
        Ok(ActiveGrammar { mask, rec })
    }

    /// The GBNF source of this grammar.
    pub(crate) fn source(&self) -> &str {
        self.rec.grammar().source()
    }
}

/// The grammar of a saved context: its GBNF source and the recogniser's
/// live state as plain arrays (see spec §20 for how a snapshot stores it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedGrammar {
    /// GBNF source (JSON Schemas are saved as the GBNF they became).
    pub source: String,
    /// The parser stacks and pending UTF-8 bytes.
    pub state: StateArrays,
}

impl SavedGrammar {
    /// The saved form of a live grammar.
    pub(crate) fn of(a: &ActiveGrammar) -> SavedGrammar {
        SavedGrammar {
            source: a.source().to_string(),
            state: a.rec.to_arrays(),
        }
    }

    /// Compiles the source and checks the state against it (every count,
    /// offset and stack entry), as a recogniser ready to continue.
    pub fn recognizer(&self) -> std::result::Result<Recognizer, GrammarError> {
        let g = Grammar::parse(&self.source)?;
        Recognizer::from_arrays(Arc::new(g), &self.state)
    }
}

impl ActiveGrammar {
    /// A live grammar continuing `saved`, with its mask from `masks`.
    pub(crate) fn resume(
        masks: &MaskCache,
        saved: &SavedGrammar,
        tokenizer: &Tokenizer,
        n_vocab: usize,
        eog: &[u32],
    ) -> Result<ActiveGrammar> {
        let mask = masks.get(&saved.source, tokenizer, n_vocab, eog)?;
        let g = mask
            .lock()
            .map_err(|_| Error::usage("grammar mask poisoned"))?
            .grammar()
            .clone();
        let rec = Recognizer::from_arrays(g, &saved.state)
            .map_err(|e| Error::usage(format!("grammar state: {e}")))?;
        Ok(ActiveGrammar { mask, rec })
    }
}
