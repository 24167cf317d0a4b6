//! `zt generate`, `zt chat`, `zt bench-gen`: the engine from the command
//! line. Without a MODEL they use the small model built into `zt` (the
//! llama-tiny q8_0 fixture, random weights: it shows the machinery, its
//! text is noise).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use ztensor::engine::chat::ChatFormat;
use ztensor::engine::profile::OpTime;
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
        let params = GenerateParams {
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
        };
        // Checked before any model is opened or line read.
        params.validate()?;
        Ok(params)
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
    // Bad sampling flags are refused before the model loads, not at the
    // first turn.
    sample.params()?;
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
    let format = ChatFormat::detect(&e);
    eprintln!(
        "chat ({format:?} format, {} context, {} tokens in it); end with Ctrl-D",
        e.n_ctx(),
        e.tokens().len()
    );
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| Error::io("reading stdin", e))?;
        if line.trim().is_empty() {
            continue;
        }
        let ids = format.next_turn(e.tokenizer(), e.tokens(), line.trim());
        let mut params = sample.params()?;
        params
            .stop
            .extend(format.stop_strings().iter().map(|s| s.to_string()));
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
    batches: &[usize],
    profile: bool,
) -> Result<()> {
    if let Some(&n) = batches.iter().find(|&&n| n > 256) {
        return Err(Error::Usage(format!("--batch {n}: at most 256 sequences")));
    }
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
    let greedy = GenerateParams {
        max_tokens: gen_tokens,
        sampler: SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        },
        ..GenerateParams::default()
    };
    // One measured prefill then decode: (prefill secs, decode secs, tokens).
    let once = |e: &mut Engine| -> Result<(f64, f64, usize)> {
        e.reset();
        let t = Instant::now();
        e.prefill(&prompt)?;
        let prefill = t.elapsed().as_secs_f64();
        let mut g = e.start("", &greedy)?;
        let t = Instant::now();
        let mut n = 0usize;
        while e.next_token(&mut g, &greedy)?.is_some() {
            n += 1;
        }
        Ok((prefill, t.elapsed().as_secs_f64(), n))
    };
    let (mut pre, mut dec) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        let (p, d, n) = once(&mut e)?;
        pre.push(prompt.len() as f64 / p);
        dec.push(n as f64 / d);
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
    if profile {
        // Prefill, then decode, each profiled on its own.
        e.reset();
        e.set_profiling(true);
        let t = Instant::now();
        e.prefill(&prompt)?;
        let wall = t.elapsed();
        print_profile("prefill", prompt.len(), wall, &e.profile());
        e.set_profiling(true);
        let mut g = e.start("", &greedy)?;
        let t = Instant::now();
        let mut n = 0usize;
        while e.next_token(&mut g, &greedy)?.is_some() {
            n += 1;
        }
        print_profile("decode", n, t.elapsed(), &e.profile());
        e.set_profiling(false);
    }
    for &n in batches.iter().filter(|&&n| n > 1) {
        let mut agg = Vec::new();
        for _ in 0..runs.max(1) {
            agg.push(batched_decode(&e, &prompt, gen_tokens, n)?);
        }
        println!(
            "batched decode of {n} sequences: {:.1} tokens/s aggregate ({gen_tokens} steps, median of {})",
            med(&mut agg),
            agg.len()
        );
    }
    Ok(())
}

/// Prints a per-op profile of `tokens` tokens that took `wall`, the
/// costliest op first; "other" is the wall time outside every timed op
/// (thread start and sync between ops, detokenizing, bookkeeping).
fn print_profile(what: &str, tokens: usize, wall: Duration, ops: &[OpTime]) {
    let wall_ms = wall.as_secs_f64() * 1e3;
    println!("profile of one {what} of {tokens} tokens: {wall_ms:.1} ms");
    println!(
        "  {:<24} {:>9} {:>7} {:>11} {:>7}",
        "op", "ms", "share", "us/token", "calls"
    );
    let mut rows: Vec<(&str, f64, u64)> = ops
        .iter()
        .filter(|o| o.calls > 0)
        .map(|o| (o.op.name(), o.time.as_secs_f64() * 1e3, o.calls))
        .collect();
    let timed: f64 = rows.iter().map(|r| r.1).sum();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    rows.push(("other", (wall_ms - timed).max(0.0), 0));
    for (name, ms, calls) in rows {
        println!(
            "  {name:<24} {ms:>9.2} {:>6.1}% {:>11.1} {:>7}",
            100.0 * ms / wall_ms.max(f64::MIN_POSITIVE),
            1e3 * ms / tokens.max(1) as f64,
            if calls > 0 {
                calls.to_string()
            } else {
                "-".into()
            }
        );
    }
}

/// Aggregate tokens/s of `n` forks of `e` (each prefilled with `prompt`
/// rotated by its index) decoding `steps` greedy tokens together through
/// [`Engine::eval_batch`].
fn batched_decode(e: &Engine, prompt: &[u32], steps: usize, n: usize) -> Result<f64> {
    let mut forks = Vec::with_capacity(n);
    for i in 0..n {
        let mut f = e.fork(None)?;
        f.reset();
        let mut p = prompt.to_vec();
        let k = p.len().saturating_sub(1);
        if k > 0 {
            p[1..].rotate_left(i % k);
        }
        f.prefill(&p)?;
        forks.push(f);
    }
    let argmax = |l: &[f32]| {
        l.iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (i, &x)| if x > b.1 { (i, x) } else { b },
            )
            .0 as u32
    };
    let mut next: Vec<u32> = forks.iter().map(|f| argmax(f.last_logits())).collect();
    let v = e.config().n_vocab;
    let t = Instant::now();
    for _ in 0..steps {
        let mut refs: Vec<&mut Engine> = forks.iter_mut().collect();
        let logits = Engine::eval_batch(&mut refs, &next)?;
        next = logits.chunks(v).map(argmax).collect();
    }
    Ok((n * steps) as f64 / t.elapsed().as_secs_f64())
}

/// `zt bench-gen --grammar FILE`: decode speed without and under a grammar
/// with the default sampler, interleaved run by run (so a loaded machine
/// slows both alike), and the ratio of the medians.
pub fn bench_grammar(
    args: &EngineArgs,
    grammar: &std::path::Path,
    prompt: &str,
    gen_tokens: usize,
    runs: usize,
) -> Result<()> {
    let source = std::fs::read_to_string(grammar)
        .map_err(|e| Error::io(format!("reading {}", grammar.display()), e))?;
    let mut e = open(args, 0)?;
    let n_prompt = e.tokenize(prompt, None, false).len();
    if n_prompt + gen_tokens + 2 > e.n_ctx() {
        return Err(Error::Usage(format!(
            "{} tokens do not fit the {}-token context; pass --ctx",
            n_prompt + gen_tokens + 2,
            e.n_ctx()
        )));
    }
    println!(
        "model: {} vocab {}; {} threads; default sampler; grammar {}; {gen_tokens} tokens",
        e.config().arch,
        e.config().n_vocab,
        e.n_threads(),
        grammar.display()
    );
    let (mut free, mut constrained) = (Vec::new(), Vec::new());
    for run in 0..runs.max(1) {
        for under in [false, true] {
            let params = GenerateParams {
                max_tokens: gen_tokens,
                seed: Some(run as u64),
                grammar: under.then(|| GrammarSpec::Gbnf(source.clone())),
                ..GenerateParams::default()
            };
            e.reset();
            let mut g = e.start(prompt, &params)?;
            // Decode rate over the tokens after the first (the first one
            // builds the grammar's per-vocabulary trie once).
            let (mut first, mut last, mut n) = (None, Instant::now(), 0usize);
            while e.next_token(&mut g, &params)?.is_some() {
                last = Instant::now();
                first.get_or_insert(last);
                n += 1;
            }
            if let Some(t0) = first.filter(|_| n > 2) {
                let rate = (n - 1) as f64 / last.duration_since(t0).as_secs_f64();
                if under { &mut constrained } else { &mut free }.push(rate);
            }
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied()
    };
    match (med(&mut free), med(&mut constrained)) {
        (Some(f), Some(c)) => println!(
            "decode free: {f:.1} tokens/s, under the grammar: {c:.1} tokens/s, ratio {:.3} (medians of {} and {} runs)",
            c / f,
            free.len(),
            constrained.len()
        ),
        _ => println!("the runs ended too early to time (fewer than 3 tokens)"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_turns_keep_typed_markers_as_text() {
        // On a model, a typed marker stays text while the template's own
        // markers are tokens; a new conversation starts with BOS when the
        // model adds one, a later turn closes the previous one first.
        let args = EngineArgs {
            model: None,
            ctx: 64,
            threads: 1,
            kv: "f32".into(),
        };
        let e = open(&args, 3).unwrap();
        let tok = e.tokenizer();
        let ids = ChatFormat::Plain.next_turn(tok, &[], "hello");
        assert_eq!(ids, e.tokenize("User: hello\nAssistant:", None, false));
        let later = ChatFormat::Plain.next_turn(tok, &ids, "again");
        assert_eq!(
            later,
            e.tokenize("\nUser: again\nAssistant:", Some(false), false)
        );
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
    }
}
