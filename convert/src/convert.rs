//! The conversion itself: checkpoint directory in, one self-contained GGUF out.
//!
//! Memory stays near the largest tensor: tensors are read, reordered, quantized and written one
//! at a time. The output is written to a temporary file next to the target, re-opened and
//! validated with the runtime's own loader, then renamed over the target; on any error the
//! temporary file is removed and a previous output stays untouched.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use owlet::gguf::{Array, Gguf, GgufWriter, Value, ValueType};
use owlet::model::names::{self, arch_key, gkey, key};
use owlet::model::Modality;
use owlet::quant::{self, GgmlType};
use rayon::prelude::*;

use crate::checkpoint::Checkpoint;
use crate::hfconfig::{HfConfig, HfGeneration, HfPreprocessor, HfTokenizerConfig};
use crate::output::{self, TempOut};
use crate::plan::{self, From, Options, Planned, Shapes, Transform};
use crate::spm;

/// Where tensor values come from: a checkpoint, or synthetic weights.
pub trait Source: Shapes + Sync {
    /// The tensor's values as f32 (exact upcast of 16-bit sources).
    fn read_f32(&self, name: &str) -> Result<Vec<f32>>;
    /// Problems found while opening that are worth a warning.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

impl Shapes for Checkpoint {
    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.get(name).map(|t| t.shape.clone())
    }
    fn all_names(&self) -> Vec<String> {
        self.tensors().iter().map(|t| t.name.clone()).collect()
    }
}

impl Source for Checkpoint {
    fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let t = self
            .get(name)
            .ok_or_else(|| anyhow!("tensor {name} is not in the checkpoint"))?;
        Checkpoint::read_f32(self, t)
    }
    fn warnings(&self) -> Vec<String> {
        Checkpoint::warnings(self).to_vec()
    }
}

/// The tokenizer as it goes into the file.
pub struct TokenizerData {
    pub model: spm::SpmModel,
    pub hf_json: String,
    pub config: HfTokenizerConfig,
}

impl TokenizerData {
    /// Reads `tokenizer.model` (required), `tokenizer.json` (optional; generated from the
    /// SentencePiece model when absent) and `tokenizer_config.json`.
    pub fn read(dir: &Path) -> Result<TokenizerData> {
        let path = dir.join("tokenizer.model");
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "{}: the SentencePiece tokenizer.model is required",
                path.display()
            )
        })?;
        let model = spm::parse_spm(&bytes).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let json_path = dir.join("tokenizer.json");
        let hf_json = if json_path.exists() {
            std::fs::read_to_string(&json_path)
                .with_context(|| format!("{}", json_path.display()))?
        } else {
            spm::hf_tokenizer_json(&model)
        };
        Ok(TokenizerData {
            model,
            hf_json,
            config: HfTokenizerConfig::read(dir)?,
        })
    }
}

/// Everything the metadata is made of.
pub struct Inputs<'a> {
    pub cfg: &'a HfConfig,
    pub pre: &'a HfPreprocessor,
    pub generation: &'a HfGeneration,
    pub tokenizer: &'a TokenizerData,
}

/// The mPLUG-Owl2 chat template (upstream's `conv_mplug_owl2`), as Jinja for other tools.
pub const CHAT_TEMPLATE: &str = "{% for m in messages %}{% if m['role'] == 'user' %}USER: {{ m['content'] }} {% else %}ASSISTANT: {{ m['content'] }}</s>{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}";

fn arr(elem: ValueType, items: Vec<Value>) -> Value {
    Value::Array(Array { elem, items })
}

/// One metadata value as the inputs give it.
enum Meta {
    /// A count or size (a `usize` of the config), stored as a GGUF u32.
    Count(usize),
    Val(Value),
}

/// The GGUF value of `v` under `key`; a count past u32 is an error naming the key.
fn meta_value(key: &str, v: Meta) -> Result<Value> {
    match v {
        Meta::Count(n) => u32::try_from(n).map(Value::U32).map_err(|_| {
            anyhow!(
                "metadata key {key} would be {n}, which does not fit its 32-bit GGUF field; check config.json"
            )
        }),
        Meta::Val(v) => Ok(v),
    }
}

fn strs<'a>(items: impl IntoIterator<Item = &'a str>) -> Value {
    arr(
        ValueType::Str,
        items.into_iter().map(|s| Value::Str(s.into())).collect(),
    )
}

fn f32s(items: &[f32]) -> Value {
    arr(
        ValueType::F32,
        items.iter().map(|&x| Value::F32(x)).collect(),
    )
}

/// Builds the file's metadata: three tables (general keys, `{arch}.` keys, tokenizer keys)
/// written in order.
pub fn metadata(inp: &Inputs<'_>, opts: &Options) -> Result<Vec<(String, Value)>> {
    use Meta::{Count, Val};
    let c = inp.cfg;
    let arch = if opts.text_only {
        names::ARCH_LLAMA
    } else {
        names::ARCH_MPLUG_OWL2
    };
    let default_name = if opts.text_only {
        "mPLUG-Owl2 LLaMA-2 (text only)"
    } else {
        "mPLUG-Owl2"
    };
    let general = [
        (gkey::ARCHITECTURE, Val(Value::Str(arch.into()))),
        (
            gkey::NAME,
            Val(Value::Str(
                opts.name.clone().unwrap_or_else(|| default_name.into()),
            )),
        ),
        (gkey::FILE_TYPE, Val(Value::U32(opts.preset.file_type()))),
        ("general.quantization_version", Val(Value::U32(2))),
    ];
    let mut per_arch = vec![
        (key::CONTEXT_LENGTH, Count(c.max_position_embeddings)),
        (key::EMBEDDING_LENGTH, Count(c.hidden_size)),
        (key::BLOCK_COUNT, Count(c.num_hidden_layers)),
        (key::FEED_FORWARD_LENGTH, Count(c.intermediate_size)),
        (key::HEAD_COUNT, Count(c.num_attention_heads)),
        (key::HEAD_COUNT_KV, Count(c.num_key_value_heads)),
        (key::RMS_EPS, Val(Value::F32(c.rms_norm_eps))),
        (key::ROPE_DIM, Count(c.head_dim())),
        (key::ROPE_FREQ_BASE, Val(Value::F32(c.rope_theta))),
        (key::VOCAB_SIZE, Count(c.vocab_size)),
    ];
    if !opts.text_only {
        let (v, a, p) = (&c.vision, &c.abstractor, inp.pre);
        // upstream's process_images: "pad" pads, anything else without a value means the
        // README Quick Start's stretch ("resize").
        let aspect = match c.image_aspect_ratio.as_deref() {
            Some("pad") => "pad",
            Some("resize") | None => "resize",
            Some(_) => "crop",
        };
        // expand2square's background: int(255·mean) per channel.
        let pad_color = p
            .mean
            .iter()
            .map(|&x| Value::U8((x as f64 * 255.0) as u8))
            .collect();
        per_arch.extend([
            (key::ROPE_QK_PERMUTED, Val(Value::Bool(true))),
            (key::MAM_MODALITY_COUNT, Count(Modality::ALL.len())),
            (
                key::MAM_VISUAL_SUFFIX,
                Val(Value::Str(names::VIS_SUFFIX.into())),
            ),
            (key::MAM_TENSORS, Val(strs(names::blk::MAM))),
            // The queries, then the end-of-image row.
            (
                key::IMAGE_TOKEN_COUNT,
                Count(a.num_learnable_queries.saturating_add(1)),
            ),
            (
                key::IMAGE_PLACEHOLDER,
                Val(Value::Str(names::IMAGE_PLACEHOLDER.into())),
            ),
            (key::V_IMAGE_SIZE, Count(v.image_size)),
            (key::V_PATCH_SIZE, Count(v.patch_size)),
            (key::V_EMBEDDING_LENGTH, Count(v.hidden_size)),
            (key::V_FEED_FORWARD_LENGTH, Count(v.intermediate_size)),
            (key::V_BLOCK_COUNT, Count(v.num_hidden_layers)),
            (key::V_HEAD_COUNT, Count(v.num_attention_heads)),
            (key::V_LN_EPS, Val(Value::F32(v.layer_norm_eps))),
            (key::V_ACTIVATION, Val(Value::Str(v.hidden_act.clone()))),
            (key::V_HAS_CLASS_TOKEN, Val(Value::Bool(true))),
            (key::V_IMAGE_MEAN, Val(f32s(&p.mean))),
            (key::V_IMAGE_STD, Val(f32s(&p.std))),
            (key::V_RESAMPLE, Val(Value::Str("bicubic".into()))),
            (key::V_ASPECT_MODE, Val(Value::Str(aspect.into()))),
            (key::V_PAD_COLOR, Val(arr(ValueType::U8, pad_color))),
            (key::A_QUERY_COUNT, Count(a.num_learnable_queries)),
            (key::A_BLOCK_COUNT, Count(a.num_hidden_layers)),
            (key::A_HEAD_COUNT, Count(a.num_attention_heads)),
            (key::A_EMBEDDING_LENGTH, Count(a.hidden_size)),
            (key::A_FEED_FORWARD_LENGTH, Count(a.intermediate_size)),
            // ln_q / ln_kv / ln2 are built with PyTorch's default eps upstream, not the config's.
            (key::A_LN_EPS, Val(Value::F32(1e-5))),
            (key::A_FFN_LN_EPS, Val(Value::F32(a.layer_norm_eps))),
            (key::A_GRID_SIZE, Count(a.grid_size)),
            (
                key::TOKENIZER_LEGACY,
                Val(Value::Bool(inp.tokenizer.config.legacy)),
            ),
        ]);
        // Generation defaults, where generation_config.json sets them.
        let g = inp.generation;
        per_arch.extend(
            [
                (key::GEN_TEMPERATURE, g.temperature.map(Value::F32)),
                (key::GEN_TOP_P, g.top_p.map(Value::F32)),
                (key::GEN_TOP_K, g.top_k.map(Value::U32)),
                (key::GEN_MAX_NEW_TOKENS, g.max_new_tokens.map(Value::U32)),
            ]
            .into_iter()
            .filter_map(|(k, v)| Some((k, Val(v?)))),
        );
    }
    // Tokenizer (llama.cpp's keys) and the HF tokenizer for other tools.
    let t = &inp.tokenizer.model;
    if t.tokens.len() != c.vocab_size {
        bail!(
            "tokenizer.model has {} pieces but config.json vocab_size is {}",
            t.tokens.len(),
            c.vocab_size
        );
    }
    let tok = &inp.tokenizer.config;
    let tokenizer = [
        (gkey::TOK_MODEL, Value::Str("llama".into())),
        (gkey::TOK_TOKENS, strs(t.tokens.iter().map(String::as_str))),
        (gkey::TOK_SCORES, f32s(&t.scores)),
        (
            gkey::TOK_TYPES,
            arr(
                ValueType::I32,
                t.types.iter().map(|&s| Value::I32(s)).collect(),
            ),
        ),
        (gkey::TOK_BOS, Value::U32(c.bos_token_id)),
        (gkey::TOK_EOS, Value::U32(c.eos_token_id)),
        (gkey::TOK_UNK, Value::U32(t.unk_id)),
        (gkey::TOK_PAD, Value::U32(c.pad_token_id)),
        (gkey::TOK_ADD_BOS, Value::Bool(tok.add_bos)),
        (gkey::TOK_ADD_EOS, Value::Bool(tok.add_eos)),
        (gkey::TOK_HF_JSON, Value::Str(inp.tokenizer.hf_json.clone())),
        (gkey::CHAT_TEMPLATE, Value::Str(CHAT_TEMPLATE.into())),
    ];
    let mut m = Vec::new();
    for (k, v) in general {
        m.push((k.to_string(), meta_value(k, v)?));
    }
    for (k, v) in per_arch {
        let k = arch_key(arch, k);
        let v = meta_value(&k, v)?;
        m.push((k, v));
    }
    m.extend(tokenizer.map(|(k, v)| (k.to_string(), v)));
    Ok(m)
}

/// Per-run totals for the summary line.
#[derive(Debug, Default)]
pub struct Summary {
    pub tensors: usize,
    /// Bytes of tensor data.
    pub bytes: u64,
    /// Size of the written file (header, metadata, padding and tensors).
    pub file_bytes: u64,
    pub by_type: Vec<(GgmlType, usize, u64)>,
    pub seconds: f64,
    pub warnings: Vec<String>,
}

/// Produces one output tensor's bytes.
fn produce(
    src: &dyn Source,
    p: &Planned,
    cache: &mut Option<(String, Vec<f32>)>,
) -> Result<Vec<u8>> {
    let values: Vec<f32> = match &p.from {
        From::Computed(v) => v.clone(),
        From::SameInEvery { names } => {
            let first = src.read_f32(&names[0])?;
            for n in &names[1..] {
                if src.read_f32(n)? != first {
                    bail!(
                        "{n} differs from {}; owlet stores one table for every layer",
                        names[0]
                    );
                }
            }
            first
        }
        From::Tensor {
            name,
            transform: Transform::Copy,
        } => {
            // Moved, not copied: for token_embd/output of a 7B (32000×4096 f32 = 524 MB) a
            // second copy would double the peak memory.
            *cache = None;
            src.read_f32(name)?
        }
        From::Tensor { name, transform } => {
            let rows = src
                .shape_of(name)
                .and_then(|s| s.iter().copied().find(|&d| d != 1))
                .unwrap_or(1);
            if let Transform::QkvPart { .. } = transform {
                // The fused ViT QKV feeds three outputs in a row: read it once.
                let hit = cache.as_ref().is_some_and(|(n, _)| n == name);
                if !hit {
                    *cache = Some((name.clone(), src.read_f32(name)?));
                }
                let (_, data) = cache.as_ref().expect("filled above");
                plan::apply(transform, data, rows)
            } else {
                *cache = None;
                plan::apply(transform, &src.read_f32(name)?, rows)
            }
        }
    };
    if values.len() != p.n_elements() {
        bail!(
            "tensor {}: {} values for shape {:?}",
            p.name,
            values.len(),
            p.ne
        );
    }
    if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
        bail!(
            "tensor {} has a non-finite value at element {bad}; the checkpoint is corrupt",
            p.name
        );
    }
    quantize(p.typ, &values, p.ne[0] as usize).with_context(|| format!("tensor {}", p.name))
}

/// Quantizes rows of `cols` values to `typ`, in parallel by rows.
pub fn quantize(typ: GgmlType, values: &[f32], cols: usize) -> Result<Vec<u8>> {
    let rb = typ
        .row_bytes(cols as u64)
        .ok_or_else(|| anyhow!("rows of {cols} cannot be stored as {typ}"))? as usize;
    let rows = values.len() / cols;
    let mut out = vec![0u8; rows * rb];
    out.par_chunks_mut(rb)
        .zip(values.par_chunks(cols))
        .try_for_each(|(dst, row)| {
            quant::quantize_row(typ, row, dst).map_err(|e| anyhow!("{e:?}"))
        })?;
    Ok(out)
}

/// Writes `plan` with `meta` to `out` atomically (see [`crate::output`]), reporting progress
/// on a terminal.
pub fn write_gguf(
    out: &Path,
    meta: &[(String, Value)],
    plan: &[Planned],
    src: &dyn Source,
    quiet: bool,
) -> Result<Summary> {
    let start = Instant::now();
    let tmp = TempOut::create(out)?;
    let mut summary = write_to(tmp.path(), tmp.file()?, meta, plan, src, quiet)?;
    // Self-check: the runtime's own loader must accept the file before it replaces anything
    // (with the generic kernels, which repack nothing: validation only).
    let check = Gguf::open(tmp.path())
        .map_err(|e| anyhow!("{e}"))
        .and_then(|g| {
            owlet::model::Model::from_gguf_with_kernels(g, &owlet::kernels::GENERIC)
                .map(|_| ())
                .map_err(|e| anyhow!("{e}"))
        });
    if let Err(e) = check {
        bail!(
            "the written file failed validation ({e}); nothing was written to {}",
            out.display()
        );
    }
    tmp.persist(out)?;
    summary.file_bytes = std::fs::metadata(out)
        .with_context(|| format!("cannot stat {}", out.display()))?
        .len();
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}

fn write_to(
    tmp: &Path,
    file: std::fs::File,
    meta: &[(String, Value)],
    plan: &[Planned],
    src: &dyn Source,
    quiet: bool,
) -> Result<Summary> {
    let descs: Vec<(String, Vec<u64>, GgmlType)> = plan
        .iter()
        .map(|p| (p.name.clone(), p.ne.clone(), p.typ))
        .collect();
    let mut w = GgufWriter::new(BufWriter::with_capacity(8 << 20, file), meta, &descs, 32)
        .with_context(|| format!("writing {}", tmp.display()))?;
    let total: u64 = plan
        .iter()
        .map(|p| p.typ.row_bytes(p.ne[0]).unwrap_or(0) * (p.n_elements() as u64 / p.ne[0].max(1)))
        .sum();
    let tty = !quiet && std::io::stderr().is_terminal();
    let t0 = Instant::now();
    let mut done = 0u64;
    let mut summary = Summary::default();
    let mut cache = None;
    for (i, p) in plan.iter().enumerate() {
        let bytes = produce(src, p, &mut cache)?;
        w.write_tensor(&p.name, &bytes)
            .with_context(|| format!("writing tensor {} to {}", p.name, tmp.display()))?;
        done += bytes.len() as u64;
        summary.tensors += 1;
        summary.bytes += bytes.len() as u64;
        match summary.by_type.iter_mut().find(|(t, _, _)| *t == p.typ) {
            Some(e) => {
                e.1 += 1;
                e.2 += bytes.len() as u64;
            }
            None => summary.by_type.push((p.typ, 1, bytes.len() as u64)),
        }
        if tty {
            let secs = t0.elapsed().as_secs_f64().max(1e-6);
            eprint!(
                "\r\x1b[K[{:>4}/{}] {:<40} {:>6.1}/{:.1} GB  {:>6.0} MB/s",
                i + 1,
                plan.len(),
                p.name,
                done as f64 / 1e9,
                total as f64 / 1e9,
                done as f64 / 1e6 / secs
            );
        }
    }
    if tty {
        eprintln!();
    }
    let buf = w
        .finish()
        .with_context(|| format!("finishing {}", tmp.display()))?;
    let file = buf
        .into_inner()
        .map_err(|e| anyhow!("flushing {}: {}", tmp.display(), e.error()))?;
    file.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    Ok(summary)
}

/// The files of a checkpoint directory that a conversion reads besides the weights (the
/// optional ones too): `config.json` ([`HfConfig::read`]), `preprocessor_config.json`
/// ([`HfPreprocessor::read`]), `generation_config.json` ([`HfGeneration::read`]) and the
/// tokenizer's three ([`TokenizerData::read`]).
pub const METADATA_FILES: [&str; 6] = [
    "config.json",
    "preprocessor_config.json",
    "generation_config.json",
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
];

/// Every file a conversion of `dir` reads: [`METADATA_FILES`] and the weight files (the index
/// JSON and its shards). Reads only the index.
pub fn input_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = METADATA_FILES.iter().map(|f| dir.join(f)).collect();
    files.extend(Checkpoint::weight_files(dir)?);
    Ok(files)
}

/// Refuses an output path that is one of the `inputs` or another name of one (a hard link,
/// a symbolic link): the finished file is renamed over the output path, so `-o ckpt/config.json`
/// would destroy the checkpoint it was made from (and through a link the user surely meant
/// something else). Inputs that do not exist are skipped.
pub fn check_not_an_input(out: &Path, inputs: &[PathBuf]) -> Result<()> {
    let Ok(out_meta) = std::fs::metadata(out) else {
        return Ok(()); // no file there yet: it cannot be an input
    };
    for input in inputs {
        let Ok(in_meta) = std::fs::metadata(input) else {
            continue;
        };
        if same_file(out, &out_meta, input, &in_meta) {
            bail!(
                "the output {} is the same file as the input {}; choose another -o path",
                out.display(),
                input.display()
            );
        }
    }
    Ok(())
}

/// Whether two existing paths are the same file: the same device and inode on Unix (which
/// catches hard links), the same canonical path elsewhere.
fn same_file(a: &Path, a_meta: &std::fs::Metadata, b: &Path, b_meta: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let _ = (a, b);
        a_meta.dev() == b_meta.dev() && a_meta.ino() == b_meta.ino()
    }
    #[cfg(not(unix))]
    {
        let _ = (a_meta, b_meta);
        matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        )
    }
}

/// Converts a checkpoint directory to `out`.
pub fn convert_dir(dir: &Path, out: &Path, opts: &Options, quiet: bool) -> Result<Summary> {
    if !dir.is_dir() {
        bail!(
            "{} is not a directory (expected a Hugging Face checkpoint folder)",
            dir.display()
        );
    }
    output::check_target(out)?;
    check_not_an_input(out, &input_files(dir)?)?;
    let cfg = HfConfig::read(dir)?;
    let pre = HfPreprocessor::read(dir, cfg.vision.image_size)?;
    let generation = HfGeneration::read(dir)?;
    let tokenizer = TokenizerData::read(dir)?;
    let ckpt = Checkpoint::open(dir)?;
    let inputs = Inputs {
        cfg: &cfg,
        pre: &pre,
        generation: &generation,
        tokenizer: &tokenizer,
    };
    // The plan's shape and missing-tensor errors name tensors only: name the checkpoint too.
    let planned =
        plan::build(&cfg, &ckpt, opts).with_context(|| format!("checkpoint {}", dir.display()))?;
    write_planned(&inputs, &ckpt, planned, out, opts, quiet)
}

/// Converts any [`Source`] (a checkpoint or synthetic weights).
#[allow(clippy::too_many_arguments)]
pub fn convert_source(
    cfg: &HfConfig,
    pre: &HfPreprocessor,
    generation: &HfGeneration,
    tokenizer: &TokenizerData,
    src: &dyn Source,
    out: &Path,
    opts: &Options,
    quiet: bool,
) -> Result<Summary> {
    output::check_target(out)?;
    let inputs = Inputs {
        cfg,
        pre,
        generation,
        tokenizer,
    };
    write_planned(&inputs, src, plan::build(cfg, src, opts)?, out, opts, quiet)
}

/// Writes a built plan with the metadata of `inputs`.
fn write_planned(
    inputs: &Inputs<'_>,
    src: &dyn Source,
    (plan, mut warnings): (Vec<Planned>, Vec<String>),
    out: &Path,
    opts: &Options,
    quiet: bool,
) -> Result<Summary> {
    warnings.extend(src.warnings());
    let meta = metadata(inputs, opts)?;
    let mut s = write_gguf(out, &meta, &plan, src, quiet)?;
    s.warnings = warnings;
    Ok(s)
}

/// Prints the end-of-run summary.
pub fn print_summary(out: &Path, s: &Summary, w: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        w,
        "wrote {}: {} tensors, {:.2} MB in {:.1} s",
        out.display(),
        s.tensors,
        s.file_bytes as f64 / 1e6,
        s.seconds
    )?;
    for (t, n, b) in &s.by_type {
        writeln!(
            w,
            "  {:<6} {:>5} tensors {:>12.2} MB",
            t.name(),
            n,
            *b as f64 / 1e6
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_past_u32_is_an_error_naming_the_key() {
        let ok = meta_value("mplug-owl2.block_count", Meta::Count(32)).unwrap();
        assert!(matches!(ok, Value::U32(32)));
        let big = usize::try_from(u64::from(u32::MAX) + 1).unwrap_or(usize::MAX);
        let e = meta_value("mplug-owl2.block_count", Meta::Count(big)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("mplug-owl2.block_count") && msg.contains("32-bit"),
            "{msg}"
        );
    }
}
