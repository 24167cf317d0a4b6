//! The sampling fields every generation route takes (OpenAI's names), and
//! their validation into the [`Sampling`] a run uses.

use super::body::{from_value, FromJson};
use super::budget;
use crate::server::constraint::{self, GrammarFields};
use crate::server::error::{ApiError, ApiResult};
use crate::server::generate::Sampling;
use crate::server::Loaded;

/// Sampling fields shared by `/v1/completions`, `/v1/chat/completions`,
/// `/execute` and Connect's `GenerateStream`: flattened into each request
/// struct, so they sit at the top level of the JSON body.
#[derive(Debug, Default, serde::Deserialize)]
pub struct SamplingFields {
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub stop: Option<StopInput>,
    /// OpenAI's penalties, in [-2, 2] (over the last 64 tokens, as
    /// llama-server applies them).
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    /// llama-server's extra samplers: top-k (0: off), min-p in [0, 1] (0:
    /// off) and the repeat penalty (> 0; 1: off).
    #[serde(default)]
    pub top_k: Option<u32>,
    #[serde(default)]
    pub min_p: Option<f32>,
    #[serde(default)]
    pub repeat_penalty: Option<f32>,
    /// `response_format`, `grammar` or `json_schema` (read by
    /// [`FromJson::read_parts`] from the same object).
    #[serde(skip)]
    pub grammar: GrammarFields,
}

impl FromJson for SamplingFields {
    fn read_parts(&mut self, whole: &serde_json::Value) -> ApiResult<()> {
        self.grammar = from_value(whole)?;
        Ok(())
    }
    fn known_fields() -> Option<Vec<&'static str>> {
        super::fields::with_part::<Self, GrammarFields>()
    }
}

impl SamplingFields {
    /// Checks the fields (temperature and top_p, then `max_tokens` against
    /// the room a `prompt_len`-token prompt leaves after `used` context
    /// tokens of an `n_ctx`-token context, then the stop list, then the
    /// grammar, which is compiled here) and builds the run's sampling with
    /// `logprobs` alternatives per token.
    pub async fn into_sampling(
        self,
        n_ctx: usize,
        used: usize,
        prompt_len: usize,
        logprobs: Option<usize>,
    ) -> ApiResult<Sampling> {
        let (temperature, top_p) = check_sampling(self.temperature, self.top_p)?;
        let ranged = |field: &'static str, v: Option<f32>, lo: f32, hi: f32, default: f32| {
            let v = v.unwrap_or(default);
            if v >= lo && v <= hi {
                Ok(v)
            } else {
                Err(ApiError::bad(
                    field,
                    format!("{field} = {v} is outside [{lo}, {hi}]"),
                ))
            }
        };
        let frequency_penalty =
            ranged("frequency_penalty", self.frequency_penalty, -2.0, 2.0, 0.0)?;
        let presence_penalty = ranged("presence_penalty", self.presence_penalty, -2.0, 2.0, 0.0)?;
        let min_p = ranged("min_p", self.min_p, 0.0, 1.0, 0.0)?;
        let repeat_penalty = self.repeat_penalty.unwrap_or(1.0);
        if !(repeat_penalty.is_finite() && repeat_penalty > 0.0) {
            return Err(ApiError::bad(
                "repeat_penalty",
                format!("repeat_penalty = {repeat_penalty} must be finite and > 0"),
            ));
        }
        let max_tokens = budget(n_ctx, used, prompt_len, self.max_tokens)?;
        let stop = check_stops(self.stop)?;
        Ok(Sampling {
            max_tokens,
            temperature,
            top_p,
            top_k: self.top_k.unwrap_or(0) as usize,
            min_p,
            repeat_penalty,
            frequency_penalty,
            presence_penalty,
            seed: self.seed,
            continue_rng: false,
            stop,
            stop_ids: Vec::new(),
            logprobs,
            grammar: constraint::from_request(self.grammar).await?,
        })
    }
}

/// Adds the chat format's stop strings and end-marker ids to `sampling`
/// (for a prompt built from chat messages).
pub fn add_chat_stops(sampling: &mut Sampling, loaded: &Loaded) {
    let stops = loaded.chat.stop_strings();
    sampling.stop.extend(stops.iter().map(|s| s.to_string()));
    sampling.stop_ids = loaded.chat.stop_ids(&loaded.tokenizer);
}

/// A stop list: a string or up to 4 strings (OpenAI's limit), each 1-256
/// bytes.
pub fn check_stops(stop: Option<StopInput>) -> ApiResult<Vec<String>> {
    let list = match stop {
        None => Vec::new(),
        Some(StopInput::One(s)) => vec![s],
        Some(StopInput::Many(v)) => v,
    };
    if list.len() > 4 {
        return Err(ApiError::bad(
            "stop",
            format!("stop has {} entries, at most 4 are allowed", list.len()),
        ));
    }
    for s in &list {
        if s.is_empty() || s.len() > 256 {
            return Err(ApiError::bad(
                "stop",
                format!("stop strings must be 1-256 bytes, one is {}", s.len()),
            ));
        }
    }
    Ok(list)
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub enum StopInput {
    One(String),
    Many(Vec<String>),
}

/// Temperature in [0, 2] and top_p in (0, 1], OpenAI's ranges.
pub fn check_sampling(temperature: Option<f32>, top_p: Option<f32>) -> ApiResult<(f32, f32)> {
    let t = temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&t) {
        return Err(ApiError::bad(
            "temperature",
            format!("temperature = {t} is outside [0, 2]"),
        ));
    }
    let p = top_p.unwrap_or(1.0);
    if !(p > 0.0 && p <= 1.0) {
        return Err(ApiError::bad(
            "top_p",
            format!("top_p = {p} is outside (0, 1]"),
        ));
    }
    Ok((t, p))
}

/// Connect's `GenerateStream` request: a prompt or chat messages and the
/// sampling fields (`max_tokens`, `temperature`, `top_p`, `seed`, `stop`
/// and `response_format`, `grammar` or `json_schema`), as on the OpenAI
/// routes.
#[derive(Debug, serde::Deserialize)]
pub struct StreamRequest {
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub messages: Option<Vec<crate::server::chat::Message>>,
    /// Read from the same object.
    #[serde(skip)]
    pub sampling: SamplingFields,
}

impl FromJson for StreamRequest {
    fn read_parts(&mut self, whole: &serde_json::Value) -> ApiResult<()> {
        self.sampling = from_value(whole)?;
        Ok(())
    }
    fn known_fields() -> Option<Vec<&'static str>> {
        super::fields::with_part::<Self, SamplingFields>()
    }
}
