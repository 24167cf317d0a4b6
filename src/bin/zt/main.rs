//! `zt`: inspect, verify, convert, export and extract tensor files, and
//! run models with the CPU engine.

mod bench;
mod demo;
mod gen;
mod info;
mod rewrite;
mod serve;
mod util;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "zt",
    version,
    about = "Inspect, verify, convert and extract tensor files; run models on the CPU",
    long_about = "Inspect, verify, convert and extract tensor files; run models on the CPU.\n\n\
        The file read by info, verify, get, rewrite, convert and export may be an \
        http(s):// or s3:// URL: it is read with range requests (S3 settings from the \
        AWS_* environment variables, e.g. AWS_ENDPOINT_URL, AWS_REGION)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the objects of a file: name, layout, dtype, shape, encoding,
    /// stored bytes and digest, then the file attributes.
    Info { file: PathBuf },
    /// Check a file: every structural rule (always), plus every part's
    /// digest, zstd frames and data rules with --deep. Exit 0 when valid,
    /// 1 with one line `error: <rule-id>: <what>` otherwise.
    Verify {
        file: PathBuf,
        /// Also decode every part and check every digest.
        #[arg(long)]
        deep: bool,
    },
    /// Re-encode a file: change compression, digests, alignment, or write
    /// canonical form. Layouts, shapes, types and attributes are kept.
    Rewrite {
        input: PathBuf,
        output: PathBuf,
        /// zstd level 1-22 for every part (default: raw).
        #[arg(long, value_name = "LEVEL")]
        compress: Option<i32>,
        /// zstd frame size in bytes.
        #[arg(long, value_name = "BYTES", default_value_t = ztensor::zstd_seekable::DEFAULT_FRAME_SIZE)]
        frame_size: usize,
        /// Digest for every part: xxh3, sha256, crc32c, blake3 or none.
        #[arg(long, value_name = "ALG", default_value = "xxh3")]
        digest: String,
        /// Canonical form (64 KiB placement, xxh3, raw, deduplicated).
        #[arg(long)]
        canonical: bool,
        /// Blob alignment, a power of two ≥ 4096.
        #[arg(long, value_name = "N", default_value_t = 4096)]
        align: u64,
    },
    /// Convert a GGUF, safetensors, npy, npz, ztensor 1.x/0.1 or .zt file
    /// (detected by its first bytes) into .zt. GGUF metadata becomes file
    /// attributes with every value's exact GGUF type and order recorded;
    /// quantized tensors keep their block bytes verbatim.
    Convert {
        input: PathBuf,
        output: PathBuf,
        /// zstd level 1-22 for every part (default: raw).
        #[arg(long, value_name = "LEVEL")]
        compress: Option<i32>,
        /// Digest for every part: xxh3, sha256, crc32c, blake3 or none.
        #[arg(long, value_name = "ALG", default_value = "xxh3")]
        digest: String,
        /// Blob alignment, a power of two ≥ 4096.
        #[arg(long, value_name = "N", default_value_t = 4096)]
        align: u64,
        /// No progress bar and no summary line.
        #[arg(long, short)]
        quiet: bool,
        /// Write a sharded set: OUTPUT is the root, tensor data goes into
        /// `<stem>-00001.zt`, ... each at most this size (bytes, or with a
        /// K/M/G suffix, binary). INPUT may itself be a set (a
        /// `*.safetensors.index.json` or any shard of a split GGUF).
        #[arg(long, value_name = "SIZE")]
        max_shard_size: Option<String>,
    },
    /// Export a file to GGUF or safetensors (chosen by OUTPUT's extension).
    /// A .zt converted from GGUF exports back to the identical GGUF.
    Export {
        input: PathBuf,
        output: PathBuf,
        /// Write a split GGUF set (llama.cpp's `gguf-split` convention):
        /// `<stem>-00001-of-0000N.gguf`, ... each at most this size (bytes,
        /// or with a K/M/G suffix, binary); a larger tensor gets a file of
        /// its own.
        #[arg(long, value_name = "SIZE")]
        max_shard_size: Option<String>,
    },
    /// Extract one dense tensor as a .npy file.
    Get {
        file: PathBuf,
        name: String,
        /// Output .npy path.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Generate text: stream the continuation of PROMPT to stdout.
    Generate {
        #[command(flatten)]
        engine: gen::EngineArgs,
        /// The prompt.
        #[arg(short = 'p', long, default_value = "")]
        prompt: String,
        #[command(flatten)]
        sample: gen::SampleArgs,
    },
    /// Chat on stdin/stdout with the model's chat template; --snapshot
    /// saves the conversation, --resume continues a saved one.
    Chat {
        #[command(flatten)]
        engine: gen::EngineArgs,
        #[command(flatten)]
        sample: gen::SampleArgs,
        #[command(flatten)]
        state: gen::ChatStateArgs,
    },
    /// Serve a model over HTTP: OpenAI-compatible completions and chat,
    /// tokenize/detokenize, health, metrics, and named immutable states.
    Serve(serve::ServeArgs),
    /// Measure prefill and decode tokens/s.
    BenchGen {
        #[command(flatten)]
        engine: gen::EngineArgs,
        /// Prompt length for the prefill measurement.
        #[arg(long, default_value_t = 128, value_parser = at_least_one())]
        prompt_tokens: usize,
        /// Tokens to decode.
        #[arg(long, default_value_t = 64, value_parser = at_least_one())]
        gen_tokens: usize,
        /// Runs (the median is reported).
        #[arg(long, default_value_t = 3, value_parser = at_least_one())]
        runs: usize,
        /// Also decode this many sequences together (batched forward
        /// passes), comma-separated: aggregate tokens/s of each.
        #[arg(long, value_delimiter = ',', value_parser = at_least_one())]
        batch: Vec<usize>,
        /// After the measured runs, run one prefill and one decode with the
        /// per-op profile on and print where their time went (ms, share,
        /// µs per token, by op).
        #[arg(long)]
        profile: bool,
        /// Also decode under this GBNF grammar: each run then decodes the
        /// text prompt freely and under the grammar, both with the default
        /// sampler (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05) and
        /// the run's seed, and the ratio of the medians is printed.
        #[arg(long, value_name = "FILE")]
        grammar: Option<PathBuf>,
        /// The text prompt of the --grammar runs.
        #[arg(
            long,
            default_value = "Here is a JSON object describing a city, its population and landmarks:\n"
        )]
        prompt: String,
    },
    /// Write a sample file (dense, sparse, compressed, streamed tensors),
    /// list it, verify it deeply and read every tensor back.
    Demo {
        /// Directory for the sample file.
        #[arg(default_value = "demo-out")]
        dir: PathBuf,
    },
    /// Time writes, reads, zstd, verify and open against plain file I/O.
    Bench {
        /// Directory for the benchmark files (needs ~1 GiB free).
        #[arg(long, default_value = "target/zt-bench")]
        dir: PathBuf,
        /// Size of the big tensor in MiB.
        #[arg(long, default_value_t = 256)]
        mib: usize,
        /// Timed runs per measurement (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info { file } => info::run(&file),
        Command::Verify { file, deep } => info::verify(&file, deep),
        Command::Rewrite {
            input,
            output,
            compress,
            frame_size,
            digest,
            canonical,
            align,
        } => rewrite::run(
            &input, &output, compress, frame_size, &digest, canonical, align,
        ),
        Command::Get { file, name, output } => info::get(&file, &name, &output),
        Command::Convert {
            input,
            output,
            compress,
            digest,
            align,
            quiet,
            max_shard_size,
        } => match max_shard_size {
            None => rewrite::convert(&input, &output, compress, &digest, align, quiet),
            Some(size) => {
                rewrite::convert_sharded(&input, &output, compress, &digest, align, quiet, &size)
            }
        },
        Command::Export {
            input,
            output,
            max_shard_size,
        } => rewrite::export(&input, &output, max_shard_size.as_deref()),
        Command::Demo { dir } => demo::run(&dir),
        Command::Generate {
            engine,
            prompt,
            sample,
        } => gen::generate(&engine, &prompt, &sample),
        Command::Chat {
            engine,
            sample,
            state,
        } => gen::chat(&engine, &sample, &state),
        Command::Serve(args) => serve::run(args),
        Command::BenchGen {
            engine,
            prompt_tokens,
            gen_tokens,
            runs,
            batch,
            grammar,
            prompt,
            profile,
        } => match grammar {
            None => gen::bench(&engine, prompt_tokens, gen_tokens, runs, &batch, profile),
            Some(_) if profile => Err(ztensor::Error::Usage(
                "--profile profiles the plain prefill and decode; leave out --grammar".into(),
            )),
            Some(g) => gen::bench_grammar(&engine, &g, &prompt, gen_tokens, runs),
        },
        Command::Bench { dir, mib, runs } => bench::run(&dir, mib, runs),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", util::describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// A count that must be at least 1 (a benchmark of 0 runs, tokens or
/// sequences measures nothing).
fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
}
