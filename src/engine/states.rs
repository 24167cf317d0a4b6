//! Named states: immutable captures of an engine's context (tokens, KV
//! rows, logits, RNG, sampler, grammar) kept by name, to continue from,
//! fork or write out as snapshots. A name is taken once: storing under a
//! taken name is refused (delete first), as the server's states API does.

use super::snapshot::{self, State};
use super::{Engine, Generation};
use crate::error::{Error, Result};
use std::sync::Arc;

/// The longest state name, in bytes.
pub const MAX_STATE_NAME: usize = 128;

/// Whether `name` is a valid state name: 1 to [`MAX_STATE_NAME`] of
/// `A-Z a-z 0-9 _ -` (safe as a file name, no path separators or dots).
pub fn valid_state_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_STATE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Engine {
    /// Checks that `name` could be stored now: a valid name not taken.
    /// A run that will store its end state checks this before it starts.
    pub fn check_new_state(&self, name: &str) -> Result<()> {
        if !valid_state_name(name) {
            return Err(Error::Usage(format!(
                "state name {name:?}: names are 1-{MAX_STATE_NAME} of A-Z a-z 0-9 _ -"
            )));
        }
        if self.states.contains_key(name) {
            return Err(Error::Usage(format!(
                "state name {name:?} is taken: states are immutable (delete it first)"
            )));
        }
        Ok(())
    }

    /// Stores the current context as the new state `name` (see
    /// [`Engine::check_new_state`]).
    pub fn save_state(&mut self, name: &str) -> Result<Arc<State>> {
        self.check_new_state(name)?;
        let st = Arc::new(self.capture()?);
        self.states.insert(name.to_string(), st.clone());
        Ok(st)
    }

    /// Adds a state made elsewhere (read from a file, another engine) as
    /// the new state `name`.
    pub fn put_state(&mut self, name: &str, state: Arc<State>) -> Result<()> {
        self.check_new_state(name)?;
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

    /// Stores the context as the new state `name` when `g` ran to its
    /// natural end (EOS, a stop string, the length limit) and returns true;
    /// an unfinished, interrupted or failed generation stores nothing.
    pub fn commit_state(&mut self, g: &Generation, name: &str) -> Result<bool> {
        match g.stop_reason {
            Some(r) if r.is_success() => {
                self.save_state(name)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_servers_rule() {
        for good in ["a", "initial", "chat-1_B", &"x".repeat(MAX_STATE_NAME)] {
            assert!(valid_state_name(good), "{good}");
        }
        let long = "x".repeat(MAX_STATE_NAME + 1);
        for bad in ["", "../x", "a/b", ".", "a.b", "é", "a b", "a\0", &long] {
            assert!(!valid_state_name(bad), "{bad:?}");
        }
    }
}
