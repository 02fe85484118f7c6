//! `owlet-convert`: Hugging Face mPLUG-Owl2 checkpoint → one self-contained GGUF.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use owlet::quant::GgmlType;
use owlet_convert::convert::{self, TokenizerData};
use owlet_convert::hfconfig::{HfGeneration, HfPreprocessor, HfTokenizerConfig};
use owlet_convert::inspect;
use owlet_convert::plan::{Options, Preset};
use owlet_convert::{spm, synth};

#[derive(Parser)]
#[command(
    name = "owlet-convert",
    version,
    about = "Convert a Hugging Face mPLUG-Owl2 checkpoint into one self-contained GGUF file",
    long_about = "Convert a Hugging Face mPLUG-Owl2 checkpoint (sharded PyTorch .bin or safetensors; f32/f16/bf16) \
into one GGUF file with the LLM, the _vis MAM copies, the vision tower, the abstractor, the tokenizer and every \
hyperparameter.\n\nExamples:\n  owlet-convert ./mplug-owl2-llama2-7b -o owl2-q4_k_m.gguf --type q4_k_m\n  \
owlet-convert inspect owl2-q4_k_m.gguf\n  owlet-convert synth --preset 7b --type q4_0 -o bench.gguf",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    convert: ConvertArgs,
}

#[derive(Args)]
struct ConvertArgs {
    /// The checkpoint directory (config.json, weights, tokenizer.model).
    dir: Option<PathBuf>,
    #[command(flatten)]
    out: OutArgs,
}

#[derive(Args, Clone)]
struct OutArgs {
    /// Output GGUF file.
    #[arg(short = 'o', long = "out")]
    out: Option<PathBuf>,
    /// LLM weight type: f32, f16, q8_0, q4_0, q4_k_m.
    #[arg(long = "type", default_value = "q4_k_m")]
    typ: String,
    /// Vision tower and abstractor matrix type: f32, f16, q8_0.
    #[arg(long = "vision-type", default_value = "q8_0")]
    vision_type: String,
    /// Write a plain llama GGUF with the text weights only (llama.cpp can load it).
    #[arg(long)]
    text_only: bool,
    /// general.name of the output.
    #[arg(long)]
    name: Option<String>,
    /// No progress bar or summary.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Print a GGUF file's metadata and tensor table.
    Inspect {
        file: PathBuf,
        /// Print every array item instead of the first few.
        #[arg(long)]
        full: bool,
    },
    /// Random weights with the real shapes, as GGUF (-o) or as an HF checkpoint (--hf).
    Synth {
        /// 7b or tiny.
        #[arg(long, default_value = "7b")]
        preset: String,
        /// Write a release-style Hugging Face checkpoint into this directory instead.
        #[arg(long)]
        hf: Option<PathBuf>,
        /// Shard size for --hf, in MB.
        #[arg(long, default_value_t = 1000)]
        shard_mb: u64,
        /// LLM decoder layers (default: the preset's; the widths stay the preset's).
        #[arg(long)]
        layers: Option<usize>,
        /// Vision encoder layers (default: the preset's).
        #[arg(long = "vision-layers")]
        vision_layers: Option<usize>,
        /// Weight files for --hf: bin (torch.save shards, as the release) or safetensors.
        #[arg(long, default_value = "bin")]
        format: String,
        #[command(flatten)]
        out: OutArgs,
    },
}

fn options(o: &OutArgs) -> Result<Options> {
    let preset: Preset = o.typ.parse().map_err(anyhow::Error::msg)?;
    let vision_type = match o.vision_type.as_str() {
        "f32" => GgmlType::F32,
        "f16" => GgmlType::F16,
        "q8_0" => GgmlType::Q8_0,
        other => bail!("unknown --vision-type {other:?} (f32, f16, q8_0)"),
    };
    Ok(Options {
        preset,
        vision_type,
        text_only: o.text_only,
        name: o.name.clone(),
    })
}

fn require_out(o: &OutArgs) -> Result<&Path> {
    match &o.out {
        Some(p) => Ok(p),
        None => bail!("missing -o OUT.gguf"),
    }
}

fn finish(out: &Path, s: &convert::Summary, quiet: bool) -> Result<()> {
    for w in &s.warnings {
        eprintln!("warning: {w}");
    }
    if !quiet {
        convert::print_summary(out, s, &mut std::io::stderr())?;
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Inspect { file, full }) => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            inspect::print(&file, full, &mut out)?;
            out.flush().map_err(anyhow::Error::from)
        }
        Some(Command::Synth {
            preset,
            hf,
            shard_mb,
            layers,
            vision_layers,
            format,
            out,
        }) => {
            let cfg = synth::with_layers(synth::preset(&preset)?, layers, vision_layers)?;
            if let Some(dir) = hf {
                let format: synth::HfFormat = format.parse().map_err(anyhow::Error::msg)?;
                synth::write_hf(&cfg, &dir, shard_mb.max(1) * 1_000_000, format)?;
                if !out.quiet {
                    eprintln!("wrote a synthetic {preset} checkpoint to {}", dir.display());
                }
                return Ok(());
            }
            let target = require_out(&out)?;
            let opts = options(&out)?;
            let model = spm::parse_spm(synth::TOKENIZER_MODEL)?;
            let tokenizer = TokenizerData {
                hf_json: spm::hf_tokenizer_json(&model),
                model,
                config: HfTokenizerConfig {
                    add_bos: true,
                    add_eos: false,
                    legacy: false,
                },
            };
            let pre = HfPreprocessor {
                size: cfg.vision.image_size,
                mean: owlet::image::CLIP_MEAN,
                std: owlet::image::CLIP_STD,
                resample: 3,
            };
            let src = synth::SynthSource::new(&cfg);
            let s = convert::convert_source(
                &cfg,
                &pre,
                &HfGeneration::default(),
                &tokenizer,
                &src,
                target,
                &opts,
                out.quiet,
            )?;
            finish(target, &s, out.quiet)
        }
        None => {
            let Some(dir) = &cli.convert.dir else {
                bail!("missing the checkpoint directory (see --help)");
            };
            let o = &cli.convert.out;
            let target = require_out(o)?;
            let opts = options(o)?;
            let s = convert::convert_dir(dir, target, &opts, o.quiet)?;
            finish(target, &s, o.quiet)
        }
    }
}

/// True when `e` comes from writing to a closed pipe (`owlet-convert inspect F | head`): the
/// reader has all it wanted, so that is not a failure. (Rust ignores SIGPIPE, so the write
/// returns EPIPE instead of killing the process.)
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = owlet_convert::output::remove_temporaries_on_signals() {
        eprintln!("owlet-convert: {e:#}");
        return ExitCode::FAILURE;
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("owlet-convert: {e:#}");
            ExitCode::FAILURE
        }
    }
}
