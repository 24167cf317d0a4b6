//! Counters for `GET /metrics` (Prometheus text format 0.0.4).

use super::generate::Outcome;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub refused: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub predicted_tokens: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub cache_tokens_reused: AtomicU64,
    prompt_micros: AtomicU64,
    decode_micros: AtomicU64,
}

impl Metrics {
    /// Adds one finished generation.
    pub fn record(&self, prompt: usize, prompt_secs: f64, predicted: usize, decode_secs: f64) {
        self.prompt_tokens
            .fetch_add(prompt as u64, Ordering::Relaxed);
        self.predicted_tokens
            .fetch_add(predicted as u64, Ordering::Relaxed);
        self.prompt_micros
            .fetch_add((prompt_secs * 1e6) as u64, Ordering::Relaxed);
        self.decode_micros
            .fetch_add((decode_secs * 1e6) as u64, Ordering::Relaxed);
    }

    /// Adds one finished run: the prompt tokens it prefilled (those a
    /// cached prefix supplied are not counted), the tokens it generated,
    /// and their times.
    pub fn record_run(&self, o: &Outcome) {
        self.record(
            o.prompt_tokens - o.cached_tokens,
            o.prefill_secs,
            o.completion_tokens,
            o.decode_secs,
        );
    }

    /// The text of `/metrics`; `queued`, `running` and `batch` come from
    /// the scheduler.
    pub fn render(
        &self,
        queued: usize,
        running: usize,
        parallel: usize,
        batch: crate::engine::BatchStats,
    ) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let rate = |n: u64, us: u64| {
            if us == 0 {
                0.0
            } else {
                n as f64 / (us as f64 / 1e6)
            }
        };
        let mut s = String::new();
        let mut put = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(s, "# HELP zt_{name} {help}");
            let _ = writeln!(s, "# TYPE zt_{name} {kind}");
            let _ = writeln!(s, "zt_{name} {value}");
        };
        put(
            "requests_total",
            "counter",
            "Requests received (every route but /metrics and /health).",
            get(&self.requests).to_string(),
        );
        put(
            "requests_refused_total",
            "counter",
            "Requests refused because the queue was full.",
            get(&self.refused).to_string(),
        );
        put(
            "prompt_tokens_total",
            "counter",
            "Prompt tokens processed.",
            get(&self.prompt_tokens).to_string(),
        );
        put(
            "tokens_predicted_total",
            "counter",
            "Tokens generated.",
            get(&self.predicted_tokens).to_string(),
        );
        put(
            "prompt_seconds_total",
            "counter",
            "Seconds spent in prefill.",
            format!("{:.6}", get(&self.prompt_micros) as f64 / 1e6),
        );
        put(
            "decode_seconds_total",
            "counter",
            "Seconds spent decoding.",
            format!("{:.6}", get(&self.decode_micros) as f64 / 1e6),
        );
        put(
            "prompt_tokens_seconds",
            "gauge",
            "Average prefill throughput in tokens/s.",
            format!(
                "{:.3}",
                rate(get(&self.prompt_tokens), get(&self.prompt_micros))
            ),
        );
        put(
            "predicted_tokens_seconds",
            "gauge",
            "Average decode throughput in tokens/s (per sequence).",
            format!(
                "{:.3}",
                rate(get(&self.predicted_tokens), get(&self.decode_micros))
            ),
        );
        put(
            "prefix_cache_hits_total",
            "counter",
            "Requests that restored a cached prompt prefix.",
            get(&self.cache_hits).to_string(),
        );
        put(
            "prefix_cache_misses_total",
            "counter",
            "Requests that found no cached prompt prefix.",
            get(&self.cache_misses).to_string(),
        );
        put(
            "prefix_cache_tokens_reused_total",
            "counter",
            "Prompt tokens restored from the prefix cache instead of prefilled.",
            get(&self.cache_tokens_reused).to_string(),
        );
        put(
            "requests_processing",
            "gauge",
            "Sequences running.",
            running.to_string(),
        );
        put(
            "requests_deferred",
            "gauge",
            "Requests waiting in the queue.",
            queued.to_string(),
        );
        put(
            "parallel",
            "gauge",
            "Sequences that can run at once.",
            parallel.to_string(),
        );
        put(
            "decode_batches_total",
            "counter",
            "Batched passes (one pass steps every sequence in it: a decode row or a prompt chunk).",
            batch.steps.to_string(),
        );
        put(
            "decode_batch_rows_total",
            "counter",
            "Sequence steps run in batched passes (decode rows and prompt chunks).",
            batch.rows.to_string(),
        );
        put(
            "batched_prefills_total",
            "counter",
            "Prompt chunks prefilled in batched passes (counted in decode_batch_rows_total too).",
            batch.prefills.to_string(),
        );
        put(
            "decode_batch_rows_max",
            "gauge",
            "The most sequences stepped in one batched decode pass.",
            batch.max_rows.to_string(),
        );
        s
    }
}
