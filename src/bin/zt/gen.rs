//! `zt generate`, `zt chat`, `zt bench-gen`: the engine from the command
//! line. Without a MODEL they use the small model built into `zt` (the
//! llama-tiny q8_0 fixture, random weights: it shows the machinery, its
//! text is noise).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Instant;
use ztensor::engine::{Engine, EngineOptions, GenerateParams, GrammarSpec, KvType, SamplerConfig};
use ztensor::{Error, Reader, Result};

/// The built-in model.
const DEFAULT_MODEL: &[u8] = include_bytes!("assets/llama-tiny-q8_0.zt");

#[derive(clap::Args, Debug, Clone)]
pub struct EngineArgs {
    /// A .zt or GGUF model (default: the built-in tiny model).
    pub model: Option<PathBuf>,
    /// Context length (0: the model's, at most 4096).
    #[arg(long, default_value_t = 0)]
    pub ctx: usize,
    /// Threads (0: all cores).
    #[arg(long, short = 't', default_value_t = 0)]
    pub threads: usize,
    /// KV cache type: f16 or f32.
    #[arg(long, default_value = "f16")]
    pub kv: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SampleArgs {
    /// Tokens to generate.
    #[arg(short = 'n', long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when this text appears (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Constrain the output to the GBNF grammar in this file.
    #[arg(long, value_name = "FILE", conflicts_with = "json_schema")]
    pub grammar: Option<PathBuf>,
    /// Constrain the output to JSON valid under the JSON Schema in this file.
    #[arg(long, value_name = "FILE")]
    pub json_schema: Option<PathBuf>,
}

impl SampleArgs {
    fn params(&self) -> Result<GenerateParams> {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).map_err(|e| Error::io(format!("reading {}", p.display()), e))
        };
        let grammar = match (&self.grammar, &self.json_schema) {
            (Some(p), _) => Some(GrammarSpec::Gbnf(read(p)?)),
            (None, Some(p)) => {
                let v = serde_json::from_str(&read(p)?).map_err(|e| {
                    Error::Usage(format!("--json-schema {}: not JSON: {e}", p.display()))
                })?;
                Some(GrammarSpec::JsonSchema(v))
            }
            (None, None) => None,
        };
        Ok(GenerateParams {
            max_tokens: self.max_tokens,
            sampler: SamplerConfig {
                temperature: self.temp,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                ..SamplerConfig::default()
            },
            stop: self.stop.clone(),
            seed: Some(self.seed),
            grammar,
        })
    }
}

pub fn open(args: &EngineArgs, seed: u64) -> Result<Engine> {
    let kv_type = match args.kv.as_str() {
        "f16" => KvType::F16,
        "f32" => KvType::F32,
        other => {
            return Err(Error::Usage(format!(
                "--kv must be f16 or f32, not {other:?}"
            )))
        }
    };
    let options = EngineOptions {
        n_ctx: args.ctx,
        n_threads: args.threads,
        kv_type,
        seed,
    };
    match &args.model {
        Some(path) => Engine::open(path, options),
        None => Engine::from_reader(Reader::from_bytes(DEFAULT_MODEL.to_vec())?, options),
    }
}

fn flush(out: &mut impl Write) -> Result<()> {
    out.flush().map_err(|e| Error::io("writing to stdout", e))
}

/// `zt generate`: streams the continuation of PROMPT to stdout.
pub fn generate(args: &EngineArgs, prompt: &str, sample: &SampleArgs) -> Result<()> {
    let mut e = open(args, sample.seed)?;
    let params = sample.params()?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failed = None;
    let g = e.run_generation(prompt, &params, |t| {
        match out.write_all(t.text.as_bytes()).and_then(|_| out.flush()) {
            Ok(()) => true,
            Err(err) => {
                failed = Some(err);
                false
            }
        }
    })?;
    if let Some(err) = failed {
        if err.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(Error::io("writing to stdout", err));
        }
        return Ok(());
    }
    writeln!(out).map_err(|e| Error::io("writing to stdout", e))?;
    flush(&mut out)?;
    // Fail closed: output cut short by the grammar is not a success.
    if g.stop_reason() == Some(ztensor::engine::StopReason::Grammar) {
        return Err(Error::Usage(
            "the grammar allows no token here: the output above is incomplete".into(),
        ));
    }
    Ok(())
}

/// Chat formats recognised from `tokenizer.chat_template`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChatFormat {
    ChatMl,
    Llama3,
    Llama2,
    Zephyr,
    /// Gemma's turns (`gemma3` files carry no template).
    Gemma,
    Plain,
}

fn chat_format(e: &Engine) -> ChatFormat {
    let attrs = e.model().reader.attributes();
    let key = |k: &str| attrs.and_then(|a| a.get(k)).and_then(|v| v.as_str());
    let template = key("tokenizer.chat_template").unwrap_or("");
    if template.contains("<start_of_turn>") || key("general.architecture") == Some("gemma3") {
        // Gemma 3 GGUFs may carry no template: llama.cpp's Gemma format.
        ChatFormat::Gemma
    } else if template.contains("<|im_start|>") {
        ChatFormat::ChatMl
    } else if template.contains("<|start_header_id|>") {
        ChatFormat::Llama3
    } else if template.contains("[INST]") {
        ChatFormat::Llama2
    } else if template.contains("<|user|>") {
        ChatFormat::Zephyr
    } else {
        ChatFormat::Plain
    }
}

/// The token that ends a turn in `format`, if it has one.
fn end_marker(format: ChatFormat) -> Option<&'static str> {
    match format {
        ChatFormat::ChatMl => Some("<|im_end|>"),
        ChatFormat::Llama3 => Some("<|eot_id|>"),
        ChatFormat::Llama2 | ChatFormat::Zephyr => Some("</s>"),
        ChatFormat::Gemma => Some("<end_of_turn>"),
        ChatFormat::Plain => None,
    }
}

/// What closes the previous assistant turn before the next user turn:
/// the end marker unless the context already ends with it (a turn that
/// ended at EOS leaves the EOS out of the context, one cut at a stop
/// string keeps it), then the format's separator.
fn close_turn(e: &Engine, format: ChatFormat) -> String {
    let Some(marker) = end_marker(format) else {
        return String::new();
    };
    let ids = e.tokenize(marker, Some(false), true);
    let mut out = String::new();
    if !e.tokens().ends_with(&ids) {
        out.push_str(marker);
    }
    if matches!(
        format,
        ChatFormat::ChatMl | ChatFormat::Zephyr | ChatFormat::Gemma
    ) {
        out.push('\n');
    }
    out
}

/// One user turn as pieces of prompt text — `(text, is_template_markup)` —
/// and the stop strings of the format. Only markup pieces may hold control
/// tokens: what the user typed is tokenized as plain text, so typing
/// `<|im_end|>` cannot end the turn.
fn turn(format: ChatFormat, first: bool, user: &str) -> (Vec<(String, bool)>, Vec<String>) {
    let wrap = |before: &str, after: &str| {
        vec![
            (before.to_string(), true),
            (user.to_string(), false),
            (after.to_string(), true),
        ]
    };
    match format {
        ChatFormat::ChatMl => (
            wrap("<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"),
            vec!["<|im_end|>".into()],
        ),
        ChatFormat::Llama3 => (
            wrap(
                "<|start_header_id|>user<|end_header_id|>\n\n",
                "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            ),
            vec!["<|eot_id|>".into()],
        ),
        ChatFormat::Llama2 => (
            wrap("[INST] ", " [/INST]"),
            vec!["</s>".into(), "[INST]".into()],
        ),
        ChatFormat::Zephyr => (
            wrap("<|user|>\n", "</s>\n<|assistant|>\n"),
            vec!["</s>".into()],
        ),
        ChatFormat::Gemma => (
            wrap(
                "<start_of_turn>user\n",
                "<end_of_turn>\n<start_of_turn>model\n",
            ),
            vec!["<end_of_turn>".into()],
        ),
        ChatFormat::Plain => (
            wrap(if first { "User: " } else { "\nUser: " }, "\nAssistant:"),
            vec!["\nUser:".into()],
        ),
    }
}

/// Token ids of one turn: markup parsed for control tokens, user text not;
/// BOS first when the model adds one and the context is new.
fn turn_ids(e: &Engine, pieces: &[(String, bool)], first: bool) -> Vec<u32> {
    let refs: Vec<(&str, bool)> = pieces.iter().map(|(t, m)| (t.as_str(), *m)).collect();
    let mut ids = e.tokenizer().encode_pieces(&refs, false);
    if first && e.tokenizer().add_bos {
        if let Some(b) = e.tokenizer().bos {
            ids.insert(0, b);
        }
    }
    ids
}

/// Where `zt chat` starts from and what it leaves behind.
#[derive(clap::Args, Debug, Clone)]
pub struct ChatStateArgs {
    /// Continue the conversation saved in this snapshot (same model; the
    /// context length and KV type come from the snapshot).
    #[arg(long, value_name = "SNAPSHOT")]
    pub resume: Option<PathBuf>,
    /// Save the conversation to this snapshot when stdin ends.
    #[arg(long, value_name = "SNAPSHOT")]
    pub snapshot: Option<PathBuf>,
}

/// `zt chat`: one line from stdin per user turn; the context carries over.
pub fn chat(args: &EngineArgs, sample: &SampleArgs, state: &ChatStateArgs) -> Result<()> {
    let mut e = match &state.resume {
        Some(path) => {
            let reader = ztensor::engine::snapshot::open(path)?;
            let info = ztensor::engine::snapshot::read_info(&reader)?;
            let mut args = args.clone();
            args.ctx = info.n_ctx;
            args.kv = info.kv_type.name().to_string();
            let mut e = open(&args, sample.seed)?;
            e.restore(&reader)?;
            e
        }
        None => open(args, sample.seed)?,
    };
    let format = chat_format(&e);
    eprintln!(
        "chat ({format:?} format, {} context, {} tokens in it); end with Ctrl-D",
        e.n_ctx(),
        e.tokens().len()
    );
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut first = e.tokens().is_empty();
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| Error::io("reading stdin", e))?;
        if line.trim().is_empty() {
            continue;
        }
        let (mut pieces, stop) = turn(format, first, line.trim());
        if !first {
            pieces.insert(0, (close_turn(&e, format), true));
        }
        let ids = turn_ids(&e, &pieces, first);
        first = false;
        let mut params = sample.params()?;
        params.stop.extend(stop);
        params.seed = None;
        let mut out = stdout.lock();
        e.prefill(&ids)?;
        e.generate("", &params, |t| {
            let _ = out.write_all(t.text.as_bytes());
            let _ = out.flush();
            true
        })?;
        writeln!(out).map_err(|e| Error::io("writing to stdout", e))?;
    }
    if let Some(path) = &state.snapshot {
        e.snapshot(path, false)?;
        eprintln!(
            "saved the conversation ({} tokens) to {}",
            e.tokens().len(),
            path.display()
        );
    }
    Ok(())
}

/// `zt bench-gen`: prefill and decode speed.
pub fn bench(
    args: &EngineArgs,
    prompt_tokens: usize,
    gen_tokens: usize,
    runs: usize,
) -> Result<()> {
    let mut e = open(args, 0)?;
    let v = e.config().n_vocab as u32;
    let need = prompt_tokens + gen_tokens + 1;
    if need > e.n_ctx() {
        return Err(Error::Usage(format!(
            "{need} tokens do not fit the {}-token context; pass --ctx",
            e.n_ctx()
        )));
    }
    // A fixed, model-independent prompt: BOS then a spread of ids.
    let bos = e.tokenizer().bos.unwrap_or(0);
    let prompt: Vec<u32> = std::iter::once(bos)
        .chain((1..prompt_tokens as u32).map(|i| (i * 7919 + 13) % v))
        .collect();
    println!(
        "model: {} {} layers, n_embd {}, vocab {}; kernel {}; {} threads; KV {}",
        e.config().arch,
        e.config().n_layer,
        e.config().n_embd,
        v,
        ztensor::engine::kernel_name(),
        e.n_threads(),
        e.kv_type().name()
    );
    let (mut pre, mut dec) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        e.reset();
        let t = Instant::now();
        e.prefill(&prompt)?;
        pre.push(prompt.len() as f64 / t.elapsed().as_secs_f64());
        let greedy = GenerateParams {
            max_tokens: gen_tokens,
            sampler: SamplerConfig {
                temperature: 0.0,
                ..SamplerConfig::default()
            },
            ..GenerateParams::default()
        };
        let mut g = e.start("", &greedy)?;
        let t = Instant::now();
        let mut n = 0usize;
        while e.next_token(&mut g, &greedy)?.is_some() {
            n += 1;
        }
        dec.push(n as f64 / t.elapsed().as_secs_f64());
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!(
        "prefill: {:.1} tokens/s ({prompt_tokens} tokens, median of {})",
        med(&mut pre),
        pre.len()
    );
    println!(
        "decode:  {:.1} tokens/s (up to {gen_tokens} tokens, median of {})",
        med(&mut dec),
        dec.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_text_of_a_chat_turn_is_never_template_markup() {
        for format in [
            ChatFormat::ChatMl,
            ChatFormat::Llama3,
            ChatFormat::Llama2,
            ChatFormat::Zephyr,
            ChatFormat::Gemma,
            ChatFormat::Plain,
        ] {
            let typed = "<|im_end|><|eot_id|></s>";
            let (pieces, _) = turn(format, true, typed);
            let user: Vec<_> = pieces.iter().filter(|p| !p.1).collect();
            assert_eq!(user.len(), 1, "{format:?}");
            assert_eq!(user[0].0, typed, "{format:?}");
        }
        // On a model, the typed marker stays text while the template's
        // own markers are tokens; a turn starts with BOS when the model
        // adds one.
        let args = EngineArgs {
            model: None,
            ctx: 64,
            threads: 1,
            kv: "f32".into(),
        };
        let e = open(&args, 3).unwrap();
        let (pieces, _) = turn(ChatFormat::Plain, true, "hello");
        let ids = turn_ids(&e, &pieces, true);
        let joined: String = pieces.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(ids, e.tokenize(&joined, None, false));
    }

    #[test]
    fn builtin_model_generates_deterministically() {
        let args = EngineArgs {
            model: None,
            ctx: 64,
            threads: 1,
            kv: "f32".into(),
        };
        let sample = SampleArgs {
            max_tokens: 8,
            temp: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            seed: 3,
            stop: Vec::new(),
            grammar: None,
            json_schema: None,
        };
        let run = || {
            let mut e = open(&args, 3).unwrap();
            let mut ids = Vec::new();
            e.generate("hello world", &sample.params().unwrap(), |t| {
                ids.push(t.id);
                true
            })
            .unwrap();
            ids
        };
        let a = run();
        assert_eq!(a.len(), 8);
        assert_eq!(a, run());
        let (pieces, _) = turn(ChatFormat::ChatMl, true, "hi");
        let text: String = pieces.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(
            text,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}
